"""Losses: cross-entropy, mean squared error, binary cross-entropy with logits."""

from __future__ import annotations

import numpy as np

__all__ = ["CrossEntropyLoss", "MSELoss", "BCEWithLogitsLoss"]


class CrossEntropyLoss:
    """Softmax cross-entropy over class logits ``(N, C)`` and integer targets ``(N,)``."""

    def __init__(self, reduction="mean"):
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction

    def __call__(self, logits, target):
        return self.forward(logits, target)

    def forward(self, logits, target) -> float:
        z = np.asarray(logits)
        t = np.asarray(target)
        if z.ndim != 2 or t.shape != (z.shape[0],):
            raise ValueError(f"CrossEntropyLoss expects logits (N, C) and target (N,), got {z.shape}, {t.shape}")
        if t.size and (t.min() < 0 or t.max() >= z.shape[1]):
            raise ValueError(f"target values must be in [0, {z.shape[1]}), got range {t.min()}..{t.max()}")
        shifted = z - z.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        self._cache = (np.exp(log_probs), t)
        loss = -log_probs[np.arange(len(t)), t].sum()
        return float(loss / len(t) if self.reduction == "mean" else loss)

    def backward(self) -> np.ndarray:
        """Gradient of the last loss with respect to the logits."""
        probs, t = self._cache
        grad = probs.copy()
        grad[np.arange(len(t)), t] -= 1
        return grad / len(t) if self.reduction == "mean" else grad


def _reduction(reduction):
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    return reduction


class MSELoss:
    """Mean (or summed) squared error; ``backward()`` gives the gradient with respect to the input."""

    def __init__(self, reduction="mean"):
        self.reduction = _reduction(reduction)

    def __call__(self, input, target):
        return self.forward(input, target)

    def forward(self, input, target) -> float:
        x, t = np.asarray(input), np.asarray(target)
        if x.shape != t.shape:
            raise ValueError(f"MSELoss: input {x.shape} and target {t.shape} must have one shape")
        d = x.astype(np.float64) - t
        self._cache = (d, x.dtype)
        total = float((d * d).sum())
        return total / d.size if self.reduction == "mean" else total

    def backward(self) -> np.ndarray:
        d, dtype = self._cache
        g = 2 * d
        return (g / d.size if self.reduction == "mean" else g).astype(dtype)


class BCEWithLogitsLoss:
    """Binary cross-entropy on logits, computed stably (``max(z, 0) - z t + log(1 + exp(-|z|))``);
    ``pos_weight`` scales the positive term, as torch."""

    def __init__(self, reduction="mean", pos_weight=None):
        self.reduction = _reduction(reduction)
        self.pos_weight = None if pos_weight is None else np.asarray(pos_weight, np.float64)

    def __call__(self, input, target):
        return self.forward(input, target)

    def forward(self, input, target) -> float:
        z, t = np.asarray(input), np.asarray(target, np.float64)
        if z.shape != t.shape:
            raise ValueError(f"BCEWithLogitsLoss: input {z.shape} and target {t.shape} must have one shape")
        z64 = z.astype(np.float64)
        softplus_neg = np.logaddexp(0.0, -z64)  # log(1 + exp(-z))
        w = 1.0 if self.pos_weight is None else self.pos_weight
        loss = w * t * softplus_neg + (1 - t) * (z64 + softplus_neg)
        self._cache = (z64, t, w, z.dtype)
        total = float(loss.sum())
        return total / loss.size if self.reduction == "mean" else total

    def backward(self) -> np.ndarray:
        z, t, w, dtype = self._cache
        s = 1.0 / (1.0 + np.exp(-z))
        g = (1 - t) * s - w * t * (1 - s)
        return (g / z.size if self.reduction == "mean" else g).astype(dtype)
