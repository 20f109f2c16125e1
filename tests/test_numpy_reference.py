"""Kernels against float64 NumPy references, without torch.

This file needs NumPy and pytest only, so it also runs where torch cannot: the
aarch64 job of ``.ci/aarch64`` runs it under qemu with ``--noconftest``.  The
references are written here from the definitions (zero padding, windows of
taps), independent of fastconv.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastconv


def out_size(n, k, s, before, after, d):
    return (n + before + after - d * (k - 1) - 1) // s + 1


def patches(xp, i, j, oh, ow, s, d):
    """Input under tap (i, j) for every output position: xp[..., i*dh + sh*oh, j*dw + sw*ow]."""
    return xp[:, :, i * d[0] : i * d[0] + s[0] * (oh - 1) + 1 : s[0], j * d[1] : j * d[1] + s[1] * (ow - 1) + 1 : s[1]]


def conv_ref(x, w, b, s, pads, d, groups):
    """Forward and the two gradients (for gy of ones times a fixed pattern) in float64."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    n, c, h, wd = x.shape
    co, cg, kh, kw = w.shape
    pt, pb, pl, pr = pads
    oh, ow = out_size(h, kh, s[0], pt, pb, d[0]), out_size(wd, kw, s[1], pl, pr, d[1])
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    y = np.zeros((n, co, oh, ow))
    gy = np.cos(np.arange(y.size)).reshape(y.shape)
    gxp, gw = np.zeros_like(xp), np.zeros_like(w)
    og = co // groups
    for g in range(groups):
        cs, os_ = slice(g * cg, (g + 1) * cg), slice(g * og, (g + 1) * og)
        for i in range(kh):
            for j in range(kw):
                p = patches(xp[:, cs], i, j, oh, ow, s, d)
                y[:, os_] += np.einsum("nchw,oc->nohw", p, w[os_, :, i, j])
                gw[os_, :, i, j] += np.einsum("nohw,nchw->oc", gy[:, os_], p)
                view = patches(gxp[:, cs], i, j, oh, ow, s, d)
                view += np.einsum("nohw,oc->nchw", gy[:, os_], w[os_, :, i, j])
    if b is not None:
        y += b.astype(np.float64)[None, :, None, None]
    gx = gxp[:, :, pt : pt + h, pl : pl + wd]
    return y, gy, gx, gw


LEVELS = ("portable", "avx2", "avx512", "neon")
COVERED_LEVELS: set[str] = set()  # read by conftest's terminal summary


@pytest.fixture(params=LEVELS)
def level(request):
    """Runs a test at each FASTCONV_CPU level this CPU has; a level it lacks is skipped, saying what is missing."""
    from fastconv import _core

    before = _core.active_level()
    try:
        _core._set_active_level(request.param)
    except RuntimeError as exc:
        pytest.skip(str(exc))
    COVERED_LEVELS.add(request.param)
    try:
        yield request.param
    finally:
        _core._set_active_level(before)


def close(got, ref, dtype):
    tol = 2e-4 if dtype == np.float32 else 1e-10
    # The finite values set the scale: an Inf in ref (an input's Inf reaching some outputs) would make atol
    # infinite and the comparison of every other value vacuous.
    scale = max(1.0, float(np.abs(ref[np.isfinite(ref)]).max(initial=0)))
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * scale)


