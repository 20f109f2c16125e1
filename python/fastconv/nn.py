"""NumPy layers with forward and backward passes, losses and optimisers.

Each layer subclasses its :mod:`fastconv.layers` description, so geometry,
output shapes and parameter counts are defined once.  Parameters are NumPy
arrays named as in torch, so ``load_state_dict`` accepts a torch ``state_dict``
converted with ``{k: v.numpy() for k, v in sd.items()}``.

Examples
--------
>>> import numpy as np
>>> from fastconv import nn
>>> rng = np.random.default_rng(0)
>>> model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
...                       nn.Flatten(), nn.Linear(4 * 4 * 4, 10, rng=rng))
>>> x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
>>> loss_fn = nn.CrossEntropyLoss()
>>> loss = loss_fn(model(x), np.array([3, 7]))
>>> grad_input = model.backward(loss_fn.backward())
>>> grad_input.shape, model[0].weight.grad.shape
((2, 1, 8, 8), (4, 1, 3, 3))
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from . import functional as F
from . import layers as L
from ._args import as_int
from ._resample import interpolate, interpolate_backward

__all__ = [
    "Parameter",
    "Module",
    "Conv2d",
    "ConvTranspose2d",
    "MaxPool2d",
    "MaxUnpool2d",
    "Upsample",
    "AvgPool2d",
    "BatchNorm2d",
    "ReLU",
    "ReLU6",
    "LeakyReLU",
    "ELU",
    "GELU",
    "SiLU",
    "Sigmoid",
    "Tanh",
    "Hardswish",
    "Identity",
    "AdaptiveAvgPool2d",
    "Residual",
    "Concat",
    "AdaptiveMaxPool2d",
    "ZeroPad2d",
    "Dropout2d",
    "GroupNorm",
    "LayerNorm",
    "Softmax",
    "LogSoftmax",
    "MSELoss",
    "BCEWithLogitsLoss",
    "Dropout",
    "Flatten",
    "Linear",
    "Sequential",
    "CrossEntropyLoss",
    "SGD",
    "Adam",
    "AdamW",
    "from_torch",
    "fold_batch_norm",
    "freeze",
    "FrozenConv2d",
    "FrozenModel",
]


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
        yield prefix, self
        for name, child in self.children():
            yield from child.named_modules(f"{prefix}{name}.")

    def named_parameters(self):
        for prefix, module in self.named_modules():
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
        for prefix, module in self.named_modules():
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
        for prefix, module in self.named_modules():
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

    def __call__(self, *args):
        return self.forward(*args)

    def forward(self, x):  # pragma: no cover - overridden
        raise NotImplementedError

    def backward(self, grad_output):  # pragma: no cover - overridden
        raise NotImplementedError


class _ConvLayer(Module):
    """Weight/bias creation, forward and backward shared by the two convolution layers.

    Subclasses set ``_forward``/``_backward`` (functional ops) and ``_geom()``.
    """

    def _make_params(self, weight_shape, fan_in, bias, n_out, rng, dtype):
        self._init_module()
        rng = _rng(rng)
        bound = 1 / math.sqrt(fan_in)  # torch's kaiming_uniform(a=sqrt(5)) and bias rule
        self.weight = Parameter(_uniform(rng, bound, weight_shape, dtype))
        self._parameters["weight"] = self.weight
        self.bias_param = None
        if bias:
            self.bias_param = Parameter(_uniform(rng, bound, (n_out,), dtype))
            self._parameters["bias"] = self.bias_param

    def forward(self, x, **fused):
        """The convolution.  ``fused`` (Conv2d only: ``relu=``, ``residual=``, see :func:`fastconv.conv2d`)
        finishes the output in the pass that writes it; backward is unchanged, since the convolution keeps
        its input and a fused ReLU's gradient mask is the caller's."""
        self._input = x
        bias = None if self.bias_param is None else self.bias_param.data
        return type(self)._forward(x, self.weight.data, bias, *self._geom(), **fused)

    def backward(self, grad_output, input_grad=True):
        """Accumulates the parameter gradients; returns the input gradient (None with ``input_grad=False``)."""
        if type(self)._backward is F.conv2d_backward:
            mask = (bool(input_grad), True, self.bias_param is not None)
            gx, gw, gb = F.conv2d_backward(grad_output, self._input, self.weight.data, *self._geom(), output_mask=mask)
        else:
            gx, gw, gb = type(self)._backward(grad_output, self._input, self.weight.data, *self._geom())
        self.weight.accumulate(gw)
        if self.bias_param is not None:
            self.bias_param.accumulate(gb)
        return gx if input_grad else None


class Conv2d(L.Conv2d, _ConvLayer):
    """2-D convolution layer; weights initialised like torch's (Kaiming uniform, a=sqrt(5))."""

    _forward = staticmethod(F.conv2d)
    _backward = staticmethod(F.conv2d_backward)

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        bias=True,
        *,
        rng=None,
        dtype=np.float32,
    ):
        L.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        kh, kw = self.kernel_size
        self._make_params(
            (out_channels, in_channels // groups, kh, kw),
            in_channels // groups * kh * kw,
            bias,
            out_channels,
            rng,
            dtype,
        )

    def _geom(self):
        return self.stride, self.padding, self.dilation, self.groups


class ConvTranspose2d(L.ConvTranspose2d, _ConvLayer):
    """Transposed convolution layer, torch's initialisation (fan-in from weight.shape[1])."""

    _forward = staticmethod(F.conv_transpose2d)
    _backward = staticmethod(F.conv_transpose2d_backward)

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        output_padding=0,
        groups=1,
        bias=True,
        dilation=1,
        *,
        rng=None,
        dtype=np.float32,
    ):
        L.ConvTranspose2d.__init__(
            self, in_channels, out_channels, kernel_size, stride, padding, output_padding, groups, bias, dilation
        )
        kh, kw = self.kernel_size
        self._make_params(
            (in_channels, out_channels // groups, kh, kw),
            out_channels // groups * kh * kw,
            bias,
            out_channels,
            rng,
            dtype,
        )

    def _geom(self):
        return self.stride, self.padding, self.output_padding, self.groups, self.dilation


class MaxPool2d(L.MaxPool2d, Module):
    """Max pooling layer; backward routes gradients to the arg-max positions."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        L.MaxPool2d.__init__(self, kernel_size, stride, padding, dilation, return_indices, ceil_mode)
        self._init_module()

    def _pool(self, x, with_indices):
        return F.max_pool2d(
            x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, return_indices=with_indices
        )

    def forward(self, x):
        self._input = x
        # In eval mode the arg-max positions are found again only if a backward asks for them.
        if self.training or self.return_indices:
            y, self._indices = self._pool(x, True)
        else:
            y, self._indices = self._pool(x, False), None
        return (y, self._indices) if self.return_indices else y

    def backward(self, grad_output):
        if self._indices is None:
            self._indices = self._pool(self._input, True)[1]
        return F.max_pool2d_backward(
            grad_output,
            self._input,
            self._indices,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.ceil_mode,
        )


class MaxUnpool2d(L.MaxUnpool2d, Module):
    """Max unpooling layer: ``forward(x, indices, output_size=None)``, ``backward(grad)``.

    ``indices`` are those a ``MaxPool2d(..., return_indices=True)`` returned; the
    backward gathers the gradient at the same positions.
    """

    def __init__(self, kernel_size, stride=None, padding=0):
        L.MaxUnpool2d.__init__(self, kernel_size, stride, padding)
        self._init_module()

    def forward(self, x, indices, output_size=None):
        self._indices = indices
        return F.max_unpool2d(x, indices, self.kernel_size, self.stride, self.padding, output_size)

    def backward(self, grad_output):
        return F.max_unpool2d_backward(grad_output, self._indices)


class Upsample(L.Upsample, Module):
    """Resampling layer (``fastconv.interpolate``); backward by ``interpolate_backward``."""

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None):
        L.Upsample.__init__(self, size, scale_factor, mode, align_corners)
        self._init_module()

    def _options(self):
        return dict(size=self.size, scale_factor=self.scale_factor, mode=self.mode, align_corners=self.align_corners)

    def forward(self, x):
        self._shape = np.shape(x)
        return interpolate(x, **self._options())

    def backward(self, grad_output):
        return interpolate_backward(grad_output, self._shape, **self._options())


class AvgPool2d(L.AvgPool2d, Module):
    """Average pooling layer."""

    def __init__(
        self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None
    ):
        L.AvgPool2d.__init__(self, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
        self._init_module()

    def _geom(self):
        return (
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )

    def forward(self, x):
        self._input = x
        return F.avg_pool2d(x, *self._geom())

    def backward(self, grad_output):
        return F.avg_pool2d_backward(grad_output, self._input, *self._geom())


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
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm2d: expected input (N, {self.num_features}, H, W), got {x.shape}")
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float32)
        x = np.ascontiguousarray(x)
        use_batch = self.training or not self.track_running_stats
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
        x = np.asarray(x)
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
    """An activation: ``forward`` keeps what ``_grad`` needs; both keep the input's dtype."""

    def forward(self, x):
        x = np.asarray(x)
        y = self._f(x).astype(x.dtype, copy=False)
        self._x, self._y = x, y
        return y

    def backward(self, grad_output):
        g = np.asarray(grad_output)
        return (g * self._grad(self._x, self._y)).astype(g.dtype, copy=False)


class ReLU6(L.ReLU6, _Elementwise):
    """min(max(x, 0), 6); gradient 1 strictly inside (0, 6), as torch."""

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


class AdaptiveAvgPool2d(L.AdaptiveAvgPool2d, Module):
    """torch's adaptive average pool: output bin i covers input [floor(i*H/oh), ceil((i+1)*H/oh))."""

    def __init__(self, output_size):
        L.AdaptiveAvgPool2d.__init__(self, output_size)
        self._init_module()

    @staticmethod
    def _bins(n, m):
        return [((i * n) // m, -((-(i + 1) * n) // m)) for i in range(m)]

    def forward(self, x):
        x = np.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"AdaptiveAvgPool2d: expected (N, C, H, W) input, got shape {x.shape}")
        oh, ow = self.output_shape(x.shape[1:])[1:]
        self._shape = x.shape
        if (oh, ow) == (1, 1):  # global pooling, the common case: one reduction
            # Over each plane as one contiguous row, in the input's dtype: NumPy sums a row pairwise (error
            # ~log2(H*W) roundings, as torch's float32 sum), where a float64 mean over two axes went through a
            # buffered cast at 2 ns a value (0.5 ms of a 20 ms ResNet-8 inference).
            n, c = x.shape[:2]
            flat = np.ascontiguousarray(x).reshape(n, c, -1)
            if flat.dtype not in (np.float32, np.float64):
                flat = flat.astype(np.float64)
            return (flat.sum(axis=-1) / flat.shape[-1]).astype(x.dtype).reshape(n, c, 1, 1)
        y = np.empty((*x.shape[:2], oh, ow), x.dtype)
        for i, (h0, h1) in enumerate(self._bins(x.shape[2], oh)):
            for j, (w0, w1) in enumerate(self._bins(x.shape[3], ow)):
                y[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3), dtype=np.float64)
        return y

    def backward(self, grad_output):
        g = np.asarray(grad_output)
        n, c, h, w = self._shape
        oh, ow = g.shape[2:]
        if (oh, ow) == (1, 1):
            return np.broadcast_to(g / (h * w), self._shape).astype(g.dtype)
        gx = np.zeros(self._shape, g.dtype)
        for i, (h0, h1) in enumerate(self._bins(h, oh)):
            for j, (w0, w1) in enumerate(self._bins(w, ow)):
                gx[:, :, h0:h1, w0:w1] += g[:, :, i : i + 1, j : j + 1] / ((h1 - h0) * (w1 - w0))
        return gx


class AdaptiveMaxPool2d(L.AdaptiveMaxPool2d, Module):
    """torch's adaptive max pool (bins as :class:`AdaptiveAvgPool2d`); the gradient goes to each bin's first maximum."""

    def __init__(self, output_size):
        L.AdaptiveMaxPool2d.__init__(self, output_size)
        self._init_module()

    def forward(self, x):
        x = np.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"AdaptiveMaxPool2d: expected (N, C, H, W) input, got shape {x.shape}")
        oh, ow = self.output_shape(x.shape[1:])[1:]
        n, c, h, w = x.shape
        self._shape = x.shape
        y = np.empty((n, c, oh, ow), x.dtype)
        self._arg = np.empty((n, c, oh, ow), np.int64)  # flat position h * W + w in the plane
        for i, (h0, h1) in enumerate(AdaptiveAvgPool2d._bins(h, oh)):
            for j, (w0, w1) in enumerate(AdaptiveAvgPool2d._bins(w, ow)):
                win = x[:, :, h0:h1, w0:w1].reshape(n, c, -1)
                # torch: NaN is the maximum; the first maximum in scan order otherwise
                k = np.where(np.isnan(win).any(axis=2), np.isnan(win).argmax(axis=2), win.argmax(axis=2))
                y[:, :, i, j] = np.take_along_axis(win, k[..., None], axis=2)[..., 0]
                self._arg[:, :, i, j] = (h0 + k // (w1 - w0)) * w + w0 + k % (w1 - w0)
        return y

    def backward(self, grad_output):
        g = np.asarray(grad_output)
        n, c, h, w = self._shape
        gx = np.zeros((n, c, h * w), g.dtype)
        np.add.at(gx, (np.arange(n)[:, None, None], np.arange(c)[None, :, None], self._arg.reshape(n, c, -1)),
                  g.reshape(n, c, -1))  # fmt: skip
        return gx.reshape(self._shape)


class ZeroPad2d(L.ZeroPad2d, Module):
    """Zero padding (left, right, top, bottom); negative amounts crop, as torch."""

    def __init__(self, padding):
        L.ZeroPad2d.__init__(self, padding)
        self._init_module()

    def forward(self, x):
        x = np.asarray(x)
        left, right, top, bottom = self.padding
        self._shape = x.shape
        pad = [(0, 0)] * (x.ndim - 2) + [(max(top, 0), max(bottom, 0)), (max(left, 0), max(right, 0))]
        y = np.pad(x, pad)
        h, w = y.shape[-2:]
        return y[..., max(-top, 0) : h - max(-bottom, 0), max(-left, 0) : w - max(-right, 0)]

    def backward(self, grad_output):
        g = np.asarray(grad_output)
        left, right, top, bottom = self.padding
        gx = np.zeros(self._shape, g.dtype)
        h, w = self._shape[-2:]
        # the part of the input the output kept, and where it sits in the output
        src = (slice(max(top, 0), max(top, 0) + h - max(-top, 0) - max(-bottom, 0)),
               slice(max(left, 0), max(left, 0) + w - max(-left, 0) - max(-right, 0)))  # fmt: skip
        gx[..., max(-top, 0) : h - max(-bottom, 0), max(-left, 0) : w - max(-right, 0)] = g[..., src[0], src[1]]
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
        x = np.asarray(x)
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"GroupNorm: expected input (N, {self.num_channels}, ...), got {x.shape}")
        n = x.shape[0]
        xg = x.astype(np.float64).reshape(n, self.num_groups, -1)
        mean = xg.mean(axis=2, keepdims=True)
        inv_std = 1.0 / np.sqrt(xg.var(axis=2, keepdims=True) + self.eps)
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
        x = np.asarray(x)
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


