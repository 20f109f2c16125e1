"""Element-wise activations, softmax and the identity."""

from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from .. import layers as L
from .._args import as_int
from .module import Module, check_input

__all__ = [
    "ReLU",
    "ReLU6",
    "LeakyReLU",
    "ELU",
    "GELU",
    "Sigmoid",
    "SiLU",
    "Tanh",
    "Hardswish",
    "Identity",
    "Softmax",
    "LogSoftmax",
]


class ReLU(L.ReLU, Module):
    """max(x, 0), NaN kept (as torch); the gradient flows where the output is positive.

    Inside a :class:`Sequential`, a ReLU right after a :class:`BatchNorm2d` or a :class:`Residual` is applied
    by that layer's own pass (forward and backward), which saves a pass over the activations each way; after a
    :class:`Conv2d` the convolution rectifies its output as it writes it (the ReLU's backward is its own).
    """

    def __init__(self, inplace=False):
        L.ReLU.__init__(self, inplace)
        self._init_module()
        self._fused = False

    def forward(self, x):
        self._fused = False
        x = check_input(self, x, floats=False)
        if x.dtype in (np.float32, np.float64):
            self._y = F._kernel(x.dtype, "relu_forward")(x)
        else:
            self._y = np.where(x > 0, x, 0).astype(x.dtype, copy=False)
        return self._y

    def backward(self, grad_output):
        if self._fused:  # the layer before it (a norm, a residual sum) masks the gradient
            return grad_output
        return _relu_grad(grad_output, self._y)


