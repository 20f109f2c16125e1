"""fastconv.explain_conv2d against the paths the operators actually take (recorded per pass as they run), over a
grid that reaches every algorithm and over random geometries; and the choices it must make on its own terms
(depthwise layers on the direct kernels, float64 never on Winograd, the switches obeyed)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import _core

PASSES = ("forward", "input_grad", "weight_grad")


def taken(x_shape, w_shape, dtype="float32", plan=False, inf=None, **geom):
    """The algorithms the forward and the backward ran, as the operators recorded them."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    if inf == "x":
        x.flat[0] = np.inf
    if inf == "w":
        w.flat[0] = np.inf
    if plan:
        p = fastconv.Conv2dPlan(w, **geom)
        y = p(x)
        forward = _core._last_conv_paths()[0]
        p.backward(np.ones_like(y), x)
    else:
        y = fastconv.conv2d(x, w, **geom)
        forward = _core._last_conv_paths()[0]
        fastconv.conv2d_backward(np.ones_like(y), x, w, **geom)
    _, gx, gw = _core._last_conv_paths()
    return {"forward": forward, "input_grad": gx, "weight_grad": gw}


def explained(x_shape, w_shape, dtype="float32", plan=False, **geom):
    r = fastconv.explain_conv2d(x_shape, w_shape, dtype=dtype, prepared=plan, mode="dicts", **geom)
    assert all(r[p]["reason"] for p in PASSES)
    return {p: r[p]["algorithm"] for p in PASSES}


LAYERS = {
    "3x3-64-56": ((2, 64, 56, 56), (64, 64, 3, 3), dict(padding=1)),
    "3x3s2-32-64": ((2, 32, 28, 28), (64, 32, 3, 3), dict(stride=2, padding=1)),
    "1x1-32-96": ((2, 32, 14, 14), (96, 32, 1, 1), {}),
    "1x1s2-64-128": ((2, 64, 14, 14), (128, 64, 1, 1), dict(stride=2)),
    "dw3x3-32": ((2, 32, 28, 28), (32, 1, 3, 3), dict(padding=1, groups=32)),
    "dw3x3s2-48": ((1, 48, 28, 28), (48, 1, 3, 3), dict(stride=2, padding=1, groups=48)),
    "grey-5x5": ((2, 1, 32, 32), (8, 1, 5, 5), dict(padding=2)),
    "3x3-8-16": ((2, 8, 20, 20), (16, 8, 3, 3), dict(padding=1)),
    "dilated2-64": ((1, 64, 32, 32), (64, 64, 3, 3), dict(padding=2, dilation=2)),
    "5x5s2-32-64": ((2, 32, 28, 28), (64, 32, 5, 5), dict(stride=2, padding=2)),
    "7x7s2-stem": ((1, 3, 64, 64), (16, 3, 7, 7), dict(stride=2, padding=3)),
    "grouped-4": ((2, 32, 14, 14), (32, 8, 3, 3), dict(padding=1, groups=4)),
    "3x3-512-7": ((1, 512, 7, 7), (512, 512, 3, 3), dict(padding=1)),
    "batch0": ((0, 16, 8, 8), (16, 16, 3, 3), dict(padding=1)),
}


