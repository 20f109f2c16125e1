"""Optimisers: SGD, Adam and AdamW, as torch.optim."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["SGD", "Adam", "AdamW"]


class _Optimizer:
    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        if lr < 0:
            raise ValueError(f"lr must be non-negative, got {lr}")
        self.lr = lr
        self.state: dict[int, dict] = {}

    def zero_grad(self):
        for p in self.params:
            p.grad = None


class SGD(_Optimizer):
    """torch.optim.SGD: momentum, dampening, weight decay and Nesterov."""

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, lr)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        self.momentum, self.dampening, self.weight_decay, self.nesterov = momentum, dampening, weight_decay, nesterov

    def step(self):
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
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay

    def step(self):
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
        self.decoupled = weight_decay

    def step(self):
        if self.decoupled:
            for p in self.params:
                if p.grad is not None:
                    p.data = (p.data * (1 - self.lr * self.decoupled)).astype(p.data.dtype)
        super().step()