def _add(a, b):
    """a + b: the threaded kernel where both are float arrays of one shape and dtype (a block's two gradient
    paths), NumPy elsewhere."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape == b.shape and a.dtype == b.dtype and a.dtype in (np.float32, np.float64):
        return F._kernel(a.dtype, "add_relu")(np.ascontiguousarray(a), np.ascontiguousarray(b), False)
    return a + b


def _relu_grad(grad_output, y):
    """The gradient through a ReLU whose output was ``y``: zero where ``y <= 0``."""
    g = np.asarray(grad_output)
    if y.dtype in (np.float32, np.float64):
        return F._kernel(y.dtype, "relu_backward")(np.ascontiguousarray(g, dtype=y.dtype), y)
    return np.where(y <= 0, 0, g).astype(g.dtype, copy=False)


class _Elementwise(Module):
    """An activation: ``forward`` keeps what ``_grad`` needs; both keep the input's dtype.  ``_ints``: what an
    integer input does, as torch: ``"keep"`` (ReLU6 clamps integers), ``"float"`` (sigmoid and tanh of integers
    are float32) or ``"refuse"`` (torch has no integer kernel)."""

    _ints = "refuse"

    def forward(self, x):
        x = check_input(self, x, floats=self._ints == "refuse")
        if x.dtype.kind in "biu" and self._ints == "float":
            x = x.astype(np.float32)
        y = self._f(x).astype(x.dtype, copy=False)
        self._x, self._y = x, y
        return y

    def backward(self, grad_output):
        g = np.asarray(grad_output)
        return (g * self._grad(self._x, self._y)).astype(g.dtype, copy=False)


class ReLU6(L.ReLU6, _Elementwise):
    """min(max(x, 0), 6); gradient 1 strictly inside (0, 6), as torch."""

    _ints = "keep"

    def __init__(self, inplace=False):
        L.ReLU6.__init__(self, inplace)
        self._init_module()

    _f = staticmethod(lambda x: np.clip(x, 0, 6))
    _grad = staticmethod(lambda x, y: ((x > 0) & (x < 6)).astype(x.dtype))


class LeakyReLU(L.LeakyReLU, _Elementwise):
    """x for x > 0, negative_slope * x otherwise."""

    def __init__(self, negative_slope=0.01, inplace=False):
        L.LeakyReLU.__init__(self, negative_slope, inplace)
        self._init_module()

    def _f(self, x):
        return np.where(x > 0, x, x * x.dtype.type(self.negative_slope))

    def _grad(self, x, y):
        return np.where(x > 0, x.dtype.type(1), x.dtype.type(self.negative_slope))


class ELU(L.ELU, _Elementwise):
    """x for x > 0, alpha * (exp(x) - 1) otherwise."""

    def __init__(self, alpha=1.0, inplace=False):
        L.ELU.__init__(self, alpha, inplace)
        self._init_module()

    def _f(self, x):
        a = x.dtype.type(self.alpha)
        return np.where(x > 0, x, a * np.expm1(np.minimum(x, 0)))

    def _grad(self, x, y):
        return np.where(x > 0, x.dtype.type(1), y + x.dtype.type(self.alpha))


_exact_erf = np.frompyfunc(math.erf, 1, 1)


def _erf(x, exact=False):
    """erf (NumPy has none): ``math.erf`` element by element when ``exact`` (float64 inputs), else a
    Chebyshev fit of erfc with fractional error below 1.2e-7, enough for float32."""
    if exact:
        return _exact_erf(x).astype(np.float64)
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    # Numerical Recipes' erfc (Chebyshev fit, fractional error < 1.2e-7 everywhere)
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (
        0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))))  # fmt: skip
    erfc = t * np.exp(poly)
    return np.where(x >= 0, 1.0 - erfc, erfc - 1.0)


class GELU(L.GELU, _Elementwise):
    """x * Phi(x) (``approximate='none'``) or its tanh form (``'tanh'``), as torch."""

    def __init__(self, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
        L.GELU.__init__(self, approximate)
        self._init_module()

    _C = math.sqrt(2.0 / math.pi)

    def _f(self, x):
        x64 = x.astype(np.float64)
        if self.approximate == "tanh":
            return 0.5 * x64 * (1.0 + np.tanh(self._C * (x64 + 0.044715 * x64**3)))
        return 0.5 * x64 * (1.0 + _erf(x64 / math.sqrt(2.0), x.dtype == np.float64))

    def _grad(self, x, y):
        x64 = x.astype(np.float64)
        if self.approximate == "tanh":
            inner = self._C * (x64 + 0.044715 * x64**3)
            th = np.tanh(inner)
            return 0.5 * (1 + th) + 0.5 * x64 * (1 - th * th) * self._C * (1 + 3 * 0.044715 * x64 * x64)
        cdf = 0.5 * (1.0 + _erf(x64 / math.sqrt(2.0), x.dtype == np.float64))
        return cdf + x64 * np.exp(-0.5 * x64 * x64) / math.sqrt(2.0 * math.pi)


def _sigmoid(x):
    e = np.exp(-np.abs(x))  # never overflows
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


class Sigmoid(L.Sigmoid, _Elementwise):
    """1 / (1 + exp(-x)), computed without overflow."""

    _ints = "float"

    def __init__(self):
        self._init_module()

    _f = staticmethod(_sigmoid)
    _grad = staticmethod(lambda x, y: y * (1 - y))


class SiLU(L.SiLU, _Elementwise):
    """x * sigmoid(x)."""

    def __init__(self, inplace=False):
        L.SiLU.__init__(self, inplace)
        self._init_module()

    _f = staticmethod(lambda x: x * _sigmoid(x))

    @staticmethod
    def _grad(x, y):
        sg = _sigmoid(x)
        return sg * (1 + x * (1 - sg))


class Tanh(L.Tanh, _Elementwise):
    """tanh(x)."""

    _ints = "float"

    def __init__(self):
        self._init_module()

    _f = staticmethod(np.tanh)
    _grad = staticmethod(lambda x, y: 1 - y * y)


class Hardswish(L.Hardswish, _Elementwise):
    """x * relu6(x + 3) / 6; gradient 0 up to -3, 1 from 3 on, (2x + 3) / 6 strictly between, as torch."""

    def __init__(self, inplace=False):
        L.Hardswish.__init__(self, inplace)
        self._init_module()

    _f = staticmethod(lambda x: x * np.clip(x + 3, 0, 6) / 6)
    _grad = staticmethod(lambda x, y: np.where(x <= -3, 0, np.where(x < 3, (2 * x + 3) / 6, 1)).astype(x.dtype))


class Identity(L.Identity, Module):
    """Returns its input (``torch.nn.Identity``)."""

    def __init__(self, *args, **kwargs):
        self._init_module()

    def forward(self, x):
        return x

    def backward(self, grad_output):
        return grad_output


def _softmax_input(layer, x):
    x = check_input(layer, x)
    if not -max(x.ndim, 1) <= layer.dim < max(x.ndim, 1):
        raise ValueError(f"{type(layer).__name__}: dim={layer.dim} is out of range for a {x.ndim}-D input of shape "
                         f"{x.shape}")  # fmt: skip
    return x


class Softmax(L.Softmax, Module):
    """softmax along ``dim`` (required: torch's implicit choice is deprecated)."""

    def __init__(self, dim=None):
        if dim is None:
            raise ValueError("Softmax: give dim (torch's implicit dim is deprecated)")
        L.Softmax.__init__(self, as_int(dim, "dim"))
        self._init_module()

    def forward(self, x):
        x = _softmax_input(self, x)
        z = x - x.max(axis=self.dim, keepdims=True)
        e = np.exp(z)
        self._y = (e / e.sum(axis=self.dim, keepdims=True)).astype(x.dtype)
        return self._y

    def backward(self, grad_output):
        g = np.asarray(grad_output)
        y = self._y
        return (y * (g - (g * y).sum(axis=self.dim, keepdims=True))).astype(g.dtype)


class LogSoftmax(L.LogSoftmax, Module):
    """log(softmax) along ``dim``, computed without overflow."""

    def __init__(self, dim=None):
        if dim is None:
            raise ValueError("LogSoftmax: give dim (torch's implicit dim is deprecated)")
        L.LogSoftmax.__init__(self, as_int(dim, "dim"))
        self._init_module()

    def forward(self, x):
        x = _softmax_input(self, x)
        z = x - x.max(axis=self.dim, keepdims=True)
        self._y = (z - np.log(np.exp(z).sum(axis=self.dim, keepdims=True))).astype(x.dtype)
        return self._y

    def backward(self, grad_output):
        g = np.asarray(grad_output)
        return (g - np.exp(self._y) * g.sum(axis=self.dim, keepdims=True)).astype(g.dtype)
