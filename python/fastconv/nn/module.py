"""The base of every fastconv.nn layer: parameters, buffers, train/eval mode and state dicts."""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict

import numpy as np

__all__ = ["Parameter", "Module"]

# -- refusals that name the layer -----------------------------------------------------------------------------------
#
# Every subclass's forward and backward are wrapped (Module.__init_subclass__): a ValueError or TypeError leaving a
# layer is re-raised naming that layer's class; when it reaches the outermost call (a model's forward, run by the
# user), the message also names the layer's path inside the model (``Sequential layer '3.conv1' (Conv2d): ...``).
# The outermost backward also refuses to run before a forward or twice after one.

_calls = threading.local()


def _retyped(exc, text):
    try:
        new = type(exc)(text)
    except Exception:  # noqa: BLE001 - an exception class with its own constructor
        new = (TypeError if isinstance(exc, TypeError) else ValueError)(text)
    return new


def _named(exc, module, outermost):
    culprit = getattr(exc, "_fastconv_layer", None)
    if culprit is None:
        name = type(module).__name__
        text = str(exc) if exc.args else type(exc).__name__
        if not text.startswith(name):
            text = f"{name}: {text}"
        new = _retyped(exc, text)
        new._fastconv_layer, new._fastconv_text = module, text
        exc, culprit = new, module
    if outermost and culprit is not module:
        path = next((p for p, m in module.named_modules() if m is culprit), None)
        if path:
            new = _retyped(exc, f"{type(module).__name__} layer {path!r} ({exc._fastconv_text})")
            new._fastconv_layer, new._fastconv_text = culprit, exc._fastconv_text
            exc = new
    return exc


def _guard(fn, kind):
    @functools.wraps(fn)
    def guarded(self, *args, **kwargs):
        depth = getattr(_calls, kind, 0)
        if kind == "backward" and depth == 0:
            passes = self.__dict__.get("_passes")
            name = type(self).__name__
            if passes is None:
                raise ValueError(f"{name}.backward: called before forward (there is nothing to differentiate)")
            if passes == "backward":
                raise ValueError(
                    f"{name}.backward: called twice after one forward; run forward again first (torch refuses "
                    "this too, without retain_graph=True)"
                )
        setattr(_calls, kind, depth + 1)
        try:
            out = fn(self, *args, **kwargs)
        except (ValueError, TypeError) as exc:
            raise _named(exc, self, depth == 0) from None
        finally:
            setattr(_calls, kind, depth)
        self.__dict__["_passes"] = kind
        return out

    guarded._fastconv_guarded = True
    return guarded


