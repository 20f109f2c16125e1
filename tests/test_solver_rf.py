"""Receptive-field bounds in the size solver against brute-force enumeration with its own definition of the
receptive field (the input positions one output reads, followed back through the layers), in every mode."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from test_solver import brute_force, design_tuple, lossless_brute_force, range_st


def field(path):
    """The width of the input positions output 0 reads, padding aside: taps followed back layer by layer."""
    reach = {0}
    for k, s, _p, d in reversed(path):
        reach = {o * s + j * d for o in reach for j in range(k)}
    return max(reach) - min(reach) + 1


def within(expected, lo, hi):
    return [(c, p) for c, p in expected if (lo is None or field(p) >= lo) and (hi is None or field(p) <= hi)]


@settings(max_examples=100, deadline=None)
@given(
    inp=st.integers(1, 14),
    out=st.integers(1, 5),
    block=st.sampled_from([("conv", "pool"), ("conv",), ("conv", "conv"), ("pool", "conv")]),
    kernel=range_st(1, 5, 2),
    stride=range_st(1, 3, 2),
    padding=range_st(0, 2, 1),
    dilation=range_st(1, 2, 1),
    exact=st.booleans(),
    objective=st.sampled_from(["params", "macs", "kernel"]),
    lo=st.one_of(st.none(), st.integers(1, 12)),
    width=st.one_of(st.none(), st.integers(0, 10)),
    top=st.integers(1, 5),
)
def test_bounds_match_brute_force(inp, out, block, kernel, stride, padding, dilation, exact, objective, lo, width,
                                  top):  # fmt: skip
    hi = None if width is None else (lo or 1) + width
    space = dict(block=block, kernel=kernel, stride=stride, padding=padding, dilation=dilation, pool_kernel=(1, 3),
                 pool_stride=(1, 2), pool_padding=(0, 1), exact=exact, objective=objective)  # fmt: skip
    r = fastconv.solve(inp, out, [2, 3], top=top, min_rf=lo, max_rf=hi, **space)
    expected = within(brute_force(inp, out, [2, 3], **space), lo, hi)
    assert r.count == len(expected)
    assert [(s.cost, design_tuple(s)) for s in r.solutions] == expected[:top]
    for s in r.solutions:
        assert s.receptive_field == field(design_tuple(s))


@settings(max_examples=50, deadline=None)
@given(
    inp=st.integers(1, 16),
    out=st.integers(1, 5),
    block=st.sampled_from([("conv",), ("conv", "conv"), ("conv", "pool")]),
    kernel=range_st(1, 5, 3),
    stride=range_st(1, 3, 2),
    dilation=range_st(1, 3, 2),
    lo=st.one_of(st.none(), st.integers(1, 14)),
    hi=st.one_of(st.none(), st.integers(14, 30)),
)
def test_bounds_with_lossless_match_brute_force(inp, out, block, kernel, stride, dilation, lo, hi):
    space = dict(block=block, kernel=kernel, stride=stride, padding=(0, 2), dilation=dilation)
    r = fastconv.solve(inp, out, [2, 3], top=3, lossless=True, min_rf=lo, max_rf=hi, pool_kernel=(2, 3),
                       pool_stride=(1, 2), pool_padding=(0, 1), **space)  # fmt: skip
    expected = within(lossless_brute_force(inp, out, [2, 3], objective="params", **space), lo, hi)
    assert r.count == len(expected)
    assert [(s.cost, design_tuple(s)) for s in r.solutions] == expected[:3]


def test_a_classifier_that_sees_the_image():
    """224 -> 7 over five blocks: the cheapest design sees 50 pixels; asking for 150 gives one that sees them."""
    plain = fastconv.solve(224, 7, [3, 64, 128, 256, 512, 512], top=1)
    wide = fastconv.solve(224, 7, [3, 64, 128, 256, 512, 512], top=3, min_rf=150)
    assert plain.solutions[0].receptive_field < 150
    assert 0 < wide.count < plain.count
    assert all(s.receptive_field >= 150 for s in wide.solutions)
    assert wide.solutions[0].cost >= plain.solutions[0].cost
    assert wide.solutions[0].to_dict()["receptive_field"] == wide.solutions[0].receptive_field


@pytest.mark.parametrize(
    "kwargs, error, message",
    [(dict(min_rf=10, max_rf=5), ValueError, "min_rf must be at most max_rf, got min_rf=10 and max_rf=5"),
     (dict(min_rf=0), ValueError, "min_rf must be a positive number of pixels, got 0"),
     (dict(max_rf="big"), TypeError, "max_rf"),
     (dict(max_rf=True), TypeError, "max_rf")],
    ids=["reversed", "zero", "string", "bool"],
)  # fmt: skip
def test_bad_bounds(kwargs, error, message):
    with pytest.raises(error, match=message):
        fastconv.solve(28, 1, [1, 5, 10], **kwargs)


def test_cli_bounds():
    cmd = [sys.executable, "-m", "fastconv", "solve", "--input", "28", "--output", "1", "--channels", "1,5,10",
           "--min-rf", "20", "--max-rf", "25", "--json"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    import json

    out = json.loads(r.stdout)
    expected = fastconv.solve(28, 1, [1, 5, 10], min_rf=20, max_rf=25)
    assert out["count"] == expected.count
    assert all(20 <= s["receptive_field"] <= 25 for s in out["solutions"])
    r = subprocess.run(cmd[:-5] + ["--min-rf", "9", "--max-rf", "3"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "min_rf must be at most max_rf" in r.stderr and "Traceback" not in r.stderr
