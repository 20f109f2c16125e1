"""conv2d, conv2d_backward, conv_transpose2d, unfold and fold against torch."""

import os
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from conftest import tols
from fastconv.shapes import same_padding
from test_numpy_reference import level  # noqa: F401  (a fixture: every FASTCONV_CPU level the CPU has)


def torch_pad_args(padding):
    """Our padding forms as an explicit F.pad (left, right, top, bottom) tuple."""
    if isinstance(padding, int):
        return (padding,) * 4
    if len(padding) == 2:
        return (padding[1], padding[1], padding[0], padding[0])
    return tuple(padding)


def torch_conv(x, w, b, stride, padding, dilation, groups, gy=None):
    """torch forward (explicit F.pad for every padding form) and autograd gradients."""
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    if padding == "same":
        kh, kw = w.shape[2:]
        s = stride if isinstance(stride, tuple) else (stride, stride)
        d = dilation if isinstance(dilation, tuple) else (dilation, dilation)
        (t, bo), (le, r) = same_padding(x.shape[-2:], (kh, kw), s, d)
        pad = (le, r, t, bo)
    elif padding == "valid":
        pad = (0, 0, 0, 0)
    else:
        pad = torch_pad_args(padding)
    y = F.conv2d(F.pad(xt, pad), wt, bt, stride, 0, dilation, groups)
    grads = None
    if gy is not None:
        y.backward(torch.tensor(gy))
        grads = (xt.grad.numpy(), wt.grad.numpy(), None if bt is None else bt.grad.numpy())
    return y.detach().numpy(), grads


def assert_matches_torch(x, w, b, stride, padding, dilation=1, groups=1, rng=None):
    """Forward and all gradients of fastconv against torch's forward and autograd; returns the output."""
    dtype = x.dtype.type
    y = fastconv.conv2d(x, w, b, stride, padding, dilation, groups)
    rng = rng if rng is not None else np.random.default_rng(0)
    gy = rng.standard_normal(y.shape).astype(dtype)
    y_ref, (gx_ref, gw_ref, gb_ref) = torch_conv(x, w, b, stride, padding, dilation, groups, gy)
    torch.testing.assert_close(y, y_ref, **tols(dtype))
    gx, gw, gb = fastconv.conv2d_backward(gy, x, w, stride, padding, dilation, groups)
    torch.testing.assert_close(gx, gx_ref, **tols(dtype))
    torch.testing.assert_close(gw, gw_ref, **tols(dtype))
    if b is not None:
        torch.testing.assert_close(gb, gb_ref, **tols(dtype))
    return y


