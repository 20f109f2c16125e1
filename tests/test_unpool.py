"""max_unpool2d and its backward against torch (issue 17)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastconv
import fastconv.nn
from conftest import tols

T = torch.tensor

CASES = [  # (input shape, kernel, stride, padding, output_size)
    ((2, 3, 8, 8), 2, None, 0, None),
    ((1, 4, 9, 7), 3, 2, 1, None),
    ((2, 2, 9, 9), 2, 2, 0, (9, 9)),  # the odd row and column the pool dropped, restored
    ((1, 3, 9, 6), (3, 2), (2, 1), (1, 0), None),
    ((3, 1, 5, 5), 1, 1, 0, None),
]


@pytest.mark.parametrize("threads", [1, 8], ids=lambda t: f"{t}threads")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape, k, s, p, size", CASES, ids=[str(c) for c in CASES])
def test_max_unpool2d_forward_and_backward_as_torch(shape, k, s, p, size, dtype, threads, rng):
    x = rng.standard_normal(shape).astype(dtype)
    y, idx = F.max_pool2d(T(x), k, s, p, return_indices=True)
    yt = y.detach().clone().requires_grad_(True)
    ref = F.max_unpool2d(yt, idx, k, s, p, output_size=size)
    gy = rng.standard_normal(tuple(ref.shape)).astype(dtype)
    ref.backward(T(gy))
    old = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(threads)
        got = fastconv.max_unpool2d(y.numpy(), idx.numpy(), k, s, p, output_size=size)
        gx = fastconv.max_unpool2d_backward(gy, idx.numpy())
    finally:
        fastconv.set_num_threads(old)
    torch.testing.assert_close(got, ref.detach().numpy(), **tols(dtype))
    torch.testing.assert_close(gx, yt.grad.numpy(), **tols(dtype))


def test_unbatched_and_full_shape_output_size(rng):
    x = rng.standard_normal((3, 9, 9))
    y, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    ref = F.max_unpool2d(T(y), T(idx), 2, output_size=(9, 9))  # torch takes 2 or 4 values only
    got = fastconv.max_unpool2d(y, idx, 2, output_size=(3, 9, 9))
    assert got.shape == (3, 9, 9)
    torch.testing.assert_close(got, ref.numpy())
    assert fastconv.max_unpool2d_backward(got, idx).shape == y.shape


def test_round_trip_keeps_the_maxima(rng):
    x = rng.standard_normal((2, 3, 8, 8))
    y, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    up = fastconv.max_unpool2d(y, idx, 2)
    flat = up.reshape(2, 3, -1)
    np.testing.assert_array_equal(np.take_along_axis(flat, idx.reshape(2, 3, -1), 2), y.reshape(2, 3, -1))
    assert np.count_nonzero(up) == y.size  # the maxima where they were, zeros elsewhere


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(indices=np.full((1, 1, 2, 2), 16)), ValueError, r"\[0, 16\).*got 16"),
        (dict(indices=np.full((1, 1, 2, 2), -1)), ValueError, r"\[0, 16\).*got -1"),
        (dict(indices=np.zeros((1, 1, 2, 2), np.float32)), TypeError, "indices must be an integer array"),
        (dict(indices=np.zeros((1, 1, 2, 1), np.int64)), ValueError, "indices must have input's shape"),
        (dict(output_size=(6, 4)), ValueError, "output_size: .* must lie strictly between"),
        (dict(output_size=(2, 4)), ValueError, "output_size"),
        (dict(output_size=(4,)), ValueError, "output_size must be"),
        (dict(padding=3), ValueError, "padding"),
        (dict(stride=0), ValueError, "stride must be positive"),
    ],
    ids=["past-plane", "negative", "float", "shape", "size-high", "size-low", "size-form", "padding", "stride"],
)
def test_refusals(kwargs, exc, match):
    args = dict(input=np.ones((1, 1, 2, 2)), indices=np.zeros((1, 1, 2, 2), np.int64), kernel_size=2)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        fastconv.max_unpool2d(**args)


def test_torch_refuses_the_same_output_size():
    with pytest.raises(ValueError):
        F.max_unpool2d(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.int64), 2, output_size=(6, 4))


# Input sizes the default unpool size restores (torch refuses indices past its plane too).
@pytest.mark.parametrize("k, s, p, hw", [(2, None, 0, (8, 6)), (3, 2, 1, (9, 7)), ((3, 2), (2, 1), (1, 0), (9, 7))])
def test_layer_spec_and_module_as_torch(k, s, p, hw, rng):
    x = rng.standard_normal((2, 3, *hw))
    pool, unpool = fastconv.nn.MaxPool2d(k, s, p, return_indices=True), fastconv.nn.MaxUnpool2d(k, s, p)
    tpool, tunpool = torch.nn.MaxPool2d(k, s, p, return_indices=True), torch.nn.MaxUnpool2d(k, s, p)
    y, idx = pool(x)
    yt, it = tpool(T(x))
    out = unpool(y, idx)
    yg = yt.detach().clone().requires_grad_(True)
    ref = tunpool(yg, it)
    torch.testing.assert_close(out, ref.detach().numpy())
    gy = rng.standard_normal(out.shape)
    ref.backward(T(gy))
    torch.testing.assert_close(unpool.backward(gy), yg.grad.numpy())
    # The spec's output shape, alone, inside a summary, and from torch's module.
    spec = fastconv.layers.MaxUnpool2d(k, s, p)
    assert spec.output_shape(tuple(y.shape[1:])) == tuple(ref.shape[1:])
    rows = fastconv.summary([fastconv.layers.MaxPool2d(k, s, p), spec], (3, *hw)).rows
    assert rows[-1].output_shape == tuple(ref.shape[1:])
    rows = fastconv.summary(torch.nn.Sequential(tpool, tunpool), (3, *hw)).rows
    assert rows[-1].output_shape == tuple(ref.shape[1:]) and rows[-1].type == "MaxUnpool2d"


def test_module_takes_torch_keyword_arguments(rng):
    """Called as torch code calls it: ``unpool(y, indices=i, output_size=...)`` (what from_torch's graphs pass on)."""
    x = rng.standard_normal((1, 2, 9, 9))
    pool, unpool = fastconv.nn.MaxPool2d(2, return_indices=True), fastconv.nn.MaxUnpool2d(2)
    y, idx = pool(x)
    yt, it = torch.nn.MaxPool2d(2, return_indices=True)(T(x))
    ref = torch.nn.MaxUnpool2d(2)(yt, indices=it, output_size=(9, 9))
    torch.testing.assert_close(unpool(y, indices=idx, output_size=(9, 9)), ref.numpy())
    torch.testing.assert_close(unpool(y, idx, output_size=[1, 2, 9, 9]), ref.numpy())
