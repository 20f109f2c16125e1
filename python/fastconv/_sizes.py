"""The single-layer size rules: a convolution's, a pool's and a transposed convolution's output size, TensorFlow's
'same' padding and the rows a layer drops.  Computed by the C++ functions the kernels and the size solver use
(``csrc/core/geometry.hpp``).  The layer specs (``fastconv.layers``) and the model-level shape tools
(``fastconv.shapes``, which re-exports these as its public names) both build on this module.
"""

from __future__ import annotations

from typing import Any

from . import _core
from ._args import as_bool, as_pair, explicit_padding, is_pair_like, pool_stride

__all__ = ["conv_output_size", "pool_output_size", "conv_transpose_output_size", "same_padding", "dropped_pixels"]


def _form(values: tuple[int, int], *args: Any):
    return values if any(is_pair_like(a) and len(a) == 2 for a in args) else values[0]


def _pads(padding: Any, n, kernel, stride, dilation) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) for any padding form, 'same' included."""
    pads = explicit_padding(padding)
    if pads is None:
        return same_padding(as_pair(n, "n"), kernel, stride, dilation)
    return (pads[0], pads[1]), (pads[2], pads[3])


def conv_output_size(n, kernel_size, stride=1, padding=0, dilation=1):
    """Output size of a convolution, torch's rule ``floor((n + 2p - d(k-1) - 1) / s) + 1``.

    Parameters
    ----------
    n : int or (int, int)
        Input size.
    kernel_size, stride, dilation : int or (int, int)
    padding : int, (h, w), (left, right, top, bottom), 'valid' or 'same'
        ``'same'`` is TensorFlow's rule for any stride: the output is ``ceil(n / s)``.

    Returns
    -------
    int or (int, int)

    Raises
    ------
    ValueError
        When the dilated kernel is larger than the padded input, or for a
        non-positive stride/dilation/kernel or negative padding.

    Examples
    --------
    >>> from fastconv.shapes import conv_output_size
    >>> conv_output_size(224, 7, stride=2, padding=3)
    112
    >>> conv_output_size((224, 160), 3, stride=2, padding="same")
    (112, 80)
    """
    hw = as_pair(n, "n")
    k, s, d = as_pair(kernel_size, "kernel_size"), as_pair(stride, "stride"), as_pair(dilation, "dilation")
    (pt, pb), (pl, pr) = _pads(padding, hw, k, s, d)
    out = (_core.conv_out(hw[0], k[0], s[0], pt, pb, d[0]), _core.conv_out(hw[1], k[1], s[1], pl, pr, d[1]))
    pad_form = padding if not isinstance(padding, str) else 0
    return _form(out, n, kernel_size, stride, dilation, pad_form)


def dropped_pixels(n, kernel_size, stride=1, padding=0, dilation=1):
    """Input rows (and columns) a convolution or pool never reads.

    A row is read when it lies inside some window's extent ``d(k-1) + 1``.  The
    unread rows are the trailing ``(n + 2p - d(k-1) - 1) % s`` positions that
    are not padding, and, when the stride is longer than the dilated kernel
    (``s > d(k-1) + 1``), the ``s - d(k-1) - 1`` rows between consecutive
    windows.  Returns the int or pair form of ``n``.

    Examples
    --------
    >>> from fastconv.shapes import dropped_pixels
    >>> dropped_pixels(28, 3, stride=2)
    1
    >>> dropped_pixels(7, 1, stride=3)  # reads rows 0, 3 and 6 only
    4
    """
    hw = as_pair(n, "n")
    k, s, d = as_pair(kernel_size, "kernel_size"), as_pair(stride, "stride"), as_pair(dilation, "dilation")
    (pt, pb), (pl, pr) = _pads(padding, hw, k, s, d)
    out = (
        _core.conv_dropped(hw[0], k[0], s[0], pt, pb, d[0]),
        _core.conv_dropped(hw[1], k[1], s[1], pl, pr, d[1]),
    )
    return _form(out, n, kernel_size, stride, dilation)


def same_padding(n, kernel_size, stride=1, dilation=1):
    """TensorFlow/Keras ``padding='same'`` amounts: ``(before, after)`` per axis.

    The output is ``ceil(n / stride)``; the total padding is
    ``max(0, (out - 1) * stride + dilation * (k - 1) + 1 - n)`` and the odd pixel
    goes after (bottom/right).  At stride 1 this is torch's ``padding='same'``;
    for stride > 1 torch refuses it (pytorch issues 3867, 67551).

    Returns
    -------
    (int, int) for an int ``n``, else ((top, bottom), (left, right)).

    Examples
    --------
    >>> from fastconv.shapes import same_padding
    >>> same_padding(224, 7, stride=2)
    (2, 3)
    >>> same_padding((5, 6), 3, stride=2)
    ((1, 1), (0, 1))
    """
    hw = as_pair(n, "n")
    k, s, d = as_pair(kernel_size, "kernel_size"), as_pair(stride, "stride"), as_pair(dilation, "dilation")
    h = _core.same_padding(hw[0], k[0], s[0], d[0])
    w = _core.same_padding(hw[1], k[1], s[1], d[1])
    pair = ((h[0], h[1]), (w[0], w[1]))
    return pair if any(is_pair_like(a) for a in (n, kernel_size, stride, dilation)) else pair[0]


def pool_output_size(n, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Output size of ``max_pool2d``/``avg_pool2d`` by torch's rule.

    ``stride`` defaults to ``kernel_size``.  In ``ceil_mode`` the last window is
    dropped when it would start inside the right padding, as torch does.

    Examples
    --------
    >>> from fastconv.shapes import pool_output_size
    >>> pool_output_size(112, 3, stride=2, padding=1)
    56
    >>> pool_output_size(6, 3, stride=2, ceil_mode=True)
    3
    """
    hw = as_pair(n, "n")
    k = as_pair(kernel_size, "kernel_size")
    s = pool_stride(stride, k)
    p, d = as_pair(padding, "padding"), as_pair(dilation, "dilation")
    out = tuple(_core.pool_out(hw[i], k[i], s[i], p[i], d[i], as_bool(ceil_mode, "ceil_mode")) for i in range(2))
    return _form(out, n, kernel_size, stride, padding, dilation)


def conv_transpose_output_size(n, kernel_size, stride=1, padding=0, output_padding=0, dilation=1):
    """Output size of a transposed convolution.

    ``(n - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1``,
    with torch's constraint that ``output_padding`` is smaller than stride or
    dilation.

    Examples
    --------
    >>> from fastconv.shapes import conv_transpose_output_size
    >>> conv_transpose_output_size(7, 3, stride=2, padding=1, output_padding=1)
    14
    """
    hw = as_pair(n, "n")
    k, s = as_pair(kernel_size, "kernel_size"), as_pair(stride, "stride")
    p, op, d = as_pair(padding, "padding"), as_pair(output_padding, "output_padding"), as_pair(dilation, "dilation")
    out = tuple(_core.conv_transpose_out(hw[i], k[i], s[i], p[i], op[i], d[i]) for i in range(2))
    return _form(out, n, kernel_size, stride, padding, output_padding, dilation)


for _f in (conv_output_size, pool_output_size, conv_transpose_output_size, same_padding, dropped_pixels):
    _f.__module__ = "fastconv.shapes"  # their public home