class Softmax(L.Softmax, Module):
    """softmax along ``dim`` (required: torch's implicit choice is deprecated)."""

    def __init__(self, dim=None):
        if dim is None:
            raise ValueError("Softmax: give dim (torch's implicit dim is deprecated)")
        L.Softmax.__init__(self, as_int(dim, "dim"))
        self._init_module()

    def forward(self, x):
        x = np.asarray(x)
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
        x = np.asarray(x)
        z = x - x.max(axis=self.dim, keepdims=True)
        self._y = (z - np.log(np.exp(z).sum(axis=self.dim, keepdims=True))).astype(x.dtype)
        return self._y

    def backward(self, grad_output):
        g = np.asarray(grad_output)
        return (g - np.exp(self._y) * g.sum(axis=self.dim, keepdims=True)).astype(g.dtype)


class Residual(L.Residual, Module):
    """``shortcut(x) + body(x)`` (identity shortcut by default); state-dict keys ``body.*``, ``shortcut.*``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> block = nn.Residual(nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1, rng=0), nn.BatchNorm2d(8)),
    ...                     shortcut=nn.Sequential(nn.Conv2d(4, 8, 1, stride=2, bias=False, rng=1)))
    >>> y = block(np.ones((2, 4, 8, 8), np.float32))
    >>> y.shape, block.backward(np.ones_like(y)).shape
    ((2, 8, 4, 4), (2, 4, 8, 8))
    """

    def __init__(self, body, shortcut=None):
        body = body if isinstance(body, L.Sequential) else Sequential(body)
        if shortcut is not None and not isinstance(shortcut, L.Sequential):
            shortcut = Sequential(shortcut)
        L.Residual.__init__(self, body, shortcut)
        self._init_module()
        for name, part in self.children():
            if not isinstance(part, Module):
                raise TypeError(f"Residual {name} ({type(part).__name__}) has no forward/backward; use fastconv.nn")

    def forward(self, x, relu=False):
        """``shortcut(x) + body(x)``; with ``relu``, a following ReLU applied in the same pass (see ReLU).

        A body that ends in a :class:`Conv2d` adds the shortcut (and rectifies) as that convolution writes its
        output: no pass over the activations of its own."""
        last = self.body.layers[-1] if type(self.body) is Sequential and self.body.layers else None
        if type(last) is Conv2d or (type(last) is FrozenConv2d and last.activation is None):
            s = np.asarray(x if self.shortcut is None else self.shortcut.forward(x))
            h = self.body._forward_first(x, len(self.body.layers) - 1)
            want = (*np.shape(h)[:-3], *last.output_shape(np.shape(h)[-3:]))
            if s.shape == want and s.dtype in (np.float32, np.float64):
                out = last.forward(h, relu=relu, residual=s)
                self._relu_out = out if relu else None
                return out
            y = last.forward(h)
        else:
            y = self.body.forward(x)
            s = x if self.shortcut is None else self.shortcut.forward(x)
        if y.shape != s.shape:
            raise ValueError(f"Residual: body output {y.shape} and shortcut output {s.shape} differ")
        self._relu_out = None
        if not relu:
            return y + s
        if y.dtype == s.dtype and y.dtype in (np.float32, np.float64):
            out = F._kernel(y.dtype, "add_relu")(y, s, True)
        else:
            out = ReLU().forward(y + s)
        self._relu_out = out
        return out

    def backward(self, grad_output):
        g = np.asarray(grad_output)
        if getattr(self, "_relu_out", None) is not None:  # the fused ReLU's gradient mask
            g = _relu_grad(g, self._relu_out)
        gx = self.body.backward(g)
        return _add(gx, g if self.shortcut is None else self.shortcut.backward(g))


