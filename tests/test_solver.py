"""The size-DP solver against a brute-force enumeration of every design."""

import itertools
import json
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv.solver import layer_plan


def out_size(n, k, s, p, d, exact):
    """torch's rule, written independently of fastconv; exact mode refuses trailing rows left unread."""
    span = n + 2 * p - d * (k - 1) - 1
    if span < 0 or (exact and span % s):
        return None
    return span // s + 1


def brute_force(
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
    exact,
    objective,
):
    """Every design, checked layer by layer; returns the sorted (cost, choices) list."""
    plan = layer_plan(channels, block)
    rng = lambda r: range(r[0], r[1] + 1)  # noqa: E731
    conv_choices = list(itertools.product(rng(kernel), rng(stride), rng(padding), rng(dilation)))
    pool_choices = [
        (k, s, p, 1)
        for k, s, p in itertools.product(rng(pool_kernel), rng(pool_stride), rng(pool_padding))
        if p <= k // 2
    ]
    inp = inp if isinstance(inp, tuple) else (inp, inp)
    out = out if isinstance(out, tuple) else (out, out)
    found = []

    def dfs(i, h, w, cost, path):
        if i == len(plan):
            if (h, w) == out:
                found.append((cost, tuple(path)))
            return
        kind, cin, cout = plan[i]
        for k, s, p, d in conv_choices if kind == "conv" else pool_choices:
            oh, ow = out_size(h, k, s, p, d, exact), out_size(w, k, s, p, d, exact)
            if oh is None or ow is None:
                continue
            if objective == "kernel":
                c = k
            elif kind == "pool":
                c = 0
            elif objective == "params":
                c = cin * cout * k * k + cout
            else:
                c = oh * ow * cin * cout * k * k
            dfs(i + 1, oh, ow, cost + c, path + [(k, s, p, d)])

    dfs(0, *inp, 0, [])
    return sorted(found)


def design_tuple(solution):
    return tuple((layer.kernel, layer.stride, layer.padding, layer.dilation) for layer in solution.layers)


RANGE_KEYS = (
    "block",
    "kernel",
    "stride",
    "padding",
    "dilation",
    "pool_kernel",
    "pool_stride",
    "pool_padding",
    "exact",
    "objective",
)


def check_against_brute_force(top, **space):
    result = fastconv.solve(space["inp"], space["out"], space["channels"], top=top, **{k: space[k] for k in RANGE_KEYS})
    expected = brute_force(**space)
    assert result.count == len(expected)
    assert [(s.cost, design_tuple(s)) for s in result.solutions] == expected[:top]
    # every returned design re-checked layer by layer
    for s in result.solutions:
        h = space["inp"] if isinstance(space["inp"], int) else space["inp"][0]
        for layer in s.layers:
            in_h = layer.in_size if isinstance(layer.in_size, int) else layer.in_size[0]
            assert in_h == h
            h = out_size(h, layer.kernel, layer.stride, layer.padding, layer.dilation, space["exact"])
            out_h = layer.out_size if isinstance(layer.out_size, int) else layer.out_size[0]
            assert h == out_h
    return result


range_st = lambda lo, hi, width: st.integers(lo, hi).flatmap(  # noqa: E731
    lambda a: st.tuples(st.just(a), st.integers(a, min(hi, a + width)))
)


@settings(max_examples=120, deadline=None)
@given(
    inp=st.integers(1, 14),
    out=st.integers(1, 6),
    blocks=st.integers(1, 2),
    block=st.sampled_from([("conv", "pool"), ("conv",), ("conv", "conv", "pool"), ("pool", "conv")]),
    kernel=range_st(1, 5, 2),
    stride=range_st(1, 3, 2),
    padding=range_st(0, 2, 1),
    dilation=range_st(1, 2, 1),
    pool_kernel=range_st(1, 4, 2),
    pool_stride=range_st(1, 3, 1),
    pool_padding=range_st(0, 1, 1),
    exact=st.booleans(),
    objective=st.sampled_from(["params", "macs", "kernel"]),
    top=st.integers(1, 6),
    seed=st.integers(1, 9),
)
def test_random_spaces_match_brute_force(
    inp,
    out,
    blocks,
    block,
    kernel,
    stride,
    padding,
    dilation,
    pool_kernel,
    pool_stride,
    pool_padding,
    exact,
    objective,
    top,
    seed,
):
    channels = [seed + i for i in range(blocks + 1)]
    check_against_brute_force(
        top,
        inp=inp,
        out=out,
        channels=channels,
        block=block,
        kernel=kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        pool_kernel=pool_kernel,
        pool_stride=pool_stride,
        pool_padding=pool_padding,
        exact=exact,
        objective=objective,
    )


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(2, 12),
    w=st.integers(2, 12),
    oh=st.integers(1, 4),
    ow=st.integers(1, 4),
    objective=st.sampled_from(["params", "macs", "kernel"]),
    exact=st.booleans(),
)
def test_rectangular_sizes_match_brute_force(h, w, oh, ow, objective, exact):
    check_against_brute_force(
        4,
        inp=(h, w),
        out=(oh, ow),
        channels=[2, 3, 4],
        block=("conv", "pool"),
        kernel=(1, 4),
        stride=(1, 3),
        padding=(0, 1),
        dilation=(1, 2),
        pool_kernel=(2, 3),
        pool_stride=(1, 2),
        pool_padding=(0, 1),
        exact=exact,
        objective=objective,
    )


