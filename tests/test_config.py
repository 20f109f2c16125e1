"""fastconv.show_config: what the CPU reports and which kernel serves each family (no torch needed)."""

from __future__ import annotations

import io
import json
import os
import platform
import subprocess
import sys

import pytest

import fastconv


def _cpuinfo_flags() -> set[str]:
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def test_config_has_every_family_and_the_thread_count():
    buf = io.StringIO()
    cfg = fastconv.show_config(file=buf)
    assert set(cfg["kernels"]) == {
        "gemm float32",
        "gemm float64",
        "winograd float32",
        "direct",
        "small-k gemm",
        "pooling",
    }
    assert cfg["threads"] == fastconv.get_num_threads()
    assert cfg["level"] in ("avx512", "avx2", "neon", "portable")
    assert cfg["openblas_core"] and cfg["openblas_core"] in cfg["kernels"]["gemm float64"]
    text = buf.getvalue()
    assert text.startswith(f"fastconv on {platform.machine()}, level {cfg['level']}")
    assert all(kernel in text for kernel in cfg["kernels"].values())


def test_cpu_features_agree_with_the_kernel_flags():
    """x86: cpuid (through the compiler builtin) against the kernel's own /proc/cpuinfo flags."""
    if platform.machine() not in ("x86_64", "AMD64") or not os.path.exists("/proc/cpuinfo"):
        pytest.skip("x86 only: under qemu (the aarch64 job) /proc/cpuinfo describes the host")
    flags = _cpuinfo_flags()
    features = set(fastconv.show_config(file=False)["cpu_features"])
    for name, flag in [("avx2", "avx2"), ("fma", "fma"), ("avx512f", "avx512f"), ("sse4.2", "sse4_2")]:
        assert (name in features) == (flag in flags), name


def test_winograd_switch_is_reported(monkeypatch):
    monkeypatch.setenv("FASTCONV_WINOGRAD", "0")  # read on every call
    cfg = fastconv.show_config(file=False)
    assert cfg["kernels"]["winograd float32"].startswith("off")
    assert cfg["environment"]["FASTCONV_WINOGRAD"] == "0"


def test_gemm_switch_is_reported():
    """FASTCONV_GEMM is read once per process, so this runs a child; only where fastconv has its own GEMM."""
    if not fastconv._core.sgemm_kernel_name().startswith("fastconv"):
        pytest.skip("no fastconv GEMM kernel on this CPU: float32 GEMMs are OpenBLAS's already")
    code = "import fastconv, json; print(json.dumps(fastconv.show_config(file=False)))"
    env = dict(os.environ, FASTCONV_GEMM="openblas")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    cfg = json.loads(out.stdout)
    assert cfg["kernels"]["gemm float32"].startswith("OpenBLAS")
    assert cfg["environment"]["FASTCONV_GEMM"] == "openblas"


def test_levels_order_and_the_cpu_level():
    cfg = fastconv.show_config(file=False)
    assert cfg["cpu_level"] in ("avx512", "avx2", "neon", "portable")
    features = set(cfg["cpu_features"])
    if cfg["cpu_level"] == "avx512":
        assert {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx2", "fma"} <= features
    elif cfg["cpu_level"] == "avx2":
        assert {"avx2", "fma"} <= features and "avx512f" not in features


def _import_with(level):
    env = dict(os.environ, FASTCONV_CPU=level)
    env.pop("OPENBLAS_CORETYPE", None)
    code = "import fastconv, json; print(json.dumps(fastconv.show_config(file=False)))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_a_level_the_cpu_lacks_fails_the_import_with_a_message():
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("x86 levels: a child interpreter is needed, which the aarch64 job under qemu cannot start")
    out = _import_with("neon")
    assert out.returncode != 0
    assert "FASTCONV_CPU=neon: neon is an ARM level and this is an x86 CPU" in out.stderr.strip().splitlines()[-1]
    out = _import_with("sse9")
    assert "FASTCONV_CPU must be one of portable, avx2, avx512, neon, got 'sse9'" in out.stderr
    if fastconv._core.cpu_level() != "avx512":
        out = _import_with("avx512")
        assert out.returncode != 0 and "this CPU lacks avx512f" in out.stderr


def test_a_cap_changes_the_kernels_and_openblas_follows():
    if platform.machine() not in ("x86_64", "AMD64") or fastconv._core.cpu_level() == "portable":
        pytest.skip("needs an x86 CPU with AVX2 (and a child interpreter)")
    out = _import_with("avx2")
    assert out.returncode == 0, out.stderr
    cfg = json.loads(out.stdout)
    assert cfg["level"] == "avx2"
    assert cfg["kernels"]["gemm float32"] == "OpenBLAS (Haswell kernels)"
    assert cfg["kernels"]["winograd float32"].startswith("F(2x2, 3x3), generic")  # not the AVX-512 one
    assert cfg["kernels"]["direct"].startswith("avx2")
    cfg = json.loads(_import_with("portable").stdout)
    assert cfg["level"] == "portable" and cfg["openblas_core"] == "Nehalem"
    assert cfg["kernels"]["winograd float32"].startswith("off") and cfg["kernels"]["direct"].startswith("portable")