# (id, N, C_in, H, W, C_out, kernel, stride, padding, dilation, groups)
CASES = [
    ("basic", 2, 3, 8, 8, 4, 3, 1, 0, 1, 1),
    ("stride2", 2, 3, 9, 10, 5, 3, 2, 1, 1, 1),
    ("stride_pair", 1, 4, 11, 9, 6, (3, 2), (2, 3), (1, 0), 1, 1),
    ("pad_pair", 2, 2, 7, 8, 3, 3, 1, (2, 1), 1, 1),
    ("pad_4tuple", 2, 2, 7, 8, 3, 3, 1, (1, 2, 0, 3), 1, 1),
    ("same_s1", 2, 3, 8, 7, 4, 3, 1, "same", 1, 1),
    ("same_s2_odd", 2, 3, 9, 7, 4, 3, 2, "same", 1, 1),
    ("same_s3_k4", 1, 2, 10, 11, 3, 4, 3, "same", 1, 1),
    ("same_dilated", 1, 2, 9, 9, 3, 3, 2, "same", 2, 1),
    ("valid", 2, 3, 8, 8, 4, 3, 2, "valid", 1, 1),
    ("dilation2", 2, 3, 12, 12, 4, 3, 1, 2, 2, 1),
    ("dilation_pair", 1, 3, 12, 13, 4, 3, 2, 1, (2, 3), 1),
    ("groups2", 2, 4, 8, 8, 6, 3, 1, 1, 1, 2),
    ("groups4_strided", 2, 8, 9, 9, 8, 3, 2, 1, 1, 4),
    ("depthwise", 2, 6, 10, 10, 6, 3, 1, 1, 1, 6),
    ("depthwise_mult2", 2, 4, 9, 9, 8, 3, 2, 1, 1, 4),
    ("depthwise_dilated", 1, 3, 11, 11, 3, 3, 1, 2, 2, 3),
    ("one_in_channel", 3, 1, 12, 12, 5, 3, 1, 0, 1, 1),
    ("pointwise", 2, 8, 6, 6, 5, 1, 1, 0, 1, 1),
    ("pointwise_strided", 2, 8, 7, 7, 5, 1, 2, 0, 1, 1),
    ("pointwise_grouped", 2, 8, 6, 6, 4, 1, 1, 0, 1, 2),
    ("kernel_eq_input", 2, 3, 5, 5, 4, 5, 1, 0, 1, 1),
    ("big_kernel_pad", 1, 2, 4, 4, 3, 5, 1, 2, 1, 1),
    ("many_tiles", 2, 16, 40, 40, 8, 3, 1, 1, 1, 1),
    ("single_image_many_tiles", 1, 32, 48, 48, 16, 3, 1, 1, 1, 1),
    ("wide_kernel", 1, 2, 6, 20, 3, (1, 7), 1, (0, 3), 1, 1),
    # regression: for some taps a whole run of output columns lies in the left padding
    ("tap_sees_only_padding", 1, 3, 8, 3, 1, (2, 1), 2, (3, 3, 2, 1), (1, 3), 1),
    ("tap_sees_only_padding_same", 2, 2, 10, 2, 2, (1, 4), (2, 1), "same", 2, 1),
    # small maps: GEMM tiles span several images
    ("tiles_span_images", 6, 16, 5, 5, 12, 3, 1, 1, 1, 1),
    ("tiles_span_images_pointwise", 5, 24, 3, 4, 8, 1, 1, 0, 1, 2),
    ("tiles_span_images_grouped", 7, 12, 6, 5, 9, 3, 2, 1, 1, 3),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_conv2d_forward_and_backward_match_torch(case, dtype, rng):
    _, n, c, h, w, co, k, s, p, d, g = case
    kh, kw = (k, k) if isinstance(k, int) else k
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((co, c // g, kh, kw)).astype(dtype)
    b = rng.standard_normal(co).astype(dtype)
    y = assert_matches_torch(x, wt, b, s, p, d, g, rng)
    assert y.dtype == dtype and y.flags.c_contiguous


def test_no_bias_matches_torch(rng):
    x = rng.standard_normal((2, 3, 8, 8))
    w = rng.standard_normal((4, 3, 3, 3))
    torch.testing.assert_close(fastconv.conv2d(x, w), F.conv2d(torch.tensor(x), torch.tensor(w)).numpy())


def test_unbatched_matches_torch(rng):
    x = rng.standard_normal((3, 9, 9))
    w = rng.standard_normal((4, 3, 3, 3))
    y = fastconv.conv2d(x, w, None, 2, 1)
    assert y.shape == (4, 5, 5)
    torch.testing.assert_close(y, F.conv2d(torch.tensor(x), torch.tensor(w), None, 2, 1).numpy())
    gy = rng.standard_normal(y.shape)
    gx, gw, gb = fastconv.conv2d_backward(gy, x, w, 2, 1)
    _, (gx_ref, gw_ref, _) = torch_conv(x[None], w, None, 2, 1, 1, 1, gy[None])
    assert gx.shape == x.shape
    torch.testing.assert_close(gx, gx_ref[0])
    torch.testing.assert_close(gw, gw_ref)


def test_empty_batch(rng):
    x = np.zeros((0, 3, 8, 8), np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y = fastconv.conv2d(x, w, np.ones(4, np.float32), padding=1)
    assert y.shape == (0, 4, 8, 8)
    gx, gw, gb = fastconv.conv2d_backward(np.zeros((0, 4, 8, 8), np.float32), x, w, padding=1)
    assert gx.shape == (0, 3, 8, 8)
    np.testing.assert_array_equal(gw, 0)
    np.testing.assert_array_equal(gb, 0)


@pytest.mark.parametrize("layout", ["transposed", "reversed", "fortran", "strided"])
def test_non_contiguous_inputs(layout, rng):
    base = rng.standard_normal((2, 3, 10, 12))
    w = rng.standard_normal((4, 3, 3, 3))
    x = {
        "transposed": np.ascontiguousarray(base.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2),
        "reversed": base[:, :, ::-1, ::-1],
        "fortran": np.asfortranarray(base),
        "strided": np.repeat(base, 2, axis=3)[:, :, :, ::2],
    }[layout]
    ref = F.conv2d(torch.tensor(np.ascontiguousarray(x)), torch.tensor(w), None, 1, 1).numpy()
    torch.testing.assert_close(fastconv.conv2d(x, w, padding=1), ref)
    torch.testing.assert_close(
        fastconv.conv2d(x, w[:, :, ::-1], padding=1),
        F.conv2d(
            torch.tensor(np.ascontiguousarray(x)), torch.tensor(np.ascontiguousarray(w[:, :, ::-1])), None, 1, 1
        ).numpy(),
    )


def test_lists_are_accepted():
    y = fastconv.conv2d([[[[1.0, 2.0], [3.0, 4.0]]]], [[[[1.0]]]])
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, [[[[1.0, 2.0], [3.0, 4.0]]]])


def test_mixed_precision_promotes_to_float64(rng):
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3))  # float64
    y = fastconv.conv2d(x, w)
    assert y.dtype == np.float64
    ref = F.conv2d(torch.tensor(x.astype(np.float64)), torch.tensor(w)).numpy()
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    assert fastconv.conv2d(x, w.astype(np.float32), np.zeros(3)).dtype == np.float64


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_, np.complex64, np.float16])
def test_unsupported_dtypes_raise_type_error(dtype):
    x = np.ones((1, 1, 4, 4), dtype)
    w = np.ones((1, 1, 3, 3), np.float32)
    with pytest.raises(TypeError, match=rf"input.*{np.dtype(dtype).name}"):
        fastconv.conv2d(x, w)
    with pytest.raises(TypeError, match="weight"):
        fastconv.conv2d(w.astype(np.float32).repeat(2, 2).repeat(2, 3), w.astype(dtype))


BAD = [
    ("stride0", dict(stride=0), ValueError, "stride"),
    ("stride_neg_pair", dict(stride=(1, -1)), ValueError, "stride"),
    ("dilation0", dict(dilation=0), ValueError, "dilation"),
    ("groups0", dict(groups=0), ValueError, "groups"),
    ("groups_indivisible", dict(groups=2), ValueError, "groups"),
    ("padding_negative", dict(padding=-1), ValueError, "padding"),
    ("padding_negative_4", dict(padding=(0, 0, -1, 0)), ValueError, "padding"),
    ("padding_word", dict(padding="full"), ValueError, "padding"),
    ("padding_3tuple", dict(padding=(1, 1, 1)), ValueError, "padding"),
    ("stride_float", dict(stride=1.5), TypeError, "stride"),
    ("stride_bool", dict(stride=True), TypeError, "stride"),
    ("kernel_too_big", dict(weight=np.ones((2, 3, 9, 9))), ValueError, "kernel_size"),
    ("weight_channels", dict(weight=np.ones((2, 2, 3, 3))), ValueError, "weight"),
    ("weight_ndim", dict(weight=np.ones((2, 3, 3))), ValueError, "weight"),
    ("input_ndim", dict(input=np.ones((7, 7))), ValueError, "input"),
    ("input_5d", dict(input=np.ones((1, 1, 3, 7, 7))), ValueError, "input"),
    ("bias_length", dict(bias=np.ones(3)), ValueError, "bias"),
    ("bias_2d", dict(bias=np.ones((2, 1))), ValueError, "bias"),
    ("overflow_padding", dict(padding=2**62), ValueError, "overflow"),
    ("huge_dilation", dict(dilation=2**62), ValueError, "overflow|dilation"),
    ("none_input", dict(input=None), TypeError, "input"),
]


