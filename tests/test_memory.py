"""Large results live in kept blocks (csrc/runtime/result_cache.cpp): reuse, limits, views, and no kernel that
trusts zeros.

Fresh pages from the operating system are zero, a kept block holds its last result: every operator whose result
is 4 MiB or more runs here into a block first filled with NaN, and must match torch (or NumPy) exactly as before.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastconv
import fastconv.functional as F

try:  # the reuse, limit and view tests need no torch (they run in the aarch64 job too)
    import torch
    import torch.nn.functional as TF
except ImportError:
    torch = TF = None

BIG = 4 << 20  # kCachedMinBytes


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    monkeypatch.delenv("FASTCONV_CACHE_MB", raising=False)
    fastconv.empty_cache()
    yield
    fastconv.empty_cache()


def arrays(result):
    return [a for a in (result if isinstance(result, tuple) else (result,)) if isinstance(a, np.ndarray)]


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def case_conv2d(rng):
    x, w, b = rand(rng, 1, 3, 256, 256), rand(rng, 16, 3, 3, 3), rand(rng, 16)
    return lambda: fastconv.conv2d(x, w, b, padding=1), lambda: TF.conv2d(t(x), t(w), t(b), padding=1).numpy()


def autograd(fn, *inputs, gy):
    ts = [t(a).requires_grad_(True) for a in inputs]
    fn(*ts).backward(t(gy))
    return tuple(v.grad.numpy() for v in ts)


def case_conv2d_backward(rng):
    x, w, gy = rand(rng, 1, 16, 256, 256), rand(rng, 4, 16, 3, 3), rand(rng, 1, 4, 256, 256)
    return (
        lambda: fastconv.conv2d_backward(gy, x, w, padding=1, output_mask=(True, True, False))[:2],
        lambda: autograd(lambda a, b: TF.conv2d(a, b, padding=1), x, w, gy=gy),
    )


def case_conv_transpose2d(rng):
    x, w = rand(rng, 1, 4, 128, 128), rand(rng, 4, 16, 4, 4)
    return (
        lambda: fastconv.conv_transpose2d(x, w, stride=2, padding=1),
        lambda: TF.conv_transpose2d(t(x), t(w), stride=2, padding=1).numpy(),
    )


def case_conv_transpose2d_backward(rng):
    x, w, gy = rand(rng, 1, 16, 256, 256), rand(rng, 16, 4, 3, 3), rand(rng, 1, 4, 256, 256)
    return (
        lambda: fastconv.conv_transpose2d_backward(gy, x, w, padding=1)[:2],
        lambda: autograd(lambda a, b: TF.conv_transpose2d(a, b, padding=1), x, w, gy=gy),
    )


def case_unfold(rng):
    x = rand(rng, 1, 8, 128, 128)
    return lambda: fastconv.unfold(x, 3, padding=1), lambda: TF.unfold(t(x), 3, padding=1).numpy()


def case_fold(rng):
    cols = rand(rng, 1, 16 * 9, 256 * 256)
    return (
        lambda: fastconv.fold(cols, (256, 256), 3, padding=1),
        lambda: TF.fold(t(cols), (256, 256), 3, padding=1).numpy(),
    )


def case_max_pool2d(rng):
    x = rand(rng, 1, 16, 512, 512)
    return (
        lambda: fastconv.max_pool2d(x, 2, return_indices=True),
        lambda: tuple(a.numpy() for a in TF.max_pool2d(t(x), 2, return_indices=True)),
    )


def case_max_pool2d_backward(rng):
    x, gy = rand(rng, 1, 16, 512, 512), rand(rng, 1, 16, 256, 256)
    _, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    return (
        lambda: fastconv.max_pool2d_backward(gy, x, idx, 2),
        lambda: autograd(lambda a: TF.max_pool2d(a, 2), x, gy=gy)[0],
    )


def case_max_unpool2d(rng):
    # The output is mostly zeros that the kernel must write itself.
    x = rand(rng, 1, 16, 512, 512)
    y, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    return (
        lambda: fastconv.max_unpool2d(y, idx, 2),
        lambda: TF.max_unpool2d(t(y), torch.from_numpy(idx), 2).numpy(),
    )


def case_max_unpool2d_backward(rng):
    x, gy = rand(rng, 1, 16, 512, 512), rand(rng, 1, 16, 512, 512)
    _, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    return (
        lambda: fastconv.max_unpool2d_backward(gy, idx),
        lambda: torch.gather(t(gy).flatten(2), 2, torch.from_numpy(idx).flatten(2)).reshape(idx.shape).numpy(),
    )


def case_avg_pool2d(rng):
    x = rand(rng, 1, 16, 512, 512)
    return lambda: fastconv.avg_pool2d(x, 3, 1, 1), lambda: TF.avg_pool2d(t(x), 3, 1, 1).numpy()


def case_avg_pool2d_backward(rng):
    x, gy = rand(rng, 1, 16, 256, 256), rand(rng, 1, 16, 256, 256)
    return (
        lambda: fastconv.avg_pool2d_backward(gy, x, 3, 1, 1),
        lambda: autograd(lambda a: TF.avg_pool2d(a, 3, 1, 1), x, gy=gy)[0],
    )


def case_interpolate(rng):
    x = rand(rng, 1, 16, 128, 128)
    return (
        lambda: fastconv.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False),
        lambda: TF.interpolate(t(x), scale_factor=2, mode="bilinear", align_corners=False).numpy(),
    )


def case_interpolate_backward(rng):
    x, gy = rand(rng, 1, 16, 256, 256), rand(rng, 1, 16, 512, 512)
    return (
        lambda: fastconv.interpolate_backward(gy, x.shape, scale_factor=2, mode="nearest"),
        lambda: autograd(lambda a: TF.interpolate(a, scale_factor=2, mode="nearest"), x, gy=gy)[0],
    )


def case_batch_norm_and_relu(rng):
    # fastconv.nn's kernels: the affine (with ReLU), ReLU forward and backward, the residual add.
    x, g = rand(rng, 2, 8, 256, 256), rand(rng, 2, 8, 256, 256)
    scale, shift = rand(rng, 8), rand(rng, 8)
    k = lambda name: F._kernel(np.dtype(np.float32), name)  # noqa: E731

    def ours():
        y = k("channel_affine")(x, scale, shift, True)
        return y, k("relu_forward")(x), k("relu_backward")(g, y), k("add_relu")(x, g, True)

    def ref():
        y = np.maximum(x * scale[:, None, None] + shift[:, None, None], 0)
        return y, np.maximum(x, 0), np.where(y > 0, g, 0), np.maximum(x + g, 0)

    return ours, ref


CASES = {name[5:]: fn for name, fn in globals().items() if name.startswith("case_")}


@pytest.mark.skipif(torch is None, reason="the references are torch's")
@pytest.mark.parametrize("name", sorted(CASES))
def test_results_in_reused_blocks_are_fully_written(name):
    ours, ref = CASES[name](np.random.default_rng(sorted(CASES).index(name)))
    first = arrays(ours())
    assert any(a.nbytes >= BIG for a in first), "the case must make a result the cache holds"
    addresses = set()
    for a in first:
        if a.nbytes >= BIG:
            a.fill(-1 if a.dtype.kind == "i" else np.nan)
            addresses.add(a.ctypes.data)
    del a, first
    second = arrays(ours())
    assert addresses <= {a.ctypes.data for a in second}, "the poisoned blocks were not handed out again"
    expected = arrays(ref())
    assert len(second) == len(expected)
    for got, want in zip(second, expected):
        if got.dtype.kind == "i":
            np.testing.assert_array_equal(got, want)
        else:
            # float32 sums of up to 65,536 terms: the tolerance scales with the result (garbage or NaN fails anyway)
            scale = max(1.0, float(np.abs(want).max()))
            torch.testing.assert_close(got, want.astype(got.dtype), rtol=1e-4, atol=1e-4 * scale)


MIB = 1 << 20


def big_conv(seed=0):
    rng = np.random.default_rng(seed)
    return fastconv.conv2d(rand(rng, 1, 3, 256, 256), rand(rng, 32, 3, 3, 3), padding=1)  # 8 MiB


def test_a_freed_result_is_reused_and_empty_cache_frees_it():
    y = big_conv()
    address, nbytes = y.ctypes.data, y.nbytes
    assert y.flags.writeable and y.flags.c_contiguous and address % 64 == 0
    del y
    assert fastconv._core._cache_bytes() >= nbytes
    again = big_conv(1)
    assert again.ctypes.data == address
    assert fastconv._core._cache_bytes() == 0  # handed out, so no longer kept
    assert fastconv.empty_cache() == 0  # the result is alive: nothing to free
    del again
    assert fastconv.empty_cache() >= nbytes


def test_empty_cache_reports_what_it_frees():
    y = big_conv()
    nbytes = y.nbytes
    del y
    assert fastconv.empty_cache() >= nbytes
    assert fastconv._core._cache_bytes() == 0
    assert fastconv.empty_cache() == 0


def test_a_view_keeps_its_block():
    y = big_conv()
    view = y[0, 5, 100:110]
    saved = view.copy()
    address = y.ctypes.data
    del y  # the view holds the array, the array the block
    assert fastconv._core._cache_bytes() == 0
    other = big_conv(2)
    assert other.ctypes.data != address
    np.testing.assert_array_equal(view, saved)
    del view
    assert fastconv._core._cache_bytes() >= 8 * MIB


def test_cache_limit_from_the_environment(monkeypatch):
    monkeypatch.setenv("FASTCONV_CACHE_MB", "0")
    y = big_conv()
    del y
    assert fastconv._core._cache_bytes() == 0
    monkeypatch.setenv("FASTCONV_CACHE_MB", "12")  # room for one 8 MiB block, not two
    a, b = big_conv(), big_conv(1)
    address_b = b.ctypes.data
    del a, b  # a goes in first, then b pushes it out
    assert 8 * MIB <= fastconv._core._cache_bytes() <= 12 * MIB
    assert big_conv(3).ctypes.data == address_b


def test_a_much_smaller_result_does_not_take_a_large_block():
    y = big_conv()
    address = y.ctypes.data
    del y
    rng = np.random.default_rng(0)
    small = fastconv.conv2d(rand(rng, 1, 3, 256, 256), rand(rng, 16, 3, 3, 3), padding=1)  # 4 MiB: half the block
    assert small.ctypes.data != address
    assert fastconv._core._cache_bytes() >= 8 * MIB


def test_python_threads_share_the_cache():
    """Blocks handed out and returned from several Python threads at once (the kernels release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(5)
    xs = [rand(rng, 1, 3, 256, 256) for _ in range(4)]
    w = rand(rng, 16, 3, 3, 3)  # 4 MiB results
    refs = [fastconv.conv2d(x, w, padding=1).copy() for x in xs]

    def work(i):
        for _ in range(6):
            y = fastconv.conv2d(xs[i], w, padding=1)
            np.testing.assert_array_equal(y, refs[i])
            y.fill(np.nan)
        return True

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(work, range(4)))


