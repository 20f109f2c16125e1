"""Lightweight layer descriptions with torch's constructor arguments.

A spec knows, for an input shape ``(C, H, W)`` (no batch axis), its output
shape, its parameter count, its multiply-accumulates (MACs) per sample and the
sliding-window geometry it applies.  Sizes come from :mod:`fastconv.shapes`, so
the rules live in one place.  The NumPy layers of :mod:`fastconv.nn` subclass
these specs.

MAC convention: one MAC per weight use in a convolution or linear layer
(FLOPs = 2 x MACs); bias adds, normalisation, activations and pooling are not
counted.

Examples
--------
>>> from fastconv import layers as L
>>> net = L.Sequential(L.Conv2d(3, 64, 7, stride=2, padding=3), L.BatchNorm2d(64), L.ReLU(),
...                    L.MaxPool2d(3, stride=2, padding=1))
>>> net.output_shape((3, 224, 224))
(64, 56, 56)
>>> net.param_count()
9600
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from . import _resample, _sizes
from ._args import as_bool, as_int, as_pair, explicit_padding, pool_stride, positive_pair

__all__ = [
    "Layer",
    "Conv2d",
    "ConvTranspose2d",
    "MaxPool2d",
    "MaxUnpool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "BatchNorm2d",
    "ReLU",
    "ReLU6",
    "LeakyReLU",
    "ELU",
    "GELU",
    "SiLU",
    "Hardswish",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "LogSoftmax",
    "Dropout2d",
    "GroupNorm",
    "LayerNorm",
    "AdaptiveMaxPool2d",
    "Identity",
    "Dropout",
    "Flatten",
    "Linear",
    "Upsample",
    "ZeroPad2d",
    "Sequential",
    "Residual",
    "Concat",
    "Window",
]

Shape = tuple  # (C, H, W) or (features,) -- never the batch axis


def _spatial(shape: Shape, layer: Layer) -> tuple[int, int, int]:
    if shape is None or len(shape) != 3:
        raise ValueError(f"{layer!r} expects an input of shape (C, H, W), got {shape}")
    return shape


def input_channels(model) -> int | None:
    """The input channels a model expects: its first layer's (``in_channels``, ``num_features`` or
    ``num_channels``), searched through containers; None when no layer says."""
    for attr in ("in_channels", "num_features", "num_channels"):
        if isinstance(getattr(model, attr, None), int):
            return getattr(model, attr)
    for _, child in model.children() if hasattr(model, "children") else []:
        found = input_channels(child)
        if found is not None:
            return found
    return None


def _check_channels(shape: Shape, expected: int, layer: Layer, arg: str) -> None:
    if shape[0] != expected:
        raise ValueError(f"{layer!r}: {arg}={expected} but the input has {shape[0]} channels (shape {shape})")


def _check_groups(layer_name: str, in_channels: int, out_channels: int, groups: int) -> None:
    if in_channels <= 0 or out_channels <= 0:
        raise ValueError(
            f"{layer_name}: in_channels and out_channels must be positive, got {in_channels}, {out_channels}"
        )
    if groups <= 0 or in_channels % groups or out_channels % groups:
        raise ValueError(
            f"{layer_name}: groups={groups} must be positive and divide in_channels={in_channels} "
            f"and out_channels={out_channels}"
        )


class Layer:
    """Base of every spec: identity geometry, no parameters, no MACs."""

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def param_count(self) -> int:
        return 0

    def macs(self, shape: Shape) -> int:
        return 0

    def geometry(self, shape: Shape | None) -> list:
        """Sliding-window steps ``(kernel, stride, pad_before, dilation)``, each an (h, w) pair."""
        return []

    def dropped(self, shape: Shape) -> tuple[int, int]:
        """Trailing input rows and columns no window reads."""
        return (0, 0)

    def children(self) -> list[tuple[str, Layer]]:
        return []

    def _args(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._args()})"


def _kw(**kwargs: Any) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


class Window(Layer):
    """A bare sliding window (kernel, stride, padding, dilation) with no channels."""

    def __init__(self, kernel_size, stride=1, padding=0, dilation=1):
        self.kernel_size = positive_pair(kernel_size, "kernel_size")
        self.stride = positive_pair(stride, "stride")
        self.padding = as_pair(padding, "padding")
        self.dilation = positive_pair(dilation, "dilation")

    def geometry(self, shape):
        return [(self.kernel_size, self.stride, self.padding, self.dilation)]

    def output_shape(self, shape):
        if shape is None:
            return None
        hw = _sizes.conv_output_size(tuple(shape[-2:]), self.kernel_size, self.stride, self.padding, self.dilation)
        return (*shape[:-2], *hw)

    def _args(self):
        return _kw(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding, dilation=self.dilation)


class Conv2d(Layer):
    """``torch.nn.Conv2d``'s description; padding may also be TensorFlow ``'same'`` for any stride."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True):
        self.in_channels = as_int(in_channels, "in_channels")
        self.out_channels = as_int(out_channels, "out_channels")
        self.kernel_size = positive_pair(kernel_size, "kernel_size")
        self.stride = positive_pair(stride, "stride")
        explicit_padding(padding)  # validates every form
        if isinstance(padding, str):
            self.padding = padding
        elif isinstance(padding, (tuple, list)) and len(padding) == 4:
            self.padding = tuple(as_int(p, "padding") for p in padding)  # (left, right, top, bottom)
        else:
            self.padding = as_pair(padding, "padding")
        self.dilation = positive_pair(dilation, "dilation")
        self.groups = as_int(groups, "groups")
        self.bias = bool(bias)
        _check_groups("Conv2d", self.in_channels, self.out_channels, self.groups)

    def pads(self, hw) -> tuple[tuple[int, int], tuple[int, int]]:
        """((top, bottom), (left, right)) for an input of spatial size ``hw``."""
        return _sizes._pads(self.padding, hw, self.kernel_size, self.stride, self.dilation)

    def output_shape(self, shape):
        c, h, w = _spatial(shape, self)
        _check_channels(shape, self.in_channels, self, "in_channels")
        oh, ow = _sizes.conv_output_size((h, w), self.kernel_size, self.stride, self.padding, self.dilation)
        return (self.out_channels, oh, ow)

    def param_count(self):
        kh, kw = self.kernel_size
        return self.out_channels * (self.in_channels // self.groups) * kh * kw + (self.out_channels if self.bias else 0)

    def macs(self, shape):
        _, oh, ow = self.output_shape(shape)
        kh, kw = self.kernel_size
        return oh * ow * self.out_channels * (self.in_channels // self.groups) * kh * kw

    def geometry(self, shape):
        if self.padding == "same" and shape is None:
            raise ValueError(f"{self!r}: padding='same' needs the input size")
        (pt, _), (pl, _) = self.pads(None if shape is None else tuple(shape[1:]))
        return [(self.kernel_size, self.stride, (pt, pl), self.dilation)]

    def dropped(self, shape):
        return _sizes.dropped_pixels(tuple(shape[1:]), self.kernel_size, self.stride, self.padding, self.dilation)

    def _args(self):
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, " + _kw(
            stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups, bias=self.bias
        )


class ConvTranspose2d(Layer):
    """``torch.nn.ConvTranspose2d``'s description."""

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
    ):
        self.in_channels = as_int(in_channels, "in_channels")
        self.out_channels = as_int(out_channels, "out_channels")
        self.kernel_size = positive_pair(kernel_size, "kernel_size")
        self.stride = positive_pair(stride, "stride")
        self.padding = as_pair(padding, "padding")
        self.output_padding = as_pair(output_padding, "output_padding")
        self.groups = as_int(groups, "groups")
        self.bias = bool(bias)
        self.dilation = positive_pair(dilation, "dilation")
        _check_groups("ConvTranspose2d", self.in_channels, self.out_channels, self.groups)

    def output_shape(self, shape):
        c, h, w = _spatial(shape, self)
        _check_channels(shape, self.in_channels, self, "in_channels")
        oh, ow = _sizes.conv_transpose_output_size(
            (h, w), self.kernel_size, self.stride, self.padding, self.output_padding, self.dilation
        )
        return (self.out_channels, oh, ow)

    def param_count(self):
        kh, kw = self.kernel_size
        return self.in_channels * (self.out_channels // self.groups) * kh * kw + (self.out_channels if self.bias else 0)

    def macs(self, shape):
        _, h, w = _spatial(shape, self)
        kh, kw = self.kernel_size
        return h * w * self.in_channels * (self.out_channels // self.groups) * kh * kw

    def _args(self):
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, " + _kw(
            stride=self.stride,
            padding=self.padding,
            output_padding=self.output_padding,
            groups=self.groups,
            bias=self.bias,
            dilation=self.dilation,
        )


class _Pool(Layer):
    def _pool_init(self, kernel_size, stride, padding, dilation, ceil_mode):
        self.kernel_size = positive_pair(kernel_size, "kernel_size")
        self.stride = pool_stride(stride, self.kernel_size)
        self.padding = as_pair(padding, "padding")
        self.dilation = positive_pair(dilation, "dilation")
        self.ceil_mode = as_bool(ceil_mode, "ceil_mode")

    def output_shape(self, shape):
        c, h, w = _spatial(shape, self)
        oh, ow = _sizes.pool_output_size(
            (h, w), self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode
        )
        return (c, oh, ow)

    def geometry(self, shape):
        return [(self.kernel_size, self.stride, self.padding, self.dilation)]

    def dropped(self, shape):
        if self.ceil_mode:
            return (0, 0)
        return _sizes.dropped_pixels(tuple(shape[1:]), self.kernel_size, self.stride, self.padding, self.dilation)


class MaxPool2d(_Pool):
    """``torch.nn.MaxPool2d``'s description."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        self._pool_init(kernel_size, stride, padding, dilation, ceil_mode)
        self.return_indices = as_bool(return_indices, "return_indices")

    def _args(self):
        return _kw(
            kernel_size=self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            ceil_mode=self.ceil_mode,
        )


class MaxUnpool2d(Layer):
    """``torch.nn.MaxUnpool2d``'s description: the partial inverse of a ``MaxPool2d`` with the same geometry.

    The output size is torch's default ``(n - 1) * stride - 2 * padding + kernel_size``
    (a forward call may ask for one within a stride of it).
    """

    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel_size = positive_pair(kernel_size, "kernel_size")
        self.stride = pool_stride(stride, self.kernel_size)
        self.padding = as_pair(padding, "padding")

    def output_shape(self, shape):
        c, h, w = _spatial(shape, self)
        oh, ow = _sizes.conv_transpose_output_size((h, w), self.kernel_size, self.stride, self.padding)
        return (c, oh, ow)

    def _args(self):
        return _kw(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding)


class AvgPool2d(_Pool):
    """``torch.nn.AvgPool2d``'s description."""

    def __init__(
        self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None
    ):
        self._pool_init(kernel_size, stride, padding, 1, ceil_mode)
        self.count_include_pad = as_bool(count_include_pad, "count_include_pad")
        self.divisor_override = divisor_override

    def _args(self):
        return _kw(
            kernel_size=self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            ceil_mode=self.ceil_mode,
            count_include_pad=self.count_include_pad,
        )


class AdaptiveAvgPool2d(Layer):
    """``torch.nn.AdaptiveAvgPool2d``; ``None`` in output_size keeps that input size."""

    def __init__(self, output_size):
        if isinstance(output_size, (tuple, list)):
            self.output_size = tuple(None if v is None else as_int(v, "output_size") for v in output_size)
        else:
            self.output_size = (as_int(output_size, "output_size"),) * 2

    def output_shape(self, shape):
        c, h, w = _spatial(shape, self)
        oh, ow = (
            h if self.output_size[0] is None else self.output_size[0],
            w if self.output_size[1] is None else self.output_size[1],
        )
        return (c, oh, ow)

    def geometry(self, shape):
        # Exact when the output divides the input; the widest window otherwise.
        if shape is None:
            return []
        _, h, w = shape
        oh, ow = self.output_shape(shape)[1:]
        return [((math.ceil(h / oh), math.ceil(w / ow)), (h // oh, w // ow), (0, 0), (1, 1))]

    def _args(self):
        return _kw(output_size=self.output_size)


class BatchNorm2d(Layer):
    """``torch.nn.BatchNorm2d``'s description: 2*C parameters when affine."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        self.num_features = as_int(num_features, "num_features")
        self.eps = float(eps)
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)

    def output_shape(self, shape):
        _spatial(shape, self)
        _check_channels(shape, self.num_features, self, "num_features")
        return shape

    def param_count(self):
        return 2 * self.num_features if self.affine else 0

    def _args(self):
        return f"{self.num_features}, " + _kw(eps=self.eps, momentum=self.momentum, affine=self.affine)


class _Activation(Layer):
    def __init__(self, inplace=False):
        self.inplace = bool(inplace)


class ReLU(_Activation):
    """``torch.nn.ReLU``."""


class ReLU6(_Activation):
    """``torch.nn.ReLU6``."""


class SiLU(_Activation):
    """``torch.nn.SiLU``."""


class Hardswish(_Activation):
    """``torch.nn.Hardswish``."""


class LeakyReLU(Layer):
    """``torch.nn.LeakyReLU``."""

    def __init__(self, negative_slope=0.01, inplace=False):
        self.negative_slope = float(negative_slope)

    def _args(self):
        return _kw(negative_slope=self.negative_slope)


class ELU(Layer):
    """``torch.nn.ELU``."""

    def __init__(self, alpha=1.0, inplace=False):
        self.alpha = float(alpha)

    def _args(self):
        return _kw(alpha=self.alpha)


class GELU(Layer):
    """``torch.nn.GELU``."""

    def __init__(self, approximate="none"):
        self.approximate = approximate


class Sigmoid(Layer):
    """``torch.nn.Sigmoid``."""


class Tanh(Layer):
    """``torch.nn.Tanh``."""


class Identity(Layer):
    """``torch.nn.Identity``."""

    def __init__(self, *args, **kwargs):
        pass


class Softmax(Layer):
    """``torch.nn.Softmax``."""

    def __init__(self, dim=None):
        self.dim = dim


class LogSoftmax(Softmax):
    """``torch.nn.LogSoftmax``."""


class GroupNorm(Layer):
    """``torch.nn.GroupNorm``: 2*C parameters when affine."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True):
        self.num_groups, self.num_channels = as_int(num_groups, "num_groups"), as_int(num_channels, "num_channels")
        if self.num_groups <= 0 or self.num_channels % self.num_groups:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        self.eps, self.affine = float(eps), bool(affine)

    def param_count(self):
        return 2 * self.num_channels if self.affine else 0

    def _args(self):
        return _kw(num_groups=self.num_groups, num_channels=self.num_channels)


class LayerNorm(Layer):
    """``torch.nn.LayerNorm`` over the trailing ``normalized_shape`` dimensions."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True):
        shape = normalized_shape if isinstance(normalized_shape, (tuple, list)) else (normalized_shape,)
        self.normalized_shape = tuple(as_int(v, "normalized_shape") for v in shape)
        self.eps, self.elementwise_affine = float(eps), bool(elementwise_affine)

    def param_count(self):
        return 2 * math.prod(self.normalized_shape) if self.elementwise_affine else 0

    def _args(self):
        return _kw(normalized_shape=self.normalized_shape)


class AdaptiveMaxPool2d(AdaptiveAvgPool2d):
    """``torch.nn.AdaptiveMaxPool2d``; ``None`` in output_size keeps that input size."""


class Dropout(Layer):
    """``torch.nn.Dropout``."""

    def __init__(self, p=0.5, inplace=False):
        self.p = float(p)
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p!r}")

    def _args(self):
        return _kw(p=self.p)


class Dropout2d(Dropout):
    """``torch.nn.Dropout2d``: whole channels dropped."""


class Flatten(Layer):
    """``torch.nn.Flatten``; dims count the batch axis, as in torch."""

    def __init__(self, start_dim=1, end_dim=-1):
        self.start_dim = as_int(start_dim, "start_dim")
        self.end_dim = as_int(end_dim, "end_dim")

    def output_shape(self, shape):
        full = (1, *shape)
        start = self.start_dim % len(full)
        end = self.end_dim % len(full)
        if start == 0:
            raise ValueError("Flatten with start_dim=0 would merge the batch axis")
        merged = math.prod(full[start : end + 1])
        return (*full[1:start], merged, *full[end + 1 :])

    def geometry(self, shape):
        return []

    def _args(self):
        return _kw(start_dim=self.start_dim, end_dim=self.end_dim)


class Linear(Layer):
    """``torch.nn.Linear``: applies to the last axis."""

    def __init__(self, in_features, out_features, bias=True):
        self.in_features = as_int(in_features, "in_features")
        self.out_features = as_int(out_features, "out_features")
        self.bias = bool(bias)

    def output_shape(self, shape):
        if shape[-1] != self.in_features:
            raise ValueError(
                f"{self!r}: in_features={self.in_features} but the input's last axis is "
                f"{shape[-1]} (shape {shape}); add a Flatten?"
            )
        return (*shape[:-1], self.out_features)

    def param_count(self):
        return self.in_features * self.out_features + (self.out_features if self.bias else 0)

    def macs(self, shape):
        return math.prod(shape[:-1]) * self.in_features * self.out_features

    def _args(self):
        return _kw(in_features=self.in_features, out_features=self.out_features, bias=self.bias)


class Upsample(Layer):
    """``torch.nn.Upsample`` (size or scale_factor; output floor(n * scale)), by ``fastconv.interpolate``'s rule."""

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None):
        self.size = None if size is None else as_pair(size, "size")
        self.scale_factor = None if scale_factor is None else _resample.scale_pair(scale_factor)
        self.mode = mode
        self.align_corners = align_corners
        # Checks every option now (mode, align_corners, exactly one of size/scale) on a dummy size.
        _resample.plan((1, 1) if self.size is None else self.size, self.size, self.scale_factor, mode, align_corners)

    def output_shape(self, shape):
        c, h, w = _spatial(shape, self)
        (oh, ow), _, _ = _resample.plan((h, w), self.size, self.scale_factor, self.mode, self.align_corners)
        return (c, oh, ow)

    def _args(self):
        return _kw(size=self.size, scale_factor=self.scale_factor, mode=self.mode, align_corners=self.align_corners)


class ZeroPad2d(Layer):
    """``torch.nn.ZeroPad2d``: int or (left, right, top, bottom)."""

    def __init__(self, padding):
        if isinstance(padding, (tuple, list)) and len(padding) == 4:
            self.padding = tuple(as_int(p, "padding") for p in padding)
        else:
            p = as_int(padding, "padding")
            self.padding = (p, p, p, p)

    def output_shape(self, shape):
        c, h, w = _spatial(shape, self)
        left, right, top, bottom = self.padding
        return (c, h + top + bottom, w + left + right)

    def geometry(self, shape):
        left, _, top, _ = self.padding
        return [((1, 1), (1, 1), (top, left), (1, 1))]

    def _args(self):
        return repr(self.padding)


class Sequential(Layer):
    """A chain of layers (``torch.nn.Sequential``)."""

    def __init__(self, *layers: Layer):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential item {i} must be a fastconv layer, got {type(layer).__name__}")
        self.layers = list(layers)

    def __iter__(self):
        return iter(self.layers)

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def children(self):
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    def output_shape(self, shape):
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return shape

    def param_count(self):
        return sum(layer.param_count() for layer in self.layers)

    def macs(self, shape):
        total = 0
        for layer in self.layers:
            total += layer.macs(shape)
            shape = layer.output_shape(shape)
        return total

    def walk(self, shape, prefix: str = "") -> Iterator[tuple[str, Layer, Shape, Shape]]:
        """Leaf layers in order, as ``(name, layer, input_shape, output_shape)``.

        Residual and Concat yield their body's leaves, then themselves (the merge).
        ``shape`` may be None when only geometry is wanted.
        """
        yield from _walk_children(self.children(), shape, prefix)

    def _args(self):
        return ", ".join(repr(layer) for layer in self.layers)


def _walk_children(children, shape, prefix):
    for name, layer in children:
        full = f"{prefix}{name}"
        if isinstance(layer, Sequential):
            yield from layer.walk(shape, full + ".")
            shape = None if shape is None else layer.output_shape(shape)
        elif isinstance(layer, (Residual, Concat)):
            yield from layer.body.walk(shape, full + ".body.")
            if isinstance(layer, Residual) and layer.shortcut is not None:
                yield from layer.shortcut.walk(shape, full + ".shortcut.")
            out = None if shape is None else layer.output_shape(shape)
            yield full, layer, shape, out
            shape = out
        else:
            out = None if shape is None else layer.output_shape(shape)
            yield full, layer, shape, out
            shape = out


class _Branch(Layer):
    def __init__(self, body):
        self.body = body if isinstance(body, Sequential) else Sequential(body)

    def children(self):
        return [("body", self.body)]

    def param_count(self):
        return self.body.param_count()

    def macs(self, shape):
        return self.body.macs(shape)

    def _args(self):
        return repr(self.body)


class Residual(_Branch):
    """``output = shortcut(input) + body(input)``; the shortcut is the identity by default.

    A shortcut (a strided 1x1 convolution and a BatchNorm2d, say) lets the body change
    the shape: both branches must produce the same one.
    """

    def __init__(self, body, shortcut=None):
        super().__init__(body)
        if shortcut is not None and not isinstance(shortcut, Layer):
            raise TypeError(f"Residual: shortcut must be a fastconv layer or None, got {type(shortcut).__name__}")
        if shortcut is not None and not isinstance(shortcut, Sequential):
            shortcut = Sequential(shortcut)
        self.shortcut = shortcut

    def children(self):
        return [("body", self.body)] + ([("shortcut", self.shortcut)] if self.shortcut is not None else [])

    def output_shape(self, shape):
        out = self.body.output_shape(shape)
        short = tuple(shape) if self.shortcut is None else tuple(self.shortcut.output_shape(shape))
        if tuple(out) != short:
            what = "its input shape" if self.shortcut is None else "the shortcut's output shape"
            raise ValueError(f"Residual: body output shape {tuple(out)} differs from {what} {short}")
        return short

    def param_count(self):
        return self.body.param_count() + (self.shortcut.param_count() if self.shortcut is not None else 0)

    def macs(self, shape):
        return self.body.macs(shape) + (self.shortcut.macs(shape) if self.shortcut is not None else 0)

    def _args(self):
        return repr(self.body) + ("" if self.shortcut is None else f", shortcut={self.shortcut!r}")


class Concat(_Branch):
    """Input and ``body(input)`` concatenated on channels, as in a DenseNet layer."""

    def output_shape(self, shape):
        out = self.body.output_shape(shape)
        if tuple(out[1:]) != tuple(shape[1:]):
            raise ValueError(f"Concat: body output spatial size {out[1:]} differs from the input's {shape[1:]}")
        return (shape[0] + out[0], *shape[1:])
