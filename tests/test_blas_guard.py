"""The OpenBLAS core-type guard (no torch needed: also run on aarch64 by .ci/aarch64)."""

from __future__ import annotations

import os
import platform
import struct

import fastconv
from fastconv._blas import choose_coretype, hwcap2_has_sme


def auxv(*pairs):
    return b"".join(struct.pack("<QQ", k, v) for k, v in (*pairs, (0, 0)))


def test_sme_bit_is_read_from_at_hwcap2():
    assert hwcap2_has_sme(auxv((6, 4096), (26, 1 << 23)))  # AT_PAGESZ, then AT_HWCAP2 with SME
    assert not hwcap2_has_sme(auxv((26, (1 << 23) - 1)))  # every bit but SME
    assert not hwcap2_has_sme(auxv((16, 1 << 23)))  # the bit in AT_HWCAP (16) is another feature
    assert not hwcap2_has_sme(auxv((0, 0), (26, 1 << 23)))  # after AT_NULL nothing counts
    assert not hwcap2_has_sme(b"")


def test_an_explicit_coretype_wins(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.delenv("FASTCONV_OPENBLAS_CORETYPE", raising=False)
    assert choose_coretype() is None
    monkeypatch.setenv("FASTCONV_OPENBLAS_CORETYPE", "ARMV8")
    assert choose_coretype() == "ARMV8"


def test_arm_cpus_with_sme_never_load_the_armv9sme_kernels():
    """Under qemu's max CPU (SME) the loaded kernels must be NEON ones; elsewhere this is the machine's choice."""
    name = fastconv._core.blas_core_name().lower()
    if platform.machine() in ("aarch64", "arm64") and "OPENBLAS_CORETYPE" not in os.environ:
        with open("/proc/self/auxv", "rb") as fh:
            sme = hwcap2_has_sme(fh.read())
        assert name != "armv9sme"
        if sme:
            assert name == "neoversen1"
    assert name
