"""The memory fastconv keeps for large results."""

from __future__ import annotations

from . import _core

__all__ = ["empty_cache"]


def empty_cache() -> int:
    """Free the memory fastconv keeps for reuse by large results.

    Results of 4 MiB or more (every function's returned arrays) live in blocks
    that fastconv keeps when the array and all its views are gone, and hands
    out again to a later result of about the same size: the operating system
    then need not map and zero fresh pages on every call, which costs a third of
    a 3 -> 32 channel convolution of one 512x512 image.  ONNX Runtime's arena
    does the same.

    Returns
    -------
    int
        The number of bytes that were kept and are now freed.

    Notes
    -----
    At most ``FASTCONV_CACHE_MB`` megabytes are kept (read whenever a result is
    freed; default 256, ``0`` keeps none); the oldest blocks go first.  Such
    results are ordinary writeable NumPy arrays whose ``base`` is the capsule
    that owns the block (``flags.owndata`` is False, as for ONNX Runtime's
    results), so ``ndarray.resize`` in place is refused.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> y = fastconv.conv2d(np.ones((1, 3, 512, 512), np.float32), np.ones((32, 3, 3, 3), np.float32), padding=1)
    >>> del y
    >>> fastconv.empty_cache() >= 32 * 512 * 512 * 4
    True
    >>> fastconv.empty_cache()
    0
    """
    return _core.empty_cache()
