"""Load the vendored OpenBLAS with the right kernels, then the C++ extension.

OpenBLAS 0.3.34 (DYNAMIC_ARCH) maps AMD CPUs with AVX-512 (Zen 4 and later)
to its Haswell/Zen AVX2 kernels; its SkylakeX AVX-512 kernels are about twice
as fast there (sgemm 2048^3 on one core: 92 -> 215 GFLOP/s on this project's
2-core EPYC).  The choice is read from ``OPENBLAS_CORETYPE`` once, when the
library loads, so we set it only around the import of ``_core`` and only when
the user has not set it; it is not left in ``os.environ``.  On aarch64 CPUs
with SME it chooses the NEON kernels instead of the broken ``armv9sme`` ones.
"""

from __future__ import annotations

import os
import platform
import struct

_SKYLAKEX_FLAGS = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}


def _amd_with_avx512() -> bool:
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read(65536)
    except OSError:
        return False
    vendor = flags = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "vendor_id" and vendor is None:
            vendor = value.strip()
        elif key == "flags" and flags is None:
            flags = set(value.split())
        if vendor is not None and flags is not None:
            break
    return vendor == "AuthenticAMD" and flags is not None and _SKYLAKEX_FLAGS <= flags


# OpenBLAS core types for a FASTCONV_CPU cap: what a CPU of that level would load.
_CAPPED_CORETYPE = {
    ("avx2", "x86_64"): "Haswell",
    ("portable", "x86_64"): "Nehalem",  # SSE4.2, no AVX: the oldest core this OpenBLAS build carries
    ("portable", "aarch64"): "ARMV8",
    ("neon", "aarch64"): "NEOVERSEN1",
}

_AT_HWCAP2 = 26
_HWCAP2_SME = 1 << 23  # aarch64


def hwcap2_has_sme(auxv: bytes) -> bool:
    """Whether a Linux aarch64 auxiliary vector (``/proc/self/auxv``) reports SME in AT_HWCAP2."""
    for offset in range(0, len(auxv) - 15, 16):
        key, value = struct.unpack_from("<QQ", auxv, offset)
        if key == _AT_HWCAP2:
            return bool(value & _HWCAP2_SME)
        if key == 0:  # AT_NULL ends the vector
            break
    return False


def _macos_with_sme() -> bool:
    """Apple M4 and later report SME through ``sysctl hw.optional.arm.FEAT_SME`` (untested here: no Mac)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        value, size = ctypes.c_int(0), ctypes.c_size_t(ctypes.sizeof(ctypes.c_int))
        rc = libc.sysctlbyname(b"hw.optional.arm.FEAT_SME", ctypes.byref(value), ctypes.byref(size), None, 0)
    except (OSError, AttributeError):
        return False
    return rc == 0 and value.value != 0


def _aarch64_with_sme() -> bool:
    if platform.machine() not in ("aarch64", "arm64"):
        return False
    if platform.system() == "Darwin":
        return _macos_with_sme()
    if platform.system() != "Linux":
        return False
    try:
        with open("/proc/self/auxv", "rb") as fh:
            return hwcap2_has_sme(fh.read())
    except OSError:
        return False


def choose_coretype() -> str | None:
    """The OPENBLAS_CORETYPE fastconv's OpenBLAS should load with (None: leave it).

    On aarch64 CPUs that report SME, the pinned OpenBLAS (0.3.34) picks its
    ``armv9sme`` kernels, whose float32 GEMMs return wrong results (measured
    under qemu's ``max`` CPU: 30 of the 54 NumPy-reference tests failed); its
    NEON ``NEOVERSEN1`` kernels are correct on every ARMv8.2+ CPU.
    """
    forced = os.environ.get("FASTCONV_OPENBLAS_CORETYPE")
    if forced:
        return forced
    if "OPENBLAS_CORETYPE" in os.environ:
        return None
    capped = _CAPPED_CORETYPE.get((os.environ.get("FASTCONV_CPU", ""), platform.machine()))
    if capped:  # FASTCONV_CPU caps OpenBLAS's kernels too, to what a CPU of that level would get
        return capped
    if _aarch64_with_sme():
        return "NEOVERSEN1"
    return "SkylakeX" if _amd_with_avx512() else None


def load_core():
    coretype = choose_coretype()
    previous = os.environ.get("OPENBLAS_CORETYPE")
    if coretype is not None:
        os.environ["OPENBLAS_CORETYPE"] = coretype
    try:
        from . import _core  # initialises OpenBLAS, which reads the variable now
    finally:
        if coretype is not None:
            if previous is None:
                del os.environ["OPENBLAS_CORETYPE"]
            else:
                os.environ["OPENBLAS_CORETYPE"] = previous
    return _core