class Concat(L.Concat, Module):
    """``cat([x, body(x)], channels)``: a DenseNet layer.  State-dict keys ``body.*``."""

    def __init__(self, body):
        L.Concat.__init__(self, body if isinstance(body, L.Sequential) else Sequential(body))
        self._init_module()
        if not isinstance(self.body, Module):
            raise TypeError(f"Concat body ({type(self.body).__name__}) has no forward/backward; use fastconv.nn")

    def forward(self, x):
        x = np.asarray(x)
        self._channels = x.shape[1]
        return np.concatenate([x, self.body.forward(x)], axis=1)

    def backward(self, grad_output):
        g = np.asarray(grad_output)
        c = self._channels
        return g[:, :c] + self.body.backward(np.ascontiguousarray(g[:, c:]))


class Dropout(L.Dropout, Module):
    """Zeroes elements with probability p in training and scales the rest by 1/(1-p)."""

    def __init__(self, p=0.5, inplace=False, *, rng=None):
        L.Dropout.__init__(self, p, inplace)  # L.Dropout2d adds nothing to it
        self._init_module()
        self._rng = _rng(rng)

    def _mask_shape(self, x):
        return x.shape

    def forward(self, x):
        x = np.asarray(x)
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
        x = np.asarray(x)
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
        self._input = np.asarray(x)
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


