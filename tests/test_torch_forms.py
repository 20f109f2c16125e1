"""torch's argument forms accepted with torch's result, torch's refusals refused, NaN/Inf spread as in torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastconv
from conftest import run_script, tols

T = torch.tensor


# --- forms torch accepts ------------------------------------------------------

FORMS = [
    ("conv2d", dict(stride=(2,), padding=(1,), dilation=(2,))),
    ("conv2d", dict(stride=[2], padding=[0], dilation=[1])),
    ("conv_transpose2d", dict(stride=(2,), padding=(1,), output_padding=(1,), dilation=(1,))),
    ("unfold", dict(kernel_size=(3,), stride=(2,), padding=(1,), dilation=(1,))),
    ("max_pool2d", dict(kernel_size=(3,), stride=(2,), padding=(1,), dilation=(1,))),
    ("max_pool2d", dict(kernel_size=3, stride=())),
    ("avg_pool2d", dict(kernel_size=(3,), stride=(2,), padding=(1,))),
    ("avg_pool2d", dict(kernel_size=2, stride=[])),
]


@pytest.mark.parametrize("name, kwargs", FORMS, ids=lambda v: v if isinstance(v, str) else repr(v))
def test_one_element_and_empty_tuples_as_torch(name, kwargs, rng):
    x = rng.standard_normal((2, 4, 9, 9))
    if name == "conv2d":
        w = rng.standard_normal((3, 4, 3, 3))
        got, ref = fastconv.conv2d(x, w, **kwargs), F.conv2d(T(x), T(w), **kwargs)
    elif name == "conv_transpose2d":
        w = rng.standard_normal((4, 3, 3, 3))
        got, ref = fastconv.conv_transpose2d(x, w, **kwargs), F.conv_transpose2d(T(x), T(w), **kwargs)
    elif name == "unfold":  # torch's unfold wants pairs: give it the expanded form
        pairs = {k: (v[0], v[0]) for k, v in kwargs.items()}
        got, ref = fastconv.unfold(x, **kwargs), F.unfold(T(x), **pairs)
    else:
        got, ref = getattr(fastconv, name)(x, **kwargs), getattr(F, name)(T(x), **kwargs)
    torch.testing.assert_close(got, ref.numpy(), **tols(np.float64))


def test_fold_one_element_tuples_as_torch(rng):
    cols = rng.standard_normal((2, 4 * 9, 16))
    kw = dict(kernel_size=(3,), stride=(2,), padding=(1,), dilation=(1,))
    pairs = {k: (v[0], v[0]) for k, v in kw.items()}  # torch's fold wants pairs
    torch.testing.assert_close(fastconv.fold(cols, (7,), **kw), F.fold(T(cols), (7, 7), **pairs).numpy())


def test_pool_layers_and_shapes_take_an_empty_stride():
    assert fastconv.shapes.pool_output_size(8, 2, stride=()) == 4
    assert fastconv.layers.MaxPool2d(2, stride=()).output_shape((3, 8, 8)) == (3, 4, 4)


@pytest.mark.parametrize("order", [">", "<"], ids=["big-endian", "little-endian"])
@pytest.mark.parametrize("kind", ["f4", "f8"])
def test_non_native_byte_order_is_converted(order, kind, rng):
    x = rng.standard_normal((1, 2, 6, 6))
    w = rng.standard_normal((3, 2, 3, 3))
    xs, ws = x.astype(order + kind), w.astype(order + kind)
    y = fastconv.conv2d(xs, ws, padding=1)
    assert y.dtype == np.dtype(kind).newbyteorder("=")
    torch.testing.assert_close(y, fastconv.conv2d(x.astype(kind), w.astype(kind), padding=1), rtol=0, atol=0)
    torch.testing.assert_close(fastconv.max_pool2d(xs, 2), F.max_pool2d(T(x.astype(kind)), 2).numpy())


@pytest.mark.parametrize(
    "shape, k, s, p, op",
    [((0, 3, 0, 5), 1, 1, 0, 0), ((0, 3, 0, 5), 3, 1, 0, 0), ((0, 3, 0, 5), 3, 2, 0, 1), ((0, 3, 4, 0), 3, 1, 1, 0)],
    ids=str,
)
def test_empty_batch_with_a_zero_axis_in_conv_transpose2d(shape, k, s, p, op):
    x, w = np.ones(shape, np.float32), np.ones((3, 2, k, k), np.float32)
    ref = F.conv_transpose2d(T(x), T(w), stride=s, padding=p, output_padding=op)
    y = fastconv.conv_transpose2d(x, w, stride=s, padding=p, output_padding=op)
    assert y.shape == tuple(ref.shape) and y.dtype == np.float32
    gx, gw, gb = fastconv.conv_transpose2d_backward(y, x, w, stride=s, padding=p, output_padding=op)
    assert gx.shape == shape and gw.shape == w.shape and not gw.any() and gb.shape == (2,)


def test_empty_batches_as_torch():
    x = np.ones((0, 3, 5, 5), np.float32)
    assert fastconv.conv2d(x, np.ones((2, 3, 1, 1), np.float32)).shape == (0, 2, 5, 5)
    assert fastconv.max_pool2d(x, 2).shape == tuple(F.max_pool2d(T(x), 2).shape)
    assert fastconv.unfold(x, 2).shape == tuple(F.unfold(T(x), 2).shape)


@pytest.mark.parametrize("stride", [(2**31, 1), (1, 2**31), 2**31, (2**62, 3)], ids=str)
@pytest.mark.parametrize("groups", [1, 2], ids=["gemm", "direct"])
def test_huge_strides_on_small_inputs_as_torch(stride, groups, rng):
    """One output along an axis: the stride is irrelevant and must cost nothing (it once sized a 3.7 TB buffer)."""
    x, w = rng.standard_normal((2, 2, 5, 6)), rng.standard_normal((4, 2 // groups, 3, 3))
    ref = F.conv2d(T(x), T(w), stride=stride, groups=groups, padding=1)
    torch.testing.assert_close(fastconv.conv2d(x, w, stride=stride, groups=groups, padding=1), ref.numpy())
    xt, wt = T(x, requires_grad=True), T(w, requires_grad=True)
    F.conv2d(xt, wt, stride=stride, groups=groups, padding=1).backward(T(np.ones(tuple(ref.shape))))
    gx, gw, _ = fastconv.conv2d_backward(np.ones(tuple(ref.shape)), x, w, stride=stride, groups=groups, padding=1)
    torch.testing.assert_close(gx, xt.grad.numpy())
    torch.testing.assert_close(gw, wt.grad.numpy())


# --- refusals torch makes ----------------------------------------------------


@pytest.mark.parametrize("value", ["no", 0, 1, None, 1.0], ids=repr)
@pytest.mark.parametrize(
    "call, name",
    [
        (lambda v: fastconv.max_pool2d(np.ones((1, 4, 4)), 2, ceil_mode=v), "ceil_mode"),
        (lambda v: fastconv.max_pool2d(np.ones((1, 4, 4)), 2, return_indices=v), "return_indices"),
        (lambda v: fastconv.avg_pool2d(np.ones((1, 4, 4)), 2, ceil_mode=v), "ceil_mode"),
        (lambda v: fastconv.avg_pool2d(np.ones((1, 4, 4)), 2, count_include_pad=v), "count_include_pad"),
        (
            lambda v: fastconv.avg_pool2d_backward(np.ones((1, 2, 2)), np.ones((1, 4, 4)), 2, count_include_pad=v),
            "count_include_pad",
        ),
        (lambda v: fastconv.shapes.pool_output_size(8, 2, ceil_mode=v), "ceil_mode"),
        (lambda v: fastconv.layers.MaxPool2d(2, ceil_mode=v), "ceil_mode"),
        (lambda v: fastconv.layers.AvgPool2d(2, count_include_pad=v), "count_include_pad"),
    ],
    ids=["max_ceil", "max_indices", "avg_ceil", "avg_pad", "avg_bwd_pad", "shapes_ceil", "layer_ceil", "layer_pad"],
)
def test_flags_must_be_bools(call, name, value):
    with pytest.raises(TypeError, match=rf"{name} must be a bool, got"):
        call(value)


def test_numpy_bools_are_flags():
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    torch.testing.assert_close(
        fastconv.max_pool2d(x, 2, ceil_mode=np.True_), F.max_pool2d(T(x), 2, ceil_mode=True).numpy()
    )


def _pool_case():
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6))
    y, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    return x, np.ones_like(y), idx


@pytest.mark.parametrize(
    "mutate, exc, match",
    [
        (lambda i: i.astype(np.float64), TypeError, "indices must be an integer array"),
        (lambda i: i.astype(bool), TypeError, "indices must be an integer array"),
        (lambda i: np.where(np.arange(i.size).reshape(i.shape) == 5, -2, i), ValueError, r"\[0, 36\).*got -2"),
        (lambda i: np.where(np.arange(i.size).reshape(i.shape) == 7, 36, i), ValueError, r"\[0, 36\).*got 36"),
        (lambda i: i[..., :2], ValueError, "indices must have grad_output's shape"),
        (lambda i: i.reshape(2, 3, 9), ValueError, "indices must have grad_output's shape"),
        (lambda i: i.astype(np.uint64) + np.uint64(2**63), ValueError, "indices"),
    ],
    ids=["float", "bool", "negative", "past-plane", "short", "reshaped", "uint64-huge"],
)
def test_max_pool_backward_refuses_bad_indices(mutate, exc, match):
    x, gy, idx = _pool_case()
    with pytest.raises(exc, match=match):
        fastconv.max_pool2d_backward(gy, x, mutate(idx), 2)


def test_a_window_wholly_in_padding_has_index_minus_one_and_no_gradient():
    """Dilation 3 with padding 1 on a 2x2 plane: the window's taps (-1, 2) miss the image on both axes."""
    x = np.arange(4.0).reshape(1, 1, 2, 2)
    y, i = fastconv.max_pool2d(x, 2, 1, 1, dilation=3, return_indices=True)
    assert y[0, 0, 0, 0] == -np.inf and i[0, 0, 0, 0] == -1  # torch: -inf, and an index past the plane
    assert y[0, 0, 0, 0] == F.max_pool2d(T(x), 2, 1, 1, dilation=3)[0, 0, 0, 0]
    g = fastconv.max_pool2d_backward(np.ones_like(y), x, i, 2, 1, 1, dilation=3)
    assert not g.any()


