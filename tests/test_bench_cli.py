"""The benchmark command runs, with and without torch, and its NumPy reference is right."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
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


def _capability_after_mask(mask: bool) -> subprocess.CompletedProcess:
    """torch's CPU capability (its own CPUID reading, at import) in a fresh process, with or without the mask."""
    code = (
        "from fastconv import _bench_native\n"
        f"masked = _bench_native.mask_avx512_cpuid(True) if {mask} else False\n"
        "import torch\n"
        "print(masked, torch.backends.cpu.get_cpu_capability())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "FASTCONV_CPU")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)


def test_cpuid_mask_hides_avx512_from_a_peer():
    """ONNX Runtime's cap (fastconv.bench.start_ort) works by CPUID faulting; torch, imported under the mask,
    reads the CPU the same way and must then see an AVX2 CPU."""
    from fastconv import _core

    if _core.cpu_level() != "avx512":
        pytest.skip(f"nothing to mask: this CPU runs up to {_core.cpu_level()}")
    plain = _capability_after_mask(False)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.split() == ["False", "AVX512"], plain.stdout
    r = _capability_after_mask(True)
    assert r.returncode == 0, r.stderr
    if r.stdout.split()[0] == "False":
        pytest.skip("this CPU or kernel has no CPUID faulting (arch_prctl ARCH_SET_CPUID)")
    assert r.stdout.split() == ["True", "AVX2"], r.stdout


def test_cpuid_mask_leaves_real_segfaults_to_the_previous_handler():
    """A real fault after the mask still reaches faulthandler (installed first), which prints and re-raises."""
    code = (
        "import ctypes, faulthandler, sys\n"
        "faulthandler.enable()\n"
        "from fastconv import _bench_native\n"
        "_bench_native.mask_avx512_cpuid(True)\n"
        "print('masked', flush=True)\n"
        "ctypes.string_at(0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    # Killed by the signal; under AddressSanitizer, whose handler faulthandler chains to, an exit code of 1.
    assert r.returncode in (-signal.SIGSEGV, 1), (r.returncode, r.stderr)
    assert "masked" in r.stdout and "Segmentation fault" in r.stderr, r.stderr


def test_bench_says_how_onnx_runtime_was_started():
    from fastconv import _core

    if _core.cpu_level() not in ("avx2", "avx512"):
        pytest.skip(f"FASTCONV_CPU=avx2 needs an AVX2 CPU, this one runs up to {_core.cpu_level()}")
    code = (
        "from fastconv.bench import run_table\n"
        "run_table(shapes='tiny', repeats=1, memory=False, upsampling=False, rounds=1)"
    )
    env = {**os.environ, "FASTCONV_CPU": "avx2"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    if _core.cpu_level() == "avx512":
        assert "ONNX Runtime" in r.stdout and ("reporting no AVX-512" in r.stdout or "could not be capped" in r.stdout)
    else:
        assert "the CPU's own kernels" in r.stdout


_ORT_BLOCK = """
import sys
import numpy as np
from fastconv import _bench_native
masked = _bench_native.mask_avx512_cpuid(True) if sys.argv[1] == "1" else False
import onnx, onnxruntime
from onnx import helper, numpy_helper
node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
graph = helper.make_graph(
    [node], "g", [helper.make_tensor_value_info("x", 1, [1, 24, 8, 8])], [helper.make_tensor_value_info("y", 1, None)],
    initializer=[numpy_helper.from_array(np.ones((24, 24, 3, 3), np.float32), "w")],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
so = onnxruntime.SessionOptions()
so.optimized_model_filepath = sys.argv[2]
onnxruntime.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
print(masked, *onnx.load(sys.argv[2]).graph.initializer[0].dims)
"""


def test_onnx_runtime_started_under_the_mask_picks_avx2_blocks(tmp_path):
    """ONNX Runtime's blocked (NCHWc) convolutions use 16-channel blocks with AVX-512 and 8 with AVX2: its optimised
    graph pads a 24-channel weight to 32 channels only when it saw AVX-512."""
    from fastconv import _core

    if _core.cpu_level() != "avx512":
        pytest.skip(f"nothing to mask: this CPU runs up to {_core.cpu_level()}")
    out = {}
    for mask in ("0", "1"):
        r = subprocess.run(
            [sys.executable, "-c", _ORT_BLOCK, mask, str(tmp_path / f"opt{mask}.onnx")],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr
        out[mask] = r.stdout.split()
    assert out["0"] == ["False", "32", "32", "3", "3"], out
    if out["1"][0] == "False":
        pytest.skip("this CPU or kernel has no CPUID faulting (arch_prctl ARCH_SET_CPUID)")
    assert out["1"] == ["True", "24", "24", "3", "3"], out


def test_bench_network_runs_every_layer_against_both_peers():
    r = subprocess.run(
        [sys.executable, "-m", "fastconv", "bench", "--network", "vgg_cifar", "--batch", "1", "--repeats", "1",
         "--rounds", "1", "--forward-only"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "conv 3x3 512->512 @2" in r.stdout
    assert "vgg_cifar batch 1: every conv layer once each, geometric mean ratio" in r.stdout
    assert "vs ONNX Runtime" in r.stdout and "total conv forward time" in r.stdout


@pytest.mark.parametrize(
    "args, message",
    [(["--network", "nope"], "--network: unknown network(s) ['nope']"),
     (["--network", "vgg_cifar", "--batch", "1,x"], "--batch must be a comma-separated list of ints, got '1,x'"),
     (["--network", "vgg_cifar", "--batch", "0"], "--batch values must be in [1, 4096], got '0'"),
     (["--models", "--batch", "1,8"], "--models takes one --batch")],
    ids=["unknown_network", "bad_batch", "zero_batch", "models_two_batches"],
)  # fmt: skip
def test_bench_refuses_bad_network_arguments(args, message):
    r = subprocess.run([sys.executable, "-m", "fastconv", "bench", *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_whole_model_inference_agrees_with_both_peers():
    """One entry of `fastconv bench --models`' inference table: the frozen model's output against torch's and
    ONNX Runtime's on the same image (the gaps the table prints), and all three timed."""
    import torch

    from fastconv import bench

    ort = bench._import_ort()
    if ort is None:
        pytest.skip("onnxruntime is not installed")
    result = bench.measure_inference(torch, ort, "resnet8", 1, repeats=1, rounds=1)
    assert result["gap_torch"] < 1e-4 and result["gap_ort"] < 1e-4, result
    assert all(result[k] > 0 for k in ("fastconv", "torch", "ort")), result


def test_bench_json_and_plot(tmp_path):
    """--json records every figure with the CPU, level and versions; --plot draws it; --from-json redraws it."""
    import json

    js, png, png2 = tmp_path / "run.json", tmp_path / "run.png", tmp_path / "again.png"
    r = subprocess.run(
        [sys.executable, "-m", "fastconv", "bench", "--shapes", "tiny", "--repeats", "1", "--rounds", "1",
         "--no-memory", "--no-numpy", "--no-upsampling", "--json", str(js), "--plot", str(png)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    rec = json.loads(js.read_text())
    assert rec["format"] == "fastconv.bench" and rec["machine"]["level"] and rec["versions"]["numpy"]
    assert rec["versions"]["torch"] == torch.__version__
    (row,) = rec["shapes"]
    assert row["name"] == "tiny" and row["seconds"]["fastconv_fwd"] > 0 and row["seconds"]["torch_fwd"] > 0
    ratio = row["seconds"]["torch_fwd"] / row["seconds"]["fastconv_fwd"]
    assert abs(rec["geometric_mean"]["torch_forward"] - ratio) < 1e-9  # one shape: its own ratio
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = subprocess.run([sys.executable, "-m", "fastconv", "bench", "--from-json", str(js), "--plot", str(png2)],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0 and png2.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", r.stderr


@pytest.mark.parametrize(
    "args, message",
    [(["--json", "/nonexistent/dir/x.json"], "--json: folder '/nonexistent/dir' does not exist"),
     (["--from-json", "x.json"], "--from-json only goes with --plot FILE"),
     (["--network", "vgg_cifar", "--json", "x.json"], "not with --network or --models"),
     (["--from-json", "/nonexistent.json", "--plot", "x.png"], "--from-json: cannot read '/nonexistent.json'")],
    ids=["missing_folder", "from_json_alone", "network_json", "unreadable_json"],
)  # fmt: skip
def test_bench_refuses_bad_outputs(args, message, tmp_path):
    r = subprocess.run([sys.executable, "-m", "fastconv", "bench", *args], capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_bench_plot_without_matplotlib(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None; from fastconv.cli import main; "
            f"sys.exit(main(['bench', '--plot', {str(tmp_path / 'x.png')!r}]))")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--plot needs matplotlib: pip install matplotlib" in r.stderr, r.stderr


@pytest.mark.parametrize("ratio", [0.5, 1.0, 12.345, 999.99, 1602.48, 123456.0, 1e9])
def test_bench_ratio_cells_stay_apart(ratio):
    """A ratio cell starts with a space and keeps its width while the value fits, however large (a peer stalled on a
    loaded machine gave 1602.48, which ran into the next column), and reads back as the ratio it shows."""
    from fastconv.bench import ratio_cell

    cell = ratio_cell(ratio)
    assert cell.startswith(" ") and len(cell) >= 7, repr(cell)
    assert len(cell) == 7 or ratio >= 1e6, repr(cell)
    assert abs(float(cell) - ratio) <= 0.5 + 1e-9 * ratio
