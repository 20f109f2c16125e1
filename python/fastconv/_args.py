"""Argument normalisation shared by every public function.

Each helper names the argument it checks and the value it received, so a user
sees ``ValueError: stride must be positive, got (0, 1)`` rather than a crash.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_FLOATS = (_F32, _F64)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _int64(value: int, name: str) -> int:
    # The C++ kernels take int64: a larger Python int would reach pybind11 as a
    # signature mismatch instead of a message naming the argument.
    if _INT64_MIN <= value <= _INT64_MAX:
        return value
    raise ValueError(f"{name} must fit in int64 (|value| < 2**63), got {value}")


def as_int(value: Any, name: str) -> int:
    """An int64-sized integer (bools and floats refused) named ``name`` in errors."""
    if type(value) is int:  # the common case, first: this runs several times per call
        return _int64(value, name)
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, got bool {value!r}")
    try:
        return _int64(operator.index(value), name)
    except TypeError:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from None


def as_pair(value: Any, name: str) -> tuple[int, int]:
    """``int``, ``(v,)`` or ``(h, w)`` -> ``(h, w)``; a 1-element sequence is repeated, as torch does."""
    if type(value) is int:
        v = _int64(value, name)
        return v, v
    if isinstance(value, (tuple, list)):
        if len(value) == 1:
            v = as_int(value[0], name)
            return v, v
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair (h, w), got {value!r}")
        return as_int(value[0], name), as_int(value[1], name)
    v = as_int(value, name)
    return v, v


def pool_stride(stride: Any, kernel: tuple[int, int]) -> tuple[int, int]:
    """A pool's stride: ``None`` or an empty sequence (torch's default ``()``) means the kernel size."""
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        return kernel
    return positive_pair(stride, "stride")


def as_bool(value: Any, name: str) -> bool:
    """A flag: ``bool`` or ``numpy.bool_`` only, as torch refuses ``'no'``, ``0`` or ``None``."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")


def is_pair_like(value: Any) -> bool:
    return isinstance(value, (tuple, list))


def positive_pair(value: Any, name: str) -> tuple[int, int]:
    pair = as_pair(value, name)
    if min(pair) <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return pair


def nonnegative_pair(value: Any, name: str) -> tuple[int, int]:
    pair = as_pair(value, name)
    if min(pair) < 0:
        raise ValueError(f"{name} must be non-negative, got {value!r}")
    return pair


def explicit_padding(value: Any, name: str = "padding") -> tuple[int, int, int, int] | None:
    """int, ``(h, w)`` or ``(left, right, top, bottom)`` -> ``(top, bottom, left, right)``.

    Returns None for ``'same'``, whose amounts depend on the input size.
    """
    if type(value) is int and value >= 0:  # the common case, first (several times per call)
        v = _int64(value, name)
        return v, v, v, v
    if isinstance(value, str):
        if value == "valid":
            return 0, 0, 0, 0
        if value == "same":
            return None
        raise ValueError(f"{name} must be an int, a pair, a 4-tuple, 'valid' or 'same', got {value!r}")
    if isinstance(value, (tuple, list)) and len(value) == 4:
        left, right, top, bottom = (as_int(v, name) for v in value)
        pads = (top, bottom, left, right)
    else:
        ph, pw = as_pair(value, name)
        pads = (ph, ph, pw, pw)
    if min(pads) < 0:
        raise ValueError(f"{name} must be non-negative, got {value!r}")
    return pads


def float_dtype(*named: tuple[str, Any]) -> np.dtype:
    """The compute dtype of several arrays: float64 if any is float64, else float32.

    Mixed float32/float64 is promoted, never downcast; non-native byte orders
    count as their native dtype (the arrays are converted).  Anything that is not
    float32 or float64 (integers, bool, complex, float16, objects) is a TypeError
    naming the argument and its dtype.
    """
    result = _F32
    for name, array in named:
        if array is None:
            continue
        dt = array.dtype
        if dt is _F32:  # the native dtypes are singletons: the common cases without comparisons
            continue
        if dt is _F64:
            result = _F64
            continue
        if not dt.isnative:  # big-endian '>f4' and the like: converted by contiguous()
            dt = dt.newbyteorder("=")
        if dt not in _FLOATS:
            raise TypeError(f"{name} must be float32 or float64, got dtype {dt}")
        if dt == np.float64:
            result = np.dtype(np.float64)
    return result


def as_array(value: Any, name: str) -> np.ndarray:
    if value is None:
        raise TypeError(f"{name} must be an array, got None")
    try:
        return np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} could not be converted to an array: {exc}") from None


def require_ndim(array: np.ndarray, name: str, allowed: tuple[int, ...]) -> None:
    if array.ndim not in allowed:
        want = " or ".join(f"{n}-D" for n in allowed)
        raise ValueError(f"{name} must be {want}, got shape {array.shape} (ndim={array.ndim})")


def contiguous(array: np.ndarray | None, dtype: np.dtype) -> np.ndarray | None:
    """C-contiguous copy only when needed (non-contiguous, reversed, Fortran or other dtype)."""
    if array is None:
        return None
    if array.dtype == dtype and array.flags.c_contiguous:
        return array
    return np.ascontiguousarray(array, dtype=dtype)
