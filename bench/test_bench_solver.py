"""Size-DP solver: C++ against a straightforward pure-Python DP over the same space.

Targets (issue 3): at least 100x the Python DP on mid-size spaces, and the large
space below in at most 3 s on 2 cores.
"""

import time

import pytest

import fastconv
from fastconv.solver import layer_plan


def python_dp(
    inp,
    out,
    channels,
    block,
    kernel,
    stride,
    padding,
    dilation,
    pool_kernel,
    pool_stride,
    pool_padding,
    exact=False,
    objective="params",
):
    """Count and optimal cost by the textbook DP over (layer, size), every choice enumerated."""
    plan = layer_plan(channels, block)
    rng = lambda r: range(r[0], r[1] + 1)  # noqa: E731
    conv = [(k, s, p, d) for k in rng(kernel) for s in rng(stride) for p in rng(padding) for d in rng(dilation)]
    pool = [(k, s, p, 1) for k in rng(pool_kernel) for s in rng(pool_stride) for p in rng(pool_padding) if p <= k // 2]
    # forward reachable sizes
    layers_sizes = [{inp}]
    for kind, _, _ in plan:
        nxt = set()
        for n in layers_sizes[-1]:
            for k, s, p, d in conv if kind == "conv" else pool:
                span = n + 2 * p - d * (k - 1) - 1
                if span >= 0 and not (exact and span % s):
                    nxt.add(span // s + 1)
        layers_sizes.append(nxt)
    count = {out: 1}
    best = {out: 0}
    for i in range(len(plan) - 1, -1, -1):
        kind, cin, cout = plan[i]
        new_count, new_best = {}, {}
        for n in layers_sizes[i]:
            c_total, b_min = 0, None
            for k, s, p, d in conv if kind == "conv" else pool:
                span = n + 2 * p - d * (k - 1) - 1
                if span < 0 or (exact and span % s):
                    continue
                o = span // s + 1
                if o not in count:
                    continue
                c_total += count[o]
                if objective == "kernel":
                    cost = k
                elif kind == "pool":
                    cost = 0
                elif objective == "params":
                    cost = cin * cout * k * k + cout
                else:
                    cost = o * o * cin * cout * k * k
                cand = cost + best[o]
                b_min = cand if b_min is None or cand < b_min else b_min
            if c_total:
                new_count[n], new_best[n] = c_total, b_min
        count, best = new_count, new_best
    return count.get(inp, 0), best.get(inp)


# Mid-size: 1188 conv choices per layer, 8 layers, sizes up to ~550.
MID = dict(
    inp=512,
    out=4,
    channels=[3, 16, 32, 64, 128],
    block=("conv", "pool"),
    kernel=(1, 11),
    stride=(1, 6),
    padding=(0, 5),
    dilation=(1, 3),
    pool_kernel=(2, 5),
    pool_stride=(1, 3),
    pool_padding=(0, 2),
)
LARGE = dict(
    kernel=(1, 32),
    stride=(1, 16),
    padding=(0, 15),
    dilation=(1, 4),
    pool_kernel=(2, 8),
    pool_stride=(1, 4),
    pool_padding=(0, 4),
    objective="macs",
    top=5,
)


def solve_mid(**extra):
    space = {k: v for k, v in MID.items() if k not in ("inp", "out", "channels")}
    return fastconv.solve(MID["inp"], MID["out"], MID["channels"], progress=False, **space, **extra)


def test_mid_space_fastconv(benchmark):
    result = benchmark(solve_mid)
    assert (result.count, result.solutions[0].cost) == python_dp(**MID)


def test_mid_space_python_dp(benchmark):
    benchmark.pedantic(python_dp, kwargs=MID, rounds=1, iterations=1)


def test_mid_space_speedup_report():
    t = time.perf_counter()
    ref = python_dp(**MID)
    t_py = time.perf_counter() - t
    t = time.perf_counter()
    r = solve_mid()
    t_c = time.perf_counter() - t
    assert (r.count, r.solutions[0].cost) == ref
    print(f"\nmid space: python DP {t_py:.3f} s, fastconv {t_c * 1e3:.2f} ms, speedup {t_py / t_c:.0f}x")


@pytest.mark.parametrize("exact", [False, True], ids=["any", "exact"])
def test_large_space(benchmark, exact):
    def run():
        return fastconv.solve(4096, 1, [3, 8, 16, 32, 64, 128, 256, 512, 1024], exact=exact, progress=False, **LARGE)

    result = benchmark.pedantic(run, rounds=3, iterations=1)
    assert result.count > 0 and len(result.solutions) == 5


# Issue 31's targets: the Pareto front of the default 224 -> 7 five-block space, and of harder variants (a
# receptive-field bound, lossless mode), each under a second on 2 cores.
FRONTS = {
    "default": dict(),
    "default-3-objectives": dict(pareto=("params", "macs", "kernel")),
    "rf150": dict(min_rf=150),
    "conv-rf150": dict(block="conv", min_rf=150),
    "lossless-rf150": dict(lossless=True, min_rf=150),
}


@pytest.mark.parametrize("space", list(FRONTS), ids=list(FRONTS))
def test_pareto_front_224_to_7(benchmark, space):
    kwargs = {"pareto": ("params", "macs"), **FRONTS[space]}

    def run():
        return fastconv.solve(224, 7, [3, 64, 128, 256, 512, 512], progress=False, **kwargs)

    result = benchmark.pedantic(run, rounds=3, iterations=1)
    assert result.front and benchmark.stats.stats.max < 1.0