class Sequential(L.Sequential, Module):
    """Runs its layers in order; backward runs them in reverse."""

    def __init__(self, *layers):
        L.Sequential.__init__(self, *layers)
        self._init_module()
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Module):
                raise TypeError(
                    f"Sequential item {i} ({type(layer).__name__}) has no forward/backward; use fastconv.nn layers"
                )

    def forward(self, x):
        return self._forward_first(x, len(self.layers))

    def _forward_first(self, x, end):
        """forward through ``layers[:end]``, each layer fused with a ReLU after it where it can be."""
        layers, i = self.layers, 0
        while i < end:
            layer = layers[i]
            nxt = layers[i + 1] if i + 1 < end else None
            if type(nxt) is ReLU and type(layer) in (BatchNorm2d, Residual):  # one pass for both (see ReLU)
                x = layer.forward(x, relu=True)
                nxt._fused = True
                i += 2
                continue
            if type(nxt) is ReLU and type(layer) is Conv2d:  # rectified as the convolution writes it
                x = nxt._y = layer.forward(x, relu=True)
                nxt._fused = False  # the ReLU's backward masks by that output, as unfused
                i += 2
                continue
            x = layer.forward(x)
            i += 1
        return x

    def backward(self, grad_output, input_grad=True):
        """Runs the layers' backward passes in reverse; returns the gradient with respect to the input.

        ``input_grad=False`` (a model's first layers see data, not activations) lets a first convolution
        skip its input gradient, the most expensive part of its backward pass; None is returned then.
        """
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            if i == 0 and not input_grad and isinstance(layer, (_ConvLayer, Sequential)):
                return layer.backward(grad_output, input_grad=False)
            grad_output = layer.backward(grad_output)
        return grad_output if input_grad else None


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


