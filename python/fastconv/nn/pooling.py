"""Pooling, unpooling, upsampling and padding layers."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import layers as L
from .._resample import interpolate, interpolate_backward
from .module import Module, check_input

__all__ = ["MaxPool2d", "MaxUnpool2d", "Upsample", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "ZeroPad2d"]


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


class _Adaptive(Module):
    """(N, C, H, W) or unbatched (C, H, W) input, as torch's adaptive pools; empty batches give empty results,
    empty planes are refused (torch: "non-zero size for non-batch dimensions")."""

    def forward(self, x):
        x = check_input(self, x, ranks=(3, 4))
        if 0 in x.shape[1:] or (x.ndim == 3 and 0 in x.shape):
            raise ValueError(f"{type(self).__name__}: input must have non-empty channel and spatial axes, got shape "
                             f"{x.shape}")  # fmt: skip
        self._unbatched = x.ndim == 3
        y = self._forward4(x[None] if self._unbatched else x)
        return y[0] if self._unbatched else y

    def backward(self, grad_output):
        g = np.asarray(grad_output)
        gx = self._backward4(g[None] if self._unbatched else g)
        return gx[0] if self._unbatched else gx


class AdaptiveAvgPool2d(L.AdaptiveAvgPool2d, _Adaptive):
    """torch's adaptive average pool: output bin i covers input [floor(i*H/oh), ceil((i+1)*H/oh))."""

    def __init__(self, output_size):
        L.AdaptiveAvgPool2d.__init__(self, output_size)
        self._init_module()

    @staticmethod
    def _bins(n, m):
        return [((i * n) // m, -((-(i + 1) * n) // m)) for i in range(m)]

    def _forward4(self, x):
        oh, ow = self.output_shape(x.shape[1:])[1:]
        self._shape = x.shape
        if (oh, ow) == (1, 1):  # global pooling, the common case: one reduction
            # Over each plane as one contiguous row, in the input's dtype: NumPy sums a row pairwise (error
            # ~log2(H*W) roundings, as torch's float32 sum), where a float64 mean over two axes went through a
            # buffered cast at 2 ns a value (0.5 ms of a 20 ms ResNet-8 inference).
            n, c = x.shape[:2]
            flat = np.ascontiguousarray(x).reshape(n, c, x.shape[2] * x.shape[3])
            if flat.dtype not in (np.float32, np.float64):
                flat = flat.astype(np.float64)
            return (flat.sum(axis=-1) / flat.shape[-1]).astype(x.dtype).reshape(n, c, 1, 1)
        y = np.empty((*x.shape[:2], oh, ow), x.dtype)
        for i, (h0, h1) in enumerate(self._bins(x.shape[2], oh)):
            for j, (w0, w1) in enumerate(self._bins(x.shape[3], ow)):
                y[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3), dtype=np.float64)
        return y

    def _backward4(self, g):
        n, c, h, w = self._shape
        oh, ow = g.shape[2:]
        if (oh, ow) == (1, 1):
            return np.broadcast_to(g / (h * w), self._shape).astype(g.dtype)
        gx = np.zeros(self._shape, g.dtype)
        for i, (h0, h1) in enumerate(self._bins(h, oh)):
            for j, (w0, w1) in enumerate(self._bins(w, ow)):
                gx[:, :, h0:h1, w0:w1] += g[:, :, i : i + 1, j : j + 1] / ((h1 - h0) * (w1 - w0))
        return gx


class AdaptiveMaxPool2d(L.AdaptiveMaxPool2d, _Adaptive):
    """torch's adaptive max pool (bins as :class:`AdaptiveAvgPool2d`); the gradient goes to each bin's first maximum."""

    def __init__(self, output_size):
        L.AdaptiveMaxPool2d.__init__(self, output_size)
        self._init_module()

    def _forward4(self, x):
        oh, ow = self.output_shape(x.shape[1:])[1:]
        n, c, h, w = x.shape
        self._shape = x.shape
        y = np.empty((n, c, oh, ow), x.dtype)
        self._arg = np.empty((n, c, oh, ow), np.int64)  # flat position h * W + w in the plane
        for i, (h0, h1) in enumerate(AdaptiveAvgPool2d._bins(h, oh)):
            for j, (w0, w1) in enumerate(AdaptiveAvgPool2d._bins(w, ow)):
                win = x[:, :, h0:h1, w0:w1].reshape(n, c, (h1 - h0) * (w1 - w0))
                # torch: NaN is the maximum; the first maximum in scan order otherwise
                k = np.where(np.isnan(win).any(axis=2), np.isnan(win).argmax(axis=2), win.argmax(axis=2))
                y[:, :, i, j] = np.take_along_axis(win, k[..., None], axis=2)[..., 0]
                self._arg[:, :, i, j] = (h0 + k // (w1 - w0)) * w + w0 + k % (w1 - w0)
        return y

    def _backward4(self, g):
        n, c, h, w = self._shape
        gx = np.zeros((n, c, h * w), g.dtype)
        oh, ow = self._arg.shape[2:]
        np.add.at(gx, (np.arange(n)[:, None, None], np.arange(c)[None, :, None], self._arg.reshape(n, c, oh * ow)),
                  g.reshape(n, c, oh * ow))  # fmt: skip
        return gx.reshape(self._shape)


class ZeroPad2d(L.ZeroPad2d, Module):
    """Zero padding (left, right, top, bottom); negative amounts crop, as torch."""

    def __init__(self, padding):
        L.ZeroPad2d.__init__(self, padding)
        self._init_module()

    def forward(self, x):
        x = check_input(self, x, floats=False)
        if x.ndim < 2:
            raise ValueError(f"ZeroPad2d: input must have at least 2 axes (H, W), got shape {x.shape}")
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