def test_seed_problem_counts_and_best():
    r = check_against_brute_force(
        5,
        inp=28,
        out=1,
        channels=[1, 5, 10],
        block=("conv", "pool"),
        kernel=(2, 10),
        stride=(1, 5),
        padding=(0, 0),
        dilation=(1, 1),
        pool_kernel=(2, 10),
        pool_stride=(1, 5),
        pool_padding=(0, 0),
        exact=False,
        objective="params",
    )
    assert r.solutions[0].chain().startswith("28 -> ")


def test_count_is_exact_beyond_64_bits():
    # 12 layers, nothing prunes: every design fits, so the count is a pure product
    r = fastconv.solve(
        1000, 1000, [1] * 13, block=("conv",), kernel=(1, 1), stride=(1, 1), padding=(0, 0), dilation=(1, 40), top=1
    )
    assert r.count == 40**12
    assert r.count > 2**63


def test_no_design_gives_zero_count():
    r = fastconv.solve(5, 100, [1, 2], top=3)
    assert r.count == 0 and r.solutions == ()
    with pytest.raises(ValueError, match="no design"):
        r.to_torch()


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(kernel=(5, 2)), "kernel range is reversed"),
        (dict(stride=(0, 2)), "stride must be at least 1"),
        (dict(padding=(-1, 0)), "padding must be at least 0"),
        (dict(dilation=(0, 1)), "dilation"),
        (dict(pool_kernel=(3, 1)), "pool_kernel"),
        (dict(block=("conv", "norm")), "unknown layer kind 'norm'"),
        (dict(objective="flops"), "objective"),
        (dict(top=-1), "top"),
    ],
)
def test_bad_options(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        fastconv.solve(28, 1, [1, 5, 10], **kwargs)


@pytest.mark.parametrize(
    "inp,out,channels,pattern",
    [
        (0, 1, [1, 2], "input must be positive"),
        (28, -1, [1, 2], "output must be positive"),
        (28, 1, [1], "channels"),
        (28, 1, [1, 0], "channels"),
    ],
)
def test_bad_sizes(inp, out, channels, pattern):
    with pytest.raises(ValueError, match=pattern):
        fastconv.solve(inp, out, channels)


def test_generated_torch_code_runs_and_gives_predicted_shapes():
    r = fastconv.solve(32, 2, [3, 8, 16], padding=(0, 2), dilation=(1, 2), top=3, objective="macs")
    for i, solution in enumerate(r.solutions):
        namespace = {}
        exec(r.to_torch(i), namespace)
        model = namespace["model"].eval()
        x = torch.zeros(1, 3, 32, 32)
        for module in model:
            x = module(x)
        assert tuple(x.shape) == (1, 16, 2, 2)
        # per-layer sizes as predicted
        x = torch.zeros(1, 3, 32, 32)
        sizes = []
        for module in model:
            x = module(x)
            if isinstance(module, (torch.nn.Conv2d, torch.nn.MaxPool2d)):
                sizes.append(x.shape[-1])
        assert sizes == [layer.out_size for layer in solution.layers]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "fastconv", *args], capture_output=True, text=True, timeout=120)


