"""Linear, flatten and dropout layers."""

from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from .. import layers as L
from .module import Module, Parameter, _rng, _uniform, check_input

__all__ = ["Dropout", "Dropout2d", "Flatten", "Linear"]


class Dropout(L.Dropout, Module):
    """Zeroes elements with probability p in training and scales the rest by 1/(1-p)."""

    def __init__(self, p=0.5, inplace=False, *, rng=None):
        L.Dropout.__init__(self, p, inplace)  # L.Dropout2d adds nothing to it
        self._init_module()
        self._rng = _rng(rng)

    def _mask_shape(self, x):
        return x.shape

    def forward(self, x):
        x = check_input(self, x, floats=self.training and self.p > 0)
        if not self.training or self.p == 0:
            self._mask = None
            return x
        keep = 1.0 - self.p
        shape = self._mask_shape(x)
        if keep > 0:
            self._mask = (self._rng.random(shape) < keep).astype(x.dtype) / x.dtype.type(keep)
        else:
            self._mask = np.zeros(shape, x.dtype)
        return x * self._mask

    def backward(self, grad_output):
        return grad_output if self._mask is None else grad_output * self._mask


class Dropout2d(L.Dropout2d, Dropout):
    """Zeroes whole channels with probability p in training and scales the rest by 1/(1-p)."""

    def _mask_shape(self, x):
        return x.shape[:-2] + (1, 1)


class Flatten(L.Flatten, Module):
    """Flattens dims start_dim..end_dim (counting the batch axis)."""

    def __init__(self, start_dim=1, end_dim=-1):
        L.Flatten.__init__(self, start_dim, end_dim)
        self._init_module()

    def forward(self, x):
        x = check_input(self, x, floats=False)
        if x.ndim < 1:
            raise ValueError("Flatten: input must have a batch axis, got a 0-D array")
        self._shape = x.shape
        return x.reshape(x.shape[0], *self.output_shape(x.shape[1:]))

    def backward(self, grad_output):
        return np.asarray(grad_output).reshape(self._shape)


class Linear(L.Linear, Module):
    """y = x W^T + b, torch's initialisation."""

    def __init__(self, in_features, out_features, bias=True, *, rng=None, dtype=np.float32):
        L.Linear.__init__(self, in_features, out_features, bias)
        self._init_module()
        rng = _rng(rng)
        bound = 1 / math.sqrt(in_features)
        self.weight = Parameter(_uniform(rng, bound, (out_features, in_features), dtype))
        self._parameters["weight"] = self.weight
        self.bias_param = None
        if bias:
            self.bias_param = Parameter(_uniform(rng, bound, (out_features,), dtype))
            self._parameters["bias"] = self.bias_param

    # Products on fastconv's GEMM and threads (float32/float64), not NumPy's `@`: NumPy's OpenBLAS threads
    # keep spinning after each call and slow the convolutions next to a Linear layer on a small machine.
    @staticmethod
    def _mm(a, b, ta=False, tb=False):
        if a.dtype == b.dtype and a.dtype in (np.float32, np.float64):
            return F._kernel(a.dtype, "matmul")(a, b, ta, tb)
        return (a.T if ta else a) @ (b.T if tb else b)

    def forward(self, x):
        x = check_input(self, x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear: input's last axis must have in_features={self.in_features} values, got shape {x.shape}"
            )
        self._input = x
        x2 = self._input.reshape(-1, self.in_features)
        y = self._mm(x2, self.weight.data, tb=True).reshape(*self._input.shape[:-1], self.out_features)
        return y + self.bias_param.data if self.bias_param is not None else y

    def backward(self, grad_output):
        gy = np.asarray(grad_output)
        x2 = self._input.reshape(-1, self.in_features)
        g2 = np.ascontiguousarray(gy.reshape(-1, self.out_features), dtype=self.weight.data.dtype)
        self.weight.accumulate(self._mm(g2, np.ascontiguousarray(x2, dtype=g2.dtype), ta=True))
        if self.bias_param is not None:
            self.bias_param.accumulate(g2.sum(axis=0))
        return self._mm(g2, self.weight.data).reshape(*gy.shape[:-1], self.in_features)
