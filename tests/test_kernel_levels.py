"""Every level's micro-kernels (csrc/kernels/) through the awkward cases.

One tester for all variants: each case runs at every FASTCONV_CPU level this CPU
has (the ``level`` fixture), so the SSE2, AVX2, AVX-512 and NEON builds of the
same kernel source meet the same edges: output widths on both sides of every
vector width (4, 8 and 16 floats; 2, 4 and 8 doubles) and of the blocks of 1-8
vectors, column strides 1-8, dilation, channel multipliers that leave partial
4-channel blocks, small-K GEMM rows that leave partial 6- and 8-row tiles, and
Inf in input columns only some taps may read.  References are float64 NumPy
(test_numpy_reference.py), so this file also runs in the aarch64 job.
"""
# ruff: noqa: F811  (the `level` fixture is imported, then requested by name)

from __future__ import annotations

import functools
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
from test_numpy_reference import close, conv_ref, level  # noqa: F401  (level is a fixture)

DTYPES = [np.float32, np.float64]
DTYPE_IDS = [(np.float32, "f32"), (np.float64, "f64")]


def run(x, w, b, s, pads, d, groups, dtype):
    y_ref, gy, gx_ref, gw_ref = conv_ref(x, w, b, s, pads, d, groups)
    padding = (pads[2], pads[3], pads[0], pads[1])
    y = fastconv.conv2d(x, w, b, stride=s, padding=padding, dilation=d, groups=groups)
    gx, gw, _ = fastconv.conv2d_backward(gy.astype(dtype), x, w, stride=s, padding=padding, dilation=d, groups=groups)
    return (y, y_ref), (gx, gx_ref), (gw, gw_ref)


def run_at_threads(threads, *args):
    """run(*args) with fastconv at `threads` threads, the old count restored."""
    old = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(threads)
        return run(*args)
    finally:
        fastconv.set_num_threads(old)


# Output widths around 4/8/16-lane vectors and 2/4/8-vector blocks.
WIDTHS = [1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 65, 129, 131]


# The depthwise forward's two layouts (the rule puts rows of at most two vectors on the channel vectors): both,
# forced by FASTCONV_DIRECT_VECTORS, so the row blocks keep their coverage where the rule no longer takes them.
VECTORS = ["positions", "channels"]


