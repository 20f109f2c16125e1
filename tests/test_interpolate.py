"""interpolate and its backward against torch.nn.functional.interpolate and autograd (issue 17)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from conftest import tols

T = torch.tensor

MODES = [
    ("nearest", None),
    ("nearest-exact", None),
    ("bilinear", False),
    ("bilinear", True),
    ("bicubic", False),
    ("bicubic", True),
]
SIZES = [
    dict(size=(11, 3)),
    dict(size=(16, 14)),
    dict(scale_factor=2),
    dict(scale_factor=(1.7, 0.6)),
    dict(scale_factor=0.37, recompute_scale_factor=True),
    dict(scale_factor=3.3, recompute_scale_factor=False),
    dict(size=1),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kw", SIZES, ids=[repr(k) for k in SIZES])
@pytest.mark.parametrize("mode, corners", MODES, ids=[f"{m}-{c}" for m, c in MODES])
def test_forward_and_backward_as_torch(mode, corners, kw, dtype, rng):
    x = rng.standard_normal((2, 3, 7, 8)).astype(dtype)
    xt = T(x, requires_grad=True)
    ref = F.interpolate(xt, mode=mode, align_corners=corners, **kw)
    gy = rng.standard_normal(tuple(ref.shape)).astype(dtype)
    ref.backward(T(gy))
    got = fastconv.interpolate(x, mode=mode, align_corners=corners, **kw)
    torch.testing.assert_close(got, ref.detach().numpy(), **tols(dtype))
    gx = fastconv.interpolate_backward(gy, x.shape, mode=mode, align_corners=corners, **kw)
    torch.testing.assert_close(gx, xt.grad.numpy(), **tols(dtype))


@pytest.mark.parametrize("threads", [1, 3, 8], ids=lambda t: f"{t}threads")
def test_thread_counts_and_unbatched(threads, rng):
    x = rng.standard_normal((3, 20, 17))
    ref = F.interpolate(T(x[None]), scale_factor=2, mode="bilinear")[0].numpy()
    old = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(threads)
        torch.testing.assert_close(fastconv.interpolate(x, scale_factor=2, mode="bilinear"), ref)
        g = fastconv.interpolate_backward(np.ones(ref.shape), x.shape, scale_factor=2, mode="bilinear")
    finally:
        fastconv.set_num_threads(old)
    np.testing.assert_allclose(g.sum(), ref.size)  # linear weights of each output sum to 1


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(), ValueError, "exactly one of size and scale_factor"),
        (dict(size=4, scale_factor=2), ValueError, "exactly one of size and scale_factor"),
        (dict(size=4, mode="area"), ValueError, "mode must be one of"),
        (dict(size=4, mode="nearest", align_corners=True), ValueError, "align_corners can only be set"),
        (dict(size=4, mode="bilinear", align_corners="yes"), TypeError, "align_corners must be a bool"),
        (dict(scale_factor=0), ValueError, "scale_factor must be positive"),
        (dict(scale_factor=float("nan")), ValueError, "scale_factor must be positive"),
        (dict(scale_factor="2"), TypeError, "scale_factor must be a number"),
        (dict(scale_factor=0.1), ValueError, "output size must be positive"),
        (dict(size=(4, 4, 4)), ValueError, "size must be an int or a pair"),
        (dict(size=2**64), ValueError, "size must fit in int64"),
        (dict(size=4, recompute_scale_factor=True), ValueError, "recompute_scale_factor is only meaningful"),
    ],
    ids=[
        "none",
        "both",
        "mode",
        "corners-nearest",
        "corners-type",
        "zero",
        "nan",
        "string",
        "empty",
        "3-size",
        "huge",
        "recompute-size",
    ],
)
def test_refusals(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fastconv.interpolate(np.ones((1, 1, 4, 4)), **kwargs)


def test_backward_checks_its_shapes():
    with pytest.raises(ValueError, match="grad_output: expected spatial size"):
        fastconv.interpolate_backward(np.ones((1, 1, 5, 5)), (1, 1, 2, 2), scale_factor=2)
    with pytest.raises(ValueError, match="input_size must be"):
        fastconv.interpolate_backward(np.ones((1, 1, 4, 4)), (2, 2), scale_factor=2)
    with pytest.raises(ValueError, match="does not match input_size"):
        fastconv.interpolate_backward(np.ones((1, 2, 4, 4)), (1, 3, 2, 2), scale_factor=2)


@pytest.mark.parametrize(
    "kw",
    [
        dict(scale_factor=2),
        dict(size=(9, 5), mode="bilinear", align_corners=True),
        dict(scale_factor=1.5, mode="bicubic"),
    ],
    ids=repr,
)
def test_upsample_layer_and_spec_as_torch(kw, rng):
    import fastconv.nn

    x = rng.standard_normal((2, 3, 6, 7))
    layer, ref_layer = fastconv.nn.Upsample(**kw), torch.nn.Upsample(**kw)
    xt = T(x, requires_grad=True)
    ref = ref_layer(xt)
    got = layer(x)
    torch.testing.assert_close(got, ref.detach().numpy())
    gy = rng.standard_normal(tuple(ref.shape))
    ref.backward(T(gy))
    torch.testing.assert_close(layer.backward(gy), xt.grad.numpy())
    assert fastconv.layers.Upsample(**kw).output_shape((3, 6, 7)) == tuple(ref.shape[1:])
    rows = fastconv.summary(torch.nn.Sequential(ref_layer), (3, 6, 7)).rows
    assert rows[-1].output_shape == tuple(ref.shape[1:])


def test_upsample_spec_checks_its_options():
    with pytest.raises(ValueError, match="exactly one of size and scale_factor"):
        fastconv.layers.Upsample()
    with pytest.raises(ValueError, match="align_corners can only be set"):
        fastconv.layers.Upsample(scale_factor=2, align_corners=True)


def test_non_contiguous_and_big_endian_input(rng):
    x = rng.standard_normal((2, 3, 14, 10))[:, :, ::2, ::-1]  # strided and reversed
    ref = F.interpolate(T(np.ascontiguousarray(x)), size=(9, 13), mode="bicubic").numpy()
    torch.testing.assert_close(fastconv.interpolate(x, size=(9, 13), mode="bicubic"), ref)
    torch.testing.assert_close(fastconv.interpolate(x.astype(">f8"), size=(9, 13), mode="bicubic"), ref)


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    oh=st.integers(1, 25),
    ow=st.integers(1, 25),
    mode=st.sampled_from(["nearest", "nearest-exact", "bilinear", "bicubic"]),
    corners=st.booleans(),
    by_scale=st.booleans(),
)
def test_random_sizes_as_torch(h, w, oh, ow, mode, corners, by_scale):
    x = np.random.default_rng(h * 100 + w).standard_normal((1, 2, h, w))
    ac = corners if mode in ("bilinear", "bicubic") else None
    kw = dict(scale_factor=(oh / h, ow / w)) if by_scale else dict(size=(oh, ow))
    xt = T(x, requires_grad=True)
    ref = F.interpolate(xt, mode=mode, align_corners=ac, **kw)
    got = fastconv.interpolate(x, mode=mode, align_corners=ac, **kw)
    torch.testing.assert_close(got, ref.detach().numpy(), **tols(np.float64))
    gy = np.cos(np.arange(ref.numel())).reshape(tuple(ref.shape))
    ref.backward(T(gy))
    gx = fastconv.interpolate_backward(gy, x.shape, mode=mode, align_corners=ac, **kw)
    torch.testing.assert_close(gx, xt.grad.numpy(), **tols(np.float64))
