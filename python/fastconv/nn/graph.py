"""Models with their own data flow: a graph of layers and operations run forward and backward in NumPy.

A :class:`GraphModule` is what :func:`fastconv.nn.from_torch` makes of a torch model whose ``forward`` adds
shortcuts, concatenates skips, reshapes or calls functions (``torch.fx`` captures it); it is also what
:func:`fastconv.nn.save` writes and :func:`fastconv.nn.load` reads back without torch.  Its layers are ordinary
``fastconv.nn`` modules, held at the paths torch held them, so ``state_dict()`` keys equal torch's.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from .. import functional as F
from .. import layers as L
from .activation import (
    ELU,
    GELU,
    Hardswish,
    LeakyReLU,
    LogSoftmax,
    ReLU,
    ReLU6,
    Sigmoid,
    SiLU,
    Softmax,
    Tanh,
    _relu_grad,
)
from .linear import Dropout, Dropout2d
from .module import Module, Parameter
from .normalization import BatchNorm2d
from .pooling import AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, MaxPool2d, Upsample, ZeroPad2d

__all__ = ["GraphModule", "Node", "Ref", "OPS"]


@dataclass(frozen=True)
class Ref:
    """A reference to another node's value inside a node's arguments."""

    name: str


@dataclass
class Node:
    """One step of a :class:`GraphModule`.

    ``op`` is ``"input"`` (the forward's positional input number ``target``), ``"module"`` (the layer at path
    ``target``), ``"call"`` (the operation named ``target``, one of :data:`OPS`), ``"attr"`` (the parameter or buffer
    at path ``target``) or ``"output"`` (``args[0]`` is what the forward returns).  ``args`` and ``kwargs`` hold
    constants and :class:`Ref` to earlier nodes.  ``line`` is the source line it came from, for messages.
    """

    name: str
    op: str
    target: object
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    line: str = ""


def _leaves(obj):
    """Depth-first leaves of nested tuples, lists and dicts (an argument structure)."""
    if isinstance(obj, (tuple, list)):
        for v in obj:
            yield from _leaves(v)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _leaves(v)
    else:
        yield obj


def _resolve(obj, env):
    if isinstance(obj, Ref):
        return env[obj.name]
    if isinstance(obj, tuple):
        return tuple(_resolve(v, env) for v in obj)
    if isinstance(obj, list):
        return [_resolve(v, env) for v in obj]
    if isinstance(obj, dict):
        return {k: _resolve(v, env) for k, v in obj.items()}
    return obj


def _unbroadcast(g, shape):
    """The gradient of a value broadcast to g's shape: g summed over the broadcast axes."""
    g = np.asarray(g)
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for axis, n in enumerate(shape):
        if n == 1 and g.shape[axis] != 1:
            g = g.sum(axis=axis, keepdims=True)
    return g


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _relu_nan(y):
    """max(y, 0) with NaN kept, as torch's ReLU."""
    return np.where(np.isnan(y) | (y > 0), y, 0).astype(y.dtype, copy=False)


def _is_array(v) -> bool:
    return isinstance(v, np.ndarray)


def _axis(dim, ndim, what):
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool):
        raise TypeError(f"{what}: dim must be an int, got {dim!r}")
    if not -ndim <= dim < ndim:
        raise ValueError(f"{what}: dim {dim} is out of range for a {ndim}-D array")
    return int(dim) % ndim


# -- operations ---------------------------------------------------------------------------------------------------
# Each op instance serves one node.  forward(*args, **kwargs) takes the node's resolved arguments; backward(g)
# returns the gradients of the array leaves of (args, kwargs), in their depth-first order (None for those that get
# none).  output_shape(*args, **kwargs) takes the same arguments with arrays replaced by their shapes (as
# _Shape) and returns the output's shape (or the value, for ops on sizes).


class _Shape(tuple):
    """An array's shape standing in for the array during shape propagation."""


class _Op:
    differentiable = True

    def __init__(self, graph):
        self.graph = graph

    def backward(self, g):
        return []


