"""The CPUs and memory this process may use: CPU affinity, cgroup quotas and limits, the environment's thread
variables.  Read once at import to set fastconv's defaults (``set_num_threads`` and ``FASTCONV_CACHE_MB`` still
override); every reader takes its files' location as an argument so the tests can hand it a fake tree."""

from __future__ import annotations

import math
import os
import warnings

__all__ = ["cgroup_cpu_limit", "cgroup_memory_limit", "default_cache_budget", "default_threads", "usable_cpus"]

CACHE_MB = 256  # the kept-blocks budget without a memory limit
# cgroup v1 writes "no limit" as a huge number (PAGE_COUNTER_MAX pages, about 2**63 bytes).
_V1_UNLIMITED = 1 << 60


def usable_cpus() -> tuple[int, str]:
    """The number of CPUs this process may run on, and where it came from (``affinity`` or ``cpu count``)."""
    if hasattr(os, "sched_getaffinity"):
        try:
            return max(1, len(os.sched_getaffinity(0))), "affinity"
        except OSError:
            pass
    if hasattr(os, "process_cpu_count"):  # Python 3.13: the affinity where the platform has one
        return max(1, os.process_cpu_count() or 1), "affinity"
    return max(1, os.cpu_count() or 1), "cpu count"


def _read(path) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _cgroup_dirs(root, proc_cgroup, controller):
    """The cgroup folders of this process for ``controller`` ('cpu' or 'memory'), innermost first, each with its
    version: v2 (the unified ``0::/path`` line) and v1 (a line naming the controller)."""
    text = _read(proc_cgroup)
    if text is None:
        return []
    out = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            base, version = root, 2
        elif controller in controllers.split(","):
            base, version = os.path.join(root, controllers), 1
            if not os.path.isdir(base):  # some systems mount "cpu,cpuacct" as "cpu"
                base = os.path.join(root, controller)
        else:
            continue
        rel = path.strip("/")
        # The folder and its ancestors up to the mount: a parent's limit binds its children too.
        while True:
            out.append((os.path.join(base, rel) if rel else base, version))
            if not rel:
                break
            rel = os.path.dirname(rel)
    return out


def cgroup_cpu_limit(root="/sys/fs/cgroup", proc_cgroup="/proc/self/cgroup") -> float | None:
    """The CPU quota of this process's cgroups in CPUs (``quota / period``; the smallest along the hierarchy), or
    None when there is none (``max``, ``-1``) or nothing can be read.

    Parameters
    ----------
    root : str
        Where the cgroup file systems are mounted (v2: the unified tree; v1: one folder per controller).
    proc_cgroup : str
        The process's cgroup membership file.
    """
    best = None
    for folder, version in _cgroup_dirs(root, proc_cgroup, "cpu"):
        if version == 2:
            text = _read(os.path.join(folder, "cpu.max"))
            if not text:
                continue
            fields = text.split()
            if fields[0] == "max":
                continue
            quota, period = fields[0], fields[1] if len(fields) > 1 else "100000"
        else:
            quota = _read(os.path.join(folder, "cpu.cfs_quota_us"))
            period = _read(os.path.join(folder, "cpu.cfs_period_us"))
            if quota is None or period is None:
                continue
        try:
            q, p = int(quota), int(period)
        except ValueError:
            continue
        if q <= 0 or p <= 0:  # -1: no quota; 0 or negative periods are not limits
            continue
        best = q / p if best is None else min(best, q / p)
    return best


def cgroup_memory_limit(root="/sys/fs/cgroup", proc_cgroup="/proc/self/cgroup") -> int | None:
    """The memory limit of this process's cgroups in bytes (the smallest along the hierarchy), or None."""
    best = None
    for folder, version in _cgroup_dirs(root, proc_cgroup, "memory"):
        name = "memory.max" if version == 2 else "memory.limit_in_bytes"
        text = _read(os.path.join(folder, name))
        if not text or text == "max":
            continue
        try:
            value = int(text)
        except ValueError:
            continue
        if value <= 0 or value >= _V1_UNLIMITED:
            continue
        best = value if best is None else min(best, value)
    return best


def _env_threads(environ, max_threads):
    """(threads, variable) from FASTCONV_NUM_THREADS, else OMP_NUM_THREADS (its first value: OpenMP allows a list
    for nested levels), else (None, None).  A value that is not a positive integer is warned about and skipped."""
    for name in ("FASTCONV_NUM_THREADS", "OMP_NUM_THREADS"):
        raw = environ.get(name)
        if raw is None or raw.strip() == "":
            continue
        text = raw.split(",")[0].strip() if name == "OMP_NUM_THREADS" else raw.strip()
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            warnings.warn(
                f"fastconv: {name}={raw!r} is not a positive number of threads; ignoring it",
                RuntimeWarning,
                stacklevel=3,
            )
            continue
        if value > max_threads:
            warnings.warn(
                f"fastconv: {name}={raw!r} is more than fastconv's {max_threads} threads; using {max_threads}",
                RuntimeWarning,
                stacklevel=3,
            )
            value = max_threads
        return value, name
    return None, None


def default_threads(environ=None, root="/sys/fs/cgroup", proc_cgroup="/proc/self/cgroup", max_threads=1024):
    """fastconv's default thread count and where it came from.

    The environment first (``FASTCONV_NUM_THREADS``, then ``OMP_NUM_THREADS``); else the CPUs the process may run
    on (its affinity), capped by a cgroup CPU quota rounded up (a quota of 1.5 CPUs allows 2 threads to share
    them), at least 1.

    Returns
    -------
    (int, str)
        The count and its source: ``'FASTCONV_NUM_THREADS'``, ``'OMP_NUM_THREADS'``, ``'affinity'``, ``'cpu
        count'`` or ``'cgroup quota'``.
    """
    environ = os.environ if environ is None else environ
    value, name = _env_threads(environ, max_threads)
    if value is not None:
        return value, name
    cpus, source = usable_cpus()
    quota = cgroup_cpu_limit(root, proc_cgroup)
    if quota is not None and math.ceil(quota) < cpus:
        cpus, source = max(1, math.ceil(quota)), "cgroup quota"
    return min(cpus, max_threads), source


def default_cache_budget(root="/sys/fs/cgroup", proc_cgroup="/proc/self/cgroup") -> tuple[int, str]:
    """The kept-result-blocks budget in bytes when ``FASTCONV_CACHE_MB`` is unset: 256 MiB, or an eighth of the
    cgroup memory limit when that is smaller; with its source (``'default'`` or ``'cgroup memory limit'``)."""
    budget = CACHE_MB << 20
    limit = cgroup_memory_limit(root, proc_cgroup)
    if limit is not None and limit // 8 < budget:
        return limit // 8, "cgroup memory limit"
    return budget, "default"


# What import set, for show_config: {"threads": source, "cache": source}.
SOURCES: dict[str, str] = {}


def apply(core, environ=None, root="/sys/fs/cgroup", proc_cgroup="/proc/self/cgroup") -> None:
    """Set the defaults in the extension ``core`` (at import; the tests pass a fake one and a fake tree)."""
    environ = os.environ if environ is None else environ
    threads, SOURCES["threads"] = default_threads(environ, root, proc_cgroup, max_threads=1024)
    core.set_num_threads(threads)
    budget, source = default_cache_budget(root, proc_cgroup)
    core._set_cache_default_limit(budget)
    SOURCES["cache"] = "FASTCONV_CACHE_MB" if environ.get("FASTCONV_CACHE_MB") else source