def test_max_pool_backward_takes_other_integer_dtypes():
    x, gy, idx = _pool_case()
    want = fastconv.max_pool2d_backward(gy, x, idx, 2)
    for dt in (np.int32, np.uint16, ">i8"):
        np.testing.assert_array_equal(fastconv.max_pool2d_backward(gy, x, idx.astype(dt), 2), want)


def test_huge_pool_kernel_answers_at_once():
    """kernel 2**40 with padding 2**39 used to loop over every tap; torch answers at once (a hang fails)."""
    out = run_script(
        """
import numpy as np, fastconv
y, i = fastconv.max_pool2d(np.arange(50, dtype=np.float32).reshape(1, 2, 5, 5), 2**40, 1, 2**39, return_indices=True)
assert y.shape == (1, 2, 6, 6) and (y[0, 0] == 24).all() and (y[0, 1] == 49).all() and (i == 24).all()
g = fastconv.max_pool2d_backward(np.ones_like(y), np.zeros((1, 2, 5, 5), np.float32), i, 2**40, 1, 2**39)
assert g[0, 0, 4, 4] == 36 and g.sum() == 72
print("ok")
""",
        timeout=60,
    )
    assert out.startswith("ok")


# --- NaN and Inf, as torch spreads them --------------------------------------


def _with(a, value, where):
    a = a.copy()
    a[where] = value
    return a


