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
    "Dropout",
    "Flatten",
    "Linear",
    "Sequential",
    "CrossEntropyLoss",
    "SGD",
    "Adam",
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

    def forward(self, x):
        self._input = x
        bias = None if self.bias_param is None else self.bias_param.data
        return type(self)._forward(x, self.weight.data, bias, *self._geom())

    def backward(self, grad_output):
        gx, gw, gb = type(self)._backward(grad_output, self._input, self.weight.data, *self._geom())
        self.weight.accumulate(gw)
        if self.bias_param is not None:
            self.bias_param.accumulate(gb)
        return gx


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

    def forward(self, x):
        self._input = x
        y, self._indices = F.max_pool2d(
            x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, return_indices=True
        )
        return (y, self._indices) if self.return_indices else y

    def backward(self, grad_output):
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

    def forward(self, x):
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm2d: expected input (N, {self.num_features}, H, W), got {x.shape}")
        use_batch = self.training or not self.track_running_stats
        if use_batch:
            mean = x.mean(axis=(0, 2, 3))
            var = x.var(axis=(0, 2, 3))
            if self.training and self.track_running_stats:
                n = x.size // x.shape[1]
                b = self._buffers
                b["num_batches_tracked"] = b["num_batches_tracked"] + 1
                m = 1.0 / float(b["num_batches_tracked"]) if self.momentum is None else self.momentum
                unbiased = var * n / max(n - 1, 1)
                b["running_mean"] = ((1 - m) * b["running_mean"] + m * mean).astype(b["running_mean"].dtype)
                b["running_var"] = ((1 - m) * b["running_var"] + m * unbiased).astype(b["running_var"].dtype)
        else:
            mean, var = self._buffers["running_mean"], self._buffers["running_var"]
        inv_std = (1.0 / np.sqrt(var + self.eps)).astype(x.dtype)
        xhat = (x - mean[None, :, None, None].astype(x.dtype)) * inv_std[None, :, None, None]
        self._cache = (xhat, inv_std, use_batch)
        if self.affine:
            return xhat * self.weight.data[None, :, None, None] + self.bias_param.data[None, :, None, None]
        return xhat

    def backward(self, grad_output):
        xhat, inv_std, use_batch = self._cache
        gy = np.asarray(grad_output)
        gamma = self.weight.data if self.affine else np.ones_like(inv_std)
        if self.affine:
            self.weight.accumulate((gy * xhat).sum(axis=(0, 2, 3)))
            self.bias_param.accumulate(gy.sum(axis=(0, 2, 3)))
        g = gy * gamma[None, :, None, None]
        if not use_batch:  # statistics are constants in eval mode
            return g * inv_std[None, :, None, None]
        mean_g = g.mean(axis=(0, 2, 3), keepdims=True)
        mean_gx = (g * xhat).mean(axis=(0, 2, 3), keepdims=True)
        return (g - mean_g - xhat * mean_gx) * inv_std[None, :, None, None]


class ReLU(L.ReLU, Module):
    """max(x, 0)."""

    def __init__(self, inplace=False):
        L.ReLU.__init__(self, inplace)
        self._init_module()

    def forward(self, x):
        x = np.asarray(x)
        self._mask = x > 0
        return np.where(self._mask, x, 0).astype(x.dtype, copy=False)

    def backward(self, grad_output):
        return np.where(self._mask, grad_output, 0).astype(np.asarray(grad_output).dtype, copy=False)


class Dropout(L.Dropout, Module):
    """Zeroes elements with probability p in training and scales the rest by 1/(1-p)."""

    def __init__(self, p=0.5, inplace=False, *, rng=None):
        L.Dropout.__init__(self, p, inplace)
        self._init_module()
        self._rng = _rng(rng)

    def forward(self, x):
        x = np.asarray(x)
        if not self.training or self.p == 0:
            self._mask = None
            return x
        keep = 1.0 - self.p
        self._mask = (
            (self._rng.random(x.shape) < keep).astype(x.dtype) / x.dtype.type(keep) if keep > 0 else (np.zeros_like(x))
        )
        return x * self._mask

    def backward(self, grad_output):
        return grad_output if self._mask is None else grad_output * self._mask


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

    def forward(self, x):
        self._input = np.asarray(x)
        y = self._input @ self.weight.data.T
        return y + self.bias_param.data if self.bias_param is not None else y

    def backward(self, grad_output):
        gy = np.asarray(grad_output)
        x2 = self._input.reshape(-1, self.in_features)
        g2 = gy.reshape(-1, self.out_features)
        self.weight.accumulate(g2.T @ x2)
        if self.bias_param is not None:
            self.bias_param.accumulate(g2.sum(axis=0))
        return gy @ self.weight.data


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
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, grad_output):
        for layer in reversed(self.layers):
            grad_output = layer.backward(grad_output)
        return grad_output


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
