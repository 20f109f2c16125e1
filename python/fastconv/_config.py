"""What fastconv found on this CPU and which kernel serves each family."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

from . import _core
from ._resources import SOURCES

__all__ = ["show_config"]

_KNOBS = (
    "FASTCONV_CPU",
    "FASTCONV_GEMM",
    "FASTCONV_WINOGRAD",
    "FASTCONV_WINOGRAD_GEMM",
    "FASTCONV_IMPLICIT_GEMM",
    "FASTCONV_IMPLICIT_LAYOUT",
    "FASTCONV_IMPLICIT_PANEL",
    "FASTCONV_OPENBLAS_CORETYPE",
    "OPENBLAS_CORETYPE",
    "FASTCONV_NUM_THREADS",
    "OMP_NUM_THREADS",
    "FASTCONV_CACHE_MB",
)


def show_config(file=None) -> dict[str, Any]:
    """Print, and return as a dict, the CPU features, the kernels in use and the thread count.

    Parameters
    ----------
    file : file-like, optional
        Where to print (default ``sys.stdout``); ``False`` prints nothing.

    Returns
    -------
    dict
        ``machine``, ``cpu_features`` (what the CPU reports), ``build_target`` (what the
        compiler could use outside the run-time chosen kernels), ``level`` (the widest
        instruction set whose fastconv kernels run), ``kernels`` (family -> kernel),
        ``openblas_core``, ``threads``, ``threads_from`` (``'affinity'``, ``'cgroup quota'``,
        ``'FASTCONV_NUM_THREADS'``, ``'OMP_NUM_THREADS'``, ``'set_num_threads'``, ``'threadpoolctl'``),
        ``cache_mb`` and ``cache_from`` (the kept-result-blocks budget: ``'default'``, ``'cgroup memory
        limit'``, ``'FASTCONV_CACHE_MB'``) and ``environment`` (the variables that change the choice, when
        set).

    Notes
    -----
    Every dispatched kernel (GEMM, Winograd, direct, small-K GEMM) is chosen at run
    time from the level, so ``FASTCONV_CPU=avx2`` on an AVX-512 CPU runs exactly the
    kernels an AVX2 CPU gets.  Pooling and interpolation are baseline-ISA operator
    code.  A level the CPU lacks makes ``import fastconv`` fail with a message naming
    what is missing.

    Examples
    --------
    >>> import fastconv
    >>> cfg = fastconv.show_config(file=False)
    >>> sorted(cfg["kernels"])
    ['direct', 'gemm float32', 'gemm float64', 'pooling', 'small-k gemm', 'winograd float32']
    >>> cfg["threads"] == fastconv.get_num_threads()
    True
    """
    features = list(_core.cpu_features())
    target = _core.build_target()
    core = _core.blas_core_name()
    gemm32 = _core.sgemm_kernel_name()
    if gemm32 == "OpenBLAS":
        gemm32 = f"OpenBLAS ({core} kernels)"
    config = {
        "machine": platform.machine(),
        "cpu_features": features,
        "build_target": target,
        "level": _core.active_level(),
        "cpu_level": _core.cpu_level(),
        "kernels": {
            "gemm float32": gemm32,
            "gemm float64": f"OpenBLAS ({core} kernels)",
            "winograd float32": _core.winograd_kernel_name(),
            "direct": _core.direct_kernel_name(),
            "small-k gemm": _core.direct_kernel_name(),
            "pooling": "portable C++",
        },
        "openblas_core": core,
        "threads": _core.get_num_threads(),
        "threads_from": SOURCES.get("threads", "affinity"),
        "cache_mb": _core._cache_limit() / (1 << 20),
        "cache_from": "FASTCONV_CACHE_MB" if os.environ.get("FASTCONV_CACHE_MB") else SOURCES.get("cache", "default"),
        "environment": {k: os.environ[k] for k in _KNOBS if k in os.environ},
    }
    if file is not False:
        out = sys.stdout if file is None else file
        cap = "" if config["level"] == config["cpu_level"] else f" (capped; the CPU runs {config['cpu_level']})"
        plural = "s" if config["threads"] != 1 else ""
        print(
            f"fastconv on {config['machine']}, level {config['level']}{cap}, {config['threads']} thread{plural} (from "
            f"{config['threads_from']}), {config['cache_mb']:g} MiB kept result blocks (from {config['cache_from']})",
            file=out,
        )
        print(f"  cpu features: {' '.join(features) or '(none detected)'}", file=out)
        print(f"  build target: {target}", file=out)
        for family, kernel in config["kernels"].items():
            print(f"  {family + ':':<18}{kernel}", file=out)
        for k, v in config["environment"].items():
            print(f"  {k}={v}", file=out)
    return config
