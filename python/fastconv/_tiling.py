"""Exact tiling of local models: which input rows (or columns) an output block needs, and where a tile may start.

A model is *local* when each output position depends on a bounded window of input positions that moves with it:
convolutions, transposed convolutions, pools, integer-factor upsampling, element-wise layers, batch norm in eval
mode, and Sequential / Residual / Concat trees of them.  For such a model, running it on a crop of the image whose
start is a multiple of the model's *alignment* gives, at every output position whose window lies inside the crop,
exactly the whole-image value: the crop's output position ``o'`` is the image's ``o' + start * scale``, and the
model's own padding acts at the crop's edges only where they are the image's edges.  (Inside the image, the
positions next to a crop's edge read padding instead of pixels; they are never among the ones kept.)

Each rule works on one axis (0: rows, 1: columns) with inclusive integer intervals.  ``scale`` is the ratio of
output to input positions (a Fraction: 1/2 after a stride-2 layer, 2 after a 2x upsampling).
"""

from __future__ import annotations

import math
from fractions import Fraction

from . import layers as L

__all__ = ["Halo", "halo", "needed", "local_plan"]


def _refuse(layer, path, why):
    where = f" at {path!r}" if path else ""
    return ValueError(f"{type(layer).__name__}{where} cannot be tiled: {why}")


def _is(layer, *names):
    """isinstance against fastconv.layers classes by name (nn layers inherit them; frozen layers too)."""
    return any(isinstance(layer, getattr(L, n)) for n in names)


_ELEMENTWISE = ("ReLU", "ReLU6", "LeakyReLU", "ELU", "GELU", "SiLU", "Hardswish", "Sigmoid", "Tanh", "Identity")


class _Step:
    """One layer's rule on one axis: ``back(a, b)`` the input interval an output interval needs; ``scale`` output
    per input position; ``stride`` the step its windows move by (a crop's start there must be a multiple of it)."""

    def __init__(self, back, scale=Fraction(1), stride=1):
        self.back, self.scale, self.stride = back, scale, stride