# (input shape, weight shape, kwargs): direct path (one channel per group),
# Winograd (3x3, stride 1, 16+ channels), and im2col + GEMM.
GEOMS = [
    ((1, 1, 4, 4), (1, 1, 2, 2), {}),
    ((2, 3, 9, 9), (6, 1, 3, 3), dict(groups=3, padding=1)),
    ((1, 1, 6, 6), (1, 1, 3, 3), dict(stride=2)),
    ((1, 2, 11, 10), (2, 1, 3, 3), dict(groups=2, stride=2, padding=1, dilation=2)),
    ((2, 16, 8, 8), (16, 16, 3, 3), dict(padding=1)),
    ((1, 3, 7, 7), (4, 3, 3, 3), dict(padding=1)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("operand", ["weight", "input", "grad_output"])
@pytest.mark.parametrize("xs, ws, kw", GEOMS, ids=[f"{g[0]}-{g[1]}-{g[2]}" for g in GEOMS])
def test_non_finite_values_spread_as_in_torch(xs, ws, kw, operand, special, dtype):
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)
    ys = tuple(F.conv2d(T(x), T(w), **kw).shape)
    gy = rng.standard_normal(ys).astype(dtype)
    corner = (0, 0, -1, -1)
    if operand == "weight":
        w = _with(w, special, corner)
    elif operand == "input":
        x = _with(x, special, (0, 0, 0, xs[3] - 2))  # a column that windows past the last output read too
    else:
        gy = _with(gy, special, (0, 0, 0, 0))
    # The reference is torch in float64 for both dtypes: it multiplies zero
    # padding by every tap (0 * NaN = NaN), as fastconv does on every path.
    # torch's float32 CPU kernel (oneDNN) skips padded taps instead, so near the
    # borders it disagrees with torch's own float64 result.
    xt, wt = T(x.astype(np.float64), requires_grad=True), T(w.astype(np.float64), requires_grad=True)
    y_ref = F.conv2d(xt, wt, **kw)
    y_ref.backward(T(gy.astype(np.float64)))
    opts = dict(**tols(dtype), equal_nan=True)
    ref = lambda t: t.detach().numpy().astype(dtype)  # noqa: E731
    torch.testing.assert_close(fastconv.conv2d(x, w, **kw), ref(y_ref), **opts)
    gx, gw, _ = fastconv.conv2d_backward(gy, x, w, **kw)
    torch.testing.assert_close(gx, ref(xt.grad), **opts)
    torch.testing.assert_close(gw, ref(wt.grad), **opts)


def test_issue_13_nan_weight_on_the_direct_path():
    x = np.ones((1, 1, 4, 4))
    w = _with(np.ones((1, 1, 2, 2)), np.nan, (0, 0, 1, 1))
    gx = fastconv.conv2d_backward(np.ones((1, 1, 3, 3)), x, w)[0]
    assert np.isfinite(gx[0, 0, 0]).all() and np.isfinite(gx[0, 0, :, 0]).all() and np.isnan(gx[0, 0, 1:, 1:]).all()


@pytest.mark.parametrize("seed", range(6))
def test_max_pool_indices_with_several_nans_as_torch(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 7, 7))
    x[rng.random(x.shape) < 0.3] = np.nan
    x[rng.random(x.shape) < 0.1] = np.inf
    for kw in (dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=2, dilation=2, ceil_mode=True)):
        y, i = fastconv.max_pool2d(x, return_indices=True, **kw)
        yr, ir = F.max_pool2d(T(x), return_indices=True, **kw)
        torch.testing.assert_close(y, yr.numpy(), equal_nan=True)
        np.testing.assert_array_equal(i, ir.numpy())


