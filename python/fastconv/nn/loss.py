"""Losses: cross-entropy, mean squared error, binary cross-entropy with logits."""

from __future__ import annotations

import numpy as np

from .module import check_input

__all__ = ["CrossEntropyLoss", "MSELoss", "BCEWithLogitsLoss"]


class CrossEntropyLoss:
    """Softmax cross-entropy, as ``torch.nn.CrossEntropyLoss``: logits ``(N, C)``, ``(C,)`` or ``(N, C, d1, ...)``
    (per pixel, for segmentation), with integer class targets ``(N,)``, ``()`` or ``(N, d1, ...)``, or float class
    probabilities of the logits' shape."""

    def __init__(self, reduction="mean"):
        if reduction not in ("mean", "sum"):
            raise ValueError(f"CrossEntropyLoss: reduction must be 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction

    def __call__(self, logits, target):
        return self.forward(logits, target)

    def forward(self, logits, target) -> float:
        z = check_input(self, logits, "input")
        t = check_input(self, target, "target", floats=False)
        if z.ndim == 0:
            raise ValueError(f"CrossEntropyLoss: input must be (N, C), (C,) or (N, C, d1, ...), got shape {z.shape}")
        unbatched = z.ndim == 1
        if unbatched:
            z, t = z[None], t[None]
        c = z.shape[1]
        z2 = np.moveaxis(z, 1, -1).reshape(-1, c)  # one row of class logits per sample (and pixel)
        if t.dtype.kind == "f":  # class probabilities
            if t.shape != z.shape:
                raise ValueError(f"CrossEntropyLoss: probability targets must have the input's shape {z.shape}, "
                                 f"got {t.shape}")  # fmt: skip
            t2 = np.moveaxis(t, 1, -1).reshape(-1, c).astype(np.float64)
        else:
            want = (z.shape[0], *z.shape[2:])
            if t.shape != want:
                raise ValueError(f"CrossEntropyLoss: class targets must have shape {want[1:] if unbatched else want} "
                                 f"for input of shape {z.shape[1:] if unbatched else z.shape}, got "
                                 f"{t.shape[1:] if unbatched else t.shape}")  # fmt: skip
            t2 = t.reshape(-1)
            if t2.size and (t2.min() < 0 or t2.max() >= c):
                raise ValueError(f"CrossEntropyLoss: target classes must be in [0, {c}), got range "
                                 f"{t2.min()}..{t2.max()}")  # fmt: skip
        shifted = z2 - z2.max(axis=1, keepdims=True) if z2.size else z2
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        rows = z2.shape[0]
        if t2.ndim == 2:
            loss = -(t2 * log_probs).sum()
        else:
            loss = -log_probs[np.arange(rows), t2].sum()
        self._cache = (np.exp(log_probs), t2, z.shape, z.dtype, unbatched)
        if self.reduction == "sum":
            return float(loss)
        return float(loss) / rows if rows else float("nan")

    def backward(self) -> np.ndarray:
        """Gradient of the last loss with respect to the logits."""
        probs, t, shape, dtype, unbatched = self._cache
        grad = probs.copy()
        if t.ndim == 2:
            grad -= t
        else:
            grad[np.arange(len(t)), t] -= 1
        if self.reduction == "mean" and len(grad):
            grad /= len(grad)
        moved = (shape[0], *shape[2:], shape[1])
        grad = np.moveaxis(grad.reshape(moved), -1, 1).astype(dtype)
        return grad[0] if unbatched else grad


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
        x, t = check_input(self, input, "input"), check_input(self, target, "target", floats=False)
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
        z = check_input(self, input, "input")
        t = check_input(self, target, "target").astype(np.float64)
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