# (x shape, w shape, stride, pads (top, bottom, left, right), dilation, groups): the GEMM path, the
# direct path (one channel per group), Winograd-eligible 3x3 layers, asymmetric 'same' pads.
CONVS = [
    ((2, 3, 9, 8), (4, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ((1, 4, 11, 10), (6, 2, 3, 2), (2, 1), (0, 1, 2, 0), (1, 2), 2),
    ((2, 6, 12, 12), (6, 1, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 6),
    ((1, 5, 15, 13), (10, 1, 5, 5), (2, 3), (2, 2, 1, 3), (1, 1), 5),
    ((2, 16, 10, 10), (16, 16, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ((1, 3, 7, 7), (8, 3, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
    ((3, 2, 6, 6), (2, 2, 3, 3), (2, 2), (0, 1, 0, 1), (1, 1), 1),
]


@pytest.mark.parametrize("threads", [1, 3, 8], ids=lambda t: f"{t}threads")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("xs, ws, s, pads, d, groups", CONVS, ids=[f"{c[0]}x{c[1]}" for c in CONVS])
def test_conv2d_and_gradients(xs, ws, s, pads, d, groups, dtype, threads, level):
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    y_ref, gy, gx_ref, gw_ref = conv_ref(x, w, b, s, pads, d, groups)
    padding = (pads[2], pads[3], pads[0], pads[1])  # fastconv's (left, right, top, bottom)
    old = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(threads)
        close(fastconv.conv2d(x, w, b, stride=s, padding=padding, dilation=d, groups=groups), y_ref, dtype)
        gx, gw, gb = fastconv.conv2d_backward(
            gy.astype(dtype), x, w, stride=s, padding=padding, dilation=d, groups=groups
        )
    finally:
        fastconv.set_num_threads(old)
    close(gx, gx_ref, dtype)
    close(gw, gw_ref, dtype)
    close(gb, gy.sum(axis=(0, 2, 3)), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_conv_transpose2d_is_the_adjoint_of_conv2d(dtype):
    """<conv_transpose2d(x, w), v> = <x, conv2d(v, w)> for every v: the definition of the transposed convolution."""
    rng = np.random.default_rng(8)
    x, w = rng.standard_normal((2, 4, 5, 6)).astype(dtype), rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    y = fastconv.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1)
    assert y.shape == (2, 3, 10, 12)
    v = rng.standard_normal(y.shape)
    z = conv_ref(v, w, None, (2, 2), (1, 1, 1, 1), (1, 1), 1)[0]
    assert z.shape == x.shape
    close(np.vdot(y.astype(np.float64), v), np.vdot(x.astype(np.float64), z), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_unfold_fold_adjoint_and_layout(dtype):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    cols = fastconv.unfold(x, (2, 3), dilation=(2, 1), padding=1, stride=(1, 2))
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    oh, ow = out_size(7, 2, 1, 1, 1, 2), out_size(6, 3, 2, 1, 1, 1)
    ref = np.stack([patches(xp, i, j, oh, ow, (1, 2), (2, 1)) for i in range(2) for j in range(3)], axis=2)
    close(cols, ref.reshape(2, 3 * 6, oh * ow), dtype)
    c = rng.standard_normal(cols.shape).astype(dtype)
    back = fastconv.fold(c, (7, 6), (2, 3), dilation=(2, 1), padding=1, stride=(1, 2))
    close(np.vdot(cols.astype(np.float64), c), np.vdot(x.astype(np.float64), back), dtype)


def pool_windows(x, k, s, p, fill):
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p, p), (p, p)), constant_values=fill)
    oh, ow = out_size(x.shape[2], k, s, p, p, 1), out_size(x.shape[3], k, s, p, p, 1)
    return np.stack([patches(xp, i, j, oh, ow, (s, s), (1, 1)) for i in range(k) for j in range(k)], axis=-1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("k, s, p", [(2, 2, 0), (3, 2, 1), (3, 1, 1)], ids=str)
def test_pools(k, s, p, dtype):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 3, 9, 8)).astype(dtype)
    close(fastconv.max_pool2d(x, k, s, p), pool_windows(x, k, s, p, -np.inf).max(-1), dtype)
    close(fastconv.avg_pool2d(x, k, s, p), pool_windows(x, k, s, p, 0.0).mean(-1), dtype)
    y, idx = fastconv.max_pool2d(x, k, s, p, return_indices=True)
    gx = fastconv.max_pool2d_backward(np.ones_like(y), x, idx, k, s, p)
    assert (
        gx.sum() == y.size
        and (np.take_along_axis(x.reshape(2, 3, -1), idx.reshape(2, 3, -1), 2) == y.reshape(2, 3, -1)).all()
    )


def test_pool_self_test_at_many_threads():
    from fastconv import _core

    old = fastconv.get_num_threads()
    try:
        for threads in (2, 3, 8, 16):
            fastconv.set_num_threads(threads)
            assert _core._pool_selftest(2000, threads, threads) == 0
    finally:
        fastconv.set_num_threads(old)


def test_size_rules():
    assert fastconv.conv_output_size(224, 7, 2, 3) == 112
    assert fastconv.pool_output_size(112, 3, 2, 1) == 56
    assert fastconv.conv_transpose_output_size(7, 3, 2, 1, 1) == 14
    assert fastconv.same_padding(5, 3, stride=2) == (1, 1)
    with pytest.raises(ValueError, match="int64"):
        fastconv.conv_transpose_output_size(5, 3, 1, 2**63 - 1)
