"""The kernels also build for a generic x86-64 CPU (``FASTCONV_NATIVE=OFF``).

The AVX-512 code paths are compiled through target attributes and chosen at
run time, so a portable build must compile them without ``-march=native``; this
compiles every library source that way, warnings as errors.  Left out:
``algorithms/gemm.cpp`` (it needs OpenBLAS's headers, which only the isolated
build environment has), ``kernels/isa_kernels.cpp`` (built per level, below) and
the pybind11 bindings.
"""

import os
import pathlib
import shutil
import subprocess

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "csrc"
CXX = shutil.which(os.environ.get("CXX", "c++"))
_LEFT_OUT = ("algorithms/gemm.cpp", "kernels/isa_kernels.cpp")
SOURCES = (
    sorted(
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.cpp")
        if str(p.relative_to(SRC)) not in _LEFT_OUT and p.parent.name != "bindings"
    )
    if SRC.is_dir()
    else []
)


@pytest.mark.skipif(CXX is None, reason="needs a C++ compiler")
@pytest.mark.parametrize("source", SOURCES)
def test_kernel_source_compiles_without_native_flags(source, tmp_path):
    flags = ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{SRC}"]
    cmd = [CXX, *flags, "-c", str(SRC / source), "-o", str(tmp_path / "k.o")]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]


def test_every_kernel_source_is_checked():
    assert len(SOURCES) >= 7, SOURCES


def _levels_from_cmake():
    """The fastconv_level(...) calls of CMakeLists.txt for this architecture: (namespace, definitions, flags)."""
    import platform
    import re
    import shlex

    text = (SRC.parent / "CMakeLists.txt").read_text()
    x86 = platform.machine() in ("x86_64", "AMD64")
    block = text.split("if(CMAKE_SYSTEM_PROCESSOR MATCHES")[1].split("elseif(")[0 if x86 else 1]
    levels = []
    for call in re.findall(r"^\s*fastconv_level\((.*)\)\s*$", block, re.M):
        ns, serves, name, nbytes, regs, *flags = shlex.split(call)
        defs = [
            f"-DFASTCONV_ISA_NS=isa_{ns}",
            f"-DFASTCONV_VEC_BYTES={nbytes}",
            f"-DFASTCONV_VEC_REGS={regs}",
            f'-DFASTCONV_LEVEL="{serves}"',
            f'-DFASTCONV_ISA_NAME="{name}"',
        ] + (["-DFASTCONV_ISA_AVX512=1"] if ns == "avx512" else [])
        levels.append((ns, defs, flags))
    return levels


LEVELS = _levels_from_cmake() if SRC.is_dir() else []


@pytest.mark.skipif(CXX is None or shutil.which("nm") is None, reason="needs a C++ compiler and nm")
@pytest.mark.parametrize("ns, defs, flags", LEVELS, ids=[lv[0] for lv in LEVELS])
def test_level_kernels_define_nothing_outside_their_namespace(ns, defs, flags, tmp_path):
    """A function built with one level's flags but visible to the linker outside that level's
    namespace (an inline std:: template, say) could be the copy the linker keeps for every level:
    AVX-512 code on an AVX2 CPU.  So each level's object defines fastconv::isa_<level> symbols only."""
    obj = tmp_path / f"{ns}.o"
    cmd = [CXX, "-std=c++17", "-O3", "-Wall", "-Wextra", "-Werror", f"-I{SRC}", *defs, *flags]
    cmd += ["-c", str(SRC / "kernels" / "isa_kernels.cpp"), "-o", str(obj)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    nm = subprocess.run(["nm", "-C", "--defined-only", str(obj)], capture_output=True, text=True, check=True)
    outside = []
    for line in nm.stdout.splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) == 3 and parts[1] not in "bdrt" and f"fastconv::isa_{ns}::" not in parts[2]:
            outside.append(line)
    assert not outside, outside[:20]
    assert any(f"fastconv::isa_{ns}::table()" in line for line in nm.stdout.splitlines())


def test_every_level_is_checked():
    assert len(LEVELS) >= 1