def test_cli_solve_table_and_json():
    table = run_cli("solve", "--input", "28", "--output", "1", "--channels", "1,5,10", "--top", "2")
    assert table.returncode == 0, table.stderr
    assert "28 -> 27 -> 26 -> 13 -> 1" in table.stdout and "84,164" in table.stdout
    js = run_cli("solve", "--input", "28", "--output", "1", "--channels", "1,5,10", "--top", "2", "--json")
    data = json.loads(js.stdout)
    expected = fastconv.solve(28, 1, [1, 5, 10], top=2).to_dict()
    assert data == expected
    assert set(data["solutions"][0]["layers"][0]) == {
        "kind",
        "kernel",
        "stride",
        "padding",
        "dilation",
        "in_size",
        "out_size",
        "in_channels",
        "out_channels",
    }


def test_cli_solve_torch_and_no_design():
    code = run_cli("solve", "--input", "28", "--output", "1", "--channels", "1,5,10", "--torch")
    assert code.returncode == 0 and "nn.Conv2d(1, 5" in code.stdout
    none = run_cli("solve", "--input", "5", "--output", "100", "--channels", "1,2")
    assert none.returncode == 0 and "No design" in none.stdout and "0" in none.stdout


@pytest.mark.parametrize(
    "args,option",
    [
        (["--kernel", "9:2"], "--kernel"),
        (["--stride", "0:2"], "--stride"),
        (["--input", "-3"], "--input"),
        (["--block", "conv,norm"], "--block"),
        (["--objective", "speed"], "--objective"),
    ],
)
def test_cli_bad_options_exit_2(args, option):
    base = {"--input": "28", "--output": "1", "--channels": "1,5,10"}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    r = run_cli("solve", *itertools.chain.from_iterable(base.items()))
    assert r.returncode == 2
    assert option in r.stderr


def test_progress_bar_is_drawn_for_long_solves(monkeypatch, capsys):
    import fastconv.solver as solver

    monkeypatch.setattr(solver, "_PROGRESS_AFTER", 0.0)
    channels = [3, 8, 16, 32, 64, 128, 256, 512, 1024]
    r = fastconv.solve(
        4096,
        1,
        channels,
        kernel=(1, 32),
        stride=(1, 16),
        padding=(0, 15),
        dilation=(1, 4),
        pool_kernel=(2, 8),
        pool_stride=(1, 4),
        pool_padding=(0, 4),
        objective="macs",
        progress=True,
    )
    assert r.count > 0
    err = capsys.readouterr().err
    assert "solving 1/3 sizes" in err and "solving 2/3 counting" in err, err  # every phase reports


def test_exact_mode_drops_no_trailing_row_and_says_so():
    """--exact means no trailing row dropped, nothing more: a 1x1 stride-3 layer on 7 rows qualifies (its
    windows end on the last row) though it skips the rows between windows, which dropped_pixels reports."""
    r = fastconv.solve(7, 3, [1, 2], block="conv", kernel=(1, 1), stride=(3, 3), exact=True)
    assert r.count == 1
    layer = r.solutions[0].layers[0]
    assert (layer.in_size + 2 * layer.padding - layer.dilation * (layer.kernel - 1) - 1) % layer.stride == 0
    assert fastconv.shapes.dropped_pixels(7, 1, stride=3) == 4


# --- lossless mode, against an enumeration with its own definitions of "reads every row" and "no holes".


def rows_read(n, k, s, p, d):
    """Real rows of an n-row input under some tap of some window, by listing them."""
    out = out_size(n, k, s, p, d, False)
    return {o * s + j * d - p for o in range(out) for j in range(k)} & set(range(n))


def hole_free_prefixes(path):
    """Every prefix's receptive field, built as a set of offsets, fills its box."""
    reach, jump = {0}, 1
    for k, s, _p, d in path:
        reach = {i * d * jump + r for i in range(k) for r in reach}
        if len(reach) != max(reach) + 1:
            return False
        jump *= s
    return True


def pixels_reaching_output(n, path):
    """Input rows with a chain of taps to some output (1-D), walking back from every output."""
    sizes = [n]
    for k, s, p, d in path:
        sizes.append(out_size(sizes[-1], k, s, p, d, False))
    live = set(range(sizes[-1]))
    for (k, s, p, d), m in zip(reversed(path), reversed(sizes[:-1])):
        live = {o * s + j * d - p for o in live for j in range(k)} & set(range(m))
    return live


