"""conv2d forward and forward+backward: fastconv vs torch vs the NumPy idiom.

    pytest bench/test_bench_conv.py --benchmark-group-by=param:shape

``fastconv bench`` prints the same comparison as one table with ratios.
"""

import pytest

import fastconv
from fastconv.bench import SHAPES, numpy_conv2d, numpy_conv2d_backward

torch = pytest.importorskip("torch")
TF = torch.nn.functional

IDS = [s.name for s in SHAPES]


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
@pytest.mark.parametrize("impl", ["fastconv", "torch", "numpy"])
def test_forward(benchmark, shape, impl):
    x, w, _ = shape.arrays()
    geom = shape.geometry()
    benchmark.group = f"forward {shape.name}"
    benchmark.extra_info["gflop"] = shape.flops / 1e9
    if impl == "fastconv":
        benchmark(fastconv.conv2d, x, w, None, **geom)
    elif impl == "torch":
        xt, wt = torch.from_numpy(x), torch.from_numpy(w)
        with torch.no_grad():
            benchmark(TF.conv2d, xt, wt, None, **geom)
    else:
        benchmark.pedantic(numpy_conv2d, (x, w), geom, rounds=2, iterations=1)


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
@pytest.mark.parametrize("impl", ["fastconv", "torch", "numpy"])
def test_forward_backward(benchmark, shape, impl):
    x, w, gy = shape.arrays()
    geom = shape.geometry()
    benchmark.group = f"forward+backward {shape.name}"
    benchmark.extra_info["gflop"] = 3 * shape.flops / 1e9
    if impl == "fastconv":
        benchmark(lambda: (fastconv.conv2d(x, w, None, **geom), fastconv.conv2d_backward(gy, x, w, **geom)))
    elif impl == "torch":
        xt = torch.from_numpy(x).requires_grad_(True)
        wt = torch.from_numpy(w).requires_grad_(True)
        gyt = torch.from_numpy(gy)

        def step():
            TF.conv2d(xt, wt, None, **geom).backward(gyt)
            xt.grad = wt.grad = None

        benchmark(step)
    else:
        benchmark.pedantic(
            lambda: (numpy_conv2d(x, w, **geom), numpy_conv2d_backward(gy, x, w, **geom)), rounds=2, iterations=1
        )


def test_numpy_reference_is_correct():
    """The NumPy idiom the table compares against computes the same convolution."""
    import numpy as np

    for shape in SHAPES:
        if shape.name not in ("tiny", "depthwise_112", "resnet_stem"):
            continue
        x, w, gy = shape.arrays(np.float64)
        geom = shape.geometry()
        np.testing.assert_allclose(numpy_conv2d(x, w, **geom), fastconv.conv2d(x, w, **geom), atol=1e-9)
        for a, b in zip(numpy_conv2d_backward(gy, x, w, **geom), fastconv.conv2d_backward(gy, x, w, **geom)):
            np.testing.assert_allclose(a, b, atol=1e-8)
