"""Batch, group and layer normalisation."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import layers as L
from .module import Module, Parameter, check_input

__all__ = ["BatchNorm2d", "GroupNorm", "LayerNorm"]


class BatchNorm2d(L.BatchNorm2d, Module):
    """Batch normalisation over (N, H, W) per channel, torch's running statistics.

    In training the batch's biased variance normalises and its unbiased variance
    updates ``running_var``; ``momentum=None`` gives a cumulative average.
    """

    def __init__(
        self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, *, dtype=np.float32
    ):
        L.BatchNorm2d.__init__(self, num_features, eps, momentum, affine, track_running_stats)
        self._init_module()
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype))
            self.bias_param = Parameter(np.zeros(num_features, dtype))
            self._parameters["weight"] = self.weight
            self._parameters["bias"] = self.bias_param
        if track_running_stats:
            self._buffers["running_mean"] = np.zeros(num_features, dtype)
            self._buffers["running_var"] = np.ones(num_features, dtype)
            self._buffers["num_batches_tracked"] = np.array(0, np.int64)

    def forward(self, x, relu=False):
        """Normalise (and, with ``relu``, apply a following ReLU in the same pass)."""
        x = check_input(self, x)
        if x.ndim != 4 or x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm2d: expected input (N, {self.num_features}, H, W), got shape {x.shape}")
        x = np.ascontiguousarray(x)
        use_batch = self.training or not self.track_running_stats
        if use_batch and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            raise ValueError(f"BatchNorm2d: batch statistics need more than 1 value per channel (as torch), got input "
                             f"shape {x.shape}")  # fmt: skip
        if use_batch:
            mean, var = F._kernel(x.dtype, "batch_norm_stats")(x)  # float64, one pass
            if self.training and self.track_running_stats:
                n = x.size // x.shape[1]
                b = self._buffers
                b["num_batches_tracked"] = b["num_batches_tracked"] + 1
                m = 1.0 / float(b["num_batches_tracked"]) if self.momentum is None else self.momentum
                unbiased = var * n / max(n - 1, 1)
                b["running_mean"] = ((1 - m) * b["running_mean"] + m * mean).astype(b["running_mean"].dtype)
                b["running_var"] = ((1 - m) * b["running_var"] + m * unbiased).astype(b["running_var"].dtype)
        else:
            mean = self._buffers["running_mean"].astype(np.float64)
            var = self._buffers["running_var"].astype(np.float64)
        inv_std = 1.0 / np.sqrt(var + self.eps)
        gamma = self.weight.data.astype(np.float64) if self.affine else 1.0
        beta = self.bias_param.data.astype(np.float64) if self.affine else 0.0
        scale = np.asarray(gamma * inv_std, x.dtype)
        shift = np.asarray(beta - mean * gamma * inv_std, x.dtype)
        y = F._kernel(x.dtype, "channel_affine")(x, scale, shift, bool(relu))
        self._cache = (x, mean, inv_std, use_batch, y if relu else None)
        return y

    def backward(self, grad_output):
        x, mean, inv_std, use_batch, relu_out = self._cache
        gy = np.ascontiguousarray(grad_output, dtype=x.dtype)
        gamma = self.weight.data if self.affine else None
        gx, dgamma, dbeta = F._kernel(x.dtype, "batch_norm_backward")(
            gy, x, relu_out, mean, inv_std, gamma, bool(use_batch), True
        )
        if self.affine:
            self.weight.accumulate(dgamma.astype(self.weight.data.dtype, copy=False))
            self.bias_param.accumulate(dbeta.astype(self.bias_param.data.dtype, copy=False))
        return gx


def _norm_backward(g, xhat, inv_std, axes):
    """Gradient through x -> (x - mean) * inv_std over `axes` (batch statistics), in float64."""
    m = np.prod([xhat.shape[a] for a in axes])
    mean_g = g.sum(axis=axes, keepdims=True) / m
    mean_gx = (g * xhat).sum(axis=axes, keepdims=True) / m
    return (g - mean_g - xhat * mean_gx) * inv_std


class GroupNorm(L.GroupNorm, Module):
    """torch.nn.GroupNorm: statistics per sample over each group of channels and the spatial axes."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, *, dtype=np.float32):
        L.GroupNorm.__init__(self, num_groups, num_channels, eps, affine)
        self._init_module()
        if affine:
            self.weight = Parameter(np.ones(num_channels, dtype))
            self.bias_param = Parameter(np.zeros(num_channels, dtype))
            self._parameters["weight"] = self.weight
            self._parameters["bias"] = self.bias_param

    def forward(self, x):
        x = check_input(self, x)
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"GroupNorm: expected input (N, {self.num_channels}, ...), got shape {x.shape}")
        n = x.shape[0]
        per_group = int(np.prod(x.shape[1:])) // self.num_groups
        if n * per_group == 1:
            raise ValueError(f"GroupNorm: statistics need more than 1 value per group (as torch), got input shape "
                             f"{x.shape}")  # fmt: skip
        xg = x.astype(np.float64).reshape(n, self.num_groups, per_group)
        if xg.size:
            mean = xg.mean(axis=2, keepdims=True)
            inv_std = 1.0 / np.sqrt(xg.var(axis=2, keepdims=True) + self.eps)
        else:  # an empty batch or empty planes: an empty result, as torch (no statistics of nothing)
            mean = inv_std = np.zeros(xg.shape[:2] + (1,))
        xhat = (xg - mean) * inv_std
        self._cache = (xhat, inv_std, x.shape, x.dtype)
        y = xhat.reshape(x.shape)
        if self.affine:
            shape = (1, -1) + (1,) * (x.ndim - 2)
            y = y * self.weight.data.reshape(shape) + self.bias_param.data.reshape(shape)
        return y.astype(x.dtype)

    def backward(self, grad_output):
        xhat, inv_std, shape, dtype = self._cache
        g = np.asarray(grad_output, np.float64)
        bshape = (1, -1) + (1,) * (len(shape) - 2)
        red = (0,) + tuple(range(2, len(shape)))
        if self.affine:
            self.weight.accumulate((g * xhat.reshape(shape)).sum(axis=red).astype(self.weight.data.dtype))
            self.bias_param.accumulate(g.sum(axis=red).astype(self.bias_param.data.dtype))
            g = g * self.weight.data.reshape(bshape)
        gx = _norm_backward(g.reshape(xhat.shape), xhat, inv_std, (2,))
        return gx.reshape(shape).astype(dtype)