class _Binary(_Op):
    """a (op) b with NumPy broadcasting; either may be a Python number."""

    def __init__(self, graph, kind):
        super().__init__(graph)
        self.kind = kind

    def forward(self, a, b, alpha=1):
        if alpha != 1:
            if self.kind not in ("add", "sub"):
                raise ValueError(f"{self.kind}: alpha is only for add and sub, got alpha={alpha!r}")
            b = b * alpha
        self._a, self._b, self._alpha = a, b, alpha
        if self.kind == "add":
            return a + b
        if self.kind == "sub":
            return a - b
        if self.kind == "mul":
            return a * b
        return a / b

    def forward_relu(self, a, b):
        """max(a + b, 0), NaN kept: one pass where both are float arrays of one shape and dtype."""
        self._a, self._b, self._alpha = a, b, 1
        if _is_array(a) and _is_array(b) and a.shape == b.shape and a.dtype == b.dtype and a.dtype in _FLOATS:
            return F._kernel(a.dtype, "add_relu")(np.ascontiguousarray(a), np.ascontiguousarray(b), True)
        return _relu_nan(a + b)

    def backward(self, g):
        a, b = self._a, self._b
        out = []
        if _is_array(a):
            ga = g if self.kind in ("add", "sub") else (g * b if self.kind == "mul" else g / b)
            out.append(_unbroadcast(ga, a.shape).astype(a.dtype, copy=False))
        if _is_array(b):
            if self.kind == "add":
                gb = g * self._alpha
            elif self.kind == "sub":
                gb = -g * self._alpha
            elif self.kind == "mul":
                gb = g * a * self._alpha
            else:
                gb = -g * a / (b * b)
            out.append(_unbroadcast(gb, b.shape).astype(b.dtype, copy=False))
        return out

    def output_shape(self, a, b, alpha=1):
        shapes = [s for s in (a, b) if isinstance(s, _Shape)]
        return _Shape(np.broadcast_shapes(*shapes)) if shapes else None


class _Cat(_Op):
    def forward(self, tensors, dim=0):
        tensors = list(tensors)
        self._axis = _axis(dim, tensors[0].ndim, "cat")
        self._sizes = [t.shape[self._axis] for t in tensors]
        return np.concatenate(tensors, axis=self._axis)

    def backward(self, g):
        edges = np.cumsum(self._sizes)[:-1]
        return [np.ascontiguousarray(part) for part in np.split(g, edges, axis=self._axis)]

    def output_shape(self, tensors, dim=0):
        tensors = list(tensors)
        axis = _axis(dim, len(tensors[0]), "cat")
        for t in tensors[1:]:
            if len(t) != len(tensors[0]) or any(t[i] != tensors[0][i] for i in range(len(t)) if i != axis):
                raise ValueError(f"cat: shapes {tuple(tensors[0])} and {tuple(t)} differ off axis {axis}")
        out = list(tensors[0])
        out[axis] = sum(t[axis] for t in tensors)
        return _Shape(out)


