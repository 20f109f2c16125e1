"""Convolution, unfold/fold and pooling with ``torch.nn.functional`` semantics.

Every function takes anything :func:`numpy.asarray` accepts, computes natively in
float32 or float64, and returns new C-contiguous arrays.  Inputs are batched
``(N, C, H, W)`` or unbatched ``(C, H, W)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _core
from ._args import (
    as_array,
    as_bool,
    as_int,
    contiguous,
    explicit_padding,
    float_dtype,
    nonnegative_pair,
    pool_stride,
    positive_pair,
    require_ndim,
)
from ._sizes import same_padding

__all__ = [
    "conv2d",
    "conv2d_backward",
    "conv_transpose2d",
    "conv_transpose2d_backward",
    "unfold",
    "fold",
    "max_pool2d",
    "max_pool2d_backward",
    "max_unpool2d",
    "max_unpool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "explain_conv2d",
]


_SUFFIX = {np.dtype(np.float32): "_float32", np.dtype(np.float64): "_float64"}


_KERNELS: dict = {}


def _kernel(dtype: np.dtype, name: str):
    try:
        return _KERNELS[dtype, name]
    except KeyError:
        fn = _KERNELS[dtype, name] = getattr(_core, name + _SUFFIX[dtype])
        return fn


def _batched(x: np.ndarray, name: str) -> tuple[np.ndarray, bool]:
    require_ndim(x, name, (3, 4))
    return (x[None], True) if x.ndim == 3 else (x, False)


def _groups(groups: Any) -> int:
    g = as_int(groups, "groups")
    if g <= 0:
        raise ValueError(f"groups must be positive, got {groups!r}")
    return g


def _conv_pads(padding: Any, shape: tuple[int, int], kernel: tuple[int, int], stride, dilation):
    """(top, bottom, left, right) for the user's padding; 'same' follows TensorFlow."""
    pads = explicit_padding(padding)
    if pads is not None:
        return pads
    (top, bottom), (left, right) = same_padding(shape, kernel, stride, dilation)
    return top, bottom, left, right


def _prepare_conv(input, weight, bias, stride, padding, dilation, groups):
    x = as_array(input, "input")
    w = as_array(weight, "weight")
    b = None if bias is None else as_array(bias, "bias")
    dtype = float_dtype(("input", x), ("weight", w), ("bias", b))
    x, unbatched = _batched(x, "input")
    require_ndim(w, "weight", (4,))
    if b is not None and (b.ndim != 1 or b.shape[0] != w.shape[0]):
        raise ValueError(f"bias must have shape ({w.shape[0]},) to match weight, got {b.shape}")
    stride = positive_pair(stride, "stride")
    dilation = positive_pair(dilation, "dilation")
    groups = _groups(groups)
    pads = _conv_pads(padding, x.shape[2:], w.shape[2:], stride, dilation)
    return x, w, b, dtype, unbatched, stride, dilation, groups, pads


