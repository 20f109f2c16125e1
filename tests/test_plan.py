"""fastconv.Conv2dPlan against torch: every algorithm a plan can take (forced through each one), at every level
this CPU has and at more threads than cores, reused across input shapes, with its fused epilogues, from several
Python threads at once, and its refusals of bad input."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastconv
from conftest import tols
from test_numpy_reference import level  # noqa: F401  (a fixture: every FASTCONV_CPU level the CPU has)

# (id, N, C_in, H, W, C_out, kernel, stride, padding, dilation, groups): the layers of real networks.
LAYERS = [
    ("3x3_wide_small_map", 1, 64, 4, 4, 48, 3, 1, 1, 1, 1),
    ("3x3_batch3", 3, 16, 9, 11, 24, 3, 1, 1, 1, 1),
    ("3x3_stride2", 1, 24, 14, 13, 32, 3, 2, 1, 1, 1),
    ("1x1", 2, 40, 7, 7, 24, 1, 1, 0, 1, 1),
    ("1x1_stride2_shortcut", 1, 32, 14, 14, 48, 1, 2, 0, 1, 1),
    ("stem_7x7_stride2", 1, 3, 30, 29, 16, 7, 2, 3, 1, 1),
    ("depthwise_stride2", 2, 24, 14, 14, 24, 3, 2, 1, 1, 24),
    ("grouped", 1, 32, 8, 8, 32, 3, 1, 1, 1, 4),
    ("dilated", 1, 16, 12, 12, 16, 3, 1, 2, 2, 1),
    ("5x5_same", 2, 8, 10, 10, 12, 5, 1, "same", 1, 1),
    ("asymmetric_pads", 1, 8, 9, 10, 8, 3, 1, (0, 2, 1, 0), 1, 1),
]
# Each algorithm the rules can choose, forced: the environment switches are read on every call.
PATHS = {
    "rules": {},
    "winograd": {"FASTCONV_WINOGRAD": "1", "FASTCONV_IMPLICIT_GEMM": "0"},
    "implicit_gemm": {"FASTCONV_WINOGRAD": "0", "FASTCONV_IMPLICIT_GEMM": "1"},
    "im2col": {"FASTCONV_WINOGRAD": "0", "FASTCONV_IMPLICIT_GEMM": "0"},
}


def torch_reference(x, w, b, stride, padding, dilation, groups, gy):
    """torch's output and autograd gradients of the layer, padding given explicitly to F.pad."""
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    if padding == "same":
        y = F.conv2d(xt, wt, bt, stride, "same", dilation, groups)
    else:
        pads = (padding,) * 4 if isinstance(padding, int) else padding  # (left, right, top, bottom)
        y = F.conv2d(F.pad(xt, pads), wt, bt, stride, 0, dilation, groups)
    y.backward(torch.tensor(gy))
    return y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), None if bt is None else bt.grad.numpy()