@pytest.mark.parametrize("plan", [False, True], ids=["functional", "plan"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layer", list(LAYERS), ids=list(LAYERS))
def test_explain_matches_the_paths_taken(layer, dtype, plan, level):
    xs, ws, geom = LAYERS[layer]
    assert explained(xs, ws, dtype, plan, **geom) == taken(xs, ws, dtype, plan, **geom)


def winograd_level(level):
    return level in ("avx2", "avx512", "neon")


def test_the_grid_reaches_every_algorithm(level):
    seen = set()
    for xs, ws, geom in LAYERS.values():
        for plan in (False, True):
            seen |= set(explained(xs, ws, "float32", plan, **geom).values())
    # every algorithm of the operators but the strided phases, whose rules a level may decline; Winograd where the
    # level has it
    expected = {"direct", "implicit_gemm", "adjoint_implicit_gemm", "im2col_gemm", "none"}
    if winograd_level(level):
        expected |= {"winograd", "winograd_phases"}
    assert expected <= seen, seen


SWITCHES = [("FASTCONV_WINOGRAD", "0"), ("FASTCONV_WINOGRAD", "1"), ("FASTCONV_IMPLICIT_GEMM", "0"),
            ("FASTCONV_IMPLICIT_GEMM", "1")]  # fmt: skip


@pytest.mark.parametrize("switch, value", SWITCHES)
def test_explain_follows_the_switches(monkeypatch, switch, value, level):
    monkeypatch.setenv(switch, value)
    for name, (xs, ws, geom) in LAYERS.items():
        got = explained(xs, ws, **geom)
        assert got == taken(xs, ws, **geom), name
        if switch == "FASTCONV_WINOGRAD" and value == "0":
            assert "winograd" not in got["forward"], name
        if switch == "FASTCONV_IMPLICIT_GEMM" and value == "0":
            assert not {"implicit_gemm", "adjoint_implicit_gemm", "strided_phases"} & set(got.values()), name


def test_choices_on_their_own_terms(level):
    dw = explained((1, 32, 56, 56), (32, 1, 3, 3), padding=1, groups=32)
    assert set(dw.values()) == {"direct"}
    for xs, ws, geom in LAYERS.values():
        assert "winograd" not in " ".join(explained(xs, ws, "float64", **geom).values())
    winograd = explained((4, 64, 28, 28), (64, 64, 3, 3), padding=1)["forward"] == "winograd"
    assert winograd == winograd_level(level)
    assert explained((1, 32, 14, 14), (96, 32, 1, 1))["forward"] == "im2col_gemm"  # a 1x1 layer is one GEMM
    assert explained((0, 16, 8, 8), (16, 16, 3, 3), padding=1)["forward"] == "none"


@pytest.mark.parametrize("inf", ["x", "w"])
def test_non_finite_data_leaves_winograd(inf, level):
    if not winograd_level(level):
        pytest.skip(f"no Winograd at the {level} level")
    xs, ws, geom = LAYERS["3x3-64-56"]
    assert explained(xs, ws, **geom)["forward"] == "winograd"
    got = taken(xs, ws, inf=inf, **geom)
    assert got["forward"] not in ("winograd", "winograd_phases")
    if inf == "x":  # the weight gradient's Winograd reads x; the input gradient's reads gy and w, both finite
        assert got["weight_grad"] != "winograd" and got["input_grad"] == "winograd"
    else:  # Winograd, the adjoint forward and the direct gathers all meet zero padding with w
        assert got["input_grad"] not in ("winograd", "winograd_phases", "adjoint_implicit_gemm", "direct")


def test_transposed_conv_runs_the_input_gradient():
    """conv_transpose2d's forward is the input gradient of the convolution it transposes."""
    x = np.random.default_rng(1).standard_normal((2, 64, 14, 14)).astype(np.float32)
    w = np.random.default_rng(2).standard_normal((64, 32, 3, 3)).astype(np.float32)
    y = fastconv.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1)
    assert _core._last_conv_paths()[1] == explained(y.shape, w.shape, stride=2, padding=1)["input_grad"]


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 3),
    cin_g=st.sampled_from([1, 2, 3, 8, 16, 24, 48]),
    cout_g=st.sampled_from([1, 4, 8, 16, 32]),
    groups=st.sampled_from([1, 1, 2, 4]),
    k=st.sampled_from([1, 2, 3, 5]),
    s=st.integers(1, 3),
    d=st.integers(1, 2),
    p=st.integers(0, 2),
    size=st.integers(6, 20),
    dtype=st.sampled_from(["float32", "float64"]),
    plan=st.booleans(),
)
def test_random_geometries(n, cin_g, cout_g, groups, k, s, d, p, size, dtype, plan):
    """At the CPU's own level (hypothesis and a fixture per level do not mix); the grid covers every level."""
    xs, ws = (n, cin_g * groups, size, size + 1), (cout_g * groups, cin_g, k, k)
    geom = dict(stride=s, padding=p, dilation=d, groups=groups)
    if (size + 2 * p - d * (k - 1) - 1) < 0:
        return
    assert explained(xs, ws, dtype, plan, **geom) == taken(xs, ws, dtype, plan, **geom)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [(dict(input_shape=(3, 8)), ValueError, "input_shape must have 4 dimensions"),
     (dict(input_shape=5), TypeError, "input_shape must be a shape"),
     (dict(weight_shape=(4, 3, 3)), ValueError, "weight_shape must have 4 dimensions, got"),
     (dict(input_shape=(1, 3, 8, 8.0)), TypeError, "input_shape must hold ints"),
     (dict(dtype="int32"), TypeError, "dtype must be float32 or float64, got 'int32'"),
     (dict(mode="print"), ValueError, "mode must be 'stdout' or 'dicts', got 'print'"),
     (dict(weight_shape=(4, 2, 3, 3)), ValueError, "weight"),
     (dict(stride=0), ValueError, "stride"),
     (dict(input_shape=(1, 3, 2, 2)), ValueError, r"kernel extent 3 .* larger than the padded input size 2")],
    ids=["2d", "not-a-shape", "weight-3d", "float-dim", "int-dtype", "mode", "channels", "stride",
         "too-small"],
)  # fmt: skip
def test_bad_arguments(kwargs, error, message):
    args = dict(input_shape=(1, 3, 8, 8), weight_shape=(4, 3, 3, 3)) | kwargs
    with pytest.raises(error, match=message):
        fastconv.explain_conv2d(**args)


def test_report_is_printed(capsys):
    assert fastconv.explain_conv2d((1, 64, 56, 56), (64, 64, 3, 3), padding=1) is None
    out = capsys.readouterr().out
    assert out.startswith("conv2d (1, 64, 56, 56) * (64, 64, 3, 3) -> (1, 64, 56, 56)")
    for p in PASSES:
        assert f"  {p}" in out
    plan = fastconv.Conv2dPlan(np.zeros((64, 64, 3, 3), np.float32), padding=1)
    assert plan.explain((1, 64, 56, 56), mode="dicts") == fastconv.explain_conv2d(
        (1, 64, 56, 56), (64, 64, 3, 3), padding=1, prepared=True, mode="dicts"
    )