def check_input(layer, x, name="input", *, ranks=None, floats=True):
    """``x`` as a NumPy array, refused as torch refuses it, with messages that name ``layer`` (a layer or a loss).

    ``None`` and objects NumPy cannot make a numeric array of raise TypeError; so do integer and bool arrays
    when ``floats`` (torch has no integer kernel for the layer), and float16 always (a deliberate difference).
    ``ranks``: the accepted numbers of axes.
    """
    if x is None:
        raise TypeError(f"{type(layer).__name__}: {name} must be an array, got None")
    arr = x if isinstance(x, np.ndarray) else np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{type(layer).__name__}: {name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.dtype == np.float16:
        raise TypeError(
            f"{type(layer).__name__}: {name} has dtype float16; float16 is refused on purpose (fastconv computes in "
            "float32 and float64; cast with .astype(np.float32))"
        )
    if floats and arr.dtype.kind != "f":
        raise TypeError(
            f"{type(layer).__name__}: {name} must be float32 or float64 (torch's layer has no {arr.dtype} kernel "
            f"either), got dtype {arr.dtype}"
        )
    if ranks is not None and arr.ndim not in ranks:
        want = " or ".join(f"{r}-D" for r in ranks)
        raise ValueError(f"{type(layer).__name__}: {name} must be {want}, got shape {arr.shape} ({arr.ndim}-D)")
    return arr


class Parameter:
    """A trainable array and its accumulated gradient."""

    def __init__(self, data: np.ndarray):
        self.data = np.ascontiguousarray(data)
        self.grad: np.ndarray | None = None

    def accumulate(self, grad: np.ndarray) -> None:
        self.grad = grad if self.grad is None else self.grad + grad

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


def _rng(rng):
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _uniform(rng, bound, shape, dtype):
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


class Module:
    """Base of the NumPy layers: parameters, buffers, train/eval and state dicts."""

    training = True

    # What a forward keeps for its backward (inputs, outputs, masks, a graph's values): left out when a model is
    # copied or pickled, so a copy of a model that has just run on a large image does not carry its activations.
    _TRANSIENT = frozenset({"_input", "_x", "_y", "_mask", "_cache", "_indices", "_arg", "_relu_out", "_values",
                            "_a", "_b", "_passes"})  # fmt: skip

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in self._TRANSIENT}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for kind in ("forward", "backward"):
            fn = cls.__dict__.get(kind)
            if callable(fn) and not getattr(fn, "_fastconv_guarded", False):
                setattr(cls, kind, _guard(fn, kind))

    def _init_module(self):
        self._parameters: OrderedDict[str, Parameter] = OrderedDict()
        self._buffers: OrderedDict[str, np.ndarray] = OrderedDict()
        self.training = True

    # -- structure
    def named_modules(self, prefix=""):
        """``(name, module)`` for this module (named ``prefix``) and every one inside it, named as torch names
        them (``"3.conv1"``; the model itself ``""``)."""
        for dotted, module in self._dotted_modules(prefix + "." if prefix else ""):
            yield dotted[:-1], module

    def _dotted_modules(self, prefix):
        """named_modules with each name ending in ``"."`` (``""`` for the root): prefixes of state_dict keys."""
        yield prefix, self
        for name, child in self.children():
            yield from child._dotted_modules(f"{prefix}{name}.")

    def named_parameters(self):
        for prefix, module in self._dotted_modules(""):
            for name, p in getattr(module, "_parameters", {}).items():
                yield prefix + name, p

    def parameters(self) -> list[Parameter]:
        """Trainable parameters, in torch's ``model.parameters()`` order."""
        return [p for _, p in self.named_parameters()]

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True) -> Module:
        for _, module in self.named_modules():
            module.training = mode
        return self

    def eval(self) -> Module:
        return self.train(False)

    # -- state
    def state_dict(self) -> OrderedDict:
        """Parameters and buffers as NumPy arrays, keyed as torch keys them."""
        out = OrderedDict()
        for prefix, module in self._dotted_modules(""):
            for name, p in getattr(module, "_parameters", {}).items():
                out[prefix + name] = p.data.copy()
            for name, b in getattr(module, "_buffers", {}).items():
                out[prefix + name] = np.array(b, copy=True)
        return out

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Load arrays (NumPy, or anything ``np.asarray`` takes) by torch-style keys.

        Every entry is checked before any is loaded (a refused call leaves the model as it was): shapes must
        match; values are cast to each parameter's dtype, as torch's ``copy_`` casts; non-numeric ones are
        refused.
        """
        name = type(self).__name__
        if not hasattr(state, "keys") or not hasattr(state, "__getitem__"):
            raise TypeError(f"{name}.load_state_dict: state must be a mapping of names to arrays, got "
                            f"{type(state).__name__}")  # fmt: skip
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise ValueError(
                f"{name}.load_state_dict: state_dict mismatch: missing keys {missing}, unexpected keys {unexpected}"
            )
        staged = []
        for prefix, module in self._dotted_modules(""):
            for kind, table in (
                ("parameter", getattr(module, "_parameters", {})),
                ("buffer", getattr(module, "_buffers", {})),
            ):
                for key, current in table.items():
                    if prefix + key not in state:
                        continue
                    old = current.data if kind == "parameter" else np.asarray(current)
                    value = np.asarray(state[prefix + key])
                    if value.dtype.kind not in "biuf":
                        raise TypeError(
                            f"{name}.load_state_dict: state_dict[{prefix + key!r}] must be a real numeric array, got "
                            f"dtype {value.dtype}"
                        )
                    if value.shape != old.shape:
                        raise ValueError(
                            f"{name}.load_state_dict: state_dict[{prefix + key!r}]: expected shape {old.shape}, got "
                            f"{value.shape}"
                        )
                    staged.append((module, kind, key, np.array(value, dtype=old.dtype, order="C")))
        for module, kind, key, value in staged:
            if kind == "parameter":
                module._parameters[key].data = value
            else:
                module._buffers[key] = value

    def save(self, path) -> None:
        """Write the state dict to an ``.npz`` file."""
        np.savez(path, **self.state_dict())

    def load(self, path) -> None:
        """Read a state dict written by :meth:`save`."""
        with np.load(path) as data:
            self.load_state_dict({k: data[k] for k in data.files})

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, x):  # pragma: no cover - overridden
        raise NotImplementedError

    def backward(self, grad_output):  # pragma: no cover - overridden
        raise NotImplementedError
