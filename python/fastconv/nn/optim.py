"""Optimisers: SGD, Adam and AdamW, as torch.optim."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["SGD", "Adam", "AdamW"]


def _number(value, name, owner, minimum=0.0):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{owner}: {name} must be a number, got {type(value).__name__} {value!r}")
    if not (value >= minimum and math.isfinite(value)):
        raise ValueError(f"{owner}: {name} must be a finite number >= {minimum:g}, got {value!r}")
    return float(value)


class _Optimizer:
    def __init__(self, params, lr):
        from .module import Parameter

        name = type(self).__name__
        if isinstance(params, (np.ndarray, Parameter)) or not hasattr(params, "__iter__"):
            raise TypeError(f"{name}: params must be an iterable of Parameters (model.parameters()), got "
                            f"{type(params).__name__}")  # fmt: skip
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{name}: got an empty parameter list")
        for i, p in enumerate(self.params):
            if not isinstance(p, Parameter):
                raise TypeError(f"{name}: params[{i}] must be a fastconv.nn Parameter, got {type(p).__name__}")
        self.lr = _number(lr, "lr", name)
        self.state: dict[int, dict] = {}

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def _checked_grads(self):
        """Every gradient checked before any parameter changes (a refused step changes none); torch skips
        parameters without one, and so does this."""
        name = type(self).__name__
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad
            if not isinstance(g, np.ndarray) or g.dtype.kind not in "fiu":
                got = f"{type(g).__name__} of {g.dtype}" if isinstance(g, np.ndarray) else type(g).__name__
                raise TypeError(f"{name}.step: params[{i}].grad must be a real NumPy array, got {got}")
            if g.shape != p.data.shape:
                raise ValueError(
                    f"{name}.step: params[{i}].grad has shape {g.shape}, but the parameter has shape {p.data.shape}"
                )


class SGD(_Optimizer):
    """torch.optim.SGD: momentum, dampening, weight decay and Nesterov."""

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, lr)
        momentum = _number(momentum, "momentum", "SGD")
        dampening = _number(dampening, "dampening", "SGD", minimum=-math.inf)
        weight_decay = _number(weight_decay, "weight_decay", "SGD")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum requires a momentum and zero dampening")
        self.momentum, self.dampening, self.weight_decay, self.nesterov = momentum, dampening, weight_decay, nesterov

    def step(self):
        self._checked_grads()
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            d = p.grad + self.weight_decay * p.data if self.weight_decay else p.grad
            if self.momentum:
                buf = self.state.get(i)
                buf = d.copy() if buf is None else self.momentum * buf + (1 - self.dampening) * d
                self.state[i] = buf
                d = d + self.momentum * buf if self.nesterov else buf
            p.data = (p.data - self.lr * d).astype(p.data.dtype)


class Adam(_Optimizer):
    """torch.optim.Adam (L2 weight decay added to the gradient, as torch does)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        name = type(self).__name__
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{name}: betas must be two numbers, got {betas!r}")
        b1, b2 = (_number(b, "betas", name) for b in betas)
        if not (b1 < 1 and b2 < 1):
            raise ValueError(f"{name}: betas must be in [0, 1), got {betas!r}")
        self.betas = (b1, b2)
        self.eps = _number(eps, "eps", name)
        self.weight_decay = _number(weight_decay, "weight_decay", name)

    def step(self):
        self._checked_grads()
        b1, b2 = self.betas
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad + self.weight_decay * p.data if self.weight_decay else p.grad
            st = self.state.setdefault(i, {"t": 0, "m": np.zeros_like(p.data), "v": np.zeros_like(p.data)})
            st["t"] += 1
            st["m"] = b1 * st["m"] + (1 - b1) * g
            st["v"] = b2 * st["v"] + (1 - b2) * g * g
            c1, c2 = 1 - b1 ** st["t"], 1 - b2 ** st["t"]
            denom = np.sqrt(st["v"]) / math.sqrt(c2) + self.eps
            p.data = (p.data - (self.lr / c1) * st["m"] / denom).astype(p.data.dtype)


class AdamW(Adam):
    """torch.optim.AdamW: decoupled weight decay (``p -= lr * weight_decay * p``), then Adam's step."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, 0.0)
        self.decoupled = _number(weight_decay, "weight_decay", "AdamW")

    def step(self):
        self._checked_grads()
        if self.decoupled:
            for p in self.params:
                if p.grad is not None:
                    p.data = (p.data * (1 - self.lr * self.decoupled)).astype(p.data.dtype)
        super().step()