@pytest.mark.parametrize("case", BAD, ids=[b[0] for b in BAD])
def test_bad_input_messages(case):
    _, kwargs, exc, pattern = case
    args = dict(input=np.ones((1, 3, 7, 7)), weight=np.ones((2, 3, 3, 3)), bias=None)
    args.update(kwargs)
    with pytest.raises(exc, match=pattern) as info:
        fastconv.conv2d(**args)
    # the message states the value received
    if "stride" in kwargs and exc is ValueError:
        assert str(kwargs["stride"]) in str(info.value)


def test_backward_rejects_wrong_grad_output_shape():
    x, w = np.ones((1, 3, 7, 7)), np.ones((2, 3, 3, 3))
    with pytest.raises(ValueError, match="grad_output"):
        fastconv.conv2d_backward(np.ones((1, 2, 4, 4)), x, w)


def test_num_threads_roundtrip():
    old = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(1)
        assert fastconv.get_num_threads() == 1
        with pytest.raises(ValueError, match="n must be"):
            fastconv.set_num_threads(0)
    finally:
        fastconv.set_num_threads(old)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_results_do_not_depend_on_thread_count(threads, rng):
    x = rng.standard_normal((3, 16, 20, 20))
    w = rng.standard_normal((8, 16, 3, 3))
    gy = rng.standard_normal((3, 8, 20, 20))
    ref = F.conv2d(torch.tensor(x), torch.tensor(w), None, 1, 1).numpy()
    old = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(threads)
        torch.testing.assert_close(fastconv.conv2d(x, w, padding=1), ref)
        _, (gx_ref, gw_ref, _) = torch_conv(x, w, None, 1, 1, 1, 1, gy)
        gx, gw, _ = fastconv.conv2d_backward(gy, x, w, padding=1)
        torch.testing.assert_close(gx, gx_ref)
        torch.testing.assert_close(gw, gw_ref)
    finally:
        fastconv.set_num_threads(old)