def conv2d(
    input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, residual=None, relu=False
) -> np.ndarray:
    """2-D convolution (cross-correlation), as ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    input : array_like, shape (N, C_in, H, W) or (C_in, H, W)
    weight : array_like, shape (C_out, C_in / groups, kH, kW)
    bias : array_like, shape (C_out,), optional
    stride, dilation : int or (int, int)
    padding : int, (h, w), (left, right, top, bottom), 'valid' or 'same'
        ``'same'`` is TensorFlow's rule for every stride and dilation: the output
        is ``ceil(n / stride)`` and the odd padding pixel goes to the bottom/right.
    groups : int
    residual : array_like, shape of the output, optional
        fastconv extension: added to the output (a residual block's shortcut).
    relu : bool, default False
        fastconv extension: ``max(y, 0)`` of the output (after ``residual``; NaN kept, as torch's ReLU).

    Returns
    -------
    numpy.ndarray, shape (N, C_out, H_out, W_out) or (C_out, H_out, W_out)
        float64 if any argument is float64, else float32.

    Notes
    -----
    Integer, bool, complex and float16 arrays raise TypeError; mixed float32 and
    float64 are computed in float64.  The GIL is released while computing.

    ``residual`` and ``relu`` are applied to each part of the output right after the
    convolution writes it, while it is in cache: ``conv2d(x, w, b, residual=s,
    relu=True)`` equals ``relu(conv2d(x, w, b) + s)`` and saves two passes over the
    output.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.ones((1, 1, 5, 5), np.float32)
    >>> w = np.ones((1, 1, 3, 3), np.float32)
    >>> fastconv.conv2d(x, w, stride=2, padding="same").shape
    (1, 1, 3, 3)
    >>> fastconv.conv2d(x, w)[0, 0]
    array([[9., 9., 9.],
           [9., 9., 9.],
           [9., 9., 9.]], dtype=float32)
    >>> fastconv.conv2d(x, w, residual=np.full((1, 1, 3, 3), -10.0, np.float32), relu=True)[0, 0, 0]
    array([0., 0., 0.], dtype=float32)
    """
    x, w, b, dtype, unbatched, stride, dilation, groups, pads = _prepare_conv(
        input, weight, bias, stride, padding, dilation, groups
    )
    relu = as_bool(relu, "relu")
    r = None
    if residual is not None:
        r = as_array(residual, "residual")
        dtype = np.promote_types(dtype, float_dtype(("residual", r)))  # as conv(x) + residual: never downcast
        require_ndim(r, "residual", (3,) if unbatched else (4,))
        r = r[None] if unbatched else r
    y = _kernel(dtype, "conv2d_forward")(
        contiguous(x, dtype),
        contiguous(w, dtype),
        contiguous(b, dtype),
        stride,
        pads,
        dilation,
        groups,
        contiguous(r, dtype),
        relu,
    )
    return y[0] if unbatched else y


def conv2d_backward(
    grad_output, input, weight, stride=1, padding=0, dilation=1, groups=1, output_mask=(True, True, True)
):
    """Gradients of :func:`conv2d` with respect to input, weight and bias.

    Parameters
    ----------
    grad_output : array_like, the shape :func:`conv2d` returned
    input, weight, stride, padding, dilation, groups
        As given to :func:`conv2d`.
    output_mask : three bools, optional
        Which of (grad_input, grad_weight, grad_bias) to compute, as torch's
        ``convolution_backward``: a first layer needs no input gradient.

    Returns
    -------
    (grad_input, grad_weight, grad_bias) : tuple of numpy.ndarray or None
        ``grad_bias`` is ``grad_output`` summed over batch and space; a gradient
        ``output_mask`` leaves out is None.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.ones((1, 1, 4, 4)); w = np.ones((1, 1, 3, 3))
    >>> gy = np.ones((1, 1, 2, 2))
    >>> gx, gw, gb = fastconv.conv2d_backward(gy, x, w)
    >>> float(gw[0, 0, 0, 0]), gb
    (4.0, array([4.]))
    """
    x, w, _, dtype, unbatched, stride, dilation, groups, pads = _prepare_conv(
        input, weight, None, stride, padding, dilation, groups
    )
    gy = as_array(grad_output, "grad_output")
    dtype = float_dtype(("grad_output", gy), ("input", x), ("weight", w))
    if not isinstance(output_mask, (tuple, list)) or len(output_mask) != 3:
        raise ValueError(f"output_mask must be three bools (input, weight, bias), got {output_mask!r}")
    mask = [as_bool(v, "output_mask") for v in output_mask]
    if unbatched:
        require_ndim(gy, "grad_output", (3,))
        gy = gy[None]
    gx, gw, gb = _kernel(dtype, "conv2d_backward")(
        contiguous(gy, dtype),
        contiguous(x, dtype),
        contiguous(w, dtype),
        stride,
        pads,
        dilation,
        groups,
        *mask,
    )
    if gx is not None and unbatched:
        gx = gx[0]
    return gx, gw, gb


