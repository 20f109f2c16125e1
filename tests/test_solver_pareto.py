"""Pareto fronts of the size solver against brute force: every design enumerated layer by layer, its costs under
each objective computed here from their definitions, and the non-dominated cost vectors found by comparing every
pair of designs."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv.solver import layer_plan
from test_solver import hole_free_prefixes, out_size, range_st, rows_read
from test_solver_rf import field

OBJECTIVES = ("params", "macs", "kernel", "depth")


def every_design(inp, out, channels, block, kernel, stride, padding, dilation, pool_kernel, pool_stride,
                 pool_padding, exact=False, lossless=False, lo=None, hi=None):  # fmt: skip
    """(costs by objective, path) of every design, square sizes."""
    plan = layer_plan(channels, block)
    rng = lambda r: range(r[0], r[1] + 1)  # noqa: E731
    conv = list(itertools.product(rng(kernel), rng(stride), rng(padding), rng(dilation)))
    pool = [(k, s, p, 1) for k, s, p in itertools.product(rng(pool_kernel), rng(pool_stride), rng(pool_padding))
            if p <= k // 2]  # fmt: skip
    found = []

    def dfs(i, n, costs, path):
        if i == len(plan):
            if n == out and (not lossless or hole_free_prefixes(path)):
                rf = field(path)
                if (lo is None or rf >= lo) and (hi is None or rf <= hi):
                    found.append((costs, tuple(path)))
            return
        kind, cin, cout = plan[i]
        for k, s, p, d in conv if kind == "conv" else pool:
            o = out_size(n, k, s, p, d, exact)
            if o is None or (lossless and rows_read(n, k, s, p, d) != set(range(n))):
                continue
            c = {
                "params": cin * cout * k * k + cout if kind == "conv" else 0,
                "macs": o * o * cin * cout * k * k if kind == "conv" else 0,
                "kernel": k,
                "depth": 0 if (k, s, p) == (1, 1, 0) else 1,  # a 1x1 stride-1 unpadded layer leaves space alone
            }
            dfs(i + 1, o, {key: costs[key] + c[key] for key in OBJECTIVES}, path + [(k, s, p, d)])

    dfs(0, inp, dict.fromkeys(OBJECTIVES, 0), [])
    return found


def brute_front(designs, names):
    """Cost vector -> the lexicographically smallest design with it, for every vector no other design dominates."""
    vectors = {tuple(c[n] for n in names) for c, _ in designs}
    front = {v for v in vectors if not any(u != v and all(a <= b for a, b in zip(u, v)) for u in vectors)}
    best = {}
    for c, path in designs:
        v = tuple(c[n] for n in names)
        if v in front and (v not in best or path < best[v]):
            best[v] = path
    return dict(sorted(best.items()))


def design_path(solution):
    return tuple((x.kernel, x.stride, x.padding, x.dilation) for x in solution.layers)


def check(result, designs, names):
    expected = brute_front(designs, names)
    assert result.count == len(designs)
    got = [tuple(s.costs[n] for n in names) for s in result.front]
    assert got == list(expected)  # the set of cost vectors, sorted by the first objective, then the next
    assert [design_path(s) for s in result.front] == list(expected.values())  # ties to the smallest design
    by_path = {path: costs for costs, path in designs}
    for s in result.front:
        assert s.costs == by_path[design_path(s)]
        assert s.cost == s.costs[names[0]]
        assert s.receptive_field == field(design_path(s))


pairs = st.sampled_from([p for p in itertools.permutations(OBJECTIVES, 2)])


@settings(max_examples=120, deadline=None)
@given(
    inp=st.integers(1, 14),
    out=st.integers(1, 5),
    block=st.sampled_from([("conv", "pool"), ("conv",), ("conv", "conv"), ("pool", "conv")]),
    kernel=range_st(1, 5, 2),
    stride=range_st(1, 3, 2),
    padding=range_st(0, 2, 1),
    dilation=range_st(1, 2, 1),
    exact=st.booleans(),
    names=st.one_of(pairs, st.permutations(OBJECTIVES).map(lambda p: tuple(p[:3])), st.permutations(OBJECTIVES)),
    lo=st.one_of(st.none(), st.integers(1, 12)),
    width=st.one_of(st.none(), st.integers(0, 10)),
)
def test_front_matches_brute_force(inp, out, block, kernel, stride, padding, dilation, exact, names, lo, width):
    hi = None if width is None else (lo or 1) + width
    space = dict(block=block, kernel=kernel, stride=stride, padding=padding, dilation=dilation, pool_kernel=(1, 3),
                 pool_stride=(1, 2), pool_padding=(0, 1))  # fmt: skip
    r = fastconv.solve(inp, out, [2, 3], exact=exact, min_rf=lo, max_rf=hi, pareto=names, **space)
    check(r, every_design(inp, out, [2, 3], exact=exact, lo=lo, hi=hi, **space), names)
    assert r.pareto == tuple(names)


@settings(max_examples=50, deadline=None)
@given(
    inp=st.integers(1, 16),
    out=st.integers(1, 5),
    block=st.sampled_from([("conv",), ("conv", "conv"), ("conv", "pool")]),
    kernel=range_st(1, 5, 3),
    stride=range_st(1, 3, 2),
    dilation=range_st(1, 3, 2),
    names=pairs,
    lo=st.one_of(st.none(), st.integers(1, 14)),
)
def test_lossless_front_matches_brute_force(inp, out, block, kernel, stride, dilation, names, lo):
    space = dict(block=block, kernel=kernel, stride=stride, padding=(0, 2), dilation=dilation, pool_kernel=(2, 3),
                 pool_stride=(1, 2), pool_padding=(0, 1))  # fmt: skip
    r = fastconv.solve(inp, out, [2, 3], lossless=True, min_rf=lo, pareto=names, **space)
    check(r, every_design(inp, out, [2, 3], lossless=True, lo=lo, **space), names)


def test_front_is_a_trade_off():
    """224 -> 7 in five convs seeing 150 pixels: fewer parameters cost more MACs along the front."""
    r = fastconv.solve(224, 7, [3, 64, 128, 256, 512, 512], block="conv", min_rf=150, pareto=("params", "macs"))
    assert len(r.front) >= 2
    params = [s.costs["params"] for s in r.front]
    macs = [s.costs["macs"] for s in r.front]
    assert params == sorted(params) and len(set(params)) == len(params)
    assert macs == sorted(macs, reverse=True) and len(set(macs)) == len(macs)
    assert all(s.receptive_field >= 150 for s in r.front)
    # the front's ends are the single-objective optima
    assert params[0] == fastconv.solve(224, 7, [3, 64, 128, 256, 512, 512], block="conv", min_rf=150).solutions[0].cost
    best_macs = fastconv.solve(224, 7, [3, 64, 128, 256, 512, 512], block="conv", min_rf=150, objective="macs")
    assert macs[-1] == best_macs.solutions[0].cost
    d = r.to_dict()
    assert d["pareto"] == ["params", "macs"] and len(d["front"]) == len(r.front)
    assert d["front"][0]["costs"]["params"] == params[0]


def test_no_design_no_front():
    r = fastconv.solve(224, 7, [3, 64], block="conv", kernel=(2, 3), stride=(1, 1), pareto="params,macs")
    assert r.count == 0 and r.front == ()


@pytest.mark.parametrize(
    "pareto, error, message",
    [("params", ValueError, "pareto: needs two to four objectives, got 'params'"),
     ("params,volume", ValueError, "pareto: unknown objective 'volume'"),
     (("macs", "macs"), ValueError, "pareto: objective 'macs' is named twice"),
     (("params", 3), TypeError, "pareto: objectives are names like 'params', got 3"),
     ("params,macs,kernel,depth,params", ValueError, "named twice")],
    ids=["one", "unknown", "twice", "not-a-name", "five"],
)  # fmt: skip
def test_bad_pareto(pareto, error, message):
    with pytest.raises(error, match=message):
        fastconv.solve(28, 1, [1, 5, 10], pareto=pareto)


def test_plot_front_needs_a_front():
    with pytest.raises(ValueError, match="plot_front needs a result of solve"):
        fastconv.solve(28, 1, [1, 5, 10]).plot_front()


def test_cli_front_and_plot(tmp_path):
    base = [sys.executable, "-m", "fastconv", "solve", "--input", "28", "--output", "1", "--channels", "1,5,10",
            "--min-rf", "28", "--pareto", "params,macs"]  # fmt: skip
    r = subprocess.run(base + ["--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    expected = fastconv.solve(28, 1, [1, 5, 10], min_rf=28, pareto=("params", "macs"))
    assert [(s["costs"]["params"], s["costs"]["macs"]) for s in out["front"]] == [
        (s.costs["params"], s.costs["macs"]) for s in expected.front
    ]
    png = tmp_path / "front.png"
    r = subprocess.run(base + ["--plot", str(png)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"{len(expected.front)} on the Pareto front of params, macs" in r.stdout
    for s in expected.front:
        assert s.chain() in r.stdout
    for extra, message in [(["--plot", str(tmp_path / "none" / "f.png")], "does not exist"),
                           (["--pareto", "params,params"], "named twice")]:  # fmt: skip
        r = subprocess.run(base + extra, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(base[:-2] + ["--plot", str(png)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "give --pareto too" in r.stderr


def test_progress_reports_the_front(monkeypatch, capsys):
    import fastconv.solver as solver

    monkeypatch.setattr(solver, "_PROGRESS_AFTER", 0.0)
    r = fastconv.solve(224, 7, [3, 64, 128, 256, 512, 512], block="conv", lossless=True, padding=(0, 2),
                       pareto=("params", "macs"), progress=True)  # fmt: skip
    assert len(r.front) > 1
    err = capsys.readouterr().err
    assert "solving 4/4 Pareto front" in err, err