def _leaf_step(layer, axis, in_size, path):
    """The rule of a leaf layer on `axis` for an input of `in_size` positions along it."""
    from .nn.module import Module

    if isinstance(layer, Module) and layer.training and _is(layer, "BatchNorm2d", "Dropout", "Dropout2d"):
        raise _refuse(layer, path, "in training mode it depends on the whole batch or on chance; call model.eval()")
    if _is(layer, *_ELEMENTWISE, "BatchNorm2d", "Dropout", "Dropout2d"):
        return _Step(lambda a, b: (a, b))
    if _is(layer, "Softmax", "LogSoftmax") and getattr(layer, "dim", None) in (1, -3):
        return _Step(lambda a, b: (a, b))  # across channels only
    if _is(layer, "Conv2d", "MaxPool2d", "AvgPool2d"):
        k, s, d = layer.kernel_size[axis], layer.stride[axis], getattr(layer, "dilation", (1, 1))[axis]
        if _is(layer, "Conv2d"):
            if isinstance(layer.padding, str) and layer.padding == "same" and s > 1:
                why = "padding='same' with a stride of 2 or more pads by the input's size (a tile's differ from the"
                raise _refuse(layer, path, why + " image's); give the padding as numbers")
            pads = layer.pads(None if not isinstance(layer.padding, str) else (in_size, in_size))
            before = pads[axis][0]
        else:
            before = layer.padding[axis]
        return _Step(lambda a, b: (a * s - before, b * s - before + d * (k - 1)), Fraction(1, s), s)
    if _is(layer, "ConvTranspose2d"):
        k, s, p, d = layer.kernel_size[axis], layer.stride[axis], layer.padding[axis], layer.dilation[axis]
        reach = d * (k - 1)
        return _Step(lambda a, b: (-((reach - a - p) // s), (b + p) // s), Fraction(s), 1)
    if _is(layer, "Upsample"):
        if layer.size is not None:
            raise _refuse(layer, path, "a fixed output size is not local (give scale_factor)")
        u = layer.scale_factor[axis]
        if float(u) != int(u) or u < 1:
            raise _refuse(layer, path, f"scale factor {u} is not a whole number")
        u = int(u)
        if layer.align_corners:
            raise _refuse(layer, path, "align_corners=True samples by the image's size, not locally")
        if layer.mode == "nearest":
            return _Step(lambda a, b: (a // u, b // u), Fraction(u))
        if layer.mode == "nearest-exact":
            return _Step(lambda a, b: ((2 * a + 1) // (2 * u), (2 * b + 1) // (2 * u)), Fraction(u))
        reach = {"bilinear": (0, 1), "bicubic": (1, 2)}.get(layer.mode)
        if reach is None:
            raise _refuse(layer, path, f"mode {layer.mode!r} is not supported for tiling")

        def src(o):  # floor of the source coordinate (o + 0.5) / u - 0.5
            return math.floor((2 * o + 1 - u) / (2 * u))

        return _Step(lambda a, b: (src(a) - reach[0], src(b) + reach[1]), Fraction(u))
    if _is(layer, "ZeroPad2d"):
        left, _, top, _ = layer.padding
        before = (top, left)[axis]
        return _Step(lambda a, b: (a - before, b - before))
    kind = type(layer).__name__
    if _is(layer, "AdaptiveAvgPool2d", "AdaptiveMaxPool2d"):
        raise _refuse(layer, path, "adaptive (or global) pooling reads the whole image")
    if _is(layer, "Flatten", "Linear"):
        raise _refuse(layer, path, f"{kind} mixes every position of its input")
    if _is(layer, "GroupNorm", "LayerNorm"):
        raise _refuse(layer, path, "its statistics are taken over the whole image")
    raise _refuse(layer, path, "it is not a local layer (convolutions, pools, upsampling, element-wise layers, batch "
                               "norm in eval mode, Sequential, Residual, Concat)")  # fmt: skip


def _children(layer):
    return dict(layer.children()) if hasattr(layer, "children") else {}


def local_plan(model, axis, in_shape, path=""):
    """``(back, scale, align)`` of a whole model on `axis` for an input of shape ``(C, H, W)``: the input interval
    an output interval needs, the output-per-input scale, and the multiple of input positions a crop must start
    at."""
    from .nn.graph import GraphModule

    if isinstance(model, GraphModule):
        why = "tiling takes Sequential, Residual and Concat trees of layers (a model from from_torch with its own"
        raise _refuse(model, path, why + " forward is a graph; write it with fastconv.nn containers)")
    if _is(model, "Sequential"):
        layers = model.layers
        steps, shape, r, align = [], tuple(in_shape), Fraction(1), 1
        for i, layer in enumerate(layers):
            sub = f"{path}.{i}" if path else str(i)
            back, scale, need = local_plan(layer, axis, shape, sub)
            # Where this layer starts, in its input's positions: start * r; it must be a multiple of `need`.
            align = _lcm(align, (r / Fraction(need)).denominator)
            steps.append(back)
            r *= scale
            shape = layer.output_shape(shape)
        align = _lcm(align, r.denominator)

        def back(a, b):
            for step in reversed(steps):
                a, b = step(a, b)
            return a, b

        return back, r, align
    if _is(model, "Residual", "Concat"):
        parts = _children(model)
        body = parts.get("body")
        b_back, b_scale, b_align = local_plan(body, axis, in_shape, f"{path}.body" if path else "body")
        shortcut = parts.get("shortcut") if _is(model, "Residual") else None
        if shortcut is not None:
            s_back, s_scale, s_align = local_plan(shortcut, axis, in_shape,
                                                  f"{path}.shortcut" if path else "shortcut")  # fmt: skip
        else:
            s_back, s_scale, s_align = (lambda a, b: (a, b)), Fraction(1), 1
        if b_scale != s_scale:
            raise _refuse(model, path, f"its branches scale the image differently ({b_scale} and {s_scale})")

        def back(a, b):
            (a1, b1), (a2, b2) = b_back(a, b), s_back(a, b)
            return min(a1, a2), max(b1, b2)

        return back, b_scale, _lcm(b_align, s_align, b_scale.denominator)
    step = _leaf_step(model, axis, in_shape[1 + axis], path)
    return step.back, step.scale, step.stride


def _lcm(*values):
    out = 1
    for v in values:
        out = out * int(v) // math.gcd(out, int(v))
    return out


def needed(model, axis, in_shape, a, b):
    """The input interval ``[lo, hi]`` (unclipped) output positions ``a..b`` of `model` read on `axis`."""
    back, _, _ = local_plan(model, axis, in_shape)
    return back(a, b)


class Halo:
    """What :func:`fastconv.shapes.halo` returns: per axis (rows, columns) the context before and after and the
    total stride.

    Attributes
    ----------
    before, after : (int, int)
        Input positions an output position reads before the first, and after the last, of the input positions
        it covers (its own ``1 / scale`` of them): the receptive field's reach beyond the tile.
    stride : (int, int)
        The alignment a tile's start needs in input positions (the product of the strides on the way, for a
        downsampling model); tiles starting at multiples of it give the whole-image result.
    scale : (Fraction, Fraction)
        Output positions per input position.
    """

    def __init__(self, before, after, stride, scale):
        self.before, self.after, self.stride, self.scale = before, after, stride, scale

    def __repr__(self):
        return f"Halo(before={self.before}, after={self.after}, stride={self.stride}, scale={self.scale})"


def halo(model, size=4096) -> Halo:
    """The context and alignment of a local model (see :class:`Halo`), measured for an image `size` positions
    along each axis (only 'same'-padded layers depend on it)."""
    before, after, stride, scale = [], [], [], []
    shape = (L.input_channels(model) or 1, size, size)
    for axis in (0, 1):
        back, r, align = local_plan(model, axis, shape)
        # Interior output positions, far from both borders, over a whole period of the model's phases (after a
        # stride and an upsampling, neighbouring outputs reach differently far): the widest reach of any.
        period = align * r.numerator * r.denominator
        first = (size // 2) * r.numerator // r.denominator
        reach_lo = reach_hi = 0
        for o in range(first, first + period):
            own_lo, own_hi = math.floor(o / r), math.ceil((o + 1) / r) - 1
            lo, hi = back(o, o)
            reach_lo, reach_hi = max(reach_lo, own_lo - lo), max(reach_hi, hi - own_hi)
        before.append(reach_lo)
        after.append(reach_hi)
        stride.append(align)
        scale.append(r)
    return Halo(tuple(before), tuple(after), tuple(stride), tuple(scale))