def _prepare_transpose(input, weight, bias, stride, padding, output_padding, groups, dilation):
    x = as_array(input, "input")
    w = as_array(weight, "weight")
    b = None if bias is None else as_array(bias, "bias")
    dtype = float_dtype(("input", x), ("weight", w), ("bias", b))
    x, unbatched = _batched(x, "input")
    require_ndim(w, "weight", (4,))
    stride = positive_pair(stride, "stride")
    dilation = positive_pair(dilation, "dilation")
    padding = nonnegative_pair(padding, "padding")
    output_padding = nonnegative_pair(output_padding, "output_padding")
    groups = _groups(groups)
    if b is not None and (b.ndim != 1 or b.shape[0] != w.shape[1] * groups):
        raise ValueError(f"bias must have shape ({w.shape[1] * groups},), got {b.shape}")
    return x, w, b, dtype, unbatched, (stride, padding, output_padding, groups, dilation)


def _empty_transpose(x: np.ndarray) -> bool:
    """An empty batch with a zero-size spatial axis: torch answers with an empty result, so do we."""
    return x.shape[0] == 0 and 0 in x.shape[2:]


def _transpose_shape(x: np.ndarray, w: np.ndarray, geom) -> tuple[int, int, int, int]:
    stride, padding, output_padding, groups, dilation = geom
    if w.shape[0] != x.shape[1]:
        raise ValueError(f"weight: expected weight.shape[0] == input channels {x.shape[1]}, got {w.shape[0]}")
    if x.shape[1] % groups:
        raise ValueError(f"groups: input channels {x.shape[1]} are not divisible by groups {groups}")
    size = [
        _core.conv_transpose_out(x.shape[2 + i], w.shape[2 + i], stride[i], padding[i], output_padding[i], dilation[i])
        for i in range(2)
    ]
    return (0, w.shape[1] * groups, size[0], size[1])


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Transposed 2-D convolution, as ``torch.nn.functional.conv_transpose2d``.

    Parameters
    ----------
    input : array_like, shape (N, C_in, H, W) or (C_in, H, W)
    weight : array_like, shape (C_in, C_out / groups, kH, kW)
    bias : array_like, shape (C_out,), optional
    stride, padding, output_padding, dilation : int or (int, int)
    groups : int

    Returns
    -------
    numpy.ndarray
        Spatial size ``(n - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.conv_transpose2d(np.ones((1, 2, 3, 3)), np.ones((2, 4, 2, 2)), stride=2).shape
    (1, 4, 6, 6)
    """
    x, w, b, dtype, unbatched, geom = _prepare_transpose(
        input, weight, bias, stride, padding, output_padding, groups, dilation
    )
    if _empty_transpose(x):
        return np.zeros(_transpose_shape(x, w, geom), dtype)
    y = _kernel(dtype, "conv_transpose2d_forward")(
        contiguous(x, dtype), contiguous(w, dtype), contiguous(b, dtype), *geom
    )
    return y[0] if unbatched else y


def conv_transpose2d_backward(grad_output, input, weight, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Gradients of :func:`conv_transpose2d`: ``(grad_input, grad_weight, grad_bias)``."""
    x, w, _, dtype, unbatched, geom = _prepare_transpose(
        input, weight, None, stride, padding, output_padding, groups, dilation
    )
    gy = as_array(grad_output, "grad_output")
    dtype = float_dtype(("grad_output", gy), ("input", x), ("weight", w))
    if unbatched:
        require_ndim(gy, "grad_output", (3,))
        gy = gy[None]
    if _empty_transpose(x):
        want = _transpose_shape(x, w, geom)
        if gy.shape != want:
            raise ValueError(f"grad_output: expected shape {want}, got {gy.shape}")
        return np.zeros(x.shape, dtype), np.zeros(w.shape, dtype), np.zeros(want[1], dtype)
    gx, gw, gb = _kernel(dtype, "conv_transpose2d_backward")(
        contiguous(gy, dtype), contiguous(x, dtype), contiguous(w, dtype), *geom, True
    )
    return (gx[0] if unbatched else gx), gw, gb


def unfold(input, kernel_size, dilation=1, padding=0, stride=1) -> np.ndarray:
    """Extract sliding blocks (im2col), as ``torch.nn.functional.unfold``.

    Returns an array of shape ``(N, C * kH * kW, L)`` (or ``(C * kH * kW, L)`` for
    an unbatched input) where ``L`` is the number of block positions.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.unfold(np.arange(16.).reshape(1, 1, 4, 4), 2, stride=2)[0]
    array([[ 0.,  2.,  8., 10.],
           [ 1.,  3.,  9., 11.],
           [ 4.,  6., 12., 14.],
           [ 5.,  7., 13., 15.]])
    """
    x = as_array(input, "input")
    dtype = float_dtype(("input", x))
    x, unbatched = _batched(x, "input")
    cols = _kernel(dtype, "unfold")(
        contiguous(x, dtype),
        positive_pair(kernel_size, "kernel_size"),
        positive_pair(dilation, "dilation"),
        nonnegative_pair(padding, "padding"),
        positive_pair(stride, "stride"),
    )
    return cols[0] if unbatched else cols


def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1) -> np.ndarray:
    """Sum sliding blocks back into an image (col2im), as ``torch.nn.functional.fold``.

    ``input`` has shape ``(N, C * kH * kW, L)`` or ``(C * kH * kW, L)``;
    overlapping blocks are added.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.fold(np.ones((1, 4, 9)), (4, 4), 2)[0, 0]
    array([[1., 2., 2., 1.],
           [2., 4., 4., 2.],
           [2., 4., 4., 2.],
           [1., 2., 2., 1.]])
    """
    cols = as_array(input, "input")
    dtype = float_dtype(("input", cols))
    require_ndim(cols, "input", (2, 3))
    unbatched = cols.ndim == 2
    if unbatched:
        cols = cols[None]
    x = _kernel(dtype, "fold")(
        contiguous(cols, dtype),
        positive_pair(output_size, "output_size"),
        positive_pair(kernel_size, "kernel_size"),
        positive_pair(dilation, "dilation"),
        nonnegative_pair(padding, "padding"),
        positive_pair(stride, "stride"),
    )
    return x[0] if unbatched else x


