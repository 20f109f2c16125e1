"""``interpolate`` and its backward, with ``torch.nn.functional.interpolate``'s semantics.

Python turns the options into per-axis tap tables (which input rows and columns
each output reads, with what weight) by torch's coordinate rules; one C++ kernel
applies them, threaded over planes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _core
from ._args import as_array, as_bool, as_int, contiguous, float_dtype, require_ndim

__all__ = ["interpolate", "interpolate_backward"]

_MODES = ("nearest", "nearest-exact", "bilinear", "bicubic")
_SUFFIX = {np.dtype(np.float32): "_float32", np.dtype(np.float64): "_float64"}
_CUBIC_A = -0.75  # torch's (and OpenCV's) cubic convolution constant


def scale_pair(value: Any) -> tuple[float, float]:
    pair = value if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2:
        raise ValueError(f"scale_factor must be a number or a pair (h, w), got {value!r}")
    try:
        if any(isinstance(v, (str, bytes, bool)) for v in pair):  # float() would take "2" and True
            raise TypeError
        out = tuple(float(v) for v in pair)
    except (TypeError, ValueError):
        raise TypeError(f"scale_factor must be a number or a pair of numbers, got {value!r}") from None
    if not all(math.isfinite(v) and v > 0 for v in out):
        raise ValueError(f"scale_factor must be positive and finite, got {value!r}")
    return out


def plan(hw, size, scale_factor, mode, align_corners, recompute_scale_factor=None):
    """Output size, the scales torch's kernels use (None: input/output ratio) and align_corners.

    The one output-size rule of interpolate, Upsample's spec and its layer.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {', '.join(_MODES)}, got {mode!r}")
    if align_corners is not None:
        align_corners = as_bool(align_corners, "align_corners")
        if mode in ("nearest", "nearest-exact"):
            raise ValueError(
                f"align_corners can only be set with the interpolating modes bilinear and bicubic, got mode {mode!r}"
            )
    if recompute_scale_factor is not None:
        recompute_scale_factor = as_bool(recompute_scale_factor, "recompute_scale_factor")
    if (size is None) == (scale_factor is None):
        raise ValueError("exactly one of size and scale_factor must be given")
    if size is not None:
        if recompute_scale_factor:
            raise ValueError("recompute_scale_factor is only meaningful with scale_factor")
        pair = size if isinstance(size, (tuple, list)) else (size, size)
        if len(pair) != 2:
            raise ValueError(f"size must be an int or a pair (h, w), got {size!r}")
        out = tuple(as_int(v, "size") for v in pair)
        scales = (None, None)
    else:
        scales = scale_pair(scale_factor)
        out = tuple(math.floor(hw[i] * scales[i]) for i in range(2))  # torch: floor(double(n) * scale)
        if recompute_scale_factor:
            scales = (None, None)
    if min(out) < 1:
        raise ValueError(f"output size must be positive, got {out} from input {tuple(hw)}")
    return out, scales, bool(align_corners)


def _axis_taps(mode: str, n_in: int, n_out: int, align_corners: bool, scale):
    """(index, weight) tables of shape (n_out, taps) for one axis, by torch's rules."""
    if mode in ("nearest", "nearest-exact"):
        # torch computes these in float32: same arithmetic, same indices.
        s = np.float32(1.0 / scale) if scale else np.float32(n_in) / np.float32(n_out)
        dst = np.arange(n_out, dtype=np.float32)
        if mode == "nearest":
            if n_out == n_in:
                idx = np.arange(n_out)
            elif n_out == 2 * n_in:
                idx = np.arange(n_out) >> 1
            else:
                idx = np.floor(dst * s).astype(np.int64)
        else:
            idx = np.floor((dst + np.float32(0.5)) * s).astype(np.int64)
        idx = np.minimum(idx, n_in - 1)[:, None]
        return np.ascontiguousarray(idx, np.int64), np.ones(idx.shape)
    if align_corners:
        s = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        src = s * np.arange(n_out, dtype=np.float64)
    else:
        s = 1.0 / scale if scale else n_in / n_out
        src = s * (np.arange(n_out, dtype=np.float64) + 0.5) - 0.5
    if mode == "bilinear":
        src = np.maximum(src, 0.0)
        i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        lam = np.clip(src - i0, 0.0, 1.0)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return np.stack([i0, i1], 1), np.stack([1.0 - lam, lam], 1)
    # bicubic: four taps around floor(src), clamped to the input (torch's bounded access)
    i0 = np.floor(src).astype(np.int64)
    t = src - i0
    a = _CUBIC_A

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    weights = np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], 1)
    idx = np.clip(i0[:, None] + np.arange(-1, 3)[None, :], 0, n_in - 1)
    return np.ascontiguousarray(idx), np.ascontiguousarray(weights)


