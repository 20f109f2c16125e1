"""The benchmark command runs, with and without torch, and its NumPy reference is right."""

import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F

from fastconv.bench import SHAPES, numpy_conv2d, numpy_conv2d_backward, workspace_memory


def test_bench_table_runs_with_torch():
    r = subprocess.run(
        [sys.executable, "-m", "fastconv", "bench", "--shapes", "tiny", "--repeats", "1", "--no-memory"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "tiny" in r.stdout and "geometric mean ratio" in r.stdout and "sgemm 2048^3" in r.stdout
    assert r.stdout.startswith("fastconv on ") and "gemm float32:" in r.stdout  # show_config first
    assert all(name in r.stdout for name in ("bilinear_2x_56", "nearest_2x_14", "bicubic_2x_28", "unpool_2x_28"))
    assert "geometric mean ratio (ONNX Runtime time / fastconv time)" in r.stdout  # the ONNX Runtime column
    row = next(line for line in r.stdout.splitlines() if line.startswith("tiny "))
    assert len(row.split("|")[0].split()) == 7, row  # name, GF/s, torch, ratio, ort, ratio, numpy


def test_onnx_runtime_peer_computes_the_same_convolution():
    """The ONNX model the bench builds is the convolution it claims (strided, padded, grouped)."""
    from fastconv.bench import ConvShape, _import_ort, ort_conv

    ort = _import_ort()
    assert ort is not None, "onnxruntime and onnx are test dependencies"
    shape = ConvShape("check", 2, 6, 11, 4, 3, 2, 1, 2)
    x, w, _ = shape.arrays()
    ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=2, padding=1, groups=2).numpy()
    np.testing.assert_allclose(ort_conv(ort, shape, x, w, 2)()[0], ref, rtol=1e-5, atol=1e-5)


def test_bench_table_says_when_torch_is_absent():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from fastconv.bench import run_table\n"
        "run_table(shapes='tiny', repeats=1, memory=False)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "torch is not installed" in r.stdout and "tiny" in r.stdout


def test_bench_table_says_when_onnx_runtime_is_absent():
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "from fastconv.bench import run_table\n"
        "run_table(shapes='tiny', repeats=1, memory=False, upsampling=False)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "ONNX Runtime: not installed" in r.stdout and "tiny" in r.stdout


def test_numpy_idiom_matches_torch():
    rng = np.random.default_rng(0)
    for s in SHAPES:
        if s.name not in ("tiny", "depthwise_112", "resnet_stem"):
            continue
        small = dict(n=1, size=min(s.size, 20))
        x = rng.standard_normal((small["n"], s.c_in, small["size"], small["size"]))
        w = rng.standard_normal((s.c_out, s.c_in // s.groups, s.kernel, s.kernel))
        xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
        y = F.conv2d(xt, wt, None, s.stride, s.padding, 1, s.groups)
        gy = rng.standard_normal(y.shape)
        y.backward(torch.tensor(gy))
        torch.testing.assert_close(numpy_conv2d(x, w, s.stride, s.padding, s.groups), y.detach().numpy())
        gx, gw, _ = numpy_conv2d_backward(gy, x, w, s.stride, s.padding, s.groups)
        torch.testing.assert_close(gx, xt.grad.numpy())
        torch.testing.assert_close(gw, wt.grad.numpy())


def test_workspace_does_not_grow_with_the_batch():
    fwd8, bwd8, _ = workspace_memory("resnet_3x3_56", 2)
    fwd32, bwd32, x32 = workspace_memory("resnet_3x3_56", 16)
    # a per-batch im2col buffer would be 9x the input (K = 9 * C_in rows per output pixel)
    assert fwd32 < x32 and bwd32 < 2 * x32
    assert fwd32 < 1.5 * fwd8 + (1 << 20) and bwd32 < 1.5 * bwd8 + (1 << 20)