def _reshape_target(shape, args, what):
    """A reshape's target shape: ints (one may be -1) given as separate arguments or one tuple."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = tuple(args[0])
    size = int(np.prod(shape))
    dims = [int(a) for a in args]
    if dims.count(-1) > 1:
        raise ValueError(f"{what}: only one dimension can be -1, got {tuple(dims)}")
    if -1 in dims:
        known = int(np.prod([d for d in dims if d != -1]))
        if known == 0 or size % known:
            raise ValueError(f"{what}: shape {tuple(dims)} is invalid for an input of size {size}")
        dims[dims.index(-1)] = size // known
    if int(np.prod(dims)) != size:
        raise ValueError(f"{what}: shape {tuple(dims)} is invalid for an input of size {size}")
    return tuple(dims)


class _Reshape(_Op):
    def forward(self, x, *shape):
        self._shape = x.shape
        return np.ascontiguousarray(x).reshape(_reshape_target(x.shape, shape, "reshape"))

    def backward(self, g):
        return [np.asarray(g).reshape(self._shape)]

    def output_shape(self, x, *shape):
        return _Shape(_reshape_target(x, shape, "reshape"))


class _Flatten(_Op):
    def _target(self, shape, start_dim, end_dim):
        n = len(shape)
        a, b = _axis(start_dim, max(n, 1), "flatten"), _axis(end_dim, max(n, 1), "flatten")
        return tuple(shape[:a]) + (int(np.prod(shape[a : b + 1])),) + tuple(shape[b + 1 :])

    def forward(self, x, start_dim=0, end_dim=-1):
        self._shape = x.shape
        return np.ascontiguousarray(x).reshape(self._target(x.shape, start_dim, end_dim))

    def backward(self, g):
        return [np.asarray(g).reshape(self._shape)]

    def output_shape(self, x, start_dim=0, end_dim=-1):
        return _Shape(self._target(x, start_dim, end_dim))


class _Reduce(_Op):
    def __init__(self, graph, kind):
        super().__init__(graph)
        self.kind = kind

    @staticmethod
    def _axes(ndim, dim):
        if dim is None:
            return tuple(range(ndim))
        dims = dim if isinstance(dim, (tuple, list)) else (dim,)
        return tuple(sorted(_axis(d, ndim, "mean") for d in dims))

    def forward(self, x, dim=None, keepdim=False):
        self._shape, self._dtype = x.shape, x.dtype
        self._axes_ = self._axes(x.ndim, dim)
        self._keep = bool(keepdim)
        y = (
            x.mean(axis=self._axes_, keepdims=keepdim)
            if self.kind == "mean"
            else x.sum(axis=self._axes_, keepdims=keepdim)
        )
        return np.asarray(y, dtype=x.dtype)

    def backward(self, g):
        g = np.asarray(g)
        if not self._keep:
            g = np.expand_dims(g, self._axes_)
        if self.kind == "mean":
            g = g / int(np.prod([self._shape[a] for a in self._axes_]))
        return [np.ascontiguousarray(np.broadcast_to(g, self._shape), dtype=self._dtype)]

    def output_shape(self, x, dim=None, keepdim=False):
        axes = self._axes(len(x), dim)
        return _Shape(1 if i in axes else n for i, n in enumerate(x) if keepdim or i not in axes)


class _GetItem(_Op):
    """Indexing: of a tuple or list (sizes, a layer's several outputs), or basic indexing of an array."""

    def forward(self, x, index):
        self._tensor = _is_array(x)
        if self._tensor:
            self._shape, self._dtype, self._index = x.shape, x.dtype, index
            return np.ascontiguousarray(x[index])
        return x[index]

    def backward(self, g):
        if not self._tensor:
            return []
        gx = np.zeros(self._shape, self._dtype)
        gx[self._index] = g
        return [gx]

    def output_shape(self, x, index):
        if isinstance(x, _Shape):  # the shape basic indexing gives, from a view that holds no data
            return _Shape(np.lib.stride_tricks.as_strided(np.zeros(1, np.bool_), x, (0,) * len(x))[index].shape)
        return x[index]


class _Size(_Op):
    differentiable = False

    def forward(self, x, dim=None):
        return tuple(x.shape) if dim is None else x.shape[_axis(dim, x.ndim, "size")]

    def output_shape(self, x, dim=None):
        return tuple(x) if dim is None else x[_axis(dim, len(x), "size")]


class _GetAttr(_Op):
    differentiable = False

    def forward(self, x, name):
        if name == "shape":
            return tuple(x.shape)
        if name == "ndim":
            return x.ndim
        raise TypeError(f"getattr: only .shape and .ndim of an array are supported, got .{name}")

    def output_shape(self, x, name):
        return tuple(x) if name == "shape" else len(x)


class _Dim(_Op):
    differentiable = False

    def forward(self, x):
        return x.ndim

    def output_shape(self, x):
        return len(x)


class _Identity(_Op):
    def forward(self, x, *args, **kwargs):
        return x

    def backward(self, g):
        return [g]

    def output_shape(self, x, *args, **kwargs):
        return x


class _Detach(_Identity):
    def backward(self, g):
        return [None]


class _ExpandAs(_Op):
    def forward(self, x, other):
        self._shape = x.shape
        return np.ascontiguousarray(np.broadcast_to(x, other.shape))

    def backward(self, g):
        return [_unbroadcast(g, self._shape), None]

    def output_shape(self, x, other):
        return _Shape(other)


class _Layer(_Op):
    """A functional call run by a fastconv.nn layer made from its constant arguments (F.relu -> ReLU)."""

    def __init__(self, graph, make):
        super().__init__(graph)
        self.make = make
        self.layer = None

    def _layer(self, *args, **kwargs):
        layer = self.make(*args, **kwargs)
        layer.training = self.graph.training
        self.layer = layer
        return layer

    def forward(self, x, *args, **kwargs):
        return self._layer(*args, **kwargs).forward(x)

    def backward(self, g):
        return [self.layer.backward(g)]

    def output_shape(self, x, *args, **kwargs):
        layer = self.make(*args, **kwargs)
        return _Shape((x[0], *layer.output_shape(tuple(x[1:])))) if len(x) == 4 else x


def _pool(cls):
    def make(kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
        if return_indices:
            raise TypeError("max_pool2d: return_indices=True in a forward is not supported (use nn.MaxPool2d)")
        return cls(kernel_size, stride, padding, dilation, False, ceil_mode)

    return make


def _avg_pool(kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
    return AvgPool2d(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def _interpolate(size=None, scale_factor=None, mode="nearest", align_corners=None, recompute_scale_factor=None,
                 antialias=False):  # fmt: skip
    if antialias:
        raise TypeError("interpolate: antialias=True is not supported")
    if recompute_scale_factor:
        raise TypeError("interpolate: recompute_scale_factor=True is not supported")
    if isinstance(size, (tuple, list)):
        size = tuple(int(s) for s in size)
    return Upsample(size, scale_factor, mode, align_corners)


def _pad(pad, mode="constant", value=0.0):
    if mode != "constant" or (value is not None and value != 0):
        raise TypeError(f"pad: only constant zero padding is supported, got mode={mode!r}, value={value!r}")
    pad = tuple(int(p) for p in pad)
    if len(pad) == 2:
        pad = pad + (0, 0)
    if len(pad) != 4:
        raise TypeError(f"pad: padding of the last two axes only (2 or 4 values), got {pad}")
    return ZeroPad2d(pad)


def _dropout(cls):
    def make(p=0.5, training=True, inplace=False):
        return cls(p)  # training follows the graph's mode, not the flag captured when the model was traced

    return make


def _activation(cls, *names):
    def make(*args, **kwargs):
        kwargs.pop("inplace", None)
        if len(args) > len(names):
            args = args[: len(names)]
        return cls(*args, **kwargs)

    return make


def _softmax(cls):
    def make(dim=None, _stacklevel=3, dtype=None):
        if dtype is not None:
            raise TypeError(f"{cls.__name__.lower()}: dtype= is not supported")
        return cls(dim)

    return make


def _gelu(approximate="none"):
    return GELU(approximate)


# name -> factory(graph) of the op serving one node
OPS = {
    "add": lambda g: _Binary(g, "add"),
    "sub": lambda g: _Binary(g, "sub"),
    "mul": lambda g: _Binary(g, "mul"),
    "div": lambda g: _Binary(g, "div"),
    "cat": _Cat,
    "reshape": _Reshape,
    "flatten": _Flatten,
    "mean": lambda g: _Reduce(g, "mean"),
    "sum": lambda g: _Reduce(g, "sum"),
    "getitem": _GetItem,
    "size": _Size,
    "getattr": _GetAttr,
    "dim": _Dim,
    "identity": _Identity,
    "detach": _Detach,
    "expand_as": _ExpandAs,
    "relu": lambda g: _Layer(g, _activation(ReLU)),
    "relu6": lambda g: _Layer(g, _activation(ReLU6)),
    "sigmoid": lambda g: _Layer(g, _activation(Sigmoid)),
    "tanh": lambda g: _Layer(g, _activation(Tanh)),
    "silu": lambda g: _Layer(g, _activation(SiLU)),
    "hardswish": lambda g: _Layer(g, _activation(Hardswish)),
    "gelu": lambda g: _Layer(g, _gelu),
    "leaky_relu": lambda g: _Layer(g, _activation(LeakyReLU, "negative_slope")),
    "elu": lambda g: _Layer(g, _activation(ELU, "alpha")),
    "softmax": lambda g: _Layer(g, _softmax(Softmax)),
    "log_softmax": lambda g: _Layer(g, _softmax(LogSoftmax)),
    "max_pool2d": lambda g: _Layer(g, _pool(MaxPool2d)),
    "avg_pool2d": lambda g: _Layer(g, _avg_pool),
    "adaptive_avg_pool2d": lambda g: _Layer(g, AdaptiveAvgPool2d),
    "adaptive_max_pool2d": lambda g: _Layer(g, AdaptiveMaxPool2d),
    "interpolate": lambda g: _Layer(g, _interpolate),
    "pad": lambda g: _Layer(g, _pad),
    "dropout": lambda g: _Layer(g, _dropout(Dropout)),
    "dropout2d": lambda g: _Layer(g, _dropout(Dropout2d)),
}


# -- the graph ----------------------------------------------------------------------------------------------------


class _Holder(Module):
    """A node of the module tree of a graph: the layers (and loose parameters) at paths below it."""

    def __init__(self):
        self._init_module()
        self._children: OrderedDict[str, Module] = OrderedDict()

    def children(self):
        return list(self._children.items())


def _insert(root: _Holder, path: str, module):
    parts = path.split(".")
    node = root
    for part in parts[:-1]:
        nxt = node._children.get(part)
        if nxt is None:
            nxt = node._children[part] = _Holder()
        if not isinstance(nxt, _Holder):
            raise ValueError(f"GraphModule: {path!r} lies inside the layer {part!r}")
        node = nxt
    if parts[-1] in node._children:
        raise ValueError(f"GraphModule: two modules at path {path!r}")
    node._children[parts[-1]] = module


def _lookup(root: _Holder, path: str):
    node = root
    for part in path.split("."):
        node = node._children[part] if isinstance(node, _Holder) else None
        if node is None:
            raise KeyError(path)
    return node


class GraphModule(L.Layer, Module):
    """A model whose forward is a graph of ``fastconv.nn`` layers and operations, with a backward through it.

    Usually made by :func:`fastconv.nn.from_torch` (from the ``torch.fx`` graph of a model with its own
    ``forward``) or :func:`fastconv.nn.load`.

    Parameters
    ----------
    nodes : list of Node
        In an order where every node's arguments come before it; the last is the ``"output"`` node.
    modules : dict of str to Module
        The layers, by the dotted path ``"module"`` nodes name (``"layer1.0.conv1"``).
    attrs : dict of str to (str, numpy.ndarray)
        Loose parameters (``"parameter"``) and buffers (``"buffer"``) read by ``"attr"`` nodes, by path.

    Notes
    -----
    A layer called at several nodes (one ``ReLU`` module used twice, as torchvision's blocks do) runs as one
    instance per node sharing the layer's parameters, so each call keeps its own state for the backward and
    gradients of shared weights add up, as in torch.  ``train()`` and ``eval()`` reach every node.
    """

    def __init__(self, nodes, modules=None, attrs=None):
        self._init_module()
        self._root = _Holder()
        self.nodes = list(nodes)
        self.attrs = {}
        for path, module in (modules or {}).items():
            if not isinstance(module, Module):
                raise TypeError(
                    f"GraphModule: modules[{path!r}] must be a fastconv.nn Module, got {type(module).__name__}"
                )
            _insert(self._root, path, module)
        for path, (kind, value) in (attrs or {}).items():
            holder_path, _, name = path.rpartition(".")
            holder = self if not holder_path else self._holder_at(holder_path)
            arr = np.array(value, copy=True)
            if kind == "parameter":
                holder._parameters[name] = Parameter(arr)
            elif kind == "buffer":
                holder._buffers[name] = arr
            else:
                raise ValueError(f"GraphModule: attrs[{path!r}] kind must be 'parameter' or 'buffer', got {kind!r}")
            self.attrs[path] = (kind, holder, name)
        self._check()
        self._instances: dict[str, Module] = {}
        self._ops: dict[str, _Op] = {}
        seen = set()
        for node in self.nodes:
            if node.op == "module":
                module = self.get_submodule(node.target)
                # A layer's first node runs the layer itself, later ones shallow copies sharing its parameters.
                self._instances[node.name] = module if node.target not in seen else _share(module)
                seen.add(node.target)
            elif node.op == "call":
                self._ops[node.name] = OPS[node.target](self)
        self._fusions()

    def _fusions(self):
        """The ReLUs the node before them applies in its own pass, as fastconv.nn's containers do: after a batch
        norm (its backward masks: the ReLU passes its gradient through), after a convolution or a sum (the ReLU
        masks by its output).  Only where that node's one reader is the ReLU."""
        users: dict[str, list] = {n.name: [] for n in self.nodes}
        for n in self.nodes:
            for leaf in _leaves((n.args, n.kwargs)):
                if isinstance(leaf, Ref):
                    users[leaf.name].append(n.name)
        by_name = {n.name: n for n in self.nodes}
        self._relu_by = {}  # node -> "relu" (it rectifies its own output) / "add_relu"
        self._fused_relu = {}  # ReLU node -> (the node that applied it, "pass" or "mask")
        for r in self.nodes:
            relu_module = r.op == "module" and type(self.get_submodule(r.target)) is ReLU
            if not (relu_module or (r.op == "call" and r.target == "relu")) or not r.args:
                continue
            src = r.args[0]
            if not isinstance(src, Ref) or users[src.name] != [r.name]:
                continue
            p = by_name[src.name]
            kind = None
            if p.op == "module" and not p.kwargs:
                layer = self.get_submodule(p.target)
                if type(layer) is BatchNorm2d:
                    kind = ("relu", "pass")
                elif getattr(layer, "fuses_residual", False) and not getattr(layer, "activation", None):
                    kind = ("relu", "mask")
            elif p.op == "call" and p.target == "add" and len(p.args) == 2 and not p.kwargs:
                if all(isinstance(a, Ref) for a in p.args):
                    kind = ("add_relu", "mask")
            if kind:
                self._relu_by[p.name] = kind[0]
                self._fused_relu[r.name] = (p.name, kind[1])

    def _holder_at(self, path):
        try:
            node = _lookup(self._root, path)
        except KeyError:
            node = None
        if node is None:
            node = _Holder()
            _insert(self._root, path, node)
        return node

    def _check(self):
        names = set()
        if not self.nodes or self.nodes[-1].op != "output":
            raise ValueError("GraphModule: the last node must be the 'output' node")
        for node in self.nodes:
            if node.name in names:
                raise ValueError(f"GraphModule: two nodes named {node.name!r}")
            if node.op not in ("input", "module", "call", "attr", "output"):
                raise ValueError(f"GraphModule: node {node.name!r} has an unknown op {node.op!r}")
            if node.op == "call" and node.target not in OPS:
                raise ValueError(f"GraphModule: node {node.name!r} calls an unknown operation {node.target!r}")
            if node.op == "module":
                self.get_submodule(node.target)
            if node.op == "attr" and node.target not in self.attrs:
                raise ValueError(f"GraphModule: node {node.name!r} reads {node.target!r}, which is not in attrs")
            for leaf in _leaves((node.args, node.kwargs)):
                if isinstance(leaf, Ref) and leaf.name not in names:
                    raise ValueError(f"GraphModule: node {node.name!r} uses {leaf.name!r} before it is made")
            names.add(node.name)
        self._inputs = [n for n in self.nodes if n.op == "input"]

    # -- structure
    def children(self):
        return self._root.children()

    def get_submodule(self, path: str) -> Module:
        """The layer at a dotted path (``"layer1.0.conv1"``)."""
        try:
            return _lookup(self._root, path)
        except KeyError:
            raise ValueError(f"GraphModule: no module at path {path!r}") from None

    def train(self, mode: bool = True):
        super().train(mode)
        for inst in self._instances.values():
            inst.train(mode)
        return self

    def _args(self):
        return f"{len(self.nodes)} nodes"

    # -- running
    def forward(self, *inputs):
        if len(inputs) != len(self._inputs):
            raise TypeError(f"GraphModule.forward takes {len(self._inputs)} input(s), got {len(inputs)}")
        env = {}
        # The backward reads every value; a model without one drops each after its last reader, so the next
        # results reuse memory still in the caches.
        done = None if self._keeps_values else self._dead_after()
        self._values = env if self._keeps_values else None
        for i, node in enumerate(self.nodes):
            try:
                env[node.name] = self._run(node, env, inputs)
            except (TypeError, ValueError) as exc:
                where = f" (from {node.line})" if node.line else ""
                raise type(exc)(f"{self._describe(node)}{where}: {exc}") from None
            if done is not None:
                for name in done[i]:
                    del env[name]
        return env[self.nodes[-1].name]

    _keeps_values = True

    def _dead_after(self):
        """Per node, the values no later node reads (the output's own kept)."""
        if getattr(self, "_dead", None) is None:
            last = {n.name: i for i, n in enumerate(self.nodes)}
            for i, n in enumerate(self.nodes):
                for leaf in _leaves((n.args, n.kwargs)):
                    if isinstance(leaf, Ref):
                        last[leaf.name] = i
            last.pop(self.nodes[-1].name)
            dead = [[] for _ in self.nodes]
            for name, i in last.items():
                dead[i].append(name)
            self._dead = dead
        return self._dead

    def _describe(self, node):
        return f"node {node.name!r} ({node.op} {node.target})"

    def _run(self, node, env, inputs):
        if node.op == "input":
            return np.asarray(inputs[node.target])
        if node.op == "attr":
            kind, holder, name = self.attrs[node.target]
            return holder._parameters[name].data if kind == "parameter" else holder._buffers[name]
        fused = self._fused_relu.get(node.name)
        if fused:  # applied by the node before it
            return env[fused[0]]
        args, kwargs = _resolve(node.args, env), _resolve(node.kwargs, env)
        by = self._relu_by.get(node.name)
        if node.op == "module":
            if by == "relu":
                return self._instances[node.name](*args, relu=True)
            return self._instances[node.name](*args, **kwargs)
        if node.op == "call":
            if by == "add_relu":
                return self._ops[node.name].forward_relu(*args)
            return self._ops[node.name].forward(*args, **kwargs)
        return args[0]  # output

    def backward(self, grad_output, input_grad=True):
        """Gradients of the loss with respect to the inputs, parameter gradients accumulated on the way.

        Parameters
        ----------
        grad_output : numpy.ndarray (or a tuple, for a forward that returned one)
        input_grad : bool
            False skips nothing but the returned value (None).

        Returns
        -------
        numpy.ndarray, or a tuple for several inputs
        """
        env = getattr(self, "_values", None)
        if env is None:
            raise RuntimeError("GraphModule.backward: call forward first")
        grads: dict[str, object] = {}
        out = self.nodes[-1]
        self._give(out.args[0], grad_output, grads, env)
        input_grads = {}
        for node in reversed(self.nodes[:-1]):
            g = grads.pop(node.name, None)
            if g is None:
                continue
            fused = self._fused_relu.get(node.name)
            if fused:  # a ReLU applied by the node before it: its mask (or that node's backward masks)
                self._give(Ref(fused[0]), _relu_grad(g, env[node.name]) if fused[1] == "mask" else g, grads, env)
                continue
            if node.op == "input":
                input_grads[node.target] = g
            elif node.op == "attr":
                kind, holder, name = self.attrs[node.target]
                if kind == "parameter":
                    holder._parameters[name].accumulate(np.asarray(g, dtype=holder._parameters[name].data.dtype))
            elif node.op == "module":
                if isinstance(env[node.name], tuple):  # a layer's several outputs: the first carries the gradient
                    g = g.get(0)
                    if g is None:
                        continue
                gx = self._instances[node.name].backward(g)
                arrays = [leaf for leaf in _leaves((node.args, node.kwargs)) if _is_array(_resolve(leaf, env))]
                if arrays and isinstance(arrays[0], Ref):
                    self._give(arrays[0], gx, grads, env)
            else:
                self._backward_call(node, g, grads, env)
        if not input_grad:
            return None
        gs = tuple(input_grads.get(i) for i in range(len(self._inputs)))
        return gs[0] if len(gs) == 1 else gs

    def _backward_call(self, node, g, grads, env):
        op = self._ops[node.name]
        src = node.args[0] if node.args else None
        if node.target == "getitem" and isinstance(src, Ref) and isinstance(env[src.name], (tuple, list)):
            # one of a layer's several outputs: its gradient is kept by index
            index = _resolve(node.args[1], env)
            holder = grads.setdefault(src.name, {})
            holder[index] = g if index not in holder else holder[index] + g
            return
        if not op.differentiable:
            return
        arrays = [leaf for leaf in _leaves((node.args, node.kwargs)) if _is_array(_resolve(leaf, env))]
        for leaf, gl in zip(arrays, op.backward(g)):
            if isinstance(leaf, Ref) and gl is not None:
                self._give(leaf, gl, grads, env)

    def _give(self, target, g, grads, env):
        if isinstance(target, (tuple, list)):
            for t, gt in zip(target, g):
                self._give(t, gt, grads, env)
            return
        if not isinstance(target, Ref) or g is None:
            return
        prev = grads.get(target.name)
        grads[target.name] = g if prev is None else prev + g

    # -- shapes
    def walk(self, shape, prefix: str = ""):
        """Every layer and merge in order, as ``(name, layer, input_shape, output_shape)``, as
        :meth:`fastconv.layers.Sequential.walk` gives them (shapes without the batch axis).  Operations on
        arrays appear as ``Window``-less steps named by their node."""
        for row in self.trace_shapes(shape):
            yield (prefix + row[0], row[1], row[2], row[3])

    def output_shape(self, shape):
        """The output's shape for an input of ``shape`` (no batch axis), by the layers' size rules."""
        rows = self.trace_shapes(shape)
        return rows[-1][3] if rows else tuple(shape)

    def param_count(self) -> int:
        return sum(p.data.size for p in self.parameters())

    def macs(self, shape) -> int:
        return sum(row[1].macs(row[2]) for row in self.trace_shapes(shape))

    def trace_shapes(self, shape):
        """Shapes of every node for an input of ``shape`` (no batch axis): ``(label, layer, input shape, output
        shape, inputs, node)`` for each node that makes an array (a layer's label is its path, an operation's its
        node's name), ``inputs`` the names of the array nodes it reads."""
        env = {}
        rows = []
        shape = tuple(shape)
        for node in self.nodes:
            if node.op == "input":
                env[node.name] = _Shape((1, *shape))
                continue
            if node.op == "attr":
                kind, holder, name = self.attrs[node.target]
                value = holder._parameters[name].data if kind == "parameter" else holder._buffers[name]
                env[node.name] = _Shape(value.shape)
                continue
            if node.op == "output":
                continue
            args, kwargs = _resolve(node.args, env), _resolve(node.kwargs, env)
            ins = [leaf.name for leaf in _leaves((node.args, node.kwargs))
                   if isinstance(leaf, Ref) and isinstance(env[leaf.name], _Shape)]  # fmt: skip
            try:
                if node.op == "module":
                    layer = self.get_submodule(node.target)
                    x = args[0]
                    out = _Shape((x[0], *layer.output_shape(tuple(x[1:]))))
                    rows.append((node.target, layer, tuple(x[1:]), tuple(out[1:]), ins, node.name))
                else:
                    out = self._ops[node.name].output_shape(*args, **kwargs)
                    if isinstance(out, _Shape):
                        step = _Merge(node.target) if len(ins) > 1 else _Step(node.target)
                        first = env[ins[0]] if ins else _Shape((1,))
                        rows.append((node.name, step, tuple(first[1:]), tuple(out[1:]), ins, node.name))  # fmt: skip
            except (TypeError, ValueError) as exc:
                where = f" (from {node.line})" if node.line else ""
                raise ValueError(f"{self._describe(node)}{where}: {exc}") from None
            env[node.name] = out
        return rows


class _Step(L.Layer):
    """An operation of a graph in a summary: no parameters, no geometry."""

    def __init__(self, op):
        self.op = op

    def _args(self):
        return repr(self.op)


class _Merge(_Step):
    """An operation of a graph that meets several arrays (a residual sum, a concatenation)."""


def _share(module):
    """A shallow copy of a layer for another call site: the same parameter and buffer dicts, its own call state."""
    import copy

    inst = copy.copy(module)
    return inst
