"""The thread pool under stress: results never depend on timing.

Each case runs in a subprocess with a timeout, so a hang fails the test instead
of hanging the suite, and a crash in a pool thread (SIGSEGV) is reported with
its signal instead of killing pytest.  Thread counts above this machine's core
count are the point: that is how a 2-core machine shows the races that 4-64
core machines hit on every call.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import fastconv
from conftest import run_script

# The workload: calls whose worker counts differ from one call to the next (the
# pool's hardest case), covering fold/unfold, pooling, the direct, GEMM and
# Winograd convolution paths and their backwards.  Reductions (weight and bias
# gradients) sum per-worker partials, so results are reproducible for a given
# thread count, not across counts: `reference(threads)` computes every call in
# order at `threads` and checks it against a 1-thread run to float tolerance;
# `check(expected, rounds, seed)` then reruns the calls in a shuffled order, so
# worker counts change from call to call, and compares bit for bit.
WORKLOAD = """
import numpy as np, fastconv, threading, random, sys

r = np.random.default_rng(0)
f32 = lambda *s: r.standard_normal(s).astype(np.float32)
CALLS = []
for c in (1, 2, 3, 5, 8, 13, 64):  # fold/unfold and pools split over channels or planes
    cols = fastconv.unfold(f32(1, c, 40, 40), 3, padding=1)
    CALLS.append(lambda cols=cols: fastconv.fold(cols, 40, 3, padding=1))
    x = f32(1, c, 40, 40)
    CALLS.append(lambda x=x: fastconv.unfold(x, 3, padding=1))
    CALLS.append(lambda x=x: fastconv.max_pool2d(x, 3, 1, 1, return_indices=True))
    CALLS.append(lambda x=x: fastconv.avg_pool2d(x, 3, 2, 1))
for n in (1, 2, 3, 6, 9):  # convolutions split over images and tiles
    x, w = f32(n, 16, 14, 14), f32(16, 16, 3, 3)
    CALLS.append(lambda x=x, w=w: fastconv.conv2d(x, w, padding=1))
    CALLS.append(lambda x=x, w=w: fastconv.conv2d_backward(fastconv.conv2d(x, w, padding=1), x, w, padding=1))
    xd, wd = f32(n, 8, 30, 30), f32(8, 1, 3, 3)
    CALLS.append(lambda x=xd, w=wd: fastconv.conv2d(x, w, padding=1, groups=8))
    CALLS.append(lambda x=xd, w=wd: fastconv.conv2d_backward(np.ones((x.shape[0], 8, 30, 30), np.float32), x, w,
                                                           padding=1, groups=8))
    xs, ws = f32(n, 3, 33, 33), f32(5, 3, 5, 5)
    CALLS.append(lambda x=xs, w=ws: fastconv.conv2d(x, w, stride=2))
    CALLS.append(lambda x=xs.astype(np.float64), w=ws: fastconv.conv_transpose2d(x, w.transpose(1, 0, 2, 3), stride=2))

def flat(result):
    if isinstance(result, tuple):
        return [a for part in result for a in flat(part)]
    return [np.asarray(result)]

def reference(threads):
    fastconv.set_num_threads(1)
    single = [flat(call()) for call in CALLS]
    fastconv.set_num_threads(threads)
    expected = [flat(call()) for call in CALLS]
    for i, (a, b) in enumerate(zip(single, expected)):
        for x, y in zip(a, b):
            scale = max(1.0, float(np.abs(x).max()))
            np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-5 * scale, err_msg=f"call {i} at {threads} threads")
    return expected

def same(a, b):
    return all(x.shape == y.shape and x.tobytes() == y.tobytes() for x, y in zip(a, b))

def check(expected, rounds, seed):
    order = list(range(len(CALLS))) * rounds
    random.Random(seed).shuffle(order)
    for i in order:
        if not same(flat(CALLS[i]()), expected[i]):
            raise AssertionError(f"call {i} differs from its first result at {fastconv.get_num_threads()} threads")
"""


@pytest.mark.parametrize("threads", [2, 3, 4, 8, 16, 64], ids=lambda t: f"{t}threads")
def test_pool_runs_every_worker_once_per_round(threads):
    """Thousands of back-to-back rounds with random worker counts: each id exactly once, none late.

    The pool this replaced failed this within a second (a wrong round at 3
    workers, a permanent hang at 4 and more).
    """
    out = run_script(
        f"""
import fastconv, threading
from fastconv import _core
fastconv.set_num_threads({threads})
assert _core._pool_selftest(20000 if {threads} <= 8 else 5000, {threads}, 7) == 0
bad = []
def caller(seed):  # several callers at once: one owns the pool, the others run inline
    bad.append(_core._pool_selftest(2000, {threads}, seed))
ts = [threading.Thread(target=caller, args=(s,)) for s in range(4)]
[t.start() for t in ts]
[t.join() for t in ts]
assert bad == [0, 0, 0, 0], bad
print("ok")
"""
    )
    assert out.startswith("ok")


@pytest.mark.parametrize("threads", [3, 4, 8, 16, 64], ids=lambda t: f"{t}threads")
def test_alternating_worker_counts_are_bit_identical(threads):
    out = run_script(
        WORKLOAD
        + f"""