def layer_arrays(case, dtype, rng):
    _, n, c, h, w_, co, k, _, _, _, groups = case
    x = rng.standard_normal((n, c, h, w_)).astype(dtype)
    w = (rng.standard_normal((co, c // groups, k, k)) / np.sqrt(k * k * c / groups)).astype(dtype)
    b = rng.standard_normal(co).astype(dtype)
    return x, w, b


def check_plan(plan, x, w, b, case, rng, calls=2):
    """The plan's forward and backward against torch, ``calls`` times (later calls meet the prepared forms)."""
    stride, padding, dilation, groups = case[7:11]
    dtype = x.dtype
    for _ in range(calls):
        y = plan(x)
        gy = rng.standard_normal(y.shape).astype(dtype)
        ry, rgx, rgw, rgb = torch_reference(x, w, b, stride, padding, dilation, groups, gy)
        torch.testing.assert_close(y, ry, **tols(dtype))
        gx, gw, gb = plan.backward(gy, x)
        torch.testing.assert_close(gx, rgx, **tols(dtype))
        torch.testing.assert_close(gw, rgw, **tols(dtype))
        torch.testing.assert_close(gb, rgb, **tols(dtype))


def make_plan(w, b, case):
    return fastconv.Conv2dPlan(w, b, stride=case[7], padding=case[8], dilation=case[9], groups=case[10])


@pytest.mark.usefixtures("level")
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("case", LAYERS, ids=[c[0] for c in LAYERS])
def test_plan_matches_torch_on_every_path(case, path, rng, monkeypatch):
    for key, value in PATHS[path].items():
        monkeypatch.setenv(key, value)
    x, w, b = layer_arrays(case, np.float32, rng)
    check_plan(make_plan(w, b, case), x, w, b, case, rng)


@pytest.mark.parametrize("case", LAYERS[:4], ids=[c[0] for c in LAYERS[:4]])
def test_plan_float64(case, rng):
    x, w, b = layer_arrays(case, np.float64, rng)
    check_plan(make_plan(w, b, case), x, w, b, case, rng, calls=1)


@pytest.mark.parametrize("threads", [1, 3, 8, 64], ids=lambda t: f"{t}threads")
@pytest.mark.parametrize("path", ["winograd", "implicit_gemm", "im2col"])
def test_plan_at_many_threads(path, threads, rng, monkeypatch):
    """More threads than cores, where races in making or reading the prepared forms would show."""
    for key, value in PATHS[path].items():
        monkeypatch.setenv(key, value)
    case = ("wide", 2, 96, 10, 10, 80, 3, 1, 1, 1, 1)
    x, w, b = layer_arrays(case, np.float32, rng)
    old = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(threads)
        check_plan(make_plan(w, b, case), x, w, b, case, rng)
    finally:
        fastconv.set_num_threads(old)


def test_plan_reused_across_shapes_and_paths(rng, monkeypatch):
    """One plan, input shapes and algorithms interleaved: each form prepared is kept and each stays right."""
    case = ("reuse", 1, 32, 0, 0, 32, 3, 1, "same", 1, 1)
    _, w, b = layer_arrays(case[:3] + (4, 4) + case[5:], np.float32, rng)
    plan = make_plan(w, b, case)
    shapes = [(1, 32, 4, 4), (4, 32, 16, 16), (1, 32, 7, 9), (2, 32, 1, 1), (4, 32, 16, 16), (1, 32, 4, 4)]
    for i, shape in enumerate(shapes):
        for key, value in PATHS[list(PATHS)[i % len(PATHS)]].items():
            monkeypatch.setenv(key, value)
        x = rng.standard_normal(shape).astype(np.float32)
        check_plan(plan, x, w, b, case, rng, calls=1)
        for key in ("FASTCONV_WINOGRAD", "FASTCONV_IMPLICIT_GEMM"):
            monkeypatch.delenv(key, raising=False)


def test_plan_keeps_its_own_copy_of_the_weights(rng):
    case = ("copy", 1, 8, 6, 6, 8, 3, 1, 1, 1, 1)
    x, w, b = layer_arrays(case, np.float32, rng)
    w0, b0 = w.copy(), b.copy()
    plan = make_plan(w, b, case)
    w[:] = 7.0
    b[:] = -3.0
    check_plan(plan, x, w0, b0, case, rng)
    with pytest.raises(ValueError):
        plan.weight[0, 0, 0, 0] = 1.0  # read-only views of the plan's copies


def test_prepared_forms_are_made_once_and_bounded(rng, monkeypatch):
    """Calls after the first on a shape make no new forms; each form is at most about twice the weights (the
    Winograd points of a 3x3 kernel at most 36 / 9 times, rounded up to the kernel's tiles)."""
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    x = rng.standard_normal((1, 64, 12, 12)).astype(np.float32)
    for path, bound in (("winograd", 4.5), ("implicit_gemm", 2.5), ("im2col", 2.5)):
        for key, value in PATHS[path].items():
            monkeypatch.setenv(key, value)
        plan = fastconv.Conv2dPlan(w, padding=1)
        assert plan.prepared_bytes == 0  # nothing before the first call
        y = plan(x)
        after_forward = plan.prepared_bytes
        assert after_forward <= bound * w.nbytes, path
        plan(x)
        assert plan.prepared_bytes == after_forward, path
        plan.backward(y, x)
        after_backward = plan.prepared_bytes
        plan.backward(y, x)
        assert plan.prepared_bytes == after_backward, path
        assert after_backward <= after_forward + 2 * bound * w.nbytes, path


@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
def test_plan_fused_epilogues_match_torch(unbatched, rng):
    """residual, relu and relu_cap (ReLU6) written with the output, against torch computing them after it."""
    x = rng.standard_normal((2, 16, 8, 8)).astype(np.float32)
    w = (rng.standard_normal((16, 16, 3, 3)) / 12).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    r = rng.standard_normal((2, 16, 8, 8)).astype(np.float32) * 3
    plan = fastconv.Conv2dPlan(w, b, padding=1)
    ref = F.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), padding=1)
    if unbatched:
        x, r, ref = x[0], r[0], ref[0]
    torch.testing.assert_close(plan(x, residual=r), (ref + torch.tensor(r)).numpy(), **tols(np.float32))
    torch.testing.assert_close(plan(x, residual=r, relu=True), F.relu(ref + torch.tensor(r)).numpy(),
                               **tols(np.float32))  # fmt: skip
    torch.testing.assert_close(plan(x, relu=True, relu_cap=6), F.relu6(ref).numpy(), **tols(np.float32))
    torch.testing.assert_close(plan(x, relu=True, relu_cap=0.5), ref.clamp(0, 0.5).numpy(), **tols(np.float32))


def test_plan_from_several_python_threads(rng):
    """Python threads sharing one plan, each on its own input shape, all from the first call (the forms are made
    under the plan's lock by whichever call needs them first)."""
    w = (rng.standard_normal((48, 32, 3, 3)) / 17).astype(np.float32)
    plan = fastconv.Conv2dPlan(w, padding=1)
    inputs = [rng.standard_normal((1 + i % 3, 32, 4 + 3 * i, 5 + 2 * i)).astype(np.float32) for i in range(6)]
    refs = [F.conv2d(torch.tensor(x), torch.tensor(w), padding=1).numpy() for x in inputs]
    results, errors = [None] * len(inputs), []
    barrier = threading.Barrier(len(inputs))

    def run(i):
        try:
            barrier.wait()
            for _ in range(3):
                results[i] = plan(inputs[i])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)
    for got, ref in zip(results, refs):
        torch.testing.assert_close(got, ref, **tols(np.float32))