class LayerNorm(L.LayerNorm, Module):
    """torch.nn.LayerNorm: statistics over the trailing ``normalized_shape`` dimensions."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, *, dtype=np.float32):
        L.LayerNorm.__init__(self, normalized_shape, eps, elementwise_affine)
        self._init_module()
        if elementwise_affine:
            self.weight = Parameter(np.ones(self.normalized_shape, dtype))
            self.bias_param = Parameter(np.zeros(self.normalized_shape, dtype))
            self._parameters["weight"] = self.weight
            self._parameters["bias"] = self.bias_param

    def forward(self, x):
        x = check_input(self, x)
        k = len(self.normalized_shape)
        if tuple(x.shape[-k:]) != self.normalized_shape:
            raise ValueError(f"LayerNorm: input's trailing shape must be {self.normalized_shape}, got {x.shape}")
        axes = tuple(range(x.ndim - k, x.ndim))
        x64 = x.astype(np.float64)
        mean = x64.mean(axis=axes, keepdims=True)
        inv_std = 1.0 / np.sqrt(x64.var(axis=axes, keepdims=True) + self.eps)
        xhat = (x64 - mean) * inv_std
        self._cache = (xhat, inv_std, axes, x.dtype)
        y = xhat * self.weight.data + self.bias_param.data if self.elementwise_affine else xhat
        return y.astype(x.dtype)

    def backward(self, grad_output):
        xhat, inv_std, axes, dtype = self._cache
        g = np.asarray(grad_output, np.float64)
        if self.elementwise_affine:
            lead = tuple(range(g.ndim - len(axes)))
            self.weight.accumulate((g * xhat).sum(axis=lead).astype(self.weight.data.dtype))
            self.bias_param.accumulate(g.sum(axis=lead).astype(self.bias_param.data.dtype))
            g = g * self.weight.data
        return _norm_backward(g, xhat, inv_std, axes).astype(dtype)