def _pool_args(input, kernel_size, stride, padding, dilation):
    x = as_array(input, "input")
    dtype = float_dtype(("input", x))
    x, unbatched = _batched(x, "input")
    kernel = positive_pair(kernel_size, "kernel_size")
    return (
        x,
        dtype,
        unbatched,
        kernel,
        pool_stride(stride, kernel),
        nonnegative_pair(padding, "padding"),
        positive_pair(dilation, "dilation"),
    )


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """2-D max pooling, as ``torch.nn.functional.max_pool2d``.

    ``stride`` defaults to ``kernel_size``; ``padding`` (implicit -inf) is at most
    half the kernel.  With ``return_indices`` the flat ``h * W + w`` position of
    every maximum is returned too (int64), as torch does; -1 marks a dilated
    window that lies wholly in padding (output -inf), where torch returns a
    position outside the plane.  NaN is the maximum of any window holding one,
    and the last NaN in scan order gives the index, as in torch.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.max_pool2d(np.arange(16.).reshape(1, 4, 4), 2)
    array([[[ 5.,  7.],
            [13., 15.]]])
    """
    x, dtype, unbatched, k, s, p, d = _pool_args(input, kernel_size, stride, padding, dilation)
    ceil_mode, return_indices = as_bool(ceil_mode, "ceil_mode"), as_bool(return_indices, "return_indices")
    y, idx = _kernel(dtype, "max_pool2d_forward")(contiguous(x, dtype), k, s, p, d, ceil_mode, return_indices)
    if unbatched:
        y, idx = y[0], (None if idx is None else idx[0])
    return (y, idx) if return_indices else y