# --- solver limits ------------------------------------------------------------


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((1024, 1, [3] * 65), dict(block="conv", kernel=(1, 1000), padding=(0, 999)), "search space too large"),
        ((64, 1, [1, 2, 3, 4, 5]), dict(padding=(0, 10**6)), "search space too large"),
        ((224, 1, [3, 8]), dict(top=100000, kernel=(1, 1000), padding=(0, 999), block="conv"), "top-k enumeration"),
        ((2**31, 1, [1, 2]), {}, "input must be"),
    ],
    ids=["65-layers", "padding-1e6", "top-k", "size-2**31"],
)
def test_solver_refuses_spaces_it_cannot_search(args, kwargs, match):
    """Refused with a message instead of minutes of work (a hang is the failure)."""
    out = run_script(
        f"""
import fastconv
try:
    fastconv.solve(*{args!r}, **{kwargs!r})
except ValueError as exc:
    print("refused", exc)
""",
        timeout=120,
    )
    assert out.startswith("refused") and match in out, out


def test_solver_handles_sizes_near_the_limit_without_a_dense_table():
    """A square 2**31-1 input used to allocate an 8 GiB table indexed by size."""
    r = fastconv.solve(2**31 - 1, 1, [1] * 9, stride=(1, 16))
    assert r.count > 0
    assert r.solutions[0].layers[0].in_size == 2**31 - 1 and r.solutions[0].layers[-1].out_size == 1