@pytest.mark.parametrize("vectors", VECTORS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("ow", WIDTHS, ids=lambda v: f"ow{v}")
def test_direct_depthwise_widths(ow, dtype, vectors, level, monkeypatch):
    monkeypatch.setenv("FASTCONV_DIRECT_VECTORS", vectors)
    rng = np.random.default_rng(ow)
    c = 3
    x = rng.standard_normal((2, c, 5, ow + 2)).astype(dtype)
    w = rng.standard_normal((c, 1, 3, 3)).astype(dtype)
    b = rng.standard_normal(c).astype(dtype)
    for got, ref in run(x, w, b, (1, 1), (1, 1, 0, 0), (1, 1), c, dtype):
        close(got, ref, dtype)


# Narrow maps take their chains from blocks of 2, 4 or 8 rows (the last block overlapping the one before):
# heights around those blocks, widths of one and two vectors, stride 1 and 2.
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("oh", [1, 2, 3, 4, 5, 7, 8, 9, 17], ids=lambda v: f"oh{v}")
@pytest.mark.parametrize("ow, s", [(3, 1), (7, 1), (8, 1), (9, 2), (16, 1), (4, 2)], ids=lambda v: f"{v}")
def test_direct_depthwise_heights(oh, ow, s, dtype, level, monkeypatch):
    """The row blocks, forced (the rule gives these narrow rows to the channel vectors, tested below)."""
    monkeypatch.setenv("FASTCONV_DIRECT_VECTORS", "positions")
    rng = np.random.default_rng(oh * 100 + ow)
    c = 5
    x = rng.standard_normal((1, c, (oh - 1) * s + 1, (ow - 1) * s + 1)).astype(dtype)
    w = rng.standard_normal((c, 1, 3, 3)).astype(dtype)
    b = rng.standard_normal(c).astype(dtype)
    results = run(x, w, b, (s, s), (1, 1, 1, 1), (1, 1), c, dtype)
    assert results[0][0].shape[2:] == (oh, ow)
    for got, ref in results:
        close(got, ref, dtype)


# (input H x W, kernel, stride, pads (t, b, l, r), dilation, channel multiplier)
DIRECT = [
    ((9, 40), (3, 3), (1, 2), (1, 1, 1, 1), (1, 1), 1),
    ((9, 40), (3, 3), (2, 3), (0, 2, 2, 0), (1, 1), 2),
    ((8, 70), (1, 5), (1, 4), (0, 0, 2, 2), (1, 2), 3),
    ((11, 50), (5, 1), (3, 5), (2, 2, 0, 0), (2, 1), 4),
    ((7, 90), (3, 3), (1, 8), (1, 1, 1, 1), (2, 3), 5),
    ((6, 33), (2, 7), (2, 6), (1, 0, 3, 3), (1, 1), 8),
    ((6, 20), (3, 3), (1, 7), (0, 0, 0, 0), (1, 1), 9),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("hw, k, s, pads, d, mult", DIRECT, ids=[f"k{c[1]}s{c[2]}m{c[5]}" for c in DIRECT])
def test_direct_strides_dilations_multipliers(hw, k, s, pads, d, mult, dtype, level):
    rng = np.random.default_rng(sum(hw) + mult)
    c = 2
    x = rng.standard_normal((2, c, *hw)).astype(dtype)
    w = rng.standard_normal((c * mult, 1, *k)).astype(dtype)
    b = rng.standard_normal(c * mult).astype(dtype)
    for got, ref in run(x, w, b, s, pads, d, c, dtype):
        close(got, ref, dtype)


# Channel vectors (direct_forward_chanvec): channel counts that leave a partial block of 4, 8 or 16 lanes, maps
# whose positions end mid-block, every kernel shape, stride, dilation and padding, with and without a bias; the
# rule's choice (explain) checked beside the forced runs.  (C, H, W, kernel, stride, pads (t, b, l, r), dilation)
CHANVEC = [
    (1, 7, 7, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    (3, 5, 6, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
    (9, 14, 14, (3, 3), (2, 2), (0, 1, 0, 1), (1, 1)),
    (17, 4, 4, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),
    (20, 9, 11, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1)),
    (33, 12, 10, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2)),
    (24, 13, 15, (7, 7), (2, 3), (3, 3, 3, 3), (1, 1)),
    (40, 3, 19, (2, 4), (1, 2), (0, 2, 3, 0), (1, 2)),
]


@pytest.mark.parametrize("threads", [1, 8, 64], ids=lambda t: f"{t}threads")
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize(
    "c, h, w_, k, s, pads, d", CHANVEC, ids=[f"c{c[0]}_{c[1]}x{c[2]}_k{c[3][0]}x{c[3][1]}s{c[4][1]}" for c in CHANVEC]
)
def test_direct_channel_vectors(c, h, w_, k, s, pads, d, dtype, threads, level, monkeypatch):
    monkeypatch.setenv("FASTCONV_DIRECT_VECTORS", "channels")
    rng = np.random.default_rng(c * 31 + h)
    x = rng.standard_normal((3, c, h, w_)).astype(dtype)
    w = rng.standard_normal((c, 1, *k)).astype(dtype)
    for b in (rng.standard_normal(c).astype(dtype), None):
        (y, y_ref), (gx, gx_ref), (gw, gw_ref) = run_at_threads(threads, x, w, b, s, pads, d, c, dtype)
        close(y, y_ref, dtype)
        close(gx, gx_ref, dtype)
        close(gw, gw_ref, dtype)
    # A plan's fused epilogues on the same layer: bias, residual and ReLU (capped) as the output is written.
    padding = (pads[2], pads[3], pads[0], pads[1])
    plan = fastconv.Conv2dPlan(w, None, stride=s, padding=padding, dilation=d, groups=c)  # b is None: y_ref's
    r = rng.standard_normal(y_ref.shape).astype(dtype)
    old = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(threads)
        got = plan(x, residual=r, relu=True, relu_cap=1.5)
    finally:
        fastconv.set_num_threads(old)
    close(got, np.clip(y_ref + r, 0, 1.5), dtype)


def test_direct_channel_vectors_rule(monkeypatch):
    """Rows of at most two vectors (the level's lanes) take the channel vectors; wider rows, channel multipliers
    and grouped layers of several channels keep the row blocks (the explain text says which)."""
    monkeypatch.delenv("FASTCONV_DIRECT_VECTORS", raising=False)
    why = fastconv.explain_conv2d((1, 64, 7, 7), (64, 1, 3, 3), padding=1, groups=64, mode="dicts")["forward"]
    assert why["algorithm"] == "direct" and "channels in the vectors" in why["reason"], why
    why = fastconv.explain_conv2d((1, 64, 200, 200), (64, 1, 3, 3), padding=1, groups=64, mode="dicts")["forward"]
    assert why["algorithm"] == "direct" and "channels in the vectors" not in why["reason"], why
    why = fastconv.explain_conv2d((1, 8, 7, 7), (16, 1, 3, 3), padding=1, groups=8, mode="dicts")["forward"]
    assert why["algorithm"] == "direct" and "channels in the vectors" not in why["reason"], why


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("ow", [5, 8, 16, 21], ids=lambda v: f"ow{v}")
def test_direct_weight_gradient_ignores_inf_outside_its_windows(ow, dtype, level):
    """x's last column is Inf: only the last tap of the last output reads it, so gw[..., :2] stays finite."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 1, 4, ow + 2)).astype(dtype)
    x[0, 0, 1, -1] = np.inf
    w = rng.standard_normal((2, 1, 3, 3)).astype(dtype)
    (_, _), (_, _), (gw, gw_ref) = run(x, w, None, (1, 1), (0, 0, 0, 0), (1, 1), 1, dtype)
    assert np.isfinite(gw[:, :, :, :2]).all()
    close(gw, gw_ref, dtype)


# Small-K GEMM: 2 input channels (not direct) with K = 2*kh*kw <= 32; Cout rows leave partial
# 6- and 8-row tiles, output sizes partial 2-vector column blocks.
SMALL_K = [(1, (1, 1), 1), (5, (3, 3), 6), (7, (2, 2), 9), (13, (1, 3), 17), (8, (4, 4), 40), (16, (2, 3), 70)]
SMALL_K += [
    (3, (1, 1), 5),
    (11, (3, 3), 33),
    (14, (2, 2), 16),
    (12, (1, 1), 3),
    (10, (4, 4), 31),
]  # every leftover row count


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("cout, k, ow", SMALL_K, ids=[f"co{c[0]}k{c[1][0]}x{c[1][1]}ow{c[2]}" for c in SMALL_K])
def test_small_k_gemm_tiles(cout, k, ow, dtype, level):
    rng = np.random.default_rng(cout + ow)
    x = rng.standard_normal((2, 2, 3 + k[0], ow + k[1] - 1)).astype(dtype)
    w = rng.standard_normal((cout, 2, *k)).astype(dtype)
    for got, ref in run(x, w, None, (1, 1), (0, 0, 0, 0), (1, 1), 1, dtype):
        close(got, ref, dtype)


def test_every_level_reports_its_kernels(level):
    cfg = fastconv.show_config(file=False)
    assert cfg["level"] == level
    # On AArch64 NEON is architectural: the portable level runs the baseline (NEON) table.
    served = "neon" if cfg["machine"] in ("aarch64", "arm64") else level
    assert cfg["kernels"]["direct"].startswith(served), cfg["kernels"]


# F(2x2, 3x3) Winograd (float32, 3x3, stride 1, at least 16 input and 8 output channels: every level that has it
# takes these): odd and even sizes, maps smaller than a tile, tiles crossing images, each padding.
WINOGRAD = [
    ((2, 16, 9, 7), 20, (1, 1, 1, 1)),
    ((3, 16, 5, 6), 17, (0, 0, 0, 0)),
    ((1, 24, 1, 1), 16, (1, 1, 1, 1)),
    ((2, 16, 2, 3), 16, (2, 2, 2, 2)),
    ((1, 32, 33, 31), 40, (1, 0, 0, 1)),
    ((4, 16, 7, 7), 32, (1, 1, 1, 1)),
    ((2, 160, 12, 10), 144, (1, 1, 1, 1)),  # wide: the generic operator's layered schedule
    ((2, 48, 10, 9), 12, (1, 1, 1, 1)),  # few output channels (a DenseNet layer's growth)
    ((1, 16, 8, 8), 8, (0, 0, 0, 0)),
    ((1, 16, 4, 75), 9, (1, 1, 1, 1)),  # rows of 38 tiles: several whole vectors and a tail at every level
    ((6, 200, 5, 5), 170, (1, 1, 1, 1)),  # layered and wide: the transformed weights made in row blocks (partial panel)
]


@pytest.mark.parametrize("xs, cout, pads", WINOGRAD, ids=[f"{c[0]}to{c[1]}p{c[2][0]}{c[2][2]}" for c in WINOGRAD])
def test_winograd_forward_and_gradients(xs, cout, pads, level, monkeypatch):
    """Forward, input gradient (the adjoint transform) and weight gradient against float64 NumPy; forced
    (FASTCONV_WINOGRAD=1) so that maps the size rule leaves to im2col reach the transforms too."""
    monkeypatch.setenv("FASTCONV_WINOGRAD", "1")
    if "off" in fastconv.show_config(file=False)["kernels"]["winograd float32"]:
        pytest.skip(f"no Winograd at the {level} level")
    rng = np.random.default_rng(xs[1] + cout)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal((cout, xs[1], 3, 3)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    for got, ref in run(x, w, b, (1, 1), pads, (1, 1), 1, np.float32):
        close(got, ref, np.float32)


def test_winograd_transposed_convolution(level, monkeypatch):
    """conv_transpose2d runs the adjoint transform as a forward: checked as <T x, v> = <x, conv(v)>."""
    monkeypatch.setenv("FASTCONV_WINOGRAD", "1")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 24, 6, 5)).astype(np.float32)
    w = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
    y = fastconv.conv_transpose2d(x, w, padding=1)
    v = rng.standard_normal(y.shape)
    z = conv_ref(v, w, None, (1, 1), (1, 1, 1, 1), (1, 1), 1)[0]
    close(np.vdot(y.astype(np.float64), v), np.vdot(x.astype(np.float64), z), np.float32)


# Implicit GEMM (one group, several input channels; forced by FASTCONV_IMPLICIT_GEMM=1 so every case reaches it):
# (N, C, H, W), Cout, kernel, stride, pads (t, b, l, r), dilation; forward and both gradients.  Cout leaves
# partial 6- and 8-row tiles, output widths partial 16/32/48-column tiles, strides exercise the column phases,
# narrow maps the compact planes (runs of rows as one), bias checked.
IMPLICIT = [
    ((2, 3, 9, 40), 7, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((1, 2, 8, 9), 13, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
    ((3, 5, 12, 70), 6, (5, 5), (2, 3), (2, 2, 0, 3), (1, 1)),
    ((1, 4, 11, 50), 9, (3, 2), (1, 4), (0, 2, 2, 0), (2, 3)),
    ((2, 16, 6, 17), 17, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),
    ((1, 3, 20, 100), 64, (7, 7), (2, 2), (3, 3, 3, 3), (1, 1)),
    ((2, 8, 5, 5), 25, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1)),
    ((1, 3, 13, 12), 10, (3, 3), (2, 1), (1, 1, 1, 1), (1, 2)),  # row stride 2 over a compact plane
    ((2, 7, 10, 23), 11, (3, 5), (1, 1), (2, 0, 1, 3), (2, 1)),  # weight-gradient tiles with edges both ways
    ((2, 5, 15, 15), 9, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),  # stride 2 on a compact plane: row and column phases
    ((1, 4, 14, 26), 7, (3, 5), (2, 3), (1, 2, 2, 1), (1, 2)),  # strides 2 and 3, dilated, on a compact plane
    # The weight gradient's gemm_tn_rows: output channels in vectors, split into tiles of up to 3 (2) vectors with
    # a partial last vector; tap rows padded to whole tiles; sums cut into chunks (64*9 x 128 of them, more than
    # fit the chunk budget); a tall narrow map split into several kernel calls; images in blocks of unequal size.
    ((2, 16, 5, 6), 72, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((2, 64, 6, 7), 128, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((1, 2, 70, 3), 5, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((5, 3, 7, 8), 20, (3, 3), (2, 1), (1, 0, 1, 2), (1, 1)),
    # Column stride 2 on rows long enough for the vector deinterleave, even left padding, an odd width.
    ((2, 4, 9, 75), 10, (3, 3), (2, 2), (1, 1, 2, 2), (1, 1)),
    # Rows of at most half a vector, two to a vector (gemm_packed_vecs' halves): 2-wide rows, an odd count (the
    # last vector's upper half empty), 1-wide rows.
    ((2, 6, 5, 4), 9, (3, 3), (1, 1), (1, 1, 0, 0), (1, 1)),
    ((1, 4, 6, 3), 7, (3, 3), (1, 1), (1, 1, 0, 0), (1, 1)),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize(
    "xs, cout, k, s, pads, d", IMPLICIT, ids=[f"{c[0][1]}to{c[1]}k{c[2][0]}s{c[3][1]}" for c in IMPLICIT]
)
def test_implicit_gemm(xs, cout, k, s, pads, d, dtype, level, monkeypatch):
    """Forward, the stride-1 input gradient (the adjoint forward) and the weight gradient (gemm_tn_rows)."""
    monkeypatch.setenv("FASTCONV_IMPLICIT_GEMM", "1")
    rng = np.random.default_rng(xs[1] * 100 + cout)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal((cout, xs[1], *k)).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    for got, ref in run(x, w, b, s, pads, d, 1, dtype):
        close(got, ref, dtype)


# Grouped layers on the implicit GEMM (forced): the forward and the weight gradient run their groups in turn inside
# each work item, the stride-1 input gradient is the grouped adjoint forward.  (id, (N, C, H, W), Cout, kernel,
# stride, pads (t, b, l, r), dilation, groups): odd channels per group (partial vectors and tiles in every group),
# dilation with asymmetric padding, a strided 5x5 (no adjoint: im2col's input gradient beside the implicit weight
# gradient), and 360 tap rows per group over 200 output channels, so each group's weight-gradient sums come in
# several L2 chunks at every level.
IMPLICIT_GROUPED = [
    ("g2_odd_channels", (2, 6, 9, 11), 10, 3, 1, (1, 1, 1, 1), 1, 2),
    ("g4_dilated_asymmetric", (3, 8, 10, 9), 12, 3, 1, (2, 0, 1, 2), 2, 4),
    ("g3_strided_5x5", (2, 9, 13, 12), 6, 5, 2, (2, 2, 2, 2), 1, 3),
    ("g2_weight_grad_chunks", (2, 80, 6, 6), 400, 3, 1, (1, 1, 1, 1), 1, 2),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", IMPLICIT_GROUPED, ids=[c[0] for c in IMPLICIT_GROUPED])
def test_implicit_gemm_grouped(case, dtype, level, monkeypatch):
    """Each group's weights meet only its own channels, forward and both gradients."""
    _, xs, cout, k, s, pads, d, groups = case
    monkeypatch.setenv("FASTCONV_IMPLICIT_GEMM", "1")
    rng = np.random.default_rng(xs[1] * 100 + cout)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal((cout, xs[1] // groups, k, k)).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    for got, ref in run(x, w, b, (s, s), pads, (d, d), groups, dtype):
        close(got, ref, dtype)


# Dilated 3x3 layers as d*d undilated phases on Winograd (FASTCONV_WINOGRAD=1: wherever eligible), so the generic
# Winograd's phase path runs at neon too: (x shape, Cout, dilation, padding on every side).
DILATED_PHASES = [((2, 16, 12, 10), 20, 2, 2), ((1, 16, 9, 12), 16, 3, 6), ((3, 16, 8, 8), 16, 2, 0)]


@pytest.mark.parametrize("xs, cout, d, p", DILATED_PHASES, ids=[f"d{c[2]}p{c[3]}" for c in DILATED_PHASES])
def test_dilated_phases(xs, cout, d, p, level, monkeypatch):
    monkeypatch.setenv("FASTCONV_WINOGRAD", "1")
    rng = np.random.default_rng(d * 10 + p)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal((cout, xs[1], 3, 3)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    for got, ref in run(x, w, b, (1, 1), (p, p, p, p), (d, d), 1, np.float32):
        close(got, ref, np.float32)


# Each layout of the implicit GEMM's output (FASTCONV_IMPLICIT_LAYOUT; the rules pick by the share of columns
# kept, so a level reaches some layouts only on some widths): row vectors with partial last vectors and uneven
# tiles, two narrow rows to a vector with an odd row count, runs of rows through compact planes, stride 2.
# float32 only (float64's halves and both tiles come up in IMPLICIT above): under qemu every case costs.
LAYOUT_CASES = [
    ((2, 6, 9, 8), 10, (3, 3), (1, 1), (1, 1, 1, 1)),
    ((1, 5, 7, 19), 13, (3, 3), (1, 1), (1, 1, 1, 1)),
    ((2, 4, 7, 2), 7, (3, 3), (1, 1), (1, 1, 1, 1)),
    ((2, 5, 13, 10), 9, (3, 3), (2, 2), (1, 1, 1, 1)),
]


@pytest.mark.parametrize("dtype", [np.float32], ids=["f32"])
@pytest.mark.parametrize("panel", ["1", "2"], ids=["tile1", "tile2"])
@pytest.mark.parametrize("layout", ["rows", "halves", "run"])
@pytest.mark.parametrize(
    "xs, cout, k, s, pads", LAYOUT_CASES, ids=[f"{c[0][2]}x{c[0][3]}s{c[3][1]}" for c in LAYOUT_CASES]
)
def test_implicit_gemm_layouts(xs, cout, k, s, pads, layout, panel, dtype, level, monkeypatch):
    """Forward and the stride-1 input gradient on each output layout ("halves" where the rows are at most half a
    vector wide, else the rules' choice) and each of the packed GEMM's two tile shapes (FASTCONV_IMPLICIT_PANEL;
    the output channel counts leave partial row panels in both)."""
    monkeypatch.setenv("FASTCONV_IMPLICIT_GEMM", "1")
    monkeypatch.setenv("FASTCONV_IMPLICIT_LAYOUT", layout)
    monkeypatch.setenv("FASTCONV_IMPLICIT_PANEL", panel)
    rng = np.random.default_rng(cout)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal((cout, xs[1], *k)).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    (y, y_ref), (gx, gx_ref), _ = run(x, w, b, s, pads, (1, 1), 1, dtype)
    close(y, y_ref, dtype)
    close(gx, gx_ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("s", [(2, 2), (1, 3)], ids=["s22", "s13"])
def test_implicit_weight_gradient_ignores_inf_outside_its_windows(s, dtype, level, monkeypatch):
    """gemm_tn_rows sums real output positions only: x's last column, which no window reads (the column stride
    steps over it), is Inf and gw stays finite, as torch's sum over windows does."""
    monkeypatch.setenv("FASTCONV_IMPLICIT_GEMM", "1")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 7, s[1] * 8 + 2)).astype(dtype)
    x[1, 2, 3, -1] = np.inf
    w = rng.standard_normal((20, 3, 3, 3)).astype(dtype)
    (_, _), (_, _), (gw, gw_ref) = run(x, w, None, s, (0, 0, 0, 0), (1, 1), 1, dtype)
    assert np.isfinite(gw).all()
    close(gw, gw_ref, dtype)


# The implicit GEMM with output channels in the vectors (FASTCONV_IMPLICIT_VECTORS=channels; the rules take it for
# long reductions at AVX2 and AVX-512), and strided layers' input gradients as sh x sw sub-pixel phases on the same
# kernel (FASTCONV_IMPLICIT_GEMM=1 takes every strided one): (id, (N, C, H, W), Cout, kernel, stride, pads (t, b, l,
# r), dilation, groups).  Channel counts leave partial channel tiles of every level's widths (8/12 at SSE2 and NEON,
# 16/24 at AVX2, 48/64 at AVX-512) and several tiles; position counts leave partial tiles of 4, 6 and 8 positions,
# across output rows; strides, dilation, asymmetric padding and groups move the positions' reads.  The strided ones
# give phases different tap counts, phases no tap meets (kernel or dilation smaller than the stride: zeros), padding
# that shifts the phases and input sizes that leave phases of unequal size.
CHANNEL_VECTORS = [
    ("odd_channels", (2, 5, 9, 11), 7, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ("strided_5x5_two_tiles", (1, 6, 13, 17), 37, (5, 5), (2, 2), (2, 2, 2, 2), (1, 1), 1),
    ("strides_2_3_dilated", (2, 4, 14, 26), 20, (3, 5), (2, 3), (1, 2, 2, 1), (1, 2), 1),
    ("groups_3_dilated", (2, 9, 10, 9), 21, (3, 3), (1, 1), (2, 0, 1, 2), (2, 2), 3),
    ("many_tiles_few_positions", (1, 3, 6, 5), 70, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ("5x5_s2", (2, 6, 13, 12), 20, (5, 5), (2, 2), (2, 2, 2, 2), (1, 1), 1),
    ("1x1_s2_empty_phases", (1, 5, 9, 8), 7, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1),
    ("3x2_s3x2_dilated", (2, 4, 17, 11), 9, (3, 2), (3, 2), (1, 0, 2, 1), (2, 3), 1),
    ("4x4_s2_grouped", (2, 8, 10, 9), 12, (4, 4), (2, 2), (1, 2, 0, 3), (1, 1), 2),
    ("7x7_s2_three_groups", (1, 9, 15, 14), 30, (7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 3),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("panel", ["1", "2"], ids=["tile1", "tile2"])
@pytest.mark.parametrize("case", CHANNEL_VECTORS, ids=[c[0] for c in CHANNEL_VECTORS])
def test_implicit_gemm_channel_vectors(case, panel, dtype, level, monkeypatch):
    """Forward with bias and the input gradient (the stride-1 adjoint forward, or the strided phases) on each
    channel tile; the weight gradient beside them."""
    _, xs, cout, k, s, pads, d, groups = case
    monkeypatch.setenv("FASTCONV_IMPLICIT_GEMM", "1")
    monkeypatch.setenv("FASTCONV_IMPLICIT_VECTORS", "channels")
    monkeypatch.setenv("FASTCONV_IMPLICIT_PANEL", panel)
    rng = np.random.default_rng(cout)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal((cout, xs[1] // groups, *k)).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    for got, ref in run(x, w, b, s, pads, d, groups, dtype):
        close(got, ref, dtype)


# The implicit GEMM's work split over more workers than images, float64 so the order of sums shows only at rounding
# level: (id, extra settings, x shape, w shape, stride, pads (t, b, l, r), groups).  Grouped layers in bands of one
# image's rows (every group in each band); channel vectors in bands, each band's positions its own tiles; the
# strided input gradient's items (image, group, phase), one image in two groups.
THREAD_CASES = [
    ("grouped_bands", {}, (2, 12, 17, 13), (9, 4, 3, 3), (1, 1), (1, 1, 1, 1), 3),
    (
        "channel_vector_bands",
        {"FASTCONV_IMPLICIT_VECTORS": "channels"},
        (1, 5, 23, 19),
        (30, 5, 3, 3),
        (2, 1),
        (1, 1, 1, 1),
        1,
    ),
    ("strided_input_grad_items", {}, (1, 6, 19, 16), (10, 3, 5, 5), (2, 2), (2, 2, 2, 2), 2),
]


@pytest.mark.parametrize("threads", [1, 3, 8, 64])
@pytest.mark.parametrize("case", THREAD_CASES, ids=[c[0] for c in THREAD_CASES])
def test_implicit_gemm_threads(case, threads, monkeypatch):
    _, extra, xs, ws, s, pads, groups = case
    monkeypatch.setenv("FASTCONV_IMPLICIT_GEMM", "1")
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
    rng = np.random.default_rng(threads + len(extra))
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    for got, ref in run_at_threads(threads, x, w, None, s, pads, (1, 1), groups, np.float64):
        close(got, ref, np.float64)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, 3),
    c=st.integers(2, 9),
    cout=st.integers(1, 40),
    hw=st.tuples(st.integers(1, 14), st.integers(1, 30)),
    k=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    s=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    d=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    pads=st.tuples(*[st.integers(0, 2)] * 4),
    vectors=st.sampled_from(["positions", "channels"]),
    seed=st.integers(0, 2**16),
)
def test_implicit_gemm_random_geometries(n, c, cout, hw, k, s, d, pads, vectors, seed, level):
    """Random single-group geometries on the implicit GEMM at every level, float32, with output positions or
    output channels in the vectors: forward, input gradient and the weight gradient's channel tiles, tap-row
    padding and compact planes against the float64 reference."""
    if hw[0] + pads[0] + pads[1] < d[0] * (k[0] - 1) + 1 or hw[1] + pads[2] + pads[3] < d[1] * (k[1] - 1) + 1:
        return  # no output: the shape check's case, tested in test_conv
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, *hw)).astype(np.float32)
    w = rng.standard_normal((cout, c, *k)).astype(np.float32)
    settings_ = {"FASTCONV_IMPLICIT_GEMM": "1", "FASTCONV_IMPLICIT_VECTORS": vectors}
    old = {name: os.environ.get(name) for name in settings_}
    os.environ.update(settings_)
    try:
        got = run(x, w, None, s, pads, d, 1, np.float32)
    finally:
        for name, value in old.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value
    for y, ref in got:
        close(y, ref, np.float32)


@pytest.mark.parametrize("threads", [1, 3, 8, 16, 64])
def test_implicit_weight_gradient_blocks_and_bands(threads, monkeypatch):
    """Five images: one block of all five (1 thread), blocks of two (3 threads), single images cut into bands of
    output rows (8-64 threads, more than images), on a stride-2 compact plane; float64 so the sums' order shows
    only at rounding level."""
    monkeypatch.setenv("FASTCONV_IMPLICIT_GEMM", "1")
    rng = np.random.default_rng(threads + 11)
    x = rng.standard_normal((5, 4, 29, 23))
    w = rng.standard_normal((20, 4, 3, 3))
    (_, _), (_, _), (gw, gw_ref) = run_at_threads(threads, x, w, None, (2, 2), (1, 1, 1, 1), (1, 1), 1, np.float64)
    close(gw, gw_ref, np.float64)


@pytest.mark.parametrize("stride", [(2, 1), (2, 2)], ids=["s21", "s22"])
@pytest.mark.parametrize("threads", [1, 3, 8, 16, 64])
def test_implicit_gemm_bands_of_one_image(threads, stride, monkeypatch):
    """Fewer images than threads: one image's output rows are split into bands (forward, input gradient) and its
    tap rows into chunks (weight gradient), each worker filling that image's planes itself; stride 2 both ways
    puts the bands on row- and column-phase compact planes."""
    monkeypatch.setenv("FASTCONV_IMPLICIT_GEMM", "1")
    rng = np.random.default_rng(threads)
    x = rng.standard_normal((1, 3, 37, 41)).astype(np.float32)
    w = rng.standard_normal((20, 3, 3, 3)).astype(np.float32)
    got = run_at_threads(threads, x, w, None, stride, (1, 1, 1, 1), (1, 1), 1, np.float32)
    for y, ref in got:
        close(y, ref, np.float32)


@pytest.mark.parametrize("layout", ["rows", "halves", "run"])
@pytest.mark.parametrize("threads", [3, 16, 64])
def test_implicit_gemm_layouts_in_bands(threads, layout, level, monkeypatch):
    """One image cut into bands of output rows (more threads than images), each band placing its own vectors:
    bands of one or two rows of an 8-wide map, so two-row vectors (halves) start at odd rows and end empty."""
    monkeypatch.setenv("FASTCONV_IMPLICIT_GEMM", "1")
    monkeypatch.setenv("FASTCONV_IMPLICIT_LAYOUT", layout)
    rng = np.random.default_rng(threads)
    x = rng.standard_normal((1, 4, 15, 8)).astype(np.float32)
    w = rng.standard_normal((10, 4, 3, 3)).astype(np.float32)
    (y, y_ref), (gx, gx_ref), _ = run_at_threads(threads, x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), 1, np.float32)
    close(y, y_ref, np.float32)
    close(gx, gx_ref, np.float32)


# The fused epilogue (conv2d's residual= and relu=) on every forward operator: each writes its output in its own
# pieces (Winograd tile runs or whole planes, implicit GEMM row runs, im2col tiles that span images, direct
# groups), and the residual must meet each piece at the same offset.  (name, environment, x shape, Cout, kernel,
# stride, pads (t, b, l, r), groups).
FUSED = [
    ("winograd", {"FASTCONV_WINOGRAD": "1"}, (2, 16, 9, 7), 20, 3, 1, (1, 1, 1, 1), 1),
    # The layered schedules (whole planes after all point GEMMs): the generic one's, then AVX-512's.
    ("winograd_layered", {"FASTCONV_WINOGRAD": "1"}, (2, 160, 12, 10), 144, 3, 1, (1, 1, 1, 1), 1),
    ("winograd_layered_wide", {"FASTCONV_WINOGRAD": "1"}, (6, 256, 5, 5), 256, 3, 1, (1, 1, 1, 1), 1),
    ("implicit", {"FASTCONV_WINOGRAD": "0", "FASTCONV_IMPLICIT_GEMM": "1"}, (2, 5, 9, 40), 7, 3, 1, (1, 1, 1, 1), 1),
    (
        "implicit_compact",
        {"FASTCONV_WINOGRAD": "0", "FASTCONV_IMPLICIT_GEMM": "1"},
        (3, 4, 8, 6),
        9,
        3,
        2,
        (1, 1, 1, 1),
        1,
    ),
    ("im2col", {"FASTCONV_WINOGRAD": "0", "FASTCONV_IMPLICIT_GEMM": "0"}, (3, 20, 5, 6), 11, 3, 1, (1, 0, 1, 0), 1),
    ("small_k", {"FASTCONV_IMPLICIT_GEMM": "0"}, (2, 3, 11, 13), 10, 3, 1, (1, 1, 1, 1), 1),
    ("pointwise", {}, (2, 8, 5, 7), 6, 1, 1, (0, 0, 0, 0), 1),
    ("grouped", {}, (2, 8, 7, 7), 12, 3, 2, (1, 1, 1, 1), 2),
    ("depthwise", {}, (2, 6, 9, 17), 6, 3, 1, (1, 1, 1, 1), 6),
]


@functools.cache
def fused_case_arrays(index, dtype_name):
    """Inputs, float64 reference output and residual of FUSED[index], made once for every level and variant
    (read only: the wide cases' NumPy reference is most of their time under qemu)."""
    name, _, xs, cout, k, s, pads, groups = FUSED[index]
    dtype = np.dtype(dtype_name)
    rng = np.random.default_rng(len(name) * 7 + cout)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal((cout, xs[1] // groups, k, k)).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    y_ref = conv_ref(x, w, b, (s, s), pads, (1, 1), groups)[0]
    r = rng.standard_normal(y_ref.shape).astype(dtype)
    r.flat[3], r.flat[-2] = np.nan, -np.inf
    for a in (x, w, b, y_ref, r):
        a.flags.writeable = False
    return x, w, b, y_ref, r


FUSED_CASES = [  # Winograd serves float32 only
    pytest.param(c, dt, id=f"{c[0]}-{dn}")
    for c in FUSED
    for dt, dn in DTYPE_IDS
    if dt == np.float32 or "wino" not in c[0]
]


@pytest.mark.parametrize("relu", [False, True], ids=["add", "add_relu"])
@pytest.mark.parametrize("case, dtype", FUSED_CASES)
def test_fused_residual_and_relu(case, dtype, relu, level, monkeypatch):
    """conv2d(..., residual=r, relu=True) against relu(float64 conv + r); a NaN and an Inf in r stay where they
    are (torch's ReLU keeps NaN)."""
    name, env, xs, cout, k, s, pads, groups = case
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if name.startswith("winograd") and "off" in fastconv.show_config(file=False)["kernels"]["winograd float32"]:
        pytest.skip(f"no Winograd at the {level} level (the im2col case covers its operator)")
    x, w, b, y_ref, r = fused_case_arrays(FUSED.index(case), np.dtype(dtype).name)
    ref = y_ref + r
    if relu:
        ref = np.where(ref <= 0, 0.0, ref)
    padding = (pads[2], pads[3], pads[0], pads[1])
    got = fastconv.conv2d(x, w, b, stride=s, padding=padding, groups=groups, residual=r, relu=relu)
    assert got.dtype == dtype
    close(got, ref, dtype)
    for key in env:
        monkeypatch.delenv(key)
    unfused = fastconv.conv2d(x, w, b, stride=s, padding=padding, groups=groups) + r
    close(got, np.where(unfused <= 0, 0, unfused) if relu else unfused, dtype)


# A plan's im2col forward on the level's packed tiles, the weights packed once (FASTCONV_PLAN_GEMM=packed forces it
# at every level; the rule takes it at avx512).  (id, N, C_in, H, W, C_out, kernel, stride, pads (t, b, l, r),
# groups): a pointwise map whose last tile ends within a vector of the input's end (49 positions: copied, not read
# in place past the end), two images of 289 positions read in place (the first image's tile reads past its last
# row into the second), tiles spanning images (output through a buffer), a reduction of 33 (one past the small-K
# GEMM's), strided 1x1 and 3x3 (columns copied), a grouped layer, and output channels that leave short panels and
# channel blocks of whole panels at more threads.
PLAN_GEMM = [
    ("pointwise_tail", 1, 40, 7, 7, 200, 1, 1, (0, 0, 0, 0), 1),
    ("pointwise_in_place", 2, 33, 17, 17, 45, 1, 1, (0, 0, 0, 0), 1),
    ("pointwise_spanning", 3, 48, 5, 5, 97, 1, 1, (0, 0, 0, 0), 1),
    ("1x1_stride2", 1, 48, 14, 13, 130, 1, 2, (0, 0, 0, 0), 1),
    ("3x3_stride2", 2, 40, 9, 11, 70, 3, 2, (1, 0, 1, 1), 1),
    ("3x3_grouped", 1, 32, 6, 6, 52, 3, 1, (1, 1, 1, 1), 2),
    ("pointwise_grouped", 1, 72, 4, 4, 192, 1, 1, (0, 0, 0, 0), 2),
    # A pointwise tile in place up to the input's end: its last, partial vector from a copy of those columns.
    ("pointwise_last_vector", 1, 40, 14, 14, 24, 1, 1, (0, 0, 0, 0), 1),
    ("pointwise_last_vector_grouped", 1, 80, 5, 5, 32, 1, 1, (0, 0, 0, 0), 2),
    ("pointwise_under_a_vector", 1, 48, 3, 3, 8, 1, 1, (0, 0, 0, 0), 1),
]


# Either vectors (FASTCONV_IMPLICIT_VECTORS forces them past gemm_channel_vectors' rule): channel tiles split each
# tile's positions evenly into register tiles of MR or MR - 1 positions, and smaller ones repeat their last; in either
# channel panel (FASTCONV_IMPLICIT_PANEL), whose last, partly empty one runs only the vectors it fills (200 channels:
# one vector of a fifth panel, 130: three of a third 48-wide one at AVX-512, float32).
@pytest.mark.parametrize("panel", ["1", "2"], ids=["panel1", "panel2"])
@pytest.mark.parametrize("vectors", ["positions", "channels"])
@pytest.mark.parametrize("threads", [1, 3, 64], ids=lambda t: f"{t}threads")
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", PLAN_GEMM, ids=[c[0] for c in PLAN_GEMM])
def test_plan_im2col_on_packed_tiles(case, dtype, threads, vectors, panel, level, monkeypatch):
    _, n, c, h, w_, cout, k, s, pads, groups = case
    env = {"FASTCONV_WINOGRAD": "0", "FASTCONV_IMPLICIT_GEMM": "0", "FASTCONV_PLAN_GEMM": "packed",
           "FASTCONV_IMPLICIT_PANEL": panel}  # fmt: skip
    for key, value in dict(env, FASTCONV_IMPLICIT_VECTORS=vectors).items():
        monkeypatch.setenv(key, value)
    rng = np.random.default_rng(c * 7 + cout)
    x = rng.standard_normal((n, c, h, w_)).astype(dtype)
    w = rng.standard_normal((cout, c // groups, k, k)).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    y_ref = conv_ref(x, w, b, (s, s), pads, (1, 1), groups)[0]
    r = rng.standard_normal(y_ref.shape).astype(dtype)
    padding = (pads[2], pads[3], pads[0], pads[1])
    plan = fastconv.Conv2dPlan(w, b, stride=s, padding=padding, groups=groups)
    forward = plan.explain(x.shape, mode="dicts")["forward"]
    assert forward["algorithm"] == "im2col_gemm" and "packed once by the plan" in forward["reason"], forward
    assert f"output {vectors} in the vectors" in forward["reason"], forward
    old = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(threads)
        for _ in range(2):  # the second call meets the packed panels
            close(plan(x), y_ref, dtype)
        close(plan(x, residual=r, relu=True, relu_cap=1.5), np.clip(y_ref + r, 0, 1.5), dtype)
    finally:
        fastconv.set_num_threads(old)


# The im2col weight gradient over few columns against many output channels splits gw's rows across the threads
# (each over all the columns) instead of the columns; past its limits, or on one thread, the columns' split with
# per-thread partial sums.  (id, N, C_in, H, W, C_out, kernel, stride, pads (t, b, l, r), groups): a strided 3x3
# layer onto 4x4 at batch 1 (16 columns, 130 channels: a block of rows that is no multiple of a panel), a 1x1 layer
# at 7x7 whose 49 columns are the input itself, two images (copied columns and gy rows), a grouped layer (each
# group's rows split in turn), and a 1x1 layer with too few channels for the split (the columns' split, beside it).
GRAD_ROWS = [
    ("3x3_stride2_b1", 1, 24, 8, 8, 130, 3, 2, (1, 1, 1, 1), 1),
    ("pointwise_b1", 1, 40, 7, 7, 160, 1, 1, (0, 0, 0, 0), 1),
    ("3x3_stride2_b2", 2, 16, 7, 9, 100, 3, 2, (1, 0, 1, 1), 1),
    ("grouped_b1", 1, 32, 6, 6, 128, 3, 2, (1, 1, 1, 1), 2),
    ("pointwise_few_channels", 1, 40, 7, 7, 64, 1, 1, (0, 0, 0, 0), 1),
]


@pytest.mark.parametrize("threads", [1, 3, 8, 64], ids=lambda t: f"{t}threads")
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", GRAD_ROWS, ids=[c[0] for c in GRAD_ROWS])
def test_im2col_weight_grad_by_rows(case, dtype, threads, level, monkeypatch):
    _, n, c, h, w_, cout, k, s, pads, groups = case
    for key in ("FASTCONV_WINOGRAD", "FASTCONV_IMPLICIT_GEMM"):
        monkeypatch.setenv(key, "0")
    rng = np.random.default_rng(c * 11 + cout)
    x = rng.standard_normal((n, c, h, w_)).astype(dtype)
    w = rng.standard_normal((cout, c // groups, k, k)).astype(dtype)
    _, gy, gx_ref, gw_ref = conv_ref(x, w, None, (s, s), pads, (1, 1), groups)
    padding = (pads[2], pads[3], pads[0], pads[1])
    plan = fastconv.Conv2dPlan(w, stride=s, padding=padding, groups=groups)
    paths = plan.explain(x.shape, mode="dicts")
    assert paths["weight_grad"]["algorithm"] == "im2col_gemm", paths["weight_grad"]
    old = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(threads)
        for _ in range(2):  # the second call reuses the buffers
            gx, gw, _ = plan.backward(gy.astype(dtype), x)
            close(gw, gw_ref, dtype)
            close(gx, gx_ref, dtype)
        _, gw_only, _ = plan.backward(gy.astype(dtype), x, output_mask=(False, True, False))
        close(gw_only, gw_ref, dtype)
    finally:
        fastconv.set_num_threads(old)