@pytest.mark.parametrize("warm", [False, True], ids=["first_call", "after_a_call"])
def test_plan_refuses_bad_input(warm, rng):
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    plan = fastconv.Conv2dPlan(w, padding=1)
    x = rng.standard_normal((1, 3, 5, 5)).astype(np.float32)
    if warm:  # the input size is known: calls like it take the plan's quick checks
        plan(x)
        with pytest.raises(ValueError, match="relu_cap must be positive, got -1.0"):
            plan(x, relu=True, relu_cap=-1.0)
        with pytest.raises(ValueError, match="relu_cap must be positive, got nan"):
            plan(x, relu=True, relu_cap=float("nan"))
        with pytest.raises(ValueError, match="relu_cap needs relu=True"):
            plan(x, relu_cap=6.0)
        with pytest.raises(ValueError, match="residual"):
            plan(x, residual=np.zeros((2, 4, 5, 5), np.float32))
    with pytest.raises(TypeError, match="input must be float32 like the plan's weights, got dtype float64"):
        plan(x.astype(np.float64))
    with pytest.raises(ValueError, match=r"4 channels|channels.*4"):
        plan(rng.standard_normal((1, 4, 5, 5)).astype(np.float32))
    with pytest.raises(ValueError, match="input"):
        plan(x[0, 0])
    with pytest.raises(ValueError, match="relu_cap needs relu=True"):
        plan(x, relu_cap=6)
    with pytest.raises(ValueError, match="relu_cap must be positive, got -1"):
        plan(x, relu=True, relu_cap=-1)
    with pytest.raises(TypeError, match="relu_cap must be a number, got str"):
        plan(x, relu=True, relu_cap="6")
    with pytest.raises(TypeError, match="residual must be float32"):
        plan(x, residual=np.zeros((1, 4, 5, 5)))
    with pytest.raises(ValueError, match="residual"):
        plan(x, residual=np.zeros((1, 4, 4, 4), np.float32))
    with pytest.raises(ValueError, match="bias must have shape"):
        fastconv.Conv2dPlan(w, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="stride"):
        fastconv.Conv2dPlan(w, stride=0)
    with pytest.raises(ValueError, match="padding"):
        fastconv.Conv2dPlan(w, padding="middle")
    with pytest.raises(ValueError, match="weight"):
        fastconv.Conv2dPlan(w[0])
    with pytest.raises(TypeError, match="weight"):
        fastconv.Conv2dPlan(w.astype(np.int32))
    with pytest.raises(ValueError, match="output_mask"):
        plan.backward(np.ones((1, 4, 5, 5), np.float32), x, output_mask=(True,))
    with pytest.raises(ValueError, match="input"):
        plan(rng.standard_normal((1, 3, 1, 1)).astype(np.float32)[..., :0])


