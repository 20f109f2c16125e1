"""The thread and memory defaults that fit the process: CPU affinity (under taskset), cgroup v1 and v2 quotas and
memory limits (fake trees), the environment's thread variables, and threadpoolctl's view and limits."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastconv
from fastconv import _resources as R


def cpus():
    return len(os.sched_getaffinity(0))


def run(code, env=None, taskset=None):
    cmd = [sys.executable, "-c", code]
    if taskset is not None:
        cmd = ["taskset", "-c", taskset, *cmd]
    environ = {k: v for k, v in os.environ.items() if k not in ("FASTCONV_NUM_THREADS", "OMP_NUM_THREADS")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip(), proc.stderr


SHOW = "import fastconv; c = fastconv.show_config(file=False); print(c['threads'], c['threads_from'])"


@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset (util-linux) is not installed")
def test_default_follows_cpu_affinity():
    assert run(SHOW, taskset="0")[0] == "1 affinity"
    if cpus() >= 2:
        assert run(SHOW, taskset="0,1")[0] == "2 affinity"
    # The environment still wins over the affinity.
    assert run(SHOW, env={"OMP_NUM_THREADS": "3"}, taskset="0")[0] == "3 OMP_NUM_THREADS"


@pytest.mark.parametrize(
    "env, expected",
    [({"FASTCONV_NUM_THREADS": "3"}, "3 FASTCONV_NUM_THREADS"),
     ({"OMP_NUM_THREADS": "1"}, "1 OMP_NUM_THREADS"),
     ({"OMP_NUM_THREADS": "5,2"}, "5 OMP_NUM_THREADS"),  # nested OpenMP levels: the outer one
     ({"FASTCONV_NUM_THREADS": "4", "OMP_NUM_THREADS": "1"}, "4 FASTCONV_NUM_THREADS"),
     ({"FASTCONV_NUM_THREADS": "64"}, "64 FASTCONV_NUM_THREADS")],
    ids=["fastconv", "omp", "omp_list", "fastconv_first", "above_cores"],
)  # fmt: skip
def test_environment_sets_the_default(env, expected):
    assert run(SHOW, env=env)[0] == expected


@pytest.mark.parametrize(
    "value", ["0", "-2", "lots", "2.5", "99999"], ids=["zero", "negative", "word", "float", "huge"]
)
def test_invalid_environment_values_warn_and_fall_back(value):
    out, err = run(SHOW, env={"FASTCONV_NUM_THREADS": value})
    name = "FASTCONV_NUM_THREADS"
    if value == "99999":
        assert out == "1024 FASTCONV_NUM_THREADS" and "more than fastconv's 1024 threads" in err
    else:
        assert out == f"{cpus()} affinity", out
        assert f"{name}={value!r} is not a positive number of threads; ignoring it" in err, err


def test_default_threads_reader_order():
    quiet = {"FASTCONV_NUM_THREADS": "", "OMP_NUM_THREADS": "2"}
    assert R.default_threads(quiet, root="/nonexistent", proc_cgroup="/nonexistent") == (2, "OMP_NUM_THREADS")
    with pytest.warns(RuntimeWarning, match="FASTCONV_NUM_THREADS='x'"):
        assert R.default_threads({"FASTCONV_NUM_THREADS": "x", "OMP_NUM_THREADS": "3"}, "/none", "/none") == (
            3,
            "OMP_NUM_THREADS",
        )


def cgroup_tree(tmp_path, files, membership):
    """A fake cgroup mount under tmp_path/'cg' holding `files` ({relative path: text or None for a folder in its
    place, which cannot be read as a file}) and a membership file."""
    root = tmp_path / "cg"
    for rel, text in files.items():
        path = root / rel
        if text is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    proc = tmp_path / "cgroup"
    proc.write_text(membership)
    return str(root), str(proc)


V2 = "0::/user.slice/app\n"
V1 = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n"
CPU_CASES = {
    "v2_quota": ({"user.slice/app/cpu.max": "150000 100000"}, V2, 1.5),
    "v2_max": ({"user.slice/app/cpu.max": "max 100000"}, V2, None),
    "v2_parent_binds": ({"user.slice/app/cpu.max": "400000 100000", "user.slice/cpu.max": "100000 100000"}, V2, 1.0),
    "v2_quota_only": ({"user.slice/app/cpu.max": "250000"}, V2, 2.5),
    "v2_odd": ({"user.slice/app/cpu.max": "lots 100000"}, V2, None),
    "v2_zero_period": ({"user.slice/app/cpu.max": "100000 0"}, V2, None),
    "v2_unreadable": ({"user.slice/app/cpu.max": None}, V2, None),
    "v1_quota": ({"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000",
                  "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000"}, V1, 0.5),
    "v1_unlimited": ({"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "-1",
                      "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000"}, V1, None),
    "v1_cpu_folder": ({"cpu/docker/abc/cpu.cfs_quota_us": "300000", "cpu/docker/abc/cpu.cfs_period_us": "100000"},
                      V1, 3.0),
    "v1_missing_period": ({"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000"}, V1, None),
    "no_membership_file": ({}, None, None),
}  # fmt: skip


@pytest.mark.parametrize("case", CPU_CASES)
def test_cgroup_cpu_reader(case, tmp_path):
    files, membership, expected = CPU_CASES[case]
    root, proc = cgroup_tree(tmp_path, files, membership or "")
    if membership is None:
        proc = str(tmp_path / "absent")
    assert R.cgroup_cpu_limit(root, proc) == expected


MEMORY_CASES = {
    "v2_limit": ({"user.slice/app/memory.max": str(512 << 20)}, V2, 512 << 20),
    "v2_max": ({"user.slice/app/memory.max": "max"}, V2, None),
    "v2_parent": ({"user.slice/app/memory.max": "max", "user.slice/memory.max": str(1 << 30)}, V2, 1 << 30),
    "v1_limit": ({"memory/docker/abc/memory.limit_in_bytes": str(256 << 20)}, V1, 256 << 20),
    "v1_unlimited": ({"memory/docker/abc/memory.limit_in_bytes": "9223372036854771712"}, V1, None),
    "garbage": ({"user.slice/app/memory.max": "12 GB"}, V2, None),
    "unreadable": ({"user.slice/app/memory.max": None}, V2, None),
}


@pytest.mark.parametrize("case", MEMORY_CASES)
def test_cgroup_memory_reader_and_budget(case, tmp_path):
    files, membership, expected = MEMORY_CASES[case]
    root, proc = cgroup_tree(tmp_path, files, membership)
    assert R.cgroup_memory_limit(root, proc) == expected
    budget, source = R.default_cache_budget(root, proc)
    if expected is not None and expected // 8 < 256 << 20:
        assert (budget, source) == (expected // 8, "cgroup memory limit")
    else:
        assert (budget, source) == (256 << 20, "default")


def test_quota_caps_the_affinity(tmp_path, monkeypatch):
    monkeypatch.setattr(R, "usable_cpus", lambda: (8, "affinity"))
    for quota, expected in (("150000 100000", (2, "cgroup quota")), ("50000 100000", (1, "cgroup quota")),
                            ("1600000 100000", (8, "affinity")), ("max 100000", (8, "affinity"))):  # fmt: skip
        root, proc = cgroup_tree(tmp_path / quota.split()[0], {"user.slice/app/cpu.max": quota}, V2)
        assert R.default_threads({}, root, proc) == expected, quota


def test_apply_sets_the_extension_defaults(tmp_path):
    """What import does, with a fake tree: the quota's threads and an eighth of the memory limit."""

    class Core:
        def set_num_threads(self, n):
            self.threads = n

        def _set_cache_default_limit(self, b):
            self.budget = b

    root, proc = cgroup_tree(tmp_path, {"user.slice/app/cpu.max": "100000 100000",
                                        "user.slice/app/memory.max": str(512 << 20)}, V2)  # fmt: skip
    core = Core()
    saved = dict(R.SOURCES)
    try:
        R.apply(core, environ={}, root=root, proc_cgroup=proc)
        assert (core.threads, core.budget) == (1, 64 << 20)
        assert R.SOURCES == {"threads": "cgroup quota", "cache": "cgroup memory limit"}
        R.apply(core, environ={"FASTCONV_CACHE_MB": "10", "OMP_NUM_THREADS": "3"}, root=root, proc_cgroup=proc)
        assert core.threads == 3 and R.SOURCES == {"threads": "OMP_NUM_THREADS", "cache": "FASTCONV_CACHE_MB"}
    finally:
        R.SOURCES.clear()
        R.SOURCES.update(saved)


