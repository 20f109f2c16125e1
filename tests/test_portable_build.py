"""The kernels also build for a generic x86-64 CPU (``FASTCONV_NATIVE=OFF``).

The AVX-512 code paths are compiled through target attributes and chosen at
run time, so a portable build must compile them without ``-march=native``; this
compiles every kernel source that way, warnings as errors.  ``gemm.cpp`` is left
out: it needs OpenBLAS's headers, which only the isolated build environment has.
"""

import os
import pathlib
import shutil
import subprocess

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "csrc"
CXX = shutil.which(os.environ.get("CXX", "c++"))
SOURCES = sorted(p.name for p in SRC.glob("*.cpp") if p.name != "gemm.cpp") if SRC.is_dir() else []


@pytest.mark.skipif(CXX is None, reason="needs a C++ compiler")
@pytest.mark.parametrize("source", SOURCES)
def test_kernel_source_compiles_without_native_flags(source, tmp_path):
    flags = ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror"]
    cmd = [CXX, *flags, "-c", str(SRC / source), "-o", str(tmp_path / "k.o")]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]


def test_every_kernel_source_is_checked():
    assert len(SOURCES) >= 7, SOURCES
