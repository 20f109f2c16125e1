"""A file format for fastconv.nn models that loads without torch and runs no code: JSON plus raw arrays in a zip.

A file is a zip archive of ``model.json`` (the format's name and version, and the architecture: every layer's type
and constructor arguments, containers and graphs nested) and one ``.npy`` file per ``state_dict`` entry.  Loading
parses the JSON, builds the layers from a fixed table of fastconv.nn classes and reads the arrays with
``allow_pickle=False``: nothing in a file can name a function to call or an object to unpickle.
"""

from __future__ import annotations

import inspect
import io
import json
import zipfile

import numpy as np

from . import activation, containers, conv, graph, linear, normalization, pooling
from .frozen import FrozenBatchNorm2d, FrozenConv2d, FrozenGraph, FrozenModel
from .module import Module

__all__ = ["save", "load", "FORMAT", "VERSION"]

FORMAT = "fastconv.nn.model"
VERSION = 1

# Every class a file may name.  FrozenConv2d, FrozenBatchNorm2d and the containers are built by hand below.
_LEAVES = {
    cls.__name__: cls
    for module in (activation, conv, linear, normalization, pooling)
    for cls in (getattr(module, name) for name in module.__all__)
}
_DTYPED = ("dtype",)


def _plain(v):
    """A constructor argument as JSON: tuples become lists (constructors take both)."""
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise TypeError(f"save: a layer argument fastconv.nn cannot write: {type(v).__name__} {v!r}")


def _dtype_of(m) -> str | None:
    for p in getattr(m, "_parameters", {}).values():
        return p.data.dtype.name
    for b in getattr(m, "_buffers", {}).values():
        if np.asarray(b).dtype.kind == "f":
            return np.asarray(b).dtype.name
    return None


def _leaf_spec(m) -> dict:
    cls = type(m)
    if _LEAVES.get(cls.__name__) is not cls:
        raise TypeError(f"save: {cls.__name__} is not a fastconv.nn layer the file format knows")
    args = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name in ("self", "rng") or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name == "dtype":
            dt = _dtype_of(m)
            if dt is not None:
                args["dtype"] = dt
            continue
        if not hasattr(m, name):
            if param.default is param.empty:
                raise TypeError(f"save: {cls.__name__} keeps no attribute {name!r} for its argument of that name")
            continue  # an argument the layer does not keep (inplace=): its default
        args[name] = _plain(getattr(m, name))
    return {"type": cls.__name__, "args": args}


def _spec(m) -> dict:
    if isinstance(m, FrozenConv2d):
        spec = _leaf_spec_frozen(m)
    elif isinstance(m, FrozenBatchNorm2d):
        spec = {"type": "FrozenBatchNorm2d", "args": {"num_features": m.num_features, "relu": m.relu}}
    elif isinstance(m, graph.GraphModule):
        spec = _graph_spec(m)
    elif isinstance(m, containers.Sequential):
        spec = {"type": "FrozenModel" if isinstance(m, FrozenModel) else "Sequential",
                "layers": [_spec(layer) for layer in m.layers]}  # fmt: skip
    elif isinstance(m, containers.Residual):
        spec = {
            "type": "Residual",
            "body": _spec(m.body),
            "shortcut": None if m.shortcut is None else _spec(m.shortcut),
        }
    elif isinstance(m, containers.Concat):
        spec = {"type": "Concat", "body": _spec(m.body)}
    else:
        spec = _leaf_spec(m)
    spec["training"] = bool(m.training)
    return spec


def _leaf_spec_frozen(m) -> dict:
    args = {k: _plain(getattr(m, k)) for k in ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                                                "dilation", "groups")}  # fmt: skip
    return {"type": "FrozenConv2d", "args": args, "activation": m.activation, "dtype": m.weight.data.dtype.name}


def _encode(v):
    if isinstance(v, graph.Ref):
        return {"ref": v.name}
    if isinstance(v, tuple):
        return {"tuple": [_encode(x) for x in v]}
    if isinstance(v, list):
        return [_encode(x) for x in v]
    if isinstance(v, dict):
        return {"dict": {str(k): _encode(x) for k, x in v.items()}}
    if isinstance(v, slice):
        return {"slice": [_encode(v.start), _encode(v.stop), _encode(v.step)]}
    if v is Ellipsis:
        return {"ellipsis": True}
    return _plain(v)


def _graph_spec(m) -> dict:
    nodes = [{"name": n.name, "op": n.op, "target": n.target, "args": _encode(tuple(n.args)),
              "kwargs": _encode(dict(n.kwargs)), "line": n.line} for n in m.nodes]  # fmt: skip
    # every layer in the module tree, in its order (the state dict's), called by a node or not
    modules = {path: _spec(sub) for path, sub in _leaf_paths(m)}
    attrs = {path: kind for path, (kind, _, _) in m.attrs.items()}
    return {"type": "FrozenGraph" if isinstance(m, FrozenGraph) else "GraphModule", "nodes": nodes,
            "modules": modules, "attrs": attrs}  # fmt: skip