# Layers whose columns are fewer than the threads' tiles: the im2col forward cuts the output channels into blocks
# (one per thread, at least 32 channels each) instead of the columns.  Pointwise at batch 1, pointwise over two
# images (a tile spanning images, written through a buffer), a strided 1x1 and a strided 3x3 (columns copied),
# grouped, and channel counts that leave a short last block; bias, ReLU and a residual applied per block.
CHANNEL_BLOCKS = [
    ("pointwise_b1", 1, 40, 7, 7, 200, 1, 1, 0, 1, 1),
    ("pointwise_two_images", 2, 24, 5, 5, 97, 1, 1, 0, 1, 1),
    ("1x1_stride2", 1, 48, 14, 14, 130, 1, 2, 0, 1, 1),
    ("3x3_stride2", 1, 16, 8, 8, 160, 3, 2, 1, 1, 1),
    ("pointwise_grouped", 1, 64, 4, 4, 192, 1, 1, 0, 1, 2),
]


@pytest.mark.parametrize("threads", [1, 3, 8, 64], ids=lambda t: f"{t}threads")
@pytest.mark.parametrize("case", CHANNEL_BLOCKS, ids=[c[0] for c in CHANNEL_BLOCKS])
def test_channel_blocks_of_the_im2col_forward(case, threads, level):  # noqa: F811
    rng = np.random.default_rng(7)
    x, w, b = layer_arrays(case, np.float32, rng)
    stride, padding, dilation, groups = case[7:11]
    old = fastconv.get_num_threads()
    env = {"FASTCONV_WINOGRAD": "0", "FASTCONV_IMPLICIT_GEMM": "0"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        fastconv.set_num_threads(threads)
        plan = make_plan(w, b, case)
        ref = F.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), stride, padding, dilation, groups).numpy()
        r = rng.standard_normal(ref.shape).astype(np.float32)
        assert plan.explain(x.shape, mode="dicts")["forward"]["algorithm"] == "im2col_gemm"
        torch.testing.assert_close(plan(x), ref, **tols(np.float32))
        torch.testing.assert_close(plan(x, residual=r, relu=True), np.maximum(ref + r, 0), **tols(np.float32))
        y = fastconv.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups, relu=True)
        torch.testing.assert_close(y, np.maximum(ref, 0), **tols(np.float32))
    finally:
        fastconv.set_num_threads(old)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# (id, N, C_in, H, W, C_out, kernel, stride, padding, dilation, groups): image stems, reductions of at most 32
# (gemm_small_k's) over output rows of 64 and more, which a plan runs on the implicit GEMM.
WIDE_STEMS = [
    ("3x3_stride2_odd_width", 2, 3, 131, 129, 16, 3, 2, 1, 1, 1),
    ("3x3_stride1_bias", 1, 3, 20, 70, 24, 3, 1, 1, 1, 1),
    ("2x2_stride1_8ch", 1, 8, 9, 67, 8, 2, 1, 0, 1, 1),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("threads", [1, 3, 8, 64], ids=lambda t: f"{t}threads")
@pytest.mark.parametrize("case", WIDE_STEMS, ids=[c[0] for c in WIDE_STEMS])
def test_wide_stems_of_a_plan_run_in_place(case, threads, dtype, level):  # noqa: F811
    rng = np.random.default_rng(11)
    x, w, b = layer_arrays(case, dtype, rng)
    stride, padding, dilation, groups = case[7:11]
    old = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(threads)
        plan = make_plan(w, b, case)
        assert plan.explain(x.shape, mode="dicts")["forward"]["algorithm"] == "implicit_gemm"
        # The stateless conv2d keeps im2col (its weights would be packed per call), and so does a narrow map.
        assert (
            fastconv.explain_conv2d(x.shape, w.shape, stride, padding, dilation, groups, mode="dicts")["forward"][
                "algorithm"
            ]
            == "im2col_gemm"
        )
        if w.shape[0] > 16:  # (few output channels take the implicit GEMM on narrow rows too)
            narrow = (1, x.shape[1], 12, 12)
            assert plan.explain(narrow, mode="dicts")["forward"]["algorithm"] == "im2col_gemm"
        ref = F.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), stride, padding, dilation, groups).numpy()
        r = rng.standard_normal(ref.shape).astype(dtype)
        for _ in range(2):  # the second call meets the packed panels
            torch.testing.assert_close(plan(x), ref, **tols(dtype))
        torch.testing.assert_close(plan(x, residual=r, relu=True), np.maximum(ref + r, 0), **tols(dtype))
        torch.testing.assert_close(plan(x, relu=True, relu_cap=0.5), np.clip(ref, 0, 0.5), **tols(dtype))
    finally:
        fastconv.set_num_threads(old)