def test_fork_while_other_threads_use_the_cache():
    """Children forked while Python threads hand blocks out and back get a cache of their own (never a lock left
    held by a thread that does not exist in the child)."""
    import multiprocessing
    import threading

    rng = np.random.default_rng(9)
    x, w = rand(rng, 1, 3, 256, 256), rand(rng, 16, 3, 3, 3)
    expected = fastconv.conv2d(x, w, padding=1).copy()
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            fastconv.conv2d(x, w, padding=1)

    threads = [threading.Thread(target=churn) for _ in range(3)]
    for th in threads:
        th.start()
    try:
        ctx = multiprocessing.get_context("fork")
        for _ in range(8):
            with ctx.Pool(1) as pool:
                got = pool.apply_async(fastconv.conv2d, (x, w), {"padding": 1}).get(timeout=60)
            np.testing.assert_array_equal(got, expected)
    finally:
        stop.set()
        for th in threads:
            th.join()


def test_a_reused_block_goes_back_whole():
    """A 7 MiB result in a kept 8 MiB block returns all 8 MiB, so the next 8 MiB result finds the block again."""
    y = big_conv()  # 8 MiB
    address = y.ctypes.data
    del y
    rng = np.random.default_rng(0)
    smaller = fastconv.conv2d(rand(rng, 1, 3, 256, 256), rand(rng, 28, 3, 3, 3), padding=1)  # 7 MiB: within a quarter
    assert smaller.ctypes.data == address
    del smaller
    assert fastconv._core._cache_bytes() == 8 * MIB
    again = big_conv(1)
    assert again.ctypes.data == address