def _batched4(x: np.ndarray, name: str):
    require_ndim(x, name, (3, 4))
    return (x[None], True) if x.ndim == 3 else (x, False)


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None, recompute_scale_factor=None):
    """Resize images, as ``torch.nn.functional.interpolate`` for 2-D images.

    Parameters
    ----------
    input : array_like, shape (N, C, H, W) or unbatched (C, H, W)
    size : int or (int, int), optional
        Output size; exactly one of ``size`` and ``scale_factor``.
    scale_factor : float or (float, float), optional
        Output size ``floor(n * scale_factor)``; the kernels use the factor itself
        for coordinates unless ``recompute_scale_factor`` (then ``n_in / n_out``).
    mode : {'nearest', 'nearest-exact', 'bilinear', 'bicubic'}
    align_corners : bool, optional
        For ``bilinear`` and ``bicubic`` only (default False): map corner pixel
        centres onto each other.
    recompute_scale_factor : bool, optional

    Returns
    -------
    numpy.ndarray, shape (N, C, H_out, W_out) or (C, H_out, W_out)

    Notes
    -----
    A 3-D input is one unbatched image here (fastconv's convention), where torch
    would read it as a batch of 1-D signals.  ``nearest`` is torch's legacy rule
    (``floor(dst * scale)``); ``nearest-exact`` rounds pixel centres.  Bicubic uses
    torch's constant -0.75 and clamps taps at the borders, so results can leave
    the input's range, as in torch.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.arange(4.0).reshape(1, 1, 2, 2)
    >>> fastconv.interpolate(x, scale_factor=2)[0, 0]
    array([[0., 0., 1., 1.],
           [0., 0., 1., 1.],
           [2., 2., 3., 3.],
           [2., 2., 3., 3.]])
    >>> fastconv.interpolate(x, size=3, mode="bilinear", align_corners=True)[0, 0]
    array([[0. , 0.5, 1. ],
           [1. , 1.5, 2. ],
           [2. , 2.5, 3. ]])
    """
    x = as_array(input, "input")
    dtype = float_dtype(("input", x))
    x, unbatched = _batched4(x, "input")
    (oh, ow), scales, corners = plan(x.shape[2:], size, scale_factor, mode, align_corners, recompute_scale_factor)
    ri, rw = _axis_taps(mode, x.shape[2], oh, corners, scales[0])
    ci, cw = _axis_taps(mode, x.shape[3], ow, corners, scales[1])
    y = getattr(_core, "interpolate_forward" + _SUFFIX[dtype])(contiguous(x, dtype), ri, rw, ci, cw)
    return y[0] if unbatched else y


def interpolate_backward(
    grad_output,
    input_size,
    size=None,
    scale_factor=None,
    mode="nearest",
    align_corners=None,
    recompute_scale_factor=None,
):
    """Gradient of :func:`interpolate` with respect to its input.

    Parameters
    ----------
    grad_output : array_like, the shape :func:`interpolate` returned
    input_size : (N, C, H, W) or (C, H, W)
        The input's shape.
    size, scale_factor, mode, align_corners, recompute_scale_factor
        As given to :func:`interpolate`.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.interpolate_backward(np.ones((1, 1, 4, 4)), (1, 1, 2, 2), scale_factor=2)[0, 0]
    array([[4., 4.],
           [4., 4.]])
    """
    gy = as_array(grad_output, "grad_output")
    dtype = float_dtype(("grad_output", gy))
    if not isinstance(input_size, (tuple, list)) or len(input_size) not in (3, 4):
        raise ValueError(f"input_size must be the input's shape (N, C, H, W) or (C, H, W), got {input_size!r}")
    shape = tuple(as_int(v, "input_size") for v in input_size)
    if min(shape) < 0 or min(shape[-2:]) < 1:
        raise ValueError(f"input_size must have a positive height and width, got {input_size!r}")
    gy, unbatched = _batched4(gy, "grad_output")
    if (len(shape) == 3) != unbatched or gy.shape[:2] != (shape[:2] if len(shape) == 4 else (1, shape[0])):
        raise ValueError(f"grad_output of shape {gy.shape} does not match input_size {input_size!r}")
    h, w = shape[-2:]
    (oh, ow), scales, corners = plan((h, w), size, scale_factor, mode, align_corners, recompute_scale_factor)
    ri, rw = _axis_taps(mode, h, oh, corners, scales[0])
    ci, cw = _axis_taps(mode, w, ow, corners, scales[1])
    gx = getattr(_core, "interpolate_backward" + _SUFFIX[dtype])(contiguous(gy, dtype), h, w, ri, rw, ci, cw)
    return gx[0] if unbatched else gx
