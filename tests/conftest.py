import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # a test dependency: pip install ".[test]"


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def run_script(body: str, timeout: float = 120, env: dict | None = None) -> str:
    """Runs ``body`` in a fresh interpreter (``env`` added to the environment); returns its stdout, fails on any
    error, signal or hang."""
    code = textwrap.dedent(body)
    try:
        env = {**os.environ, **(env or {})}
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"hung for {timeout} s (a pool deadlock); output so far: {exc.stdout!r} {exc.stderr!r}")
    if proc.returncode != 0:
        pytest.fail(f"exit code {proc.returncode} (negative = killed by that signal)\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def tols(dtype):
    return dict(rtol=2e-4, atol=1e-3) if np.dtype(dtype) == np.float32 else dict(rtol=1e-10, atol=1e-10)


def pytest_terminal_summary(terminalreporter):
    """Which FASTCONV_CPU levels the kernel tests ran at, and which this CPU lacks."""
    import sys

    module = sys.modules.get("test_numpy_reference")
    if module is None or not module.COVERED_LEVELS:  # no per-level test ran
        return
    from fastconv import _core

    covered = sorted(module.COVERED_LEVELS, key=module.LEVELS.index)
    lacking = [lv for lv in module.LEVELS if lv not in covered]
    terminalreporter.write_line(
        f"fastconv levels covered: {', '.join(covered) or 'none'}; not on this CPU: {', '.join(lacking) or 'none'} "
        f"(CPU level {_core.cpu_level()})"
    )


from test_numpy_reference import level  # noqa: E402, F401  (each FASTCONV_CPU level this CPU has, for any test)