def test_eight_python_threads_give_identical_results(rng):
    xs = [rng.standard_normal((4, 8, 24, 24)).astype(np.float32) for _ in range(8)]
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    expected = [fastconv.conv2d(x, w, padding=1) for x in xs]
    expected_grads = [fastconv.conv2d_backward(np.ones_like(e), x, w, padding=1) for x, e in zip(xs, expected)]
    results = [None] * 8
    barrier = threading.Barrier(8)

    def work(i):
        barrier.wait()
        for _ in range(5):
            y = fastconv.conv2d(xs[i], w, padding=1)
            g = fastconv.conv2d_backward(np.ones_like(y), xs[i], w, padding=1)
        results[i] = (y, g)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        np.testing.assert_array_equal(results[i][0], expected[i])
        for got, want in zip(results[i][1], expected_grads[i]):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "n,k,s,d",
    [(9, 3, 2, 1), (10, 3, 2, 1), (7, 4, 3, 1), (11, 3, 2, 2), (5, 1, 2, 1), (4, 5, 3, 1), (16, 7, 4, 2), (2, 3, 5, 1)],
)
def test_same_padding_follows_tensorflow_formula(n, k, s, d, rng):
    out = -(-n // s)
    total = max(0, (out - 1) * s + d * (k - 1) + 1 - n)
    assert same_padding(n, k, s, d) == (total // 2, total - total // 2)
    x = rng.standard_normal((1, 2, n, n))
    w = rng.standard_normal((3, 2, k, k))
    y = fastconv.conv2d(x, w, stride=s, padding="same", dilation=d)
    assert y.shape[2:] == (out, out)
    ref = F.conv2d(F.pad(torch.tensor(x), (total // 2, total - total // 2) * 2), torch.tensor(w), None, s, 0, d)
    torch.testing.assert_close(y, ref.numpy())


def test_same_stride1_equals_torch_same(rng):
    x = rng.standard_normal((2, 3, 10, 9))
    w = rng.standard_normal((4, 3, 4, 3))
    ref = F.conv2d(torch.tensor(x), torch.tensor(w), None, 1, "same", (2, 1))
    torch.testing.assert_close(fastconv.conv2d(x, w, padding="same", dilation=(2, 1)), ref.numpy())


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(0, 3),
    groups=st.integers(1, 3),
    cin_g=st.integers(1, 3),
    cout_g=st.integers(1, 3),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    kh=st.integers(1, 4),
    kw=st.integers(1, 4),
    sh=st.integers(1, 3),
    sw=st.integers(1, 3),
    dh=st.integers(1, 3),
    dw=st.integers(1, 3),
    pads=st.tuples(*[st.integers(0, 3)] * 4),
    same=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_random_geometries_match_torch(n, groups, cin_g, cout_g, h, w, kh, kw, sh, sw, dh, dw, pads, same, seed):
    rng = np.random.default_rng(seed)
    padding = "same" if same else pads
    if same:
        (t, b), (le, r) = same_padding((h, w), (kh, kw), (sh, sw), (dh, dw))
        pad4 = (le, r, t, b)
    else:
        pad4 = pads
    if h + pad4[2] + pad4[3] < dh * (kh - 1) + 1 or w + pad4[0] + pad4[1] < dw * (kw - 1) + 1:
        with pytest.raises(ValueError, match="kernel_size"):
            fastconv.conv2d(
                np.ones((n, groups * cin_g, h, w)),
                np.ones((groups * cout_g, cin_g, kh, kw)),
                stride=(sh, sw),
                padding=padding,
                dilation=(dh, dw),
                groups=groups,
            )
        return
    x = rng.standard_normal((n, groups * cin_g, h, w))
    wt = rng.standard_normal((groups * cout_g, cin_g, kh, kw))
    b = rng.standard_normal(groups * cout_g)
    y = fastconv.conv2d(x, wt, b, (sh, sw), padding, (dh, dw), groups)
    gy = rng.standard_normal(y.shape)
    y_ref, (gx_ref, gw_ref, gb_ref) = torch_conv(x, wt, b, (sh, sw), pad4, (dh, dw), groups, gy)
    torch.testing.assert_close(y, y_ref)
    gx, gw, gb = fastconv.conv2d_backward(gy, x, wt, (sh, sw), padding, (dh, dw), groups)
    torch.testing.assert_close(gx, gx_ref)
    torch.testing.assert_close(gw, gw_ref)
    torch.testing.assert_close(gb, gb_ref)


TRANSPOSE = [
    ("basic", 2, 3, 5, 5, 4, 3, 1, 0, 0, 1, 1),
    ("stride2", 2, 3, 5, 6, 4, 3, 2, 1, 1, 1, 1),
    ("stride3_outpad2", 1, 2, 4, 4, 3, 3, 3, 1, 2, 1, 1),
    ("groups", 2, 4, 5, 5, 6, 3, 2, 1, 0, 1, 2),
    ("dilated", 1, 2, 5, 5, 3, 3, 1, 1, 0, 2, 1),
    ("pair_geometry", 1, 2, 4, 5, 3, (2, 3), (2, 1), (0, 1), (1, 0), 1, 1),
    ("depthwise", 2, 4, 6, 6, 4, 3, 2, 1, 1, 1, 4),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", TRANSPOSE, ids=[c[0] for c in TRANSPOSE])
def test_conv_transpose2d_matches_torch(case, dtype, rng):
    _, n, cin, h, w, cout, k, s, p, op, d, g = case
    kh, kw = (k, k) if isinstance(k, int) else k
    x = rng.standard_normal((n, cin, h, w)).astype(dtype)
    wt = rng.standard_normal((cin, cout // g, kh, kw)).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    xt, wtt, bt = (torch.tensor(a, requires_grad=True) for a in (x, wt, b))
    y_ref = F.conv_transpose2d(xt, wtt, bt, s, p, op, g, d)
    y = fastconv.conv_transpose2d(x, wt, b, s, p, op, g, d)
    torch.testing.assert_close(y, y_ref.detach().numpy(), **tols(dtype))
    gy = rng.standard_normal(y.shape).astype(dtype)
    y_ref.backward(torch.tensor(gy))
    gx, gw, gb = fastconv.conv_transpose2d_backward(gy, x, wt, s, p, op, g, d)
    torch.testing.assert_close(gx, xt.grad.numpy(), **tols(dtype))
    torch.testing.assert_close(gw, wtt.grad.numpy(), **tols(dtype))
    torch.testing.assert_close(gb, bt.grad.numpy(), **tols(dtype))


def test_conv_transpose2d_bad_output_padding():
    with pytest.raises(ValueError, match="output_padding"):
        fastconv.conv_transpose2d(np.ones((1, 2, 4, 4)), np.ones((2, 3, 3, 3)), stride=2, output_padding=2)


def test_conv_transpose2d_unbatched(rng):
    x = rng.standard_normal((2, 4, 4))
    w = rng.standard_normal((2, 3, 3, 3))
    y = fastconv.conv_transpose2d(x, w, stride=2)
    torch.testing.assert_close(y, F.conv_transpose2d(torch.tensor(x), torch.tensor(w), stride=2).numpy())


UNFOLD = [
    ("k2", 2, 3, 6, 7, (2, 2), 1, 0, 1),
    ("k3_s2_p1", 2, 2, 7, 7, (3, 3), 1, 1, 2),
    ("dilated", 1, 2, 9, 8, (2, 3), (2, 1), (1, 0), (1, 2)),
    ("rect", 1, 1, 5, 10, (1, 4), 1, (0, 2), (1, 3)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", UNFOLD, ids=[c[0] for c in UNFOLD])
def test_unfold_and_fold_match_torch(case, dtype, rng):
    _, n, c, h, w, k, d, p, s = case
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    cols = fastconv.unfold(x, k, d, p, s)
    ref = F.unfold(torch.tensor(x), k, d, p, s)
    torch.testing.assert_close(cols, ref.numpy())
    back = fastconv.fold(cols, (h, w), k, d, p, s)
    torch.testing.assert_close(back, F.fold(ref, (h, w), k, d, p, s).numpy(), **tols(dtype))
    unb = fastconv.unfold(x[0], k, d, p, s)
    torch.testing.assert_close(unb, ref[0].numpy())
    torch.testing.assert_close(fastconv.fold(unb, (h, w), k, d, p, s), back[0])


def test_fold_rejects_wrong_block_count():
    with pytest.raises(ValueError, match="input"):
        fastconv.fold(np.ones((1, 4, 8)), (4, 4), 2)
    with pytest.raises(ValueError, match="input"):
        fastconv.fold(np.ones((1, 5, 9)), (4, 4), 2)


def _conv_checksum(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, 16, 20, 20))
    w = rng.standard_normal((8, 16, 3, 3))
    return fastconv.conv2d(x, w, padding=1)


def test_forked_child_gets_working_threads():
    import multiprocessing

    expected = _conv_checksum(3)  # the parent's thread pool is running now
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.apply(_conv_checksum, (3,))
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 3),
    c=st.integers(17, 40),
    co=st.integers(13, 40),
    size=st.integers(5, 19),
    k=st.integers(1, 4),
    s=st.integers(1, 2),
    p=st.integers(0, 2),
    seed=st.integers(0, 999),
)
def test_wide_layers_match_torch(n, c, co, size, k, s, p, seed):
    """Channel counts large enough for fastconv's own GEMM kernel, with ragged edges everywhere."""
    if size + 2 * p < k:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, size, size + 1)).astype(np.float32)
    w = rng.standard_normal((co, c, k, k)).astype(np.float32)
    assert_matches_torch(x, w, None, s, p, rng=rng)


def test_openblas_fallback_matches_torch():
    """FASTCONV_GEMM=openblas (and CPUs without AVX-512) take OpenBLAS for every float32 GEMM."""
    import subprocess
    import sys

    code = (
        "import numpy as np, torch, fastconv\n"
        "assert fastconv._core.sgemm_kernel_name() == 'OpenBLAS'\n"
        "rng = np.random.default_rng(0)\n"
        "x = rng.standard_normal((2, 32, 15, 15)).astype(np.float32)\n"
        "w = rng.standard_normal((24, 32, 3, 3)).astype(np.float32)\n"
        "ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), None, 1, 1).numpy()\n"
        "torch.testing.assert_close(fastconv.conv2d(x, w, padding=1), ref, rtol=2e-4, atol=1e-3)\n"
        "print('ok')\n"
    )
    env = {**__import__("os").environ, "FASTCONV_GEMM": "openblas"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


@pytest.mark.parametrize("threads", [3, 4, 7, 8])
@pytest.mark.parametrize(
    "shape", [(1, 1, 1, 5), (1, 2, 3, 3), (2, 24, 5, 5), (1, 40, 17, 17)], ids=["p5", "p9", "two_images", "p289"]
)
def test_more_threads_than_columns(shape, threads, rng):
    """Tiles are split finely to feed many threads; none may be empty or run past its image."""
    n, c, h, w_ = shape
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((8, c, 1, 1)).astype(np.float32)
    w3 = rng.standard_normal((8, c, 3, 3)).astype(np.float32)
    old = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(threads)
        for weight, pad in ((w, 0), (w3, 1)):
            y = fastconv.conv2d(x, weight, padding=pad)
            gy = rng.standard_normal(y.shape).astype(np.float32)
            y_ref, (gx_ref, gw_ref, _) = torch_conv(x, weight, None, 1, pad, 1, 1, gy)
            torch.testing.assert_close(y, y_ref, **tols(np.float32))
            gx, gw, _ = fastconv.conv2d_backward(gy, x, weight, padding=pad)
            torch.testing.assert_close(gx, gx_ref, **tols(np.float32))
            torch.testing.assert_close(gw, gw_ref, **tols(np.float32))
    finally:
        fastconv.set_num_threads(old)


# F(2x2, 3x3) Winograd runs float32 3x3 stride-1 single-group convolutions with at
# least 16 channels on both sides (and their input gradients) on AVX-512 CPUs.
# (id, N, C_in, H, W, C_out, padding)
WINOGRAD = [
    ("square_pad1", 2, 16, 9, 9, 16, 1),
    ("odd_sizes_pad0", 3, 17, 7, 6, 19, 0),
    ("pad2_grows", 2, 24, 8, 5, 40, 2),
    ("asymmetric_pads", 1, 20, 11, 10, 28, (2, 0, 1, 2)),
    ("same", 2, 18, 10, 9, 21, "same"),
    ("one_pixel", 3, 16, 1, 1, 16, 1),
    ("one_row", 1, 16, 1, 13, 16, 1),
    ("edge_panel_4_rows", 1, 16, 6, 6, 28, 1),
    ("edge_panel_8_rows", 1, 16, 6, 6, 32, 1),
    ("tile_rows_span_blocks", 4, 32, 23, 21, 44, 1),
    ("wide_map", 1, 16, 5, 70, 16, 1),
    # rows of up to 32 values are transformed from registers, wider ones staged
    ("register_row_17", 2, 16, 9, 17, 20, 1),
    ("register_row_32", 1, 16, 6, 32, 16, 1),
    ("row_32_pad2_staged", 1, 16, 5, 32, 16, 2),
    ("row_33_staged", 1, 16, 5, 33, 16, 1),
    # many channels over few tiles: the layered schedule (U read once per point)
    ("layered_schedule", 2, 192, 14, 14, 200, 1),
    ("layered_odd_pad0", 2, 192, 13, 15, 192, 0),
    ("layered_asymmetric", 3, 176, 7, 6, 200, (2, 0, 1, 2)),
    # layered, and planes of at most 64 values and 16 tiles: transformed in
    # registers (C Cout > 2 (C + Cout) tiles > 64 (C + Cout) keeps them layered)
    ("small_plane_7x7", 4, 384, 7, 7, 392, 1),
    ("small_plane_8x8_limit", 3, 384, 8, 8, 392, 1),
    ("small_plane_pad0", 10, 384, 5, 6, 392, 0),
    ("small_plane_one_row", 4, 384, 1, 20, 392, 1),
    ("small_plane_pad2_grows", 5, 384, 4, 4, 392, 2),
    ("above_small_plane_9x9", 2, 384, 9, 9, 392, 1),
    # 6.4 MB of transformed data per image: the layered schedule runs in two batch chunks
    ("layered_batch_chunks", 6, 256, 28, 28, 256, 1),
    # padding 3 > kernel - 1: the input gradient falls back to the GEMM path
    ("pad3", 1, 16, 5, 5, 16, 3),
]


@pytest.mark.parametrize("case", WINOGRAD, ids=[c[0] for c in WINOGRAD])
def test_winograd_matches_torch(case, rng):
    _, n, c, h, w_, co, p = case
    x = rng.standard_normal((n, c, h, w_)).astype(np.float32)
    w = rng.standard_normal((co, c, 3, 3)).astype(np.float32)
    b = rng.standard_normal(co).astype(np.float32)
    assert_matches_torch(x, w, b, 1, p, rng=rng)


@pytest.mark.parametrize("threads", [1, 3, 5])
def test_winograd_thread_counts(threads, rng):
    x = rng.standard_normal((3, 24, 13, 12)).astype(np.float32)
    w = rng.standard_normal((20, 24, 3, 3)).astype(np.float32)
    old = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(threads)
        y = fastconv.conv2d(x, w, padding=1)
        gy = rng.standard_normal(y.shape).astype(np.float32)
        gx, _, _ = fastconv.conv2d_backward(gy, x, w, padding=1)
    finally:
        fastconv.set_num_threads(old)
    y_ref, (gx_ref, _, _) = torch_conv(x, w, None, 1, 1, 1, 1, gy)
    torch.testing.assert_close(y, y_ref, **tols(np.float32))
    torch.testing.assert_close(gx, gx_ref, **tols(np.float32))


# Wide layers at every level the CPU has (the generic operator serves avx2 and neon): (id, forced, threads, N,
# C_in, H, W, C_out).  fused_*: the layered schedule with 64 C Cout >= 2 MiB of transformed weights and at most
# 4 MiB of transformed inputs, so U is made in row blocks by the workers that multiply them (blocks split unevenly
# over 3, 8 and 64 threads, 170 rows leaving a partial panel); gemm_column_blocks: K = 520 input channels put the point
# GEMMs' vector panel past L1 at every level, and 144 tiles make two L2 column blocks; small_map_rule: a 7x7 map the
# generic level now takes unforced (128 tiles of 256 channels); weight_grad_sums_*: the blocked schedule's per-worker
# sums of the weight gradient, kept between calls and overwritten by each worker's first block (called twice).
WIDE_WINOGRAD = [
    ("fused_1_thread", True, 1, 6, 200, 5, 5, 170),
    ("fused_3_threads", True, 3, 6, 200, 5, 5, 170),
    ("fused_8_threads", True, 8, 6, 200, 5, 5, 170),
    ("fused_64_threads", True, 64, 6, 200, 5, 5, 170),
    ("gemm_column_blocks", False, 2, 4, 520, 12, 12, 520),
    ("small_map_rule", False, 2, 8, 256, 7, 7, 256),
    ("weight_grad_sums_3_threads", True, 3, 3, 24, 13, 12, 20),
    ("weight_grad_sums_8_threads", True, 8, 3, 24, 13, 12, 20),
    ("weight_grad_sums_64_threads", True, 64, 3, 24, 13, 12, 20),
]


@pytest.mark.usefixtures("level")
@pytest.mark.parametrize("case", WIDE_WINOGRAD, ids=[c[0] for c in WIDE_WINOGRAD])
def test_winograd_wide_layers_at_every_level(case, rng, monkeypatch):
    _, forced, threads, n, c, h, w_, co = case
    if forced:
        monkeypatch.setenv("FASTCONV_WINOGRAD", "1")
    x = rng.standard_normal((n, c, h, w_)).astype(np.float32)
    w = (rng.standard_normal((co, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    old = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(threads)
        for _ in range(2):  # the second call meets the buffers the first one left
            assert_matches_torch(x, w, None, 1, 1, rng=rng)
    finally:
        fastconv.set_num_threads(old)


# Layers the rules put on the implicit GEMM with channels in the vectors (no switch forced), at every level: the
# AVX2 and AVX-512 rules take the forward of long reductions and the strided input gradient of 5x5/2-class layers
# (sub-pixel phases); elsewhere the same layers take the other paths.  (id, N, C_in, H, C_out, kernel, stride,
# padding, groups, dtype).
RULE_CHANNEL_VECTORS = [
    ("strided_5x5", 2, 64, 24, 128, 5, 2, 2, 1, np.float32),
    ("strided_5x5_f64", 1, 32, 17, 64, 5, 2, 2, 1, np.float64),
    ("strided_7x7", 1, 16, 30, 64, 7, 2, 3, 1, np.float32),
    ("grouped_3x3", 2, 128, 14, 128, 3, 1, 1, 4, np.float32),
]


@pytest.mark.usefixtures("level")
@pytest.mark.parametrize("case", RULE_CHANNEL_VECTORS, ids=[c[0] for c in RULE_CHANNEL_VECTORS])
def test_channel_vector_rules_match_torch(case, rng):
    _, n, c, h, co, k, s, p, groups, dtype = case
    x = rng.standard_normal((n, c, h, h + 1)).astype(dtype)
    w = (rng.standard_normal((co, c // groups, k, k)) / np.sqrt(k * k * c / groups)).astype(dtype)
    b = rng.standard_normal(co).astype(dtype)
    assert_matches_torch(x, w, b, s, p, groups=groups, rng=rng)


# Dilated 3x3 stride-1 layers with padding d*q on every side over maps whose sides are multiples of d run as d*d
# undilated phases on Winograd (conv.cpp, dilated_phases), forward and both gradients: (id, forced, threads, N, C_in,
# H, W, C_out, dilation, padding).  forced (FASTCONV_WINOGRAD=1) takes the phases wherever eligible; rules_* are
# what the default rules choose; the last ones are not eligible (odd map, padding not a multiple of d, asymmetric)
# and must stay correct on the other operators.
DILATED_PHASES = [
    ("d2_q1_forced", True, 2, 2, 16, 12, 10, 20, 2, 2),
    ("d2_q2_forced", True, 2, 3, 16, 8, 12, 24, 2, 4),
    ("d2_q0_forced", True, 2, 2, 24, 10, 10, 16, 2, 0),
    ("d3_q1_forced", True, 2, 2, 16, 12, 9, 16, 3, 3),
    ("d4_q1_forced", True, 2, 1, 16, 16, 8, 16, 4, 4),
    ("d2_3_threads", True, 3, 3, 16, 14, 14, 16, 2, 2),
    ("d2_64_threads", True, 64, 3, 16, 14, 14, 16, 2, 2),
    ("rules_64_channels_28x28", False, 2, 8, 64, 28, 28, 64, 2, 2),
    ("rules_128_channels_8x8_phases", False, 2, 4, 128, 16, 16, 128, 2, 2),
    ("odd_map_not_eligible", True, 2, 2, 16, 11, 12, 16, 2, 2),
    ("padding_3_not_eligible", True, 2, 2, 16, 12, 12, 16, 2, 3),
    ("asymmetric_not_eligible", True, 2, 2, 16, 12, 12, 16, 2, (2, 2, 0, 2)),
]


@pytest.mark.usefixtures("level")
@pytest.mark.parametrize("case", DILATED_PHASES, ids=[c[0] for c in DILATED_PHASES])
def test_dilated_layers_as_phases(case, rng, monkeypatch):
    _, forced, threads, n, c, h, w_, co, d, p = case
    if forced:
        monkeypatch.setenv("FASTCONV_WINOGRAD", "1")
    x = rng.standard_normal((n, c, h, w_)).astype(np.float32)
    w = (rng.standard_normal((co, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    b = rng.standard_normal(co).astype(np.float32)
    old = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(threads)
        for _ in range(2):  # the second call meets the buffers the first one left
            y = assert_matches_torch(x, w, b, 1, p, d, rng=rng)
        # The epilogue is applied after the phases are back in place: residual offsets are the output's.
        r = rng.standard_normal(y.shape).astype(np.float32)
        fused = fastconv.conv2d(x, w, b, 1, p, d, residual=r, relu=True)
        torch.testing.assert_close(fused, np.maximum(y + r, 0), **tols(np.float32))
    finally:
        fastconv.set_num_threads(old)


@pytest.mark.usefixtures("level")
def test_dilated_phases_in_batch_chunks(rng, monkeypatch):
    """4.7 MB of phases per image: each image is its own chunk, and the weight gradient sums the chunks' gradients.
    Its 27,648-term sums are held to the Winograd bound: root-mean-square error against float64 within 3x torch's
    own float32 error."""
    monkeypatch.setenv("FASTCONV_WINOGRAD", "1")
    x = rng.standard_normal((3, 64, 96, 96)).astype(np.float32)
    w = (rng.standard_normal((64, 64, 3, 3)) / np.sqrt(9 * 64)).astype(np.float32)
    gy = rng.standard_normal((3, 64, 96, 96)).astype(np.float32)
    y = fastconv.conv2d(x, w, padding=2, dilation=2)
    gx, gw, _ = fastconv.conv2d_backward(gy, x, w, padding=2, dilation=2)
    refs = {}
    for dt in (torch.float64, torch.float32):
        xt = torch.from_numpy(x).to(dt).requires_grad_(True)
        wt = torch.from_numpy(w).to(dt).requires_grad_(True)
        yt = F.conv2d(xt, wt, padding=2, dilation=2)
        yt.backward(torch.from_numpy(gy).to(dt))
        refs[dt] = [v.detach().double().numpy() for v in (yt, xt.grad, wt.grad)]
    if "off" in fastconv.show_config(file=False)["kernels"]["winograd float32"]:
        # No Winograd at this level (portable): the layer is not on the phases.  torch's own float32 error is no
        # yardstick here (on a Zen 3 it was 6x smaller than the implicit weight gradient's per-lane sums, on a Zen 4
        # 2.5x larger), so each result is held to a float32 sum's normwise bound against float64: the largest error
        # within sqrt(terms) * eps of the largest value (one wrong term of 27,648 is 300x that).
        eps = np.finfo(np.float32).eps
        for got, ref, terms in zip((y, gx, gw), refs[torch.float64], (64 * 9, 64 * 9, 3 * 96 * 96)):
            err = np.abs(got - ref).max() / np.abs(ref).max()
            assert err <= np.sqrt(terms) * eps, (err, terms)
        return
    for got, ref, ref32 in zip((y, gx, gw), refs[torch.float64], refs[torch.float32]):
        rms = np.sqrt(np.mean((got - ref) ** 2))
        assert rms <= 3 * np.sqrt(np.mean((ref32 - ref) ** 2)), rms


def test_winograd_can_be_switched_off(rng, monkeypatch):
    """FASTCONV_WINOGRAD=0 takes the im2col GEMM path: a different summation, same answer."""
    x = rng.standard_normal((2, 32, 12, 12)).astype(np.float32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    y_wino = fastconv.conv2d(x, w, padding=1)
    monkeypatch.setenv("FASTCONV_WINOGRAD", "0")
    y_gemm = fastconv.conv2d(x, w, padding=1)
    if fastconv._core.sgemm_kernel_name() == "fastconv AVX-512":
        assert not np.array_equal(y_wino, y_gemm)  # proves the default run took the other path
    torch.testing.assert_close(y_wino, y_gemm, **tols(np.float32))


def test_winograd_transposed_conv_matches_torch(rng):
    """conv_transpose2d with a 3x3 stride-1 kernel runs on the adjoint Winograd path."""
    x = rng.standard_normal((2, 24, 9, 8)).astype(np.float32)
    w = rng.standard_normal((24, 20, 3, 3)).astype(np.float32)
    b = rng.standard_normal(20).astype(np.float32)
    y = fastconv.conv_transpose2d(x, w, b, 1, 1)
    ref = F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), 1, 1).numpy()
    torch.testing.assert_close(y, ref, **tols(np.float32))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 3),
    c=st.integers(16, 50),
    co=st.integers(16, 50),
    h=st.integers(1, 20),
    w=st.integers(1, 20),
    pads=st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
    seed=st.integers(0, 999),
)
def test_winograd_random_geometries(n, c, co, h, w, pads, seed):
    if h + pads[2] + pads[3] < 3 or w + pads[0] + pads[1] < 3:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((co, c, 3, 3)).astype(np.float32)
    assert_matches_torch(x, wt, None, 1, pads, rng=rng)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 3),
    c=st.integers(16, 40),
    co=st.integers(8, 40),
    d=st.integers(2, 4),
    q=st.integers(0, 2),
    hw=st.tuples(st.integers(1, 7), st.integers(1, 7)),
    seed=st.integers(0, 999),
)
def test_dilated_phases_random_geometries(n, c, co, d, q, hw, seed):
    """Dilated layers that split into phases (padding d*q, sides multiples of d), forced onto Winograd."""
    h, w = hw[0] * d, hw[1] * d
    if min(h, w) + 2 * d * q < 2 * d + 1:
        return  # no output
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((co, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    b = rng.standard_normal(co).astype(np.float32)
    old = os.environ.get("FASTCONV_WINOGRAD")
    os.environ["FASTCONV_WINOGRAD"] = "1"
    try:
        assert_matches_torch(x, wt, b, 1, d * q, d, rng=rng)
    finally:
        if old is None:
            del os.environ["FASTCONV_WINOGRAD"]
        else:
            os.environ["FASTCONV_WINOGRAD"] = old


# One input channel per group runs on the direct kernels: blocks of 1-8 vectors
# along a row, 4-channel blocks plus leftovers, column phases for strides > 1,
# and gathered input gradients.
# (id, N, C_in, H, W, C_out, kernel, stride, padding, dilation, groups)
DIRECT = [
    ("depthwise_wide", 2, 3, 9, 150, 3, 3, 1, 1, 1, 3),
    ("depthwise_one_vector", 2, 4, 6, 16, 4, 3, 1, (0, 1), 1, 4),
    ("depthwise_stride2_wide", 1, 5, 11, 133, 5, 3, 2, 1, 1, 5),
    ("depthwise_stride3_dilated", 2, 2, 17, 71, 2, (3, 5), (2, 3), (2, 4), (2, 3), 2),
    ("depthwise_big_pad", 1, 3, 7, 40, 3, 3, 1, 4, 1, 3),
    ("depthwise_asymmetric", 2, 3, 12, 37, 3, 5, 1, (0, 3, 2, 1), 1, 3),
    ("depthwise_5x5_same", 1, 8, 20, 45, 8, 5, 1, "same", 1, 8),
    ("depthwise_same_s2", 2, 4, 15, 35, 4, 3, 2, "same", 1, 4),
    ("multiplier3", 2, 4, 10, 50, 12, 3, 1, 1, 1, 4),
    ("multiplier5_strided", 2, 2, 13, 29, 10, 3, 2, 1, 1, 2),
    ("one_channel_32_out", 4, 1, 28, 28, 32, 3, 1, 0, 1, 1),
    ("one_channel_7x7_s2", 2, 1, 30, 41, 9, 7, 2, 3, 1, 1),
    ("one_channel_1x1", 2, 1, 5, 70, 6, 1, 1, 0, 1, 1),
    ("one_channel_kernel_eq_input", 3, 1, 5, 18, 4, 5, 1, 0, 1, 1),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", DIRECT, ids=[c[0] for c in DIRECT])
def test_direct_kernels_match_torch(case, dtype, rng):
    _, n, c, h, w, co, k, s, p, d, g = case
    kh, kw = (k, k) if isinstance(k, int) else k
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((co, c // g, kh, kw)).astype(dtype)
    b = rng.standard_normal(co).astype(dtype)
    assert_matches_torch(x, wt, b, s, p, d, g, rng)


@pytest.mark.parametrize("threads", [1, 3])
def test_direct_kernels_thread_counts(threads, rng):
    x = rng.standard_normal((5, 6, 21, 40)).astype(np.float32)
    w = rng.standard_normal((12, 1, 3, 3)).astype(np.float32)
    old = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(threads)
        assert_matches_torch(x, w, None, 1, 1, groups=6, rng=rng)
    finally:
        fastconv.set_num_threads(old)


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 2),
    groups=st.integers(1, 4),
    cout_g=st.integers(1, 9),
    h=st.integers(1, 14),
    w=st.integers(1, 200),
    kh=st.integers(1, 5),
    kw=st.integers(1, 5),
    sh=st.integers(1, 3),
    sw=st.integers(1, 3),
    dh=st.integers(1, 3),
    dw=st.integers(1, 3),
    pads=st.tuples(*[st.integers(0, 4)] * 4),
    seed=st.integers(0, 2**16),
)
def test_direct_random_geometries(n, groups, cout_g, h, w, kh, kw, sh, sw, dh, dw, pads, seed):
    if h + pads[2] + pads[3] < dh * (kh - 1) + 1 or w + pads[0] + pads[1] < dw * (kw - 1) + 1:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, groups, h, w))
    wt = rng.standard_normal((groups * cout_g, 1, kh, kw))
    b = rng.standard_normal(groups * cout_g)
    assert_matches_torch(x, wt, b, (sh, sw), pads, (dh, dw), groups, rng)


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_depthwise_transposed_conv_matches_torch(stride, rng):
    """A grouped transposed conv with one channel per group is the direct input gradient."""
    # 8 input channels in 4 groups, one output channel each: the convolution it
    # is the input gradient of has one input channel per group.
    x = rng.standard_normal((2, 8, 9, 37)).astype(np.float32)
    w = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    y = fastconv.conv_transpose2d(x, w, b, stride, 1, output_padding=stride - 1, groups=4)
    ref = F.conv_transpose2d(
        torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride, 1, output_padding=stride - 1, groups=4
    ).numpy()
    torch.testing.assert_close(y, ref, **tols(np.float32))