def _leaf_paths(m):
    def walk(holder, prefix):
        for name, child in holder.children():
            if isinstance(child, graph._Holder):
                yield from walk(child, prefix + name + ".")
            else:
                yield prefix + name, child

    yield from walk(m, "")


def save(model: Module, path) -> None:
    """Write a model, architecture and arrays, to a file :func:`load` reads back (without torch).

    Parameters
    ----------
    model : Module
        Any ``fastconv.nn`` model: layers, ``Sequential``/``Residual``/``Concat`` trees, a :class:`GraphModule`
        from :func:`from_torch`, a frozen model.
    path : str or path-like or binary file
        Where to write (a zip archive; any name, ``.fcnn`` by convention).

    Notes
    -----
    The file holds ``model.json`` (format ``"fastconv.nn.model"``, version 1, the architecture) and one
    ``.npy`` per ``state_dict`` entry.  Layers keep their train/eval mode.  Optimiser state is not saved.

    Examples
    --------
    >>> import io, numpy as np
    >>> from fastconv import nn
    >>> m = nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.ReLU()).eval()
    >>> buf = io.BytesIO()
    >>> nn.save(m, buf)
    >>> m2 = nn.load(io.BytesIO(buf.getvalue()))
    >>> x = np.ones((1, 1, 5, 5), np.float32)
    >>> bool((m2(x) == m(x)).all()), m2.training
    (True, False)
    """
    if not isinstance(model, Module):
        raise TypeError(f"save: model must be a fastconv.nn Module, got {type(model).__name__}")
    state = model.state_dict()
    header = {"format": FORMAT, "version": VERSION, "model": _spec(model), "arrays": list(state)}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("model.json", json.dumps(header, indent=1))
        for i, value in enumerate(state.values()):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.array(value, order="C", copy=False), allow_pickle=False)
            zf.writestr(f"arrays/{i}.npy", buf.getvalue())


# -- reading ------------------------------------------------------------------------------------------------------


class _Corrupt(ValueError):
    pass


def _need(cond, what):
    if not cond:
        raise _Corrupt(what)


def _decode(v):
    if isinstance(v, list):
        return [_decode(x) for x in v]
    if isinstance(v, dict):
        _need(len(v) == 1, f"an argument object with keys {sorted(v)}")
        ((kind, x),) = v.items()
        if kind == "ref":
            _need(isinstance(x, str), "a node reference that is not a name")
            return graph.Ref(x)
        if kind == "tuple":
            _need(isinstance(x, list), "a tuple that is not a list")
            return tuple(_decode(e) for e in x)
        if kind == "dict":
            _need(isinstance(x, dict), "a dict argument that is not an object")
            return {k: _decode(e) for k, e in x.items()}
        if kind == "slice":
            _need(isinstance(x, list) and len(x) == 3, "a slice that is not three values")
            return slice(*(_decode(e) for e in x))
        if kind == "ellipsis":
            return Ellipsis
        raise _Corrupt(f"an argument of unknown kind {kind!r}")
    _need(v is None or isinstance(v, (bool, int, float, str)), f"an argument of type {type(v).__name__}")
    return v


def _tuples(v):
    """JSON lists back to the tuples layer constructors were given (they take either)."""
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def _build(spec) -> Module:
    _need(isinstance(spec, dict) and isinstance(spec.get("type"), str), "a layer without a type")
    kind = spec["type"]
    if kind in ("Sequential", "FrozenModel"):
        _need(isinstance(spec.get("layers"), list), f"a {kind} without a list of layers")
        layers = [_build(s) for s in spec["layers"]]
        m = (FrozenModel if kind == "FrozenModel" else containers.Sequential)(*layers)
    elif kind == "Residual":
        short = spec.get("shortcut")
        m = containers.Residual(_build(spec.get("body")), None if short is None else _build(short))
    elif kind == "Concat":
        m = containers.Concat(_build(spec.get("body")))
    elif kind == "FrozenConv2d":
        args = spec.get("args")
        _need(isinstance(args, dict), "a FrozenConv2d without arguments")
        spec_layer = conv.Conv2d(**{k: _tuples(v) for k, v in args.items()}, bias=False)
        dt = np.dtype(_dtype(spec.get("dtype", "float32")))
        cout, cin_g = spec_layer.out_channels, spec_layer.in_channels // spec_layer.groups
        w = np.zeros((cout, cin_g, *spec_layer.kernel_size), dt)
        m = FrozenConv2d(spec_layer, w, np.zeros(cout, dt), spec.get("activation"))
    elif kind == "FrozenBatchNorm2d":
        args = spec.get("args")
        ok = isinstance(args, dict) and isinstance(args.get("num_features"), int)
        _need(ok, "a FrozenBatchNorm2d without its num_features")
        n = args["num_features"]
        _need(n >= 1, f"a FrozenBatchNorm2d of {n} features")
        m = FrozenBatchNorm2d(n, np.zeros(n), np.zeros(n), bool(args.get("relu", False)))
    elif kind in ("GraphModule", "FrozenGraph"):
        m = _build_graph(spec, kind)
    else:
        cls = _LEAVES.get(kind)
        _need(cls is not None, f"a layer of unknown type {kind!r}")
        args = spec.get("args", {})
        _need(isinstance(args, dict), f"a {kind} whose arguments are not an object")
        args = {k: (_dtype(v) if k == "dtype" else _tuples(v)) for k, v in args.items()}
        m = cls(**args)
    if kind not in ("FrozenModel", "FrozenGraph", "FrozenConv2d", "FrozenBatchNorm2d"):
        m.training = bool(spec.get("training", False))  # this module's own mode: its children have theirs
    return m


