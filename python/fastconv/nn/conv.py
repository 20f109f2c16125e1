"""Convolution layers."""

from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from .. import layers as L
from .module import Module, Parameter, _rng, _uniform

__all__ = ["Conv2d", "ConvTranspose2d"]


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
    # forward(x, relu=, residual=) finishes the output in its own pass: a Residual block whose body ends in it
    # adds the shortcut there.
    fuses_residual = True

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
