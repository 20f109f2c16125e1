"""The base of every fastconv.nn layer: parameters, buffers, train/eval mode and state dicts."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

__all__ = ["Parameter", "Module"]


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
        """Load arrays (NumPy, or anything ``np.asarray`` takes) by torch-style keys."""
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise ValueError(f"state_dict mismatch: missing keys {missing}, unexpected keys {unexpected}")
        for prefix, module in self._dotted_modules(""):
            for name, p in getattr(module, "_parameters", {}).items():
                if prefix + name in state:
                    value = np.asarray(state[prefix + name])
                    if value.shape != p.data.shape:
                        raise ValueError(
                            f"state_dict[{prefix + name!r}]: expected shape {p.data.shape}, got {value.shape}"
                        )
                    p.data = np.ascontiguousarray(value, dtype=p.data.dtype)
            for name, b in getattr(module, "_buffers", {}).items():
                if prefix + name in state:
                    module._buffers[name] = np.array(state[prefix + name], dtype=np.asarray(b).dtype)

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