def _dtype(name):
    _need(name in ("float32", "float64"), f"a dtype {name!r} (float32 or float64 only)")
    return np.dtype(name)


def _build_graph(spec, kind):
    nodes_spec, modules_spec, attrs_spec = spec.get("nodes"), spec.get("modules"), spec.get("attrs", {})
    _need(isinstance(nodes_spec, list) and isinstance(modules_spec, dict) and isinstance(attrs_spec, dict),
          f"a {kind} without nodes, modules and attrs")  # fmt: skip
    nodes = []
    for n in nodes_spec:
        _need(isinstance(n, dict) and isinstance(n.get("name"), str) and isinstance(n.get("op"), str),
              "a graph node without a name and an op")  # fmt: skip
        args, kwargs = _decode(n.get("args", {"tuple": []})), _decode(n.get("kwargs", {"dict": {}}))
        _need(isinstance(args, tuple) and isinstance(kwargs, dict), f"node {n['name']!r}: malformed arguments")
        nodes.append(graph.Node(n["name"], n["op"], n.get("target"), args, kwargs, str(n.get("line", ""))))
    modules = {path: _build(s) for path, s in modules_spec.items()}
    attrs = {}
    for path, k in attrs_spec.items():
        _need(k in ("parameter", "buffer"), f"attr {path!r} of unknown kind {k!r}")
        attrs[path] = (k, np.zeros(0, np.float32))  # the values come with the state dict
    cls = FrozenGraph if kind == "FrozenGraph" else graph.GraphModule
    return cls(nodes, modules, attrs)


def _load_into(model, state):
    """load_state_dict, letting loose graph attributes take their file's shapes."""
    if isinstance(model, graph.GraphModule):
        for m in [mod for _, mod in model.named_modules() if isinstance(mod, graph.GraphModule)]:
            for path, (kind, holder, name) in m.attrs.items():
                if path in state:
                    arr = np.array(state[path], copy=True)
                    if kind == "parameter":
                        holder._parameters[name].data = arr
                    else:
                        holder._buffers[name] = arr
    model.load_state_dict(state)


def load(path) -> Module:
    """Read a model written by :func:`save`: its architecture, arrays and train/eval mode.

    Parameters
    ----------
    path : str or path-like or binary file

    Returns
    -------
    Module
        The model, of the classes it was saved from.  torch is not needed.

    Raises
    ------
    ValueError
        For a file that is not one :func:`save` wrote: corrupt, truncated, of another format or a newer version,
        or whose arrays do not fit its architecture; the message names the file's problem.
    """
    name = getattr(path, "name", path)
    try:
        with zipfile.ZipFile(path) as zf:
            try:
                raw = zf.read("model.json")
            except KeyError:
                raise _Corrupt("no model.json (not a fastconv.nn model file)") from None
            try:
                header = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise _Corrupt(f"model.json is not valid JSON ({exc})") from None
            _need(isinstance(header, dict) and header.get("format") == FORMAT,
                  f"format {header.get('format') if isinstance(header, dict) else None!r}, not {FORMAT!r}")  # fmt: skip
            version = header.get("version")
            _need(isinstance(version, int) and 1 <= version <= VERSION,
                  f"version {version!r}; this fastconv reads versions 1 to {VERSION}")  # fmt: skip
            keys = header.get("arrays")
            _need(isinstance(keys, list) and all(isinstance(k, str) for k in keys), "no list of arrays")
            state = {}
            for i, key in enumerate(keys):
                try:
                    data = zf.read(f"arrays/{i}.npy")
                except KeyError:
                    raise _Corrupt(f"array {key!r} (arrays/{i}.npy) is missing") from None
                try:
                    state[key] = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
                except Exception as exc:  # noqa: BLE001 - any malformed .npy
                    raise _Corrupt(f"array {key!r} is unreadable ({exc})") from None
            model = _build(header.get("model"))
            try:
                _load_into(model, state)
            except (ValueError, TypeError) as exc:
                raise _Corrupt(f"its arrays do not fit its architecture ({exc})") from None
            return model
    except _Corrupt as exc:
        raise ValueError(f"load: {name!r} is not a usable fastconv.nn model file: {exc}") from None
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"load: {name!r} is not a fastconv.nn model file (corrupt or truncated: {exc})") from None
    except (TypeError, ValueError, KeyError, RecursionError) as exc:
        raise ValueError(
            f"load: {name!r} describes a model fastconv.nn cannot build ({type(exc).__name__}: {exc})"
        ) from None