def test_cache_budget_in_force():
    """The extension keeps the default budget unless FASTCONV_CACHE_MB says otherwise (read on every free)."""
    out, _ = run("import fastconv; c = fastconv.show_config(file=False); print(c['cache_mb'], c['cache_from'])")
    assert out == "256.0 default"
    out, _ = run("import fastconv; c = fastconv.show_config(file=False); print(c['cache_mb'], c['cache_from'])",
                 env={"FASTCONV_CACHE_MB": "32"})  # fmt: skip
    assert out == "32.0 FASTCONV_CACHE_MB"
    out, _ = run(
        "import fastconv; fastconv._core._set_cache_default_limit(8 << 20); print(fastconv._core._cache_limit())"
    )
    assert out == str(8 << 20)


threadpoolctl = pytest.importorskip("threadpoolctl")


def ours():
    return [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "fastconv"]


def test_threadpoolctl_lists_and_limits_the_pool():
    (info,) = ours()
    assert info["num_threads"] == fastconv.get_num_threads() and info["version"] == fastconv.__version__
    assert info["filepath"] == os.path.realpath(fastconv._core.__file__)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 16, 20, 20)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    before = fastconv.get_num_threads()
    reference = fastconv.conv2d(x, w, padding=1)
    with threadpoolctl.threadpool_limits(1):
        assert fastconv.get_num_threads() == 1 and ours()[0]["num_threads"] == 1
        limited = fastconv.conv2d(x, w, padding=1)
        with threadpoolctl.threadpool_limits(3, user_api="fastconv"):
            assert fastconv.get_num_threads() == 3
        assert fastconv.get_num_threads() == 1
        assert fastconv.show_config(file=False)["threads_from"] == "threadpoolctl"
    assert fastconv.get_num_threads() == before
    np.testing.assert_allclose(limited, reference, rtol=1e-5, atol=1e-5)
    with threadpoolctl.threadpool_limits({"fastconv": 2}):
        assert fastconv.get_num_threads() == 2
    assert fastconv.get_num_threads() == before


def test_threadpoolctl_absent_is_fine():
    out, _ = run("import sys; sys.modules['threadpoolctl'] = None; import fastconv; print(fastconv.get_num_threads())")
    assert int(out) >= 1