expected = reference({threads})
check(expected, rounds=6, seed={threads})
print("ok", len(CALLS) * 6)
"""
    )
    assert out.startswith("ok")


@pytest.mark.parametrize("threads", [4, 16, 64], ids=lambda t: f"{t}threads")
def test_eight_python_threads_at_many_pool_threads(threads):
    """Eight callers at once: one owns the pool, the others run inline; every result still bit-identical."""
    out = run_script(
        WORKLOAD
        + f"""
expected = reference({threads})
errors = []
barrier = threading.Barrier(8)
def work(seed):
    barrier.wait()
    try:
        check(expected, rounds=2, seed=seed)
    except BaseException as exc:
        errors.append(repr(exc))
ts = [threading.Thread(target=work, args=(s,)) for s in range(8)]
[t.start() for t in ts]
[t.join() for t in ts]
assert not errors, errors
print("ok")
"""
    )
    assert out.startswith("ok")


def test_issue_13_fold_reproducer():
    """The reproducer from the issue: two batch sizes back to back at 8 threads, bit for bit."""
    out = run_script(
        """
import numpy as np, fastconv
fastconv.set_num_threads(8)
r = np.random.default_rng(0)
ca = fastconv.unfold(r.standard_normal((2, 64, 48, 48)).astype(np.float32), 3, padding=1)
cb = fastconv.unfold(r.standard_normal((8, 64, 48, 48)).astype(np.float32), 3, padding=1)
ra, rb = fastconv.fold(ca, 48, 3, padding=1), fastconv.fold(cb, 48, 3, padding=1)
for _ in range(300):
    assert np.array_equal(fastconv.fold(ca, 48, 3, padding=1), ra)
    assert np.array_equal(fastconv.fold(cb, 48, 3, padding=1), rb)
print("ok")
"""
    )
    assert out.startswith("ok")


def test_fork_while_pool_is_warm_at_many_threads():
    """A forked child (the parent's pool running at 16 threads) gets a working pool of its own."""
    out = run_script(
        WORKLOAD
        + """
import multiprocessing
expected = reference(16)
check(expected, rounds=1, seed=1)
def child(_):
    check(expected, rounds=1, seed=2)
    return fastconv.get_num_threads()
with multiprocessing.get_context("fork").Pool(2) as pool:
    assert pool.map(child, range(4)) == [16] * 4
check(expected, rounds=1, seed=3)  # and the parent's pool still works
print("ok")
"""
    )
    assert out.startswith("ok")


@pytest.mark.skipif(
    "libasan" in os.environ.get("LD_PRELOAD", ""),
    reason="AddressSanitizer reserves terabytes of shadow address space, so RLIMIT_AS cannot be used under it",
)
def test_thread_start_failure_is_a_clear_error_and_the_pool_stays_usable():
    """With too little address space for 64 thread stacks, the call raises; fewer threads then work."""
    out = run_script(
        """
import resource, numpy as np, fastconv
x = np.random.default_rng(0).standard_normal((64, 4, 64, 64)).astype(np.float32)
fastconv.set_num_threads(2)
expected = fastconv.max_pool2d(x, 3, 1, 1)
with open("/proc/self/status") as f:
    vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize"))
resource.setrlimit(resource.RLIMIT_AS, (vm + (128 << 20), resource.RLIM_INFINITY))
fastconv.set_num_threads(64)  # 63 helpers x 8 MiB stacks do not fit in 128 MiB more
try:
    fastconv.max_pool2d(x, 3, 1, 1)
except RuntimeError as exc:
    assert "could not start worker thread" in str(exc) and "set_num_threads" in str(exc), exc
else:
    raise AssertionError("no error although threads could not start")
# The helpers that did start keep their stacks: lift the limit so the check below
# is about the pool's state, not about address space left over.
resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
fastconv.set_num_threads(2)
assert np.array_equal(fastconv.max_pool2d(x, 3, 1, 1), expected)
fastconv.set_num_threads(64)  # and the next call may start the missing helpers
assert np.array_equal(fastconv.max_pool2d(x, 3, 1, 1), expected)  # no reduction: identical at any count
print("ok")
""",
        # One malloc arena: otherwise each helper that allocates reserves 64 MiB of address space
        # at a time of its choosing, and the headroom measured above is not what the call gets.
        env={"MALLOC_ARENA_MAX": "1"},
    )
    assert out.startswith("ok")


@pytest.mark.parametrize("bad", [0, -1, 1025, 2**31, 2**63, 2**80], ids=str)
def test_set_num_threads_is_bounded(bad):
    old = fastconv.get_num_threads()
    with pytest.raises(ValueError, match=rf"n must .*got {bad}"):
        fastconv.set_num_threads(bad)
    assert fastconv.get_num_threads() == old


@pytest.mark.parametrize("bad", [2.0, "4", None, True, np.float64(2)], ids=repr)
def test_set_num_threads_needs_an_int(bad):
    with pytest.raises(TypeError, match="n must be an int"):
        fastconv.set_num_threads(bad)


def test_set_num_threads_accepts_numpy_ints_and_the_maximum():
    old = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(np.int64(3))
        assert fastconv.get_num_threads() == 3
        fastconv.set_num_threads(1024)
        assert fastconv.get_num_threads() == 1024
    finally:
        fastconv.set_num_threads(old)
