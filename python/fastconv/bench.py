"""Benchmark shapes and the ``fastconv bench`` table: fastconv vs torch vs NumPy.

Both libraries run at the same thread count; torch is optional (the table says
so when it is absent).  The NumPy reference is the common idiom
``sliding_window_view`` + ``tensordot``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import _core
from . import functional as F
from ._config import show_config
from ._threads import get_num_threads, set_num_threads


@dataclass(frozen=True)
class ConvShape:
    name: str
    n: int
    c_in: int
    size: int
    c_out: int
    kernel: int
    stride: int
    padding: int
    groups: int

    @property
    def out_size(self) -> int:
        return (self.size + 2 * self.padding - self.kernel) // self.stride + 1

    @property
    def flops(self) -> float:
        """Forward FLOPs (2 per MAC); backward (input + weight gradients) is twice that."""
        return 2.0 * self.n * self.c_out * self.out_size**2 * (self.c_in // self.groups) * self.kernel**2

    def arrays(self, dtype=np.float32, seed=0):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((self.n, self.c_in, self.size, self.size)).astype(dtype)
        w = rng.standard_normal((self.c_out, self.c_in // self.groups, self.kernel, self.kernel)).astype(dtype)
        w *= 1 / math.sqrt(w[0].size)
        gy = rng.standard_normal((self.n, self.c_out, self.out_size, self.out_size)).astype(dtype)
        return x, w, gy

    def geometry(self):
        return dict(stride=self.stride, padding=self.padding, groups=self.groups)


SHAPES = [
    ConvShape("resnet_stem", 8, 3, 224, 64, 7, 2, 3, 1),
    ConvShape("resnet_3x3_56", 8, 64, 56, 64, 3, 1, 1, 1),
    ConvShape("resnet_1x1_56", 8, 256, 56, 64, 1, 1, 0, 1),
    ConvShape("resnet_3x3_28", 8, 128, 28, 128, 3, 1, 1, 1),
    ConvShape("resnet_3x3_14", 8, 256, 14, 256, 3, 1, 1, 1),
    ConvShape("resnet_3x3_7", 8, 512, 7, 512, 3, 1, 1, 1),
    ConvShape("depthwise_112", 8, 32, 112, 32, 3, 1, 1, 32),
    ConvShape("mnist_3x3", 64, 1, 28, 32, 3, 1, 0, 1),
    ConvShape("tiny", 1, 3, 32, 64, 3, 1, 0, 1),
]
SHAPES_BY_NAME = {s.name: s for s in SHAPES}


# -- the NumPy idiom ---------------------------------------------------------------


def numpy_conv2d(x, w, stride=1, padding=0, groups=1):
    """Forward conv with sliding_window_view + tensordot, one tensordot per group."""
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    k = w.shape[-1]
    win = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]  # N C OH OW k k
    cg, og = x.shape[1] // groups, w.shape[0] // groups
    outs = []
    for g in range(groups):
        y = np.tensordot(win[:, g * cg : (g + 1) * cg], w[g * og : (g + 1) * og], axes=([1, 4, 5], [1, 2, 3]))
        outs.append(y)  # N OH OW og
    return np.ascontiguousarray(np.concatenate(outs, axis=3).transpose(0, 3, 1, 2))


def numpy_conv2d_backward(gy, x, w, stride=1, padding=0, groups=1):
    """Input and weight gradients in the same idiom: a full correlation and a tensordot."""
    n, c, h, wd = x.shape
    k = w.shape[-1]
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    win = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    cg, og = c // groups, w.shape[0] // groups
    gw = np.concatenate(
        [
            np.tensordot(gy[:, g * og : (g + 1) * og], win[:, g * cg : (g + 1) * cg], axes=([0, 2, 3], [0, 2, 3]))
            for g in range(groups)
        ]
    )
    # grad_input: dilate gy by the stride, pad by k-1, correlate with the flipped, transposed kernel
    oh = gy.shape[2]
    dil = np.zeros((n, gy.shape[1], (oh - 1) * stride + 1, (oh - 1) * stride + 1), gy.dtype)
    dil[:, :, ::stride, ::stride] = gy
    full_h = h + 2 * padding
    extra = full_h - ((oh - 1) * stride + k)  # rows the forward never reached
    dil = np.pad(dil, ((0, 0), (0, 0), (k - 1, k - 1 + extra), (k - 1, k - 1 + extra)))
    wt = np.concatenate([w[g * og : (g + 1) * og].transpose(1, 0, 2, 3) for g in range(groups)])[:, :, ::-1, ::-1]
    # wt: (c, og, k, k) grouped back to conv layout with groups
    gxp = numpy_conv2d(dil, np.ascontiguousarray(wt.reshape(c, og, k, k)), 1, 0, groups)
    gx = gxp[:, :, padding : padding + h, padding : padding + wd]
    return np.ascontiguousarray(gx), gw, gy.sum(axis=(0, 2, 3))


# -- timing -------------------------------------------------------------------------


def best_time(fn, repeats: int, warmup: float = 0.2, min_calls: int = 3) -> float:
    """Best wall time of `repeats` runs, after at least `warmup` seconds (and 3 calls) of warm-up.

    The minimum, not the median: on a shared 2-core machine other tenants only
    ever add time, and both libraries are measured the same way.  The warm-up is
    timed, not counted: short calls must run long enough for the cores to clock
    up after idling, and for glibc to settle its mmap threshold so fresh output
    arrays stop faulting in new pages.
    """
    start, calls = time.perf_counter(), 0
    while calls < min_calls or time.perf_counter() - start < warmup:
        fn()
        calls += 1
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def settle(seconds=0.3):
    """Let other runtimes' worker threads stop spinning before a timing starts.

    torch's OpenMP threads and NumPy's OpenBLAS threads busy-wait for a while
    after each call; timed straight after them, anything else on a 2-core
    machine runs at a fraction of its speed (fastconv's tiny shape: 160 us
    instead of 40 us).
    """
    time.sleep(seconds)


def take_turns(res: dict, timed, repeats: int, rounds: int) -> None:
    """res[key] = best time of fn over `rounds` rounds in which every (key, fn) of `timed` runs once in
    turn (best of `repeats`, after `settle()`): this machine's speed drifts by a third over seconds
    (other tenants), and timed one after another a library that happened to run in a slow phase lost up
    to 2x."""
    for _ in range(max(1, rounds)):
        for key, fn in timed:
            settle()
            t = best_time(fn, repeats)
            res[key] = min(t, res.get(key, t))


def measure(
    shape: ConvShape, repeats=5, dtype=np.float32, backward=True, numpy=True, torch_mod=None, ort=None, rounds=3
):
    """Seconds per call: fastconv and torch forward (and fwd+bwd), ONNX Runtime forward, NumPy idiom.

    The libraries take turns (`take_turns`); the slow NumPy idiom runs once.
    """
    x, w, gy = shape.arrays(dtype)
    geom = shape.geometry()
    timed = [("fastconv_fwd", lambda: F.conv2d(x, w, **geom))]
    if backward:
        timed.append(("fastconv_fwdbwd", lambda: (F.conv2d(x, w, **geom), F.conv2d_backward(gy, x, w, **geom))))
    if torch_mod is not None:
        tf = torch_mod.nn.functional
        xt, wt, gyt = (torch_mod.from_numpy(a) for a in (x, w, gy))

        def torch_fwd():
            with torch_mod.no_grad():
                return tf.conv2d(xt, wt, None, **geom)

        timed.append(("torch_fwd", torch_fwd))
        if backward:
            xg = xt.clone().requires_grad_(True)
            wg = wt.clone().requires_grad_(True)

            def torch_fb():
                y = tf.conv2d(xg, wg, None, **geom)
                y.backward(gyt)
                xg.grad = None
                wg.grad = None

            timed.append(("torch_fwdbwd", torch_fb))
    if ort is not None:
        run = ort_conv(ort, shape, x, w, get_num_threads())
        got = run()[0]  # the first run also plans the kernels
        tol = 1e-4 * max(1.0, float(np.abs(got).max()))
        if not np.allclose(got, F.conv2d(x, w, **geom), rtol=1e-4, atol=tol):  # same convolution, or no column
            raise RuntimeError(f"ONNX Runtime's {shape.name} result differs from fastconv's: the ONNX model is wrong")
        timed.append(("ort_fwd", run))
    res = {}
    take_turns(res, timed, repeats, rounds)
    if numpy:
        np_repeats = max(1, min(repeats, 2))
        settle()
        res["numpy_fwd"] = best_time(lambda: numpy_conv2d(x, w, **geom), np_repeats, min_calls=1)
        if backward:
            res["numpy_fwdbwd"] = best_time(
                lambda: (numpy_conv2d(x, w, **geom), numpy_conv2d_backward(gy, x, w, **geom)), np_repeats, min_calls=1
            )
    return res


def sgemm_gflops(n=2048, threads=2, repeats=3) -> float:
    """The machine's float32 GEMM rate through fastconv's own OpenBLAS."""
    return 2 * n**3 / _core.sgemm_seconds(n, threads, repeats) / 1e9


_MEMORY_CHILD = """
import dataclasses, sys
import numpy as np, fastconv
from fastconv.bench import SHAPES_BY_NAME