def max_pool2d_backward(grad_output, input, indices, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Gradient of :func:`max_pool2d`: routes ``grad_output`` to the arg-max positions.

    ``indices`` are those ``max_pool2d(..., return_indices=True)`` returned: an
    integer array of ``grad_output``'s shape whose values are flat positions
    ``h * W + w`` inside their plane, or -1 where :func:`max_pool2d` found a
    window wholly in padding (its output is -inf and gets no gradient).  Anything
    else is refused (TypeError for a non-integer dtype, ValueError for another
    shape or a position outside the plane), never silently dropped.
    """
    x, dtype, unbatched, k, s, p, d = _pool_args(input, kernel_size, stride, padding, dilation)
    ceil_mode = as_bool(ceil_mode, "ceil_mode")
    gy = as_array(grad_output, "grad_output")
    dtype = float_dtype(("grad_output", gy), ("input", x))
    idx = _integer_indices(indices)
    if idx.shape != gy.shape:
        raise ValueError(f"indices must have grad_output's shape {gy.shape}, got {idx.shape}")
    if idx.dtype.kind == "u" and idx.size and idx.max() > np.iinfo(np.int64).max:
        raise ValueError(f"indices: every index must be a flat position in its plane, got {idx.max()}")
    if unbatched:
        gy, idx = gy[None], idx[None]
    gx = _kernel(dtype, "max_pool2d_backward")(
        contiguous(gy, dtype),
        np.ascontiguousarray(idx, dtype=np.int64),
        contiguous(x, dtype),
        k,
        s,
        p,
        d,
        ceil_mode,
    )
    return gx[0] if unbatched else gx


def _integer_indices(indices) -> np.ndarray:
    idx = as_array(indices, "indices")
    if idx.dtype.kind not in "iu":
        raise TypeError(f"indices must be an integer array (as max_pool2d returns them), got dtype {idx.dtype}")
    return idx


def _unpool_indices(indices, shape: tuple[int, ...]) -> np.ndarray:
    idx = _integer_indices(indices)
    if idx.shape != shape:
        raise ValueError(f"indices must have input's shape {shape}, got {idx.shape}")
    return idx


def _unpool_size(x: np.ndarray, kernel_size, stride, padding, output_size) -> tuple[int, int]:
    """torch's rule: (n - 1) * stride - 2 * padding + kernel_size (the transposed-convolution rule with
    dilation 1); an explicit output_size (the last two of 2 or 4 values) must lie strictly within one
    stride of it."""
    k = positive_pair(kernel_size, "kernel_size")
    s = pool_stride(stride, k)
    p = nonnegative_pair(padding, "padding")
    default = tuple(_core.conv_transpose_out(x.shape[2 + i], k[i], s[i], p[i], 0, 1) for i in range(2))
    if output_size is None:
        return default
    if not isinstance(output_size, (tuple, list)) or len(output_size) not in (2, 3, 4):
        raise ValueError(f"output_size must be (h, w) or a full shape ending in (h, w), got {output_size!r}")
    size = tuple(as_int(v, "output_size") for v in output_size[-2:])
    for i in range(2):
        if not default[i] - s[i] < size[i] < default[i] + s[i]:
            raise ValueError(
                f"output_size: {size} must lie strictly between {tuple(d - t for d, t in zip(default, s))} and "
                f"{tuple(d + t for d, t in zip(default, s))} (the default is {default})"
            )
    return size


def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None) -> np.ndarray:
    """Partial inverse of :func:`max_pool2d`, as ``torch.nn.functional.max_unpool2d``.

    Each value goes to the position its index names in a zero-filled output;
    every other output is zero.

    Parameters
    ----------
    input : array_like, shape (N, C, H, W) or (C, H, W)
        The pooled values.
    indices : array_like of int, the shape of ``input``
        Flat positions ``h * W_out + w``, as ``max_pool2d(..., return_indices=True)`` gives them.
    kernel_size, stride, padding
        As given to :func:`max_pool2d` (``stride`` defaults to ``kernel_size``).
    output_size : (h, w) or a shape ending in (h, w), optional
        Default ``(n - 1) * stride - 2 * padding + kernel_size``; otherwise strictly
        within one stride of it (an odd input size the pool rounded away).

    Returns
    -------
    numpy.ndarray, shape (N, C, H_out, W_out) or (C, H_out, W_out)

    Notes
    -----
    An index outside the output plane raises ValueError (torch raises too); a
    position named twice gets the later value.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> y, i = fastconv.max_pool2d(x, 2, return_indices=True)
    >>> fastconv.max_unpool2d(y, i, 2)[0, 0]
    array([[ 0.,  0.,  0.,  0.],
           [ 0.,  5.,  0.,  7.],
           [ 0.,  0.,  0.,  0.],
           [ 0., 13.,  0., 15.]])
    """
    x = as_array(input, "input")
    dtype = float_dtype(("input", x))
    x, unbatched = _batched(x, "input")
    idx = _unpool_indices(indices, x.shape[1:] if unbatched else x.shape)
    if unbatched:
        idx = idx[None]
    oh, ow = _unpool_size(x, kernel_size, stride, padding, output_size)
    y = _kernel(dtype, "max_unpool2d_forward")(contiguous(x, dtype), np.ascontiguousarray(idx, np.int64), oh, ow)
    return y[0] if unbatched else y


def max_unpool2d_backward(grad_output, indices) -> np.ndarray:
    """Gradient of :func:`max_unpool2d` with respect to its input: ``grad_output`` at the indexed positions.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> gy = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> fastconv.max_unpool2d_backward(gy, np.array([[[[5, 7], [13, 15]]]]))[0, 0]
    array([[ 5.,  7.],
           [13., 15.]])
    """
    gy = as_array(grad_output, "grad_output")
    dtype = float_dtype(("grad_output", gy))
    gy, unbatched = _batched(gy, "grad_output")
    idx = _integer_indices(indices)
    if unbatched:
        idx = idx[None]
    if idx.ndim != 4 or idx.shape[:2] != gy.shape[:2]:
        raise ValueError(f"indices must be (N, C, H, W) with grad_output's N and C {gy.shape[:2]}, got {idx.shape}")
    gx = _kernel(dtype, "max_unpool2d_backward")(contiguous(gy, dtype), np.ascontiguousarray(idx, np.int64))
    return gx[0] if unbatched else gx


def _divisor(divisor_override) -> int:
    if divisor_override is None:
        return 0
    d = as_int(divisor_override, "divisor_override")
    if d == 0:  # torch takes any other int, negative ones included
        raise ValueError(f"divisor_override must be a non-zero int, got {divisor_override!r}")
    return d


def avg_pool2d(
    input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None
):
    """2-D average pooling, as ``torch.nn.functional.avg_pool2d``.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.avg_pool2d(np.ones((1, 1, 3, 3)), 2, padding=1, count_include_pad=False)[0, 0]
    array([[1., 1.],
           [1., 1.]])
    """
    x, dtype, unbatched, k, s, p, _ = _pool_args(input, kernel_size, stride, padding, 1)
    y = _kernel(dtype, "avg_pool2d_forward")(
        contiguous(x, dtype),
        k,
        s,
        p,
        as_bool(ceil_mode, "ceil_mode"),
        as_bool(count_include_pad, "count_include_pad"),
        _divisor(divisor_override),
    )
    return y[0] if unbatched else y


def avg_pool2d_backward(
    grad_output,
    input,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
):
    """Gradient of :func:`avg_pool2d` with respect to its input."""
    x, dtype, unbatched, k, s, p, _ = _pool_args(input, kernel_size, stride, padding, 1)
    gy = as_array(grad_output, "grad_output")
    dtype = float_dtype(("grad_output", gy), ("input", x))
    if unbatched:
        gy = gy[None]
    gx = _kernel(dtype, "avg_pool2d_backward")(
        contiguous(gy, dtype),
        contiguous(x, dtype),
        k,
        s,
        p,
        as_bool(ceil_mode, "ceil_mode"),
        as_bool(count_include_pad, "count_include_pad"),
        _divisor(divisor_override),
    )
    return gx[0] if unbatched else gx


_PASSES = ("forward", "input_grad", "weight_grad")


def _shape4(value, name):
    try:
        shape = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be a shape like (N, C, H, W), got {value!r}") from None
    for v in shape:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must hold ints, got {value!r}")
    if len(shape) == 3 and name == "input_shape":
        shape = (1, *shape)
    if len(shape) != 4:
        raise ValueError(f"{name} must have 4 dimensions{' (or 3, unbatched)' if name == 'input_shape' else ''}, "
                         f"got {value!r}")  # fmt: skip
    return tuple(int(v) for v in shape)


def explain_conv2d(
    input_shape,
    weight_shape,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    *,
    dtype="float32",
    prepared=False,
    mode="stdout",
):
    """Which algorithm each pass of a convolution runs, and why.

    The rules that choose among Winograd, the direct kernels, the implicit GEMM and im2col + GEMM live in one
    place (``csrc/ops/conv_paths.cpp``); this asks them for a layer, as :func:`conv2d` and
    :func:`conv2d_backward` (or a :class:`Conv2dPlan`, with ``prepared=True``) would run it now: at the active
    kernel level (``FASTCONV_CPU``) and under the ``FASTCONV_WINOGRAD`` and ``FASTCONV_IMPLICIT_GEMM`` switches.

    Parameters
    ----------
    input_shape : (N, C_in, H, W) or (C_in, H, W)
    weight_shape : (C_out, C_in / groups, kH, kW)
    stride, padding, dilation, groups
        As for :func:`conv2d`.
    dtype : {'float32', 'float64'}
    prepared : bool
        The weights of a :class:`Conv2dPlan` (packed and transformed once), which changes some choices.
    mode : {'stdout', 'dicts'}
        Print the report (and return None), or return it as a dict: pass name -> ``{"algorithm", "reason"}``,
        and ``"output_size"``.

    Returns
    -------
    None or dict

    Notes
    -----
    The choice assumes finite data: where a path would multiply an Inf or NaN differently from torch (Winograd's
    transforms, zero padding met by the weights), the operators check and take the next path, and the reason
    says so for the path that was given up.  A transposed convolution's forward is the input gradient of the
    convolution it transposes (and its input gradient that convolution's forward).

    Examples
    --------
    >>> import fastconv
    >>> r = fastconv.explain_conv2d((1, 32, 56, 56), (32, 1, 3, 3), padding=1, groups=32, mode="dicts")
    >>> r["forward"]["algorithm"], r["input_grad"]["algorithm"]
    ('direct', 'direct')
    >>> fastconv.explain_conv2d((8, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3, mode="dicts")["output_size"]
    (112, 112)
    """
    x = _shape4(input_shape, "input_shape")
    w = _shape4(weight_shape, "weight_shape")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in _SUFFIX:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}")
    if mode not in ("stdout", "dicts"):
        raise ValueError(f"mode must be 'stdout' or 'dicts', got {mode!r}")
    stride = positive_pair(stride, "stride")
    dilation = positive_pair(dilation, "dilation")
    groups = _groups(groups)
    pads = _conv_pads(padding, x[2:], w[2:], stride, dilation)
    rows, size = _core.explain_conv2d(x, w, stride, pads, dilation, groups, dt.itemsize, as_bool(prepared, "prepared"))
    report = {name: {"algorithm": algo, "reason": why} for name, algo, why in rows}
    report["output_size"] = tuple(size)
    if mode == "dicts":
        return report
    weights = ", prepared weights" if prepared else ""
    print(f"conv2d {x} * {w} -> {(x[0], w[0], *size)}, stride {stride}, padding {pads}, dilation {dilation}, "
          f"groups {groups}, {dt.name}{weights}, level {_core.active_level()}:")  # fmt: skip
    for name in _PASSES:
        print(f"  {name:<12} {report[name]['algorithm']:<22} {report[name]['reason']}")
    return None