# --- torch models to fastconv.nn ------------------------------------------------------------------


def _copy(param: Parameter | None, tensor) -> None:
    # A copy, never a view: torch's optimisers update their tensors in place.
    if param is not None and tensor is not None:
        param.data = np.array(tensor.detach().cpu().numpy(), dtype=param.data.dtype, order="C", copy=True)


def _torch_dtype(module) -> np.dtype:
    for t in list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point()]:
        return np.dtype(str(t.dtype).replace("torch.", ""))
    return np.dtype(np.float32)


def _is_block(m, names) -> bool:
    return all(hasattr(m, n) for n in names)


def _convert(m, path: str):
    """The fastconv module for torch module m, in m's own train/eval mode (modules made for its parts
    keep theirs: a torch container's mode says nothing about its children's)."""
    out = _convert_module(m, path)
    out.training = bool(m.training)
    return out


def _convert_module(m, path: str):  # noqa: C901 - one branch per supported module
    import torch.nn as tnn

    name = type(m).__name__
    if isinstance(m, tnn.Sequential):
        return Sequential(*[_convert(c, f"{path}.{i}" if path else str(i)) for i, c in enumerate(m)])
    if isinstance(m, (tnn.Conv2d, tnn.ConvTranspose2d)):
        if m.padding_mode != "zeros":
            raise TypeError(
                f"from_torch: {path or 'model'} ({name}) uses padding_mode={m.padding_mode!r}; only 'zeros' runs"
            )
        dt = m.weight.detach().numpy().dtype
        if isinstance(m, tnn.Conv2d):
            out = Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                         m.bias is not None, dtype=dt)  # fmt: skip
        else:
            out = ConvTranspose2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                                  m.output_padding, m.groups, m.bias is not None, m.dilation, dtype=dt)  # fmt: skip
        _copy(out.weight, m.weight)
        _copy(out.bias_param, m.bias)
        return out
    if isinstance(m, tnn.BatchNorm2d):
        out = BatchNorm2d(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats, dtype=_torch_dtype(m))
        if m.affine:
            _copy(out.weight, m.weight)
            _copy(out.bias_param, m.bias)
        if m.track_running_stats:
            for key in ("running_mean", "running_var", "num_batches_tracked"):
                out._buffers[key] = np.array(getattr(m, key).detach().numpy(), dtype=out._buffers[key].dtype)
        return out
    if isinstance(m, (tnn.GroupNorm, tnn.LayerNorm)):
        dt = _torch_dtype(m)
        if isinstance(m, tnn.GroupNorm):
            out = GroupNorm(m.num_groups, m.num_channels, m.eps, m.affine, dtype=dt)
        else:
            out = LayerNorm(m.normalized_shape, m.eps, m.elementwise_affine, dtype=dt)
        if getattr(out, "weight", None) is not None:
            _copy(out.weight, m.weight)
            _copy(out.bias_param, m.bias)
        return out
    if isinstance(m, tnn.Linear):
        out = Linear(m.in_features, m.out_features, m.bias is not None, dtype=m.weight.detach().numpy().dtype)
        _copy(out.weight, m.weight)
        _copy(out.bias_param, m.bias)
        return out
    simple = {
        tnn.ReLU: lambda: ReLU(),
        tnn.ReLU6: lambda: ReLU6(),
        tnn.LeakyReLU: lambda: LeakyReLU(m.negative_slope),
        tnn.ELU: lambda: ELU(m.alpha),
        tnn.GELU: lambda: GELU(m.approximate),
        tnn.SiLU: lambda: SiLU(),
        tnn.Sigmoid: lambda: Sigmoid(),
        tnn.Tanh: lambda: Tanh(),
        tnn.Hardswish: lambda: Hardswish(),
        tnn.Identity: lambda: Identity(),
        tnn.Flatten: lambda: Flatten(m.start_dim, m.end_dim),
        tnn.Dropout: lambda: Dropout(m.p),
        tnn.MaxPool2d: lambda: MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation, False, m.ceil_mode),
        tnn.AvgPool2d: lambda: AvgPool2d(
            m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad, m.divisor_override
        ),
        tnn.AdaptiveAvgPool2d: lambda: AdaptiveAvgPool2d(m.output_size),
        tnn.Upsample: lambda: Upsample(m.size, m.scale_factor, m.mode, m.align_corners),
        tnn.AdaptiveMaxPool2d: lambda: AdaptiveMaxPool2d(m.output_size),
        tnn.ZeroPad2d: lambda: ZeroPad2d(tuple(m.padding)),
        tnn.Dropout2d: lambda: Dropout2d(m.p),
        tnn.Softmax: lambda: Softmax(m.dim),
        tnn.LogSoftmax: lambda: LogSoftmax(m.dim),
    }
    for cls, make in simple.items():
        if type(m) is cls:
            return make()
    # torchvision's ResNet blocks: relu(bn2(conv2(relu(bn1(conv1(x))))) + downsample(x)), and the
    # Bottleneck's three-conv form.
    if name == "BasicBlock" and _is_block(m, ("conv1", "bn1", "conv2", "bn2")):
        body = Sequential(_convert(m.conv1, f"{path}.conv1"), _convert(m.bn1, f"{path}.bn1"), ReLU(),
                          _convert(m.conv2, f"{path}.conv2"), _convert(m.bn2, f"{path}.bn2"))  # fmt: skip
        short = getattr(m, "downsample", None)
        return Sequential(Residual(body, None if short is None else _convert(short, f"{path}.downsample")), ReLU())
    if name == "Bottleneck" and _is_block(m, ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3")):
        parts = []
        for i in (1, 2, 3):
            parts.append(_convert(getattr(m, f"conv{i}"), f"{path}.conv{i}"))
            parts.append(_convert(getattr(m, f"bn{i}"), f"{path}.bn{i}"))
            if i < 3:
                parts.append(ReLU())
        short = getattr(m, "downsample", None)
        return Sequential(
            Residual(Sequential(*parts), None if short is None else _convert(short, f"{path}.downsample")), ReLU()
        )
    # Modules written like fastconv's own: a `body` (and for Residual an optional `shortcut`).
    if name == "Residual" and hasattr(m, "body"):
        short = getattr(m, "shortcut", None)
        return Residual(
            _convert(m.body, f"{path}.body"), None if short is None else _convert(short, f"{path}.shortcut")
        )
    if name == "Concat" and hasattr(m, "body"):
        return Concat(_convert(m.body, f"{path}.body"))
    raise TypeError(
        f"from_torch: {path or 'model'} is a {name}, which fastconv.nn cannot run; supported: Sequential, Conv2d, "
        "ConvTranspose2d, BatchNorm2d, Linear, pools, activations, Flatten, Dropout, Upsample, torchvision "
        "BasicBlock/Bottleneck, and Residual/Concat modules with `body` (and `shortcut`) attributes"
    )


def from_torch(module) -> Module:
    """A ``fastconv.nn`` model computing what a torch model computes, its weights and statistics copied.

    So a model trained in torch runs (and trains on) where torch is not installed: save
    ``from_torch(model).state_dict()`` with :meth:`Module.save` and load it into the same
    ``fastconv.nn`` structure later.

    Parameters
    ----------
    module : torch.nn.Module
        Built from ``Sequential`` nesting of the supported modules (the error names any other
        class): convolutions (``padding_mode='zeros'``), ``BatchNorm2d``, ``Linear``, max/average/
        adaptive-average pools, activations, ``Flatten``, ``Dropout``, ``Upsample``; torchvision's
        ``BasicBlock`` and ``Bottleneck`` become :class:`Residual` blocks followed by a ReLU; a module
        named ``Residual`` (``body``, optional ``shortcut``) or ``Concat`` (``body``) maps to its
        namesake.

    Returns
    -------
    Module
        Every module in its torch counterpart's train/eval mode.

    Notes
    -----
    The state-dict keys follow the fastconv structure (a BasicBlock's ``conv1`` is
    ``0.body.0``), not torch's.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from fastconv import nn
    >>> t = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).eval()
    >>> f = nn.from_torch(t)
    >>> x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    >>> bool(np.allclose(f(x), t(torch.from_numpy(x)).detach().numpy(), atol=1e-5))
    True
    """
    return _convert(module, "")


def _folded(conv, bn):
    """The weight and bias of ``conv`` followed by ``bn`` in eval mode, in one convolution (computed in float64)."""
    w = conv.weight.data.astype(np.float64)
    scale = 1.0 / np.sqrt(bn._buffers["running_var"].astype(np.float64) + bn.eps)
    mean = bn._buffers["running_mean"].astype(np.float64)
    if bn.affine:
        scale = scale * bn.weight.data
        beta = bn.bias_param.data.astype(np.float64)
    else:
        beta = 0.0
    b = conv.bias_param.data.astype(np.float64) if conv.bias_param is not None else 0.0
    dt = conv.weight.data.dtype
    return (w * scale[:, None, None, None]).astype(dt), ((b - mean) * scale + beta).astype(dt)


def fold_batch_norm(model: Module) -> Module:
    """An inference copy of ``model`` with every BatchNorm2d that directly follows a Conv2d folded into it.

    In eval mode a norm is ``y = (x - running_mean) * gamma / sqrt(running_var + eps) + beta``, an affine
    map per channel, so the convolution before it can absorb it: ``w' = w * s`` and ``b' = (b - mean) * s +
    beta`` with ``s = gamma / sqrt(running_var + eps)``.  One pass over the activations less per pair.

    Parameters
    ----------
    model : Module
        Any fastconv.nn model; Sequential, Residual and Concat containers are searched.  Norms without
        running statistics (``track_running_stats=False``) normalise with batch statistics even in eval
        mode and are kept.

    Returns
    -------
    Module
        A new model in eval mode (the original is not changed); its outputs equal ``model.eval()``'s up
        to rounding.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> m = nn.Sequential(nn.Conv2d(3, 4, 3, rng=0), nn.BatchNorm2d(4), nn.ReLU()).eval()
    >>> m[1]._buffers["running_var"][:] = 4.0
    >>> f = nn.fold_batch_norm(m)
    >>> [type(layer).__name__ for layer in f.layers]
    ['Conv2d', 'ReLU']
    >>> x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    >>> bool(np.allclose(f(x), m(x), atol=1e-5))
    True
    """
    import copy

    def fold(conv, bn):
        out = copy.deepcopy(conv)
        w, b = _folded(conv, bn)
        out.weight = Parameter(w)
        out._parameters["weight"] = out.weight
        out.bias_param = Parameter(b)
        out._parameters["bias"] = out.bias_param
        return out

    def walk(m):
        if isinstance(m, Sequential):
            layers, i = [], 0
            while i < len(m.layers):
                cur = m.layers[i]
                nxt = m.layers[i + 1] if i + 1 < len(m.layers) else None
                if isinstance(cur, Conv2d) and type(nxt) is BatchNorm2d and nxt.track_running_stats:
                    layers.append(fold(cur, nxt))
                    i += 2
                    continue
                layers.append(walk(cur))
                i += 1
            return Sequential(*layers)
        if isinstance(m, Residual):
            return Residual(walk(m.body), None if m.shortcut is None else walk(m.shortcut))
        if isinstance(m, Concat):
            return Concat(walk(m.body))
        return copy.deepcopy(m)

    return walk(model).eval()


# --- frozen inference models --------------------------------------------------------------------


def _inference_only(module) -> TypeError:
    return TypeError(
        f"{type(module).__name__} is an inference-only model made by fastconv.nn.freeze: it has no backward and no "
        "training mode; train the model it was frozen from, then freeze it again"
    )


class FrozenConv2d(L.Conv2d, Module):
    """A convolution of a frozen model: a :class:`fastconv.Conv2dPlan` with its batch norm folded in and its
    ReLU or ReLU6 applied as it writes its output.  Made by :func:`freeze`; inference only.

    Its ``weight`` and ``bias`` are parameters like a :class:`Conv2d`'s (``state_dict`` and ``load_state_dict``
    see them); the plan is made again on the first call after they change.
    """

    def __init__(self, conv: L.Conv2d, weight, bias, activation=None):
        L.Conv2d.__init__(self, conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, conv.groups, True)  # fmt: skip
        self._init_module()
        if activation not in (None, "relu", "relu6"):
            raise ValueError(f"FrozenConv2d: activation must be None, 'relu' or 'relu6', got {activation!r}")
        self.activation = activation
        self.weight = Parameter(np.array(weight, copy=True))
        self.bias_param = Parameter(np.array(bias, copy=True))
        self._parameters["weight"] = self.weight
        self._parameters["bias"] = self.bias_param
        self._plan = None
        self._plan_of = (None, None)
        self.training = False

    def plan(self):
        """The layer's :class:`fastconv.Conv2dPlan` (made again if ``weight`` or ``bias`` were replaced)."""
        from .plan import Conv2dPlan

        if self._plan_of[0] is not self.weight.data or self._plan_of[1] is not self.bias_param.data:
            self._plan = Conv2dPlan(self.weight.data, self.bias_param.data, self.stride, self.padding, self.dilation,
                                    self.groups)  # fmt: skip
            self._plan_of = (self.weight.data, self.bias_param.data)
        return self._plan

    def forward(self, x, relu=False, residual=None):
        """The convolution and its fused activation; ``residual`` and ``relu`` (a :class:`Residual` block's sum
        and ReLU) only on a layer without an activation of its own."""
        plan = self.plan()
        if self.activation is None:
            return plan(x, residual=residual, relu=relu)
        if relu or residual is not None:
            raise ValueError(f"FrozenConv2d with activation {self.activation!r}: no residual or ReLU can follow it")
        return plan(x, relu=True, relu_cap=6.0 if self.activation == "relu6" else None)

    def backward(self, grad_output, input_grad=True):
        raise _inference_only(self)

    def _args(self):
        return super()._args() + f", activation={self.activation!r}"


class FrozenModel(Sequential):
    """An inference-only model made by :func:`freeze`: a :class:`Sequential` of frozen layers, always in eval mode."""

    def __init__(self, *layers):
        super().__init__(*layers)
        for _, module in self.named_modules():
            module.training = False

    def train(self, mode: bool = True):
        if mode:
            raise _inference_only(self)
        return super().train(False)

    def backward(self, grad_output, input_grad=True):
        raise _inference_only(self)


def freeze(model) -> FrozenModel:
    """An inference-only copy of a model that runs as fast as fastconv can: batch norms folded into the
    convolutions before them, each ReLU or ReLU6 after a convolution applied as it writes its output, a
    residual block's sum and ReLU in its last convolution's pass, every convolution a
    :class:`fastconv.Conv2dPlan` (weights packed once), dropout removed.

    Parameters
    ----------
    model : Module
        Any :mod:`fastconv.nn` model (its ``Sequential``, ``Residual`` and ``Concat`` containers are searched; a
        single layer is wrapped).  It is not changed, and later changes to it do not reach the frozen copy.

    Returns
    -------
    FrozenModel
        Outputs equal ``model.eval()``'s to float32 rounding.  ``train()`` and ``backward`` raise
        ``TypeError``.  Inputs must have the weights' dtype (as in torch: a float32 model refuses float64 input).

    Notes
    -----
    Use a frozen model to run a trained model many times (inference on a stream of images, a tiled large image);
    keep the model itself, in ``eval()`` mode, where gradients are needed (saliency maps, fine-tuning): an eval-mode
    model that is not frozen computes exactly what it did before, packs its weights on every call and has a backward.
    Batch norms without running statistics (``track_running_stats=False``) normalise by their batch even in eval
    mode and are kept as they are.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, rng=0), nn.BatchNorm2d(8), nn.ReLU(),
    ...                   nn.Residual(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, rng=1), nn.BatchNorm2d(8))),
    ...                   nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2, rng=2)).eval()
    >>> f = nn.freeze(m)
    >>> [type(layer).__name__ for layer in f.layers]
    ['FrozenConv2d', 'Residual', 'ReLU', 'AdaptiveAvgPool2d', 'Flatten', 'Linear']
    >>> x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    >>> bool(np.allclose(f(x), m(x), atol=1e-5))
    True
    """
    import copy

    if not isinstance(model, Module):
        raise TypeError(f"freeze: model must be a fastconv.nn Module, got {type(model).__name__}")

    def conv(c, bn=None, activation=None):
        if bn is not None:
            w, b = _folded(c, bn)
        else:
            w = c.weight.data
            b = c.bias_param.data if c.bias_param is not None else np.zeros(c.out_channels, w.dtype)
        return FrozenConv2d(c, w, b, activation)

    def walk_layers(layers):
        out, i = [], 0
        while i < len(layers):
            cur = layers[i]
            if type(cur) is Conv2d:
                j, bn, act = i + 1, None, None
                if j < len(layers) and type(layers[j]) is BatchNorm2d and layers[j].track_running_stats:
                    bn, j = layers[j], j + 1
                if j < len(layers) and type(layers[j]) in (ReLU, ReLU6):
                    act, j = ("relu" if type(layers[j]) is ReLU else "relu6"), j + 1
                out.append(conv(cur, bn, act))
                i = j
                continue
            if type(cur) in (Dropout, Dropout2d, Identity):  # the identity in eval mode
                i += 1
                continue
            out.append(walk(cur))
            i += 1
        return out

    def walk(m):
        if isinstance(m, Sequential):
            return Sequential(*walk_layers(m.layers))
        if isinstance(m, Residual):
            return Residual(walk(m.body), None if m.shortcut is None else walk(m.shortcut))
        if isinstance(m, Concat):
            return Concat(walk(m.body))
        if type(m) is Conv2d:
            return conv(m)
        out = copy.deepcopy(m)
        out.eval()
        return out

    layers = model.layers if isinstance(model, Sequential) else [model]
    return FrozenModel(*walk_layers(list(layers)))