def status(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(key))

def reset_peak():  # Linux: writing 5 resets VmHWM to the current RSS
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    return status("VmRSS:")

s = dataclasses.replace(SHAPES_BY_NAME[sys.argv[1]], n=int(sys.argv[2]))
rng = np.random.default_rng(0)
x = rng.standard_normal((s.n, s.c_in, s.size, s.size), dtype=np.float32)
w = rng.standard_normal((s.c_out, s.c_in // s.groups, s.kernel, s.kernel), dtype=np.float32)
gy = rng.standard_normal((s.n, s.c_out, s.out_size, s.out_size), dtype=np.float32)
fastconv.set_num_threads(int(sys.argv[3]))
base = reset_peak()
y = fastconv.conv2d(x, w, **s.geometry())
fwd = status("VmHWM:") - base - y.nbytes
del y
fastconv.empty_cache()  # else gx would reuse y's kept block and hide its own size
base = reset_peak()
gx, gw, gb = fastconv.conv2d_backward(gy, x, w, **s.geometry())
bwd = status("VmHWM:") - base - gx.nbytes - gw.nbytes - gb.nbytes
print(max(fwd, 0), max(bwd, 0), x.nbytes)
"""


def workspace_memory(name="resnet_3x3_56", n=8, threads=2) -> tuple[int, int, int]:
    """Peak bytes beyond inputs and outputs for forward and backward, measured in a fresh process (Linux).

    Returns ``(forward_extra, backward_extra, input_bytes)``.
    """
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, name, str(n), str(threads)], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[0]), int(out[1]), int(out[2])


def _import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _import_ort():
    """ONNX Runtime and onnx, the optional forward peer; None when either is missing."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime, onnx


def ort_cap_wanted() -> bool:
    """Whether fastconv runs capped to avx2 on an AVX-512 CPU (``FASTCONV_CPU=avx2``), so that ONNX Runtime, which
    has no switch of its own, should be started on a CPU that reports no AVX-512 too."""
    return _core.active_level() == "avx2" and _core.cpu_level() == "avx512"


def start_ort(cap_avx512: bool):
    """``(onnxruntime, onnx)`` or None, and a note on the ISA it runs at.

    With ``cap_avx512``, ONNX Runtime is imported and runs a first session while CPUID reports no AVX-512 (Linux
    CPUID faulting, ``fastconv._bench_native``): it reads the CPU's features then, so it picks the AVX2 kernels an
    AVX2 CPU gets, as torch does under ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``.
    """
    if not cap_avx512:
        ort = _import_ort()
        return ort, "" if ort is None else f"ONNX Runtime {ort[0].__version__}: the CPU's own kernels"
    from . import _bench_native

    masked = _bench_native.mask_avx512_cpuid(True)
    try:
        ort = _import_ort()
        if ort is not None:  # a first session and run: where ONNX Runtime reads the CPU's features at the latest
            first = ConvShape("start", 1, 16, 8, 16, 3, 1, 1, 1)
            ort_conv(ort, first, *first.arrays()[:2], get_num_threads())()
    finally:
        if masked:
            _bench_native.mask_avx512_cpuid(False)
    if ort is None:
        return None, ""
    if not masked:
        return ort, f"ONNX Runtime {ort[0].__version__}: could not be capped (no CPUID faulting here), runs AVX-512"
    return ort, f"ONNX Runtime {ort[0].__version__}: started on a CPU reporting no AVX-512 (AVX2 kernels, as fastconv)"


def ort_conv(ort, shape: ConvShape, x, w, threads: int):
    """A one-node ONNX Conv model of `shape` run by ONNX Runtime (CPU provider, `threads` intra-op
    threads, one inter-op thread, all graph optimisations); returns the forward call."""
    onnxruntime, onnx = ort
    from onnx import helper, numpy_helper

    elem = helper.np_dtype_to_tensor_dtype(x.dtype)
    p, s, k = shape.padding, shape.stride, shape.kernel
    node = helper.make_node(
        "Conv", ["x", "w"], ["y"], kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p], group=shape.groups
    )
    graph = helper.make_graph(
        [node],
        shape.name,
        [helper.make_tensor_value_info("x", elem, list(x.shape))],
        [helper.make_tensor_value_info("y", elem, None)],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every ONNX Runtime since 1.10 reads
    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = onnxruntime.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, {"x": x})


# -- every distinct convolution of a network ------------------------------------------


@dataclass(frozen=True)
class LayerCase:
    """One distinct convolution of a network (``fastconv bench --network``): its geometry at a batch size."""

    name: str  # the first such layer's path in the model
    count: int  # layers of the network with this geometry and input size
    n: int
    c_in: int
    h: int
    w: int
    c_out: int
    kernel: tuple
    stride: tuple
    padding: tuple  # (top, bottom, left, right)
    dilation: tuple
    groups: int
    bias: bool
    transposed: bool = False
    output_padding: tuple = (0, 0)

    @property
    def label(self) -> str:
        kh, kw = self.kernel
        kind = "convT" if self.transposed else ("dw" if self.groups == self.c_in == self.c_out > 1 else "conv")
        s = f"/{self.stride[0]}" if self.stride != (1, 1) else ""
        g = f" g{self.groups}" if self.groups > 1 and kind != "dw" else ""
        return f"{kind} {kh}x{kw}{s} {self.c_in}->{self.c_out}{g} @{self.h}"

    def out_hw(self):
        from . import shapes

        if self.transposed:
            return shapes.conv_transpose_output_size(
                (self.h, self.w), self.kernel, self.stride, self.padding[::2], self.output_padding, self.dilation
            )
        return shapes.conv_output_size(
            (self.h, self.w),
            self.kernel,
            self.stride,
            (self.padding[2], self.padding[3], self.padding[0], self.padding[1]),
            self.dilation,
        )

    @property
    def flops(self) -> float:
        oh, ow = self.out_hw()
        kh, kw = self.kernel
        if self.transposed:
            return 2.0 * self.n * self.h * self.w * self.c_in * (self.c_out // self.groups) * kh * kw
        return 2.0 * self.n * oh * ow * self.c_out * (self.c_in // self.groups) * kh * kw

    def arrays(self, dtype=np.float32, seed=0):
        rng = np.random.default_rng(seed)
        kh, kw = self.kernel
        x = rng.standard_normal((self.n, self.c_in, self.h, self.w)).astype(dtype)
        if self.transposed:
            wshape = (self.c_in, self.c_out // self.groups, kh, kw)
        else:
            wshape = (self.c_out, self.c_in // self.groups, kh, kw)
        w = (rng.standard_normal(wshape) / math.sqrt(np.prod(wshape[1:]))).astype(dtype)
        b = rng.standard_normal(self.c_out).astype(dtype) if self.bias else None
        gy = rng.standard_normal((self.n, self.c_out, *self.out_hw())).astype(dtype)
        return x, w, b, gy


def network_layers(name: str, batch: int) -> list:
    """Every distinct convolution of network `name` (:data:`fastconv.models.NETWORKS`) at `batch` images, generated
    from the architecture by :func:`fastconv.models.conv_layers`."""
    from . import layers as L
    from . import models

    if name not in models.NETWORKS:
        raise ValueError(f"--network: unknown network {name!r}; known: {', '.join(models.NETWORKS)}")
    builder, shape = models.NETWORKS[name]
    cases = []
    for path, layer, (c, h, w), count in models.conv_layers(builder(), shape):
        transposed = isinstance(layer, L.ConvTranspose2d)
        if transposed:
            ph, pw = layer.padding
            pads, opad = (ph, ph, pw, pw), layer.output_padding
        else:
            (pt, pb), (pl, pr) = layer.pads((h, w))
            pads, opad = (pt, pb, pl, pr), (0, 0)
        cases.append(
            LayerCase(
                path,
                count,
                batch,
                c,
                h,
                w,
                layer.out_channels,
                layer.kernel_size,
                layer.stride,
                pads,
                layer.dilation,
                layer.groups,
                layer.bias,
                transposed,
                opad,
            )
        )
    return cases


def ort_layer(ort, case: LayerCase, x, w, b, threads: int):
    """A one-node ONNX Conv or ConvTranspose model of `case` run by ONNX Runtime (as :func:`ort_conv`)."""
    onnxruntime, onnx = ort
    from onnx import helper, numpy_helper

    elem = helper.np_dtype_to_tensor_dtype(x.dtype)
    pt, pb, pl, pr = case.padding
    attrs = dict(
        kernel_shape=list(case.kernel),
        strides=list(case.stride),
        pads=[pt, pl, pb, pr],
        dilations=list(case.dilation),
        group=case.groups,
    )
    if case.transposed:
        attrs["output_padding"] = list(case.output_padding)
    inits = [numpy_helper.from_array(w, "w")] + ([numpy_helper.from_array(b, "b")] if b is not None else [])
    node = helper.make_node(
        "ConvTranspose" if case.transposed else "Conv", ["x", "w"] + (["b"] if b is not None else []), ["y"], **attrs
    )
    graph = helper.make_graph(
        [node],
        "layer",
        [helper.make_tensor_value_info("x", elem, list(x.shape))],
        [helper.make_tensor_value_info("y", elem, None)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return ort_session(onnxruntime, model.SerializeToString(), threads, {"x": x})


def ort_session(onnxruntime, model_bytes: bytes, threads: int, feeds: dict):
    """An ONNX Runtime CPU session of a serialised model (`threads` intra-op threads, one inter-op thread, every graph
    optimisation); returns the call that runs it on `feeds`."""
    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = onnxruntime.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, feeds)


def measure_layer(case: LayerCase, repeats=5, rounds=3, torch_mod=None, ort=None, backward=True) -> dict:
    """Seconds per call of one network layer: fastconv (a :class:`fastconv.Conv2dPlan`, as a frozen model runs it;
    :func:`fastconv.conv_transpose2d` for transposed layers) forward and forward+backward, torch forward and
    forward+backward, ONNX Runtime forward; the libraries take turns (`take_turns`)."""
    from .plan import Conv2dPlan

    x, w, b, gy = case.arrays()
    pt, pb, pl, pr = case.padding
    if case.transposed:
        opts = dict(
            stride=case.stride,
            padding=(pt, pl),
            output_padding=case.output_padding,
            groups=case.groups,
            dilation=case.dilation,
        )
        fwd = lambda: F.conv_transpose2d(x, w, b, **opts)  # noqa: E731
        fb = lambda: (fwd(), F.conv_transpose2d_backward(gy, x, w, **opts, output_mask=(True, True, b is not None)))  # noqa: E731
        ours = fwd()
    else:
        plan = Conv2dPlan(w, b, case.stride, (pl, pr, pt, pb), case.dilation, case.groups)
        fwd = lambda: plan(x)  # noqa: E731
        fb = lambda: (plan(x), plan.backward(gy, x))  # noqa: E731
        ours = fwd()
    timed = [("fastconv_fwd", fwd)]
    if backward:
        timed.append(("fastconv_fwdbwd", fb))
    if torch_mod is not None:
        tf = torch_mod.nn.functional
        xt, wt, gyt = (torch_mod.from_numpy(a) for a in (x, w, gy))
        bt = None if b is None else torch_mod.from_numpy(b)
        if pt != pb or pl != pr:
            raise ValueError(f"{case.label}: torch takes symmetric padding only, got {case.padding}")
        if case.transposed:
            topts = dict(
                stride=case.stride,
                padding=(pt, pl),
                output_padding=case.output_padding,
                groups=case.groups,
                dilation=case.dilation,
            )
            op = tf.conv_transpose2d
        else:
            topts = dict(stride=case.stride, padding=(pt, pl), dilation=case.dilation, groups=case.groups)
            op = tf.conv2d

        def torch_fwd():
            with torch_mod.no_grad():
                return op(xt, wt, bt, **topts)

        xg, wg = xt.clone().requires_grad_(True), wt.clone().requires_grad_(True)
        bg = None if bt is None else bt.clone().requires_grad_(True)

        def torch_fb():
            op(xg, wg, bg, **topts).backward(gyt)
            xg.grad = wg.grad = None
            if bg is not None:
                bg.grad = None

        ref = torch_fwd().numpy()
        tol = 1e-3 * max(1.0, float(np.abs(ref).max()))
        if not np.allclose(ours, ref, rtol=1e-3, atol=tol):
            raise RuntimeError(f"{case.label}: fastconv's result differs from torch's")
        timed.append(("torch_fwd", torch_fwd))
        if backward:
            timed.append(("torch_fwdbwd", torch_fb))
    if ort is not None:
        run = ort_layer(ort, case, x, w, b, get_num_threads())
        got = run()[0]
        tol = 1e-3 * max(1.0, float(np.abs(got).max()))
        if not np.allclose(got, ours, rtol=1e-3, atol=tol):
            raise RuntimeError(f"{case.label}: ONNX Runtime's result differs from fastconv's: the ONNX model is wrong")
        timed.append(("ort_fwd", run))
    res = {}
    take_turns(res, timed, repeats, rounds)
    return res


def geomean(values) -> float:
    values = list(values)
    return math.exp(sum(map(math.log, values)) / len(values)) if values else float("nan")


def network_table(
    name: str, batch: int, repeats=5, rounds=3, torch_mod=None, ort=None, backward=True, out=sys.stdout
) -> dict:
    """Print the per-layer table of one network at one batch size; returns its figures (for ``--json``)."""
    cases = network_layers(name, batch)
    head = (
        f"{'layer':<28}{'n':>3}{'fwd ms':>9}{'GF/s':>7}{'torch':>7}{'ort':>7}  |{'f+b ms':>9}{'torch':>7}"
        f"  {name}, batch {batch}"
    )
    print(head, file=out)
    print("-" * len(head), file=out)
    rows = []
    for case in cases:
        r = measure_layer(case, repeats, rounds, torch_mod, ort, backward)
        row = {"layer": case.label, "path": case.name, "count": case.count, "flops": case.flops, **r}
        rows.append(row)
        cols = [
            f"{case.label:<28}",
            f"{case.count:3d}",
            f"{1e3 * r['fastconv_fwd']:9.3f}",
            f"{case.flops / r['fastconv_fwd'] / 1e9:7.1f}",
        ]
        for peer in ("torch_fwd", "ort_fwd"):
            cols.append(ratio_cell(r[peer] / r["fastconv_fwd"]) if peer in r else f"{'-':>7}")
        cols.append("  |")
        if backward:
            cols.append(f"{1e3 * r['fastconv_fwdbwd']:9.3f}")
            cols.append(ratio_cell(r["torch_fwdbwd"] / r["fastconv_fwdbwd"]) if "torch_fwdbwd" in r else f"{'-':>7}")
        print("".join(cols), file=out, flush=True)
    summary = {"network": name, "batch": batch, "layers": rows}
    for key, peer, ours in (
        ("torch_fwd", "torch_fwd", "fastconv_fwd"),
        ("ort_fwd", "ort_fwd", "fastconv_fwd"),
        ("torch_fwdbwd", "torch_fwdbwd", "fastconv_fwdbwd"),
    ):
        ratios = [r[peer] / r[ours] for r in rows if peer in r and ours in r]
        if ratios:
            summary[key] = {"geomean": geomean(ratios), "min": min(ratios)}
    totals = {
        k: sum(r[k] * r["count"] for r in rows)
        for k in ("fastconv_fwd", "torch_fwd", "ort_fwd", "fastconv_fwdbwd", "torch_fwdbwd")
        if k in rows[0]
    }
    summary["totals"] = totals
    line = f"{name} batch {batch}: every conv layer once each, geometric mean ratio (peer time / fastconv time):"
    parts = [
        f"{label} {summary[key]['geomean']:.2f} (lowest {summary[key]['min']:.2f})"
        for key, label in (
            ("torch_fwd", "forward vs torch"),
            ("ort_fwd", "vs ONNX Runtime"),
            ("torch_fwdbwd", "forward+backward vs torch"),
        )
        if key in summary
    ]
    print(line + " " + "; ".join(parts), file=out)
    tot = [f"fastconv {1e3 * totals['fastconv_fwd']:.1f} ms"]
    tot += [
        f"{lbl} {1e3 * totals[k]:.1f} ms"
        for k, lbl in (("torch_fwd", "torch"), ("ort_fwd", "ONNX Runtime"))
        if k in totals
    ]
    print(
        f"{name} batch {batch}: the network's total conv forward time (each layer times its count): " + ", ".join(tot),
        file=out,
        flush=True,
    )
    return summary


def run_network(names, batches, repeats=5, threads=2, rounds=3, backward=True, cap_ort=True, out=sys.stdout) -> list:
    """`fastconv bench --network`: the configuration, then one table per network and batch size."""
    torch = _import_torch()
    old = get_num_threads()
    set_num_threads(threads)
    ort, ort_note = start_ort(cap_ort and ort_cap_wanted())
    if torch is not None:
        torch.set_num_threads(threads)
    show_config(file=out)
    print(
        f"fastconv bench --network: float32, {threads} threads, best of {repeats} runs in each of {rounds} rounds "
        "(the libraries take turns); fastconv forward is a Conv2dPlan (weights packed once, as a frozen model and an "
        "ONNX Runtime session run it); ratio = peer time / fastconv time",
        file=out,
    )
    if torch is None:
        print("torch is not installed: torch columns are skipped (pip install torch==2.13.0)", file=out)
    print(ort_note if ort is not None else "ONNX Runtime: not installed, so its column is skipped", file=out)
    results = []
    try:
        for name in names:
            for batch in batches:
                results.append(network_table(name, batch, repeats, rounds, torch, ort, backward, out))
    finally:
        set_num_threads(old)
    return results


def torch_blocks(torch):
    """torch modules of the model benchmark: torchvision's ``BasicBlock`` written out (torchvision is
    not a dependency) and a ``Concat`` (DenseNet layer: ``cat([x, body(x)], 1)``), both of the forms
    :func:`fastconv.nn.from_torch` converts."""
    tnn = torch.nn

    class BasicBlock(tnn.Module):
        def __init__(self, cin, cout, stride=1):
            super().__init__()
            self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(cout)
            self.relu = tnn.ReLU()
            self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            return self.relu(y + (x if self.downsample is None else self.downsample(x)))

    class Concat(tnn.Module):
        def __init__(self, body):
            super().__init__()
            self.body = body

        def forward(self, x):
            return torch.cat([x, self.body(x)], 1)

    return BasicBlock, Concat


def torch_models(torch, width: int = 1):
    """The model benchmark's torch models, by name: builders of a VGG-style CNN, a ResNet-8 and a
    DenseNet-BC-style model for 3-channel images of at least 16x16 (`width` scales the channels)."""
    tnn = torch.nn
    BasicBlock, Concat = torch_blocks(torch)

    def vgg(size=32):
        layers, cin = [], 3
        for cout in (32 * width, 64 * width, 128 * width):
            layers += [tnn.Conv2d(cin, cout, 3, padding=1), tnn.BatchNorm2d(cout), tnn.ReLU(), tnn.MaxPool2d(2)]
            cin = cout
        return tnn.Sequential(*layers, tnn.Flatten(), tnn.Linear(cin * (size // 8) ** 2, 10))

    def resnet8(size=32):
        c = 16 * width
        return tnn.Sequential(
            tnn.Conv2d(3, c, 3, padding=1, bias=False),
            tnn.BatchNorm2d(c),
            tnn.ReLU(),
            BasicBlock(c, c),
            BasicBlock(c, 2 * c, 2),
            BasicBlock(2 * c, 4 * c, 2),
            tnn.AdaptiveAvgPool2d(1),
            tnn.Flatten(),
            tnn.Linear(4 * c, 10),
        )

    def densenet(size=32, growth=12):
        def dense_layer(cin):  # BN-ReLU-1x1 (4 growth), BN-ReLU-3x3 (growth), concatenated
            return Concat(
                tnn.Sequential(
                    tnn.BatchNorm2d(cin),
                    tnn.ReLU(),
                    tnn.Conv2d(cin, 4 * growth, 1, bias=False),
                    tnn.BatchNorm2d(4 * growth),
                    tnn.ReLU(),
                    tnn.Conv2d(4 * growth, growth, 3, padding=1, bias=False),
                )
            )

        c0 = 2 * growth
        layers, c = [tnn.Conv2d(3, c0, 3, padding=1, bias=False)], c0
        for _ in range(3):
            layers.append(dense_layer(c))
            c += growth
        layers += [tnn.BatchNorm2d(c), tnn.ReLU(), tnn.Conv2d(c, c // 2, 1, bias=False), tnn.AvgPool2d(2)]
        c //= 2
        for _ in range(3):
            layers.append(dense_layer(c))
            c += growth
        layers += [tnn.BatchNorm2d(c), tnn.ReLU(), tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(c, 10)]
        return tnn.Sequential(*layers)

    return {"vgg": vgg, "resnet8": resnet8, "densenet": densenet}


def measure_model(torch, name: str, batch=64, size=32, repeats=5, rounds=3):
    """Seconds per training step (forward, cross-entropy, backward, SGD with momentum) of fastconv.nn
    (the torch model converted by from_torch) and of torch, same weights and data; and eval-mode
    inference (fastconv against torch under no_grad).  Returns a dict of times and the losses' gap."""
    from . import nn

    torch.manual_seed(0)
    tmodel = torch_models(torch)[name](size).train()
    fmodel = nn.from_torch(tmodel)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    target = rng.integers(0, 10, batch)
    xt, tt = torch.from_numpy(x), torch.from_numpy(target)
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.01, momentum=0.9)
    fopt = nn.SGD(fmodel.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    losses = {}

    def torch_step():
        topt.zero_grad()
        loss = torch.nn.functional.cross_entropy(tmodel(xt), tt)
        loss.backward()
        topt.step()
        losses["torch"] = loss.item()

    def fastconv_step():
        fopt.zero_grad()
        losses["fastconv"] = loss_fn(fmodel(x), target)
        fmodel.backward(loss_fn.backward(), input_grad=False)  # as torch: the data needs no gradient
        fopt.step()

    res = {}
    torch_step(), fastconv_step()  # the same first step: the losses agree
    res["loss_gap"] = abs(losses["torch"] - losses["fastconv"])
    take_turns(res, [("torch_train", torch_step), ("fastconv_train", fastconv_step)], repeats, rounds)
    tmodel.eval()
    fmodel = nn.freeze(nn.from_torch(tmodel))  # inference: norms folded, activations fused, plans

    def torch_infer():
        with torch.no_grad():
            return tmodel(xt)

    res["infer_gap"] = float(np.abs(fmodel(x) - torch_infer().numpy()).max())
    take_turns(res, [("torch_infer", torch_infer), ("fastconv_infer", lambda: fmodel(x))], repeats, rounds)
    return res


def models_table(repeats, torch_mod, out, batch=64, rounds=3):
    """Training-step and inference times of the three models beside torch's."""
    head = f"{'model':<10}{'train ms':>10}{'torch':>8}{'ratio':>7}  |{'infer ms':>10}{'torch':>8}{'ratio':>7}"
    head += "  |  agreement"
    print(head, file=out)
    print("-" * len(head), file=out)
    for name in ("vgg", "resnet8", "densenet"):
        r = measure_model(torch_mod, name, batch=batch, repeats=repeats, rounds=rounds)
        print(
            f"{name:<10}{1e3 * r['fastconv_train']:10.1f}{1e3 * r['torch_train']:8.1f}"
            f"{ratio_cell(r['torch_train'] / r['fastconv_train'])}  |{1e3 * r['fastconv_infer']:10.1f}"
            f"{1e3 * r['torch_infer']:8.1f}{ratio_cell(r['torch_infer'] / r['fastconv_infer'])}  |  "
            f"loss {r['loss_gap']:.1e}, eval output {r['infer_gap']:.1e}",
            file=out,
            flush=True,
        )


# (name, input shape, interpolate options or None for max_unpool2d of a 2x2 max pool)
UPSAMPLING = [
    ("bilinear_2x_56", (8, 64, 56, 56), dict(scale_factor=2, mode="bilinear")),
    ("nearest_2x_14", (8, 256, 14, 14), dict(scale_factor=2, mode="nearest")),
    ("bicubic_2x_28", (8, 32, 28, 28), dict(scale_factor=2, mode="bicubic")),
    ("unpool_2x_28", (8, 64, 28, 28), None),
]


def measure_upsampling(shape, options, repeats=5, dtype=np.float32, torch_mod=None):
    """Seconds per call, forward and forward+backward, of fastconv and torch (each after `settle()`)."""
    from . import _resample

    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    if options is None:  # unpooling: the values and indices of a 2x2 max pool of a map twice as large
        big = rng.standard_normal((*shape[:2], 2 * shape[2], 2 * shape[3])).astype(dtype)
        x, idx = F.max_pool2d(big, 2, return_indices=True)
        fwd = lambda: F.max_unpool2d(x, idx, 2)  # noqa: E731
        gy = np.ones_like(fwd())
        fb = lambda: (fwd(), F.max_unpool2d_backward(gy, idx))  # noqa: E731
    else:
        fwd = lambda: _resample.interpolate(x, **options)  # noqa: E731
        gy = np.ones_like(fwd())
        fb = lambda: (fwd(), _resample.interpolate_backward(gy, x.shape, **options))  # noqa: E731
    settle()
    r = {"fastconv_fwd": best_time(fwd, repeats), "fastconv_fwdbwd": best_time(fb, repeats)}
    if torch_mod is not None:
        tf = torch_mod.nn.functional
        xt, gyt = torch_mod.from_numpy(x), torch_mod.from_numpy(gy)
        if options is None:
            it = torch_mod.from_numpy(idx)
            tfwd = lambda t: tf.max_unpool2d(t, it, 2)  # noqa: E731
        else:
            tfwd = lambda t: tf.interpolate(t, **options)  # noqa: E731

        def torch_fb():
            t = xt.clone().requires_grad_(True)
            tfwd(t).backward(gyt)

        settle()
        r["torch_fwd"] = best_time(lambda: tfwd(xt), repeats)
        r["torch_fwdbwd"] = best_time(torch_fb, repeats)
    return r


def upsampling_table(repeats, dtype, torch_mod, out):
    """Milliseconds per call of the upsampling kernels, beside torch's; returns the (fwd, f+b) ratios."""
    head = f"{'upsampling':<16}{'fwd ms':>8}{'torch':>8}{'ratio':>7}  |{'f+b ms':>8}{'torch':>8}{'ratio':>7}"
    print(head, file=out)
    print("-" * len(head), file=out)
    ratios = []
    for name, shape, options in UPSAMPLING:
        r = measure_upsampling(shape, options, repeats, dtype, torch_mod)
        cols = [f"{name:<16}", f"{1e3 * r['fastconv_fwd']:8.2f}"]
        if torch_mod is not None:
            rf, rb = r["torch_fwd"] / r["fastconv_fwd"], r["torch_fwdbwd"] / r["fastconv_fwdbwd"]
            ratios.append((rf, rb))
            cols += [f"{1e3 * r['torch_fwd']:8.2f}", ratio_cell(rf), "  |", f"{1e3 * r['fastconv_fwdbwd']:8.2f}"]
            cols += [f"{1e3 * r['torch_fwdbwd']:8.2f}", ratio_cell(rb)]
        else:
            cols += [f"{'-':>8}", f"{'-':>7}", "  |", f"{1e3 * r['fastconv_fwdbwd']:8.2f}", f"{'-':>8}", f"{'-':>7}"]
        print("".join(cols), file=out, flush=True)
    return ratios


# name -> (zoo builder name or None for bench's own, builder kwargs, input shape (C, H, W)) of the inference table
INFERENCE_MODELS = {
    "vgg": (None, {}, (3, 32, 32)),
    "resnet8": (None, {}, (3, 32, 32)),
    "densenet": (None, {}, (3, 32, 32)),
    "resnet18": ("resnet18", {}, (3, 224, 224)),
    "mobilenet_v2": ("mobilenet_v2", {}, (3, 224, 224)),
    "unet": ("unet", {"width": 32, "depth": 4}, (3, 128, 128)),
    "fastconv_resnet18": ("fastconv", {}, (3, 224, 224)),
}


def inference_models(torch, name):
    """(torch model, fastconv model) of an inference-table entry, same weights, eval mode, the batch norms'
    statistics randomised (fresh ones are the identity): the torch model converted by :func:`fastconv.nn.from_torch`
    and frozen by :func:`fastconv.nn.freeze`; for ``fastconv_resnet18`` the other way round, a ResNet-18 built from
    fastconv.nn layers (:func:`fastconv.models.resnet18`) whose weights the torch one is given."""
    from . import models, nn
    from ._torch_zoo import randomize_batch_norms, zoo

    zoo_name, kwargs, _ = INFERENCE_MODELS[name]
    torch.manual_seed(0)
    if zoo_name is None:
        tmodel = torch_models(torch)[name](32)
    elif zoo_name == "fastconv":
        fmodel = models.resnet18(rng=0).eval()
        rng = np.random.default_rng(0)
        for _, m in fmodel.named_modules():
            if isinstance(m, nn.BatchNorm2d):
                m._buffers["running_mean"][:] = rng.standard_normal(m.num_features) * 0.1
                m._buffers["running_var"][:] = rng.uniform(0.5, 1.5, m.num_features)
        tmodel = zoo(torch)["resnet18"]().eval()
        tstate = tmodel.state_dict()
        with torch.no_grad():  # the same layers in the same order: weights matched by position
            for t, v in zip(tstate.values(), fmodel.state_dict().values()):
                t.copy_(torch.from_numpy(np.asarray(v)).reshape(t.shape))
        return tmodel, nn.freeze(fmodel)
    else:
        tmodel = zoo(torch)[zoo_name](**kwargs)
    randomize_batch_norms(torch, tmodel)
    tmodel.eval()
    return tmodel, nn.freeze(nn.from_torch(tmodel))


def ort_model(ort, torch, tmodel, x, threads):
    """ONNX Runtime running `tmodel` exported by ``torch.onnx.export`` (TorchScript exporter, opset 17)."""
    import io

    onnxruntime, _ = ort
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(tmodel, torch.from_numpy(x), buf, dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["y"])  # fmt: skip
    return ort_session(onnxruntime, buf.getvalue(), threads, {"x": x})


def measure_inference(torch, ort, name, batch, repeats=5, rounds=3) -> dict:
    """Seconds per inference of one model at one batch size: fastconv (frozen), torch (eval, no_grad), ONNX Runtime
    (the torch model exported); libraries take turns.  ``gap_torch`` / ``gap_ort``: the largest difference of their
    outputs from fastconv's, relative to the largest output."""
    tmodel, fmodel = inference_models(torch, name)
    shape = INFERENCE_MODELS[name][2]
    x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
    xt = torch.from_numpy(x)

    def torch_infer():
        with torch.no_grad():
            return tmodel(xt)

    ours = fmodel(x)
    scale = max(1e-6, float(np.abs(ours).max()))
    res = {"gap_torch": float(np.abs(torch_infer().numpy() - ours).max()) / scale}
    timed = [("fastconv", lambda: fmodel(x)), ("torch", torch_infer)]
    if ort is not None:
        run = ort_model(ort, torch, tmodel, x, get_num_threads())
        res["gap_ort"] = float(np.abs(run()[0] - ours).max()) / scale
        timed.append(("ort", run))
    take_turns(res, timed, repeats, rounds)
    return res


def inference_table(torch, ort, names, batches, repeats=5, rounds=3, out=sys.stdout) -> list:
    """Whole-model inference: fastconv (frozen) against torch and ONNX Runtime, per model and batch size."""
    head = f"{'model':<20}{'batch':>6}{'fastconv ms':>13}{'torch':>9}{'ratio':>7}{'ort':>9}{'ratio':>7}  |  agreement"
    print(head, file=out)
    print("-" * len(head), file=out)
    results = []
    for name in names:
        for batch in batches:
            r = measure_inference(torch, ort, name, batch, repeats, rounds)
            results.append({"model": name, "batch": batch, **r})
            cols = [f"{name:<20}{batch:6d}{1e3 * r['fastconv']:13.2f}{1e3 * r['torch']:9.2f}",
                    ratio_cell(r['torch'] / r['fastconv'])]  # fmt: skip
            cols += [f"{1e3 * r['ort']:9.2f}", ratio_cell(r["ort"] / r["fastconv"])] if "ort" in r else [f"{'-':>16}"]
            gaps = f"torch {r['gap_torch']:.1e}" + (f", ONNX Runtime {r['gap_ort']:.1e}" if "gap_ort" in r else "")
            print("".join(cols) + "  |  " + gaps, file=out, flush=True)
    return results


def run_models(repeats=5, threads=2, batch=64, out=sys.stdout, rounds=3, batches=(1, 8), train=True, names=None,
               cap_ort=True):  # fmt: skip
    """`fastconv bench --models`: the configuration, the training-step table (batch `batch` of 3x32x32), then
    whole-model inference at each of `batches` against torch and ONNX Runtime; returns 0 (1 without torch)."""
    torch = _import_torch()
    show_config(file=out)
    if torch is None:
        print("torch is not installed: the model table compares against torch (pip install torch==2.13.0)", file=out)
        return 1
    if not 1 <= batch <= 4096:
        raise ValueError(f"--batch must be in [1, 4096], got {batch}")
    old = get_num_threads()
    set_num_threads(threads)
    torch.set_num_threads(threads)
    ort, ort_note = start_ort(cap_ort and ort_cap_wanted())
    try:
        if train:
            print(
                f"fastconv bench --models: float32, {threads} threads, batch {batch} of 3x32x32, best of {repeats} in "
                f"each of {rounds} rounds (torch and fastconv take turns); train = forward + cross-entropy + backward "
                "+ SGD-momentum step; infer = eval mode, fastconv frozen (nn.freeze), torch under no_grad; "
                "ratio = torch time / fastconv time",
                file=out,
            )
            models_table(repeats, torch, out, batch, rounds)
        print(
            f"whole-model inference, float32, {threads} threads: fastconv = nn.freeze(nn.from_torch(model)) (for "
            "fastconv_resnet18, nn.freeze of fastconv.models.resnet18 and torch given its weights); torch = eval "
            "under no_grad; ONNX Runtime = the torch model exported by torch.onnx.export; ratio = peer time / fastconv "
            "time; agreement = largest difference from fastconv's output, relative to its largest value",
            file=out,
        )
        print(ort_note if ort is not None else "ONNX Runtime: not installed, so its column is skipped", file=out)
        inference_table(torch, ort, names or list(INFERENCE_MODELS), batches, repeats, rounds, out)
    finally:
        set_num_threads(old)
    return 0


def ratio_cell(ratio: float, width: int = 7) -> str:
    """A table's ratio, right-aligned in ``width`` with two decimals, fewer where it would not fit: a peer that
    stalled (1600x on a loaded machine) must not run into the next column."""
    for digits in (2, 1, 0):
        cell = f"{ratio:{width}.{digits}f}"
        if len(cell) < width or (len(cell) == width and cell[0] == " "):
            return cell
    return f" {ratio:.0f}"


def peer_columns(r: dict, peer: str, ours: str, flops: float, ratios: list) -> list:
    """A peer's GFLOP/s and ratio (peer time / fastconv time) columns, appending the ratio to `ratios`;
    dashes when the peer was not measured."""
    if peer not in r:
        return [f"{'-':>8}", f"{'-':>7}"]
    ratio = r[peer] / r[ours]
    ratios.append(ratio)
    return [f"{flops / r[peer] / 1e9:8.1f}", ratio_cell(ratio)]


def run_table(
    shapes=None,
    repeats=5,
    threads=2,
    dtype="float32",
    backward=True,
    numpy=True,
    memory=True,
    upsampling=True,
    out=sys.stdout,
    rounds=3,
    cap_ort=True,
    record=None,
):
    """Print the benchmark table; returns 0.  With `cap_ort`, ONNX Runtime runs AVX2 kernels where fastconv is capped
    to avx2 on an AVX-512 CPU (:func:`start_ort`).  `record` (a dict) receives every figure of the run
    (:func:`run_record`'s structure: ``fastconv bench --json``)."""
    names = [s.strip() for s in shapes.split(",")] if shapes else [s.name for s in SHAPES]
    unknown = [n for n in names if n not in SHAPES_BY_NAME]
    if unknown:
        raise ValueError(f"--shapes: unknown shape(s) {unknown}; known: {', '.join(SHAPES_BY_NAME)}")
    torch = _import_torch()
    old = get_num_threads()
    set_num_threads(threads)
    ort, ort_note = start_ort(cap_ort and ort_cap_wanted()) if np.dtype(dtype) == np.float32 else (None, "")
    if torch is not None:
        torch.set_num_threads(threads)
    dt = np.dtype(dtype)
    show_config(file=out)
    print(
        f"fastconv bench: {dt.name}, {threads} threads, best of {repeats} runs in each of {rounds} rounds "
        f"(the libraries take turns); GFLOP/s counts 2 per MAC "
        f"(fwd+bwd = 3x forward FLOPs)",
        file=out,
    )
    if torch is None:
        print("torch is not installed: torch columns are skipped (pip install torch==2.13.0)", file=out)
    if ort is None:
        why = "float64 is not benchmarked there" if np.dtype(dtype) != np.float32 else "not installed"
        print(f"ONNX Runtime: {why}, so its column is skipped (pip install onnxruntime onnx)", file=out)
    else:
        print(ort_note, file=out)
    print(
        f"sgemm 2048^3, {threads} threads: OpenBLAS ({_core.blas_core_name()} kernels) "
        f"{sgemm_gflops(2048, threads):.1f} GFLOP/s; fastconv's float32 GEMM ({_core.sgemm_kernel_name()}) "
        f"{2 * 2048**3 / _core.fastconv_sgemm_seconds(2048, 3) / 1e9:.1f} GFLOP/s",
        file=out,
    )
    head = (
        f"{'shape':<15}{'fwd GF/s':>9}{'torch':>8}{'ratio':>7}{'ort':>8}{'ratio':>7}{'numpy x':>9}  |"
        f"{'f+b GF/s':>9}{'torch':>8}{'ratio':>7}{'numpy x':>9}"
    )
    print(head, file=out)
    print("-" * len(head), file=out)
    ratios_f, ratios_b, ratios_o = [], [], []
    rows = []
    if record is not None:
        record.update(run_record(torch, ort, threads=threads, dtype=dt.name, repeats=repeats, rounds=rounds))
        record["ort_note"] = ort_note
        record["shapes"] = rows
    try:
        for name in names:
            s = SHAPES_BY_NAME[name]
            r = measure(s, repeats, dt, backward, numpy, torch, ort, rounds)
            rows.append({"name": name, "geometry": dataclasses.asdict(s), "flops_forward": s.flops,
                         "seconds": {k: float(v) for k, v in r.items() if isinstance(v, (int, float))}})  # fmt: skip
            gf = s.flops / r["fastconv_fwd"] / 1e9
            cols = [f"{name:<15}", f"{gf:9.1f}"]
            cols += peer_columns(r, "torch_fwd", "fastconv_fwd", s.flops, ratios_f)
            cols += peer_columns(r, "ort_fwd", "fastconv_fwd", s.flops, ratios_o)
            cols.append(f"{r['numpy_fwd'] / r['fastconv_fwd']:9.1f}" if numpy else f"{'-':>9}")
            if backward:
                gfb = 3 * s.flops / r["fastconv_fwdbwd"] / 1e9
                cols += ["  |", f"{gfb:9.1f}"]
                cols += peer_columns(r, "torch_fwdbwd", "fastconv_fwdbwd", 3 * s.flops, ratios_b)
                cols.append(f"{r['numpy_fwdbwd'] / r['fastconv_fwdbwd']:9.1f}" if numpy else f"{'-':>9}")
            print("".join(cols), file=out, flush=True)
        if upsampling:
            upsampling_table(repeats, dt, torch, out)
    finally:
        set_num_threads(old)
    if memory:
        mib = 1 << 20
        for n in (8, 64):
            fwd, bwd, xb = workspace_memory("resnet_3x3_56", n, threads)
            print(
                f"workspace beyond inputs/outputs, resnet_3x3_56 N={n} (input {xb / mib:.0f} MiB): "
                f"forward {fwd / mib:.1f} MiB, backward {bwd / mib:.1f} MiB",
                file=out,
            )
    gm = lambda v: math.exp(sum(map(math.log, v)) / len(v))  # noqa: E731
    if ratios_f:
        line = f"geometric mean ratio (torch time / fastconv time): forward {gm(ratios_f):.2f}"
        if ratios_b:
            line += f", forward+backward {gm(ratios_b):.2f}"
        print(line, file=out)
    if ratios_o:
        print(f"geometric mean ratio (ONNX Runtime time / fastconv time): forward {gm(ratios_o):.2f}", file=out)
    if record is not None:
        record["geometric_mean"] = {"torch_forward": gm(ratios_f) if ratios_f else None,
                                    "torch_forward_backward": gm(ratios_b) if ratios_b else None,
                                    "ort_forward": gm(ratios_o) if ratios_o else None}  # fmt: skip
    return 0


def run_record(torch, ort, **settings) -> dict:
    """The header of a ``fastconv bench --json`` file: when, where (CPU, kernel level, threads) and with which
    versions of each library, and the run's settings."""
    import datetime
    import importlib.metadata
    import platform

    from ._version import __version__

    def version(dist):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    config = show_config(file=False)
    return {
        "format": "fastconv.bench",
        "version": 1,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu,
            "arch": platform.machine(),
            "cores": os.cpu_count(),
            "level": config["level"],
            "cpu_level": config["cpu_level"],
            "kernels": config["kernels"],
        },  # fmt: skip
        "versions": {
            "fastconv": __version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "torch": version("torch") if torch is not None else None,
            "onnxruntime": version("onnxruntime") if ort is not None else None,
        },  # fmt: skip
        "settings": settings,
    }


def plot_record(record: dict, path) -> None:
    """Per-shape ratio bars (peer time / fastconv time, forward; forward+backward against torch) of a
    ``fastconv bench --json`` record, saved to `path` (any format matplotlib writes).  Needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("--plot needs matplotlib: pip install matplotlib") from None
    rows = record.get("shapes") or []
    if not rows:
        raise ValueError("the record has no shapes to plot")
    series = [("torch_fwd", "vs torch, forward"), ("ort_fwd", "vs ONNX Runtime, forward"),
              ("torch_fwdbwd", "vs torch, forward+backward")]  # fmt: skip
    names = [r["name"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(names) + 2), 4))
    width = 0.8 / len(series)
    for i, (key, label) in enumerate(series):
        mine = "fastconv_fwdbwd" if key.endswith("fwdbwd") else "fastconv_fwd"
        vals = [r["seconds"][key] / r["seconds"][mine] if key in r["seconds"] and mine in r["seconds"] else 0.0
                for r in rows]  # fmt: skip
        if any(vals):
            ax.bar([j + (i - 1) * width for j in range(len(names))], vals, width, label=label)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("peer time / fastconv time")
    m = record.get("machine", {})
    ax.set_title(f"fastconv bench, {m.get('cpu', '?')}, level {m.get('level', '?')}, "
                 f"{record.get('settings', {}).get('threads', '?')} threads ({record.get('date', '')[:10]})",
                 fontsize=9)  # fmt: skip
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
