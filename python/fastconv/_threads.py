"""The number of threads fastconv's kernels use."""

from __future__ import annotations

from . import _core
from ._args import as_int

__all__ = ["get_num_threads", "set_num_threads"]

MAX_THREADS = 1024


def get_num_threads() -> int:
    """The number of threads fastconv's kernels use.

    The default, set at import: ``FASTCONV_NUM_THREADS``, else ``OMP_NUM_THREADS``, else the CPUs the process may
    run on (its CPU affinity, as ``taskset`` sets it), capped by a cgroup CPU quota (a container's ``--cpus``).
    :func:`show_config` says which one it came from.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.get_num_threads() >= 1
    True
    """
    return _core.get_num_threads()


def set_num_threads(n: int) -> None:
    """Set the number of threads fastconv's kernels use.

    Parameters
    ----------
    n : int
        In ``[1, 1024]``.  More threads than cores is allowed (and correct), but
        rarely faster.

    Raises
    ------
    TypeError
        ``n`` is not an int (bools and floats included).
    ValueError
        ``n`` is outside ``[1, 1024]``.

    Notes
    -----
    Results are bit-identical for a given thread count, whatever the timing,
    the number of Python threads calling at once, or a ``fork``.  Threads are
    started on first need; if the system cannot start one, the call that needed
    it raises ``RuntimeError`` and the pool stays usable with fewer threads.

    Examples
    --------
    >>> import fastconv
    >>> old = fastconv.get_num_threads()
    >>> fastconv.set_num_threads(2)
    >>> fastconv.get_num_threads()
    2
    >>> fastconv.set_num_threads(old)
    """
    value = as_int(n, "n")
    if not 1 <= value <= MAX_THREADS:
        raise ValueError(f"n must be a number of threads in [1, {MAX_THREADS}], got {n!r}")
    _core.set_num_threads(value)
    from ._resources import SOURCES

    SOURCES["threads"] = "set_num_threads"