def lossless_brute_force(inp, out, channels, block, kernel, stride, padding, dilation, objective):
    plan = layer_plan(channels, block)
    rng = lambda r: range(r[0], r[1] + 1)  # noqa: E731
    conv = list(itertools.product(rng(kernel), rng(stride), rng(padding), rng(dilation)))
    pool = [(k, s, p, 1) for k, s, p in itertools.product(rng((2, 3)), rng((1, 2)), rng((0, 1))) if p <= k // 2]
    found = []

    def dfs(i, h, cost, path):
        if i == len(plan):
            if h == out and hole_free_prefixes(path):
                found.append((cost, tuple(path)))
            return
        kind, cin, cout = plan[i]
        for k, s, p, d in conv if kind == "conv" else pool:
            oh = out_size(h, k, s, p, d, False)
            if oh is None or rows_read(h, k, s, p, d) != set(range(h)):
                continue
            c = k if objective == "kernel" else 0 if kind == "pool" else cin * cout * k * k + cout
            if objective == "macs" and kind == "conv":
                c = oh * oh * cin * cout * k * k
            dfs(i + 1, oh, cost + c, path + [(k, s, p, d)])

    dfs(0, inp, 0, [])
    return sorted(found)


@settings(max_examples=80, deadline=None)
@given(
    inp=st.integers(1, 16),
    out=st.integers(1, 6),
    block=st.sampled_from([("conv",), ("conv", "conv"), ("conv", "pool"), ("conv", "conv", "conv")]),
    kernel=range_st(1, 5, 3),
    stride=range_st(1, 3, 2),
    padding=range_st(0, 2, 2),
    dilation=range_st(1, 3, 2),
    objective=st.sampled_from(["params", "macs", "kernel"]),
    top=st.integers(1, 5),
)
def test_lossless_mode_matches_brute_force(inp, out, block, kernel, stride, padding, dilation, objective, top):
    space = dict(block=block, kernel=kernel, stride=stride, padding=padding, dilation=dilation)
    r = fastconv.solve(
        inp, out, [2, 3], top=top, objective=objective, lossless=True, pool_kernel=(2, 3), pool_stride=(1, 2),
        pool_padding=(0, 1), **space,
    )  # fmt: skip
    expected = lossless_brute_force(inp, out, [2, 3], objective=objective, **space)
    assert r.count == len(expected)
    assert [(s.cost, design_tuple(s)) for s in r.solutions] == expected[:top]
    for _cost, path in expected:  # what lossless promises: every input pixel reaches the output
        assert pixels_reaching_output(inp, list(path)) == set(range(inp))


def test_lossless_mode_refuses_what_exact_allows():
    # 1x1 stride 3 on 7 rows: exact (no trailing row) but it skips rows 1, 2, 4, 5.
    assert fastconv.solve(7, 3, [1, 2], block="conv", kernel=(1, 1), stride=(3, 3), exact=True).count == 1
    assert fastconv.solve(7, 3, [1, 2], block="conv", kernel=(1, 1), stride=(3, 3), lossless=True).count == 0
    # three 3x3 convs with dilation 2 (gridding 49/169) against dilations 1, 2, 3 (no holes)
    grid = fastconv.solve(20, 8, [1, 1, 1, 1], block="conv", kernel=(3, 3), dilation=(2, 2), stride=(1, 1))
    assert grid.count == 1
    assert fastconv.solve(20, 8, [1, 1, 1, 1], block="conv", kernel=(3, 3), dilation=(2, 2), lossless=True).count == 0
    ok = fastconv.solve(
        20, 8, [1, 1, 1, 1], block="conv", kernel=(3, 3), dilation=(1, 3), padding=(0, 0), lossless=True, top=10
    )
    chains = {tuple(layer.dilation for layer in s.layers) for s in ok.solutions}
    assert (1, 2, 3) in chains and (2, 2, 2) not in chains and (3, 2, 1) not in chains, chains
    assert ok.count == len(ok.solutions)
    for s in ok.solutions:
        spec = [(layer.kernel, layer.stride, layer.padding, layer.dilation) for layer in s.layers]
        assert fastconv.shapes.gridding(spec).fraction == 1.0


def test_lossless_flag_must_be_bool():
    with pytest.raises(TypeError, match="lossless must be a bool, got str 'yes'"):
        fastconv.solve(7, 3, [1, 2], lossless="yes")


def test_cli_solve_lossless():
    cmd = [sys.executable, "-m", "fastconv", "solve", "--input", "7", "--output", "3", "--channels", "1,2"]
    cmd += ["--block", "conv", "--kernel", "1:3", "--stride", "1:3", "--lossless", "--json"]
    out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    assert out["count"] == 1
    assert [(lay["kernel"], lay["stride"]) for lay in out["solutions"][0]["layers"]] == [(3, 2)]
