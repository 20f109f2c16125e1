"""Containers: Sequential, Residual and Concat."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import layers as L
from .activation import ReLU, _add, _relu_grad
from .conv import Conv2d, _ConvLayer
from .module import Module, check_input
from .normalization import BatchNorm2d

__all__ = ["Sequential", "Residual", "Concat"]


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
        if getattr(last, "fuses_residual", False):
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
        x = check_input(self, x, floats=False)
        if x.ndim < 2:
            raise ValueError(f"Concat: input must have a channel axis (N, C, ...), got shape {x.shape}")
        self._channels = x.shape[1]
        return np.concatenate([x, self.body.forward(x)], axis=1)

    def backward(self, grad_output):
        g = np.asarray(grad_output)
        c = self._channels
        return g[:, :c] + self.body.backward(np.ascontiguousarray(g[:, c:]))


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