def test_plan_quick_checks_give_the_full_checks_results(rng):
    """After a first call, inputs like it skip most checks: the results are those of any other form of the same
    input (Fortran order, a 3-D image, a strided view) and of the functional conv2d."""
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    plan = fastconv.Conv2dPlan(w, b, stride=2, padding="same")
    x = rng.standard_normal((1, 4, 9, 8)).astype(np.float32)
    r = rng.standard_normal((1, 6, 5, 4)).astype(np.float32)
    ref = fastconv.conv2d(x, w, b, stride=2, padding="same")
    first = plan(x, residual=r, relu=True, relu_cap=1.0)
    torch.testing.assert_close(first, np.clip(ref + r, 0, 1.0))
    for form in (x, np.asfortranarray(x), x[0], x[:, :, :, ::-1][:, :, :, ::-1]):
        y = plan(form, residual=r if np.ndim(form) == 4 else r[0], relu=True, relu_cap=1.0)
        torch.testing.assert_close(np.reshape(y, first.shape), first)
    torch.testing.assert_close(plan(x), ref)
    other = rng.standard_normal((2, 4, 12, 12)).astype(np.float32)  # another size: its own padding
    torch.testing.assert_close(plan(other), fastconv.conv2d(other, w, b, stride=2, padding="same"))


def test_plan_rules_for_long_strided_and_pointwise_layers(level, rng):  # noqa: F811
    """At the AVX-512 level a plan runs a strided layer with a long reduction on the implicit GEMM's channel tiles and
    a 1x1 layer on the packed tiles with its weights packed once; other levels, and the stateless conv2d, keep
    im2col with the BLAS GEMM.  Either way the result is torch's."""
    avx512 = level == "avx512"
    for shape, wshape, stride in (((1, 256, 14, 14), (96, 256, 3, 3), 2), ((1, 960, 7, 7), (80, 960, 1, 1), 1)):
        x = rng.standard_normal(shape).astype(np.float32)
        w = (rng.standard_normal(wshape) / np.sqrt(np.prod(wshape[1:]))).astype(np.float32)
        pad = wshape[2] // 2
        plan = fastconv.Conv2dPlan(w, stride=stride, padding=pad)
        forward = plan.explain(shape, mode="dicts")["forward"]
        stateless = fastconv.explain_conv2d(shape, wshape, stride, pad, mode="dicts")["forward"]
        assert stateless["algorithm"] == "im2col_gemm" and "packed once" not in stateless["reason"]
        if wshape[2] == 3 and avx512:
            assert forward["algorithm"] == "implicit_gemm", forward
        else:
            assert forward["algorithm"] == "im2col_gemm", forward
            assert ("packed once by the plan" in forward["reason"]) == avx512, forward
        ref = F.conv2d(torch.tensor(x), torch.tensor(w), None, stride, pad).numpy()
        for _ in range(2):
            torch.testing.assert_close(plan(x), ref, **tols(np.float32))


def test_plan_pointwise_vectors_by_positions(level, rng):  # noqa: F811
    """A plan's 1x1 layer on the packed tiles (AVX-512) puts the output channels in the vectors where the positions
    would leave a vector partly empty (49 positions in four 16-lane vectors) and the positions where they fill them
    (64); below AVX-512 the BLAS GEMM.  The results are torch's at 1, 2, 8 and 16 threads (the threads split positions
    or channel panels)."""
    avx512 = level == "avx512"
    for hw, vectors in (((7, 7), "channels"), ((8, 8), "positions"), ((5, 7), "channels"), ((14, 14), "positions")):
        shape = (1, 320, *hw)
        x = rng.standard_normal(shape).astype(np.float32)
        w = (rng.standard_normal((320, 320, 1, 1)) / np.sqrt(320)).astype(np.float32)
        b = rng.standard_normal(320).astype(np.float32)
        plan = fastconv.Conv2dPlan(w, b)
        reason = plan.explain(shape, mode="dicts")["forward"]["reason"]
        if avx512:
            assert f"output {vectors} in the vectors" in reason, reason
        else:
            assert "in the vectors" not in reason, reason
        ref = F.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b)).numpy()
        old = fastconv.get_num_threads()
        try:
            for threads in (1, 2, 8, 16):
                fastconv.set_num_threads(threads)
                torch.testing.assert_close(plan(x), ref, **tols(np.float32))
                torch.testing.assert_close(plan(x, relu=True), np.maximum(ref, 0), **tols(np.float32))
        finally:
            fastconv.set_num_threads(old)
