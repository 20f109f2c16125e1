"""Sizes near and beyond int64 in every size argument of every public function.

Each call must either give the right answer or raise a ValueError whose message
names the problem; never garbage, a crash, a hang or pybind11's signature dump.
The references are torch's size rules written here with Python's unbounded
integers, independent of fastconv's C++ rules.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastconv
from conftest import run_script
from fastconv import shapes

HUGE = [2**31 - 1, 2**31, 2**62, 2**63 - 1, 2**63, 2**64, -(2**63)]
I64 = 2**63 - 1


def conv_ref(n, k, s, p, d):
    if min(k, s, d) < 1 or p < 0 or n < 1:
        return None
    out = (n + 2 * p - d * (k - 1) - 1) // s + 1
    return out if n + 2 * p >= d * (k - 1) + 1 else None


def pool_ref(n, k, s, p, d, ceil):
    if min(k, s, d) < 1 or p < 0 or n < 1 or p > k // 2:
        return None
    num = n + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)
    out = num // s + 1
    if ceil and (out - 1) * s >= n + p:
        out -= 1
    return out if out >= 1 else None


def transpose_ref(n, k, s, p, op, d):
    if min(k, s, d, n) < 1 or p < 0 or op < 0 or (op >= s and op >= d):
        return None
    out = (n - 1) * s - 2 * p + d * (k - 1) + op + 1
    return out if out >= 1 else None


def same_ref(n, k, s, d):
    if min(n, k, s, d) < 1:
        return None
    out = -(-n // s)
    total = max(0, (out - 1) * s + d * (k - 1) + 1 - n)
    return total // 2, total - total // 2


def check(call, expected):
    """The answer when one exists in int64, else a ValueError with a message."""
    valid = expected is not None and all(-I64 - 1 <= v <= I64 for v in np.ravel(expected))
    try:
        got = call()
    except ValueError as exc:
        msg = str(exc)
        assert msg and "incompatible function arguments" not in msg, msg
        # Refusing an answer that exists is allowed only when an intermediate overflows.
        assert not valid or "int64" in msg, (expected, msg)
        return
    assert valid, f"returned {got!r} where there is no valid answer"
    assert got == expected


@pytest.mark.parametrize("v", HUGE, ids=str)
@pytest.mark.parametrize("arg", ["n", "k", "s", "p", "d"])
def test_conv_output_size(arg, v):
    a = {**dict(n=5, k=3, s=1, p=0, d=1), arg: v}
    check(lambda: shapes.conv_output_size(a["n"], a["k"], a["s"], a["p"], a["d"]), conv_ref(**a))
    check(
        lambda: shapes.conv_output_size((a["n"], 7), (a["k"], 1), (a["s"], 1), (a["p"], 0), (a["d"], 1))[0],
        conv_ref(**a),
    )


@pytest.mark.parametrize("ceil", [False, True])
@pytest.mark.parametrize("v", HUGE, ids=str)
@pytest.mark.parametrize("arg", ["n", "k", "s", "p", "d"])
def test_pool_output_size(arg, v, ceil):
    a = {**dict(n=5, k=3, s=2, p=1, d=1), arg: v}
    if arg == "k":
        a["p"] = 0
    check(lambda: shapes.pool_output_size(a["n"], a["k"], a["s"], a["p"], a["d"], ceil), pool_ref(**a, ceil=ceil))


@pytest.mark.parametrize("v", HUGE, ids=str)
@pytest.mark.parametrize("arg", ["n", "k", "s", "p", "op", "d"])
def test_conv_transpose_output_size(arg, v):
    a = {**dict(n=5, k=3, s=2, p=1, op=1, d=1), arg: v}
    check(
        lambda: shapes.conv_transpose_output_size(a["n"], a["k"], a["s"], a["p"], a["op"], a["d"]), transpose_ref(**a)
    )


@pytest.mark.parametrize("v", HUGE, ids=str)
@pytest.mark.parametrize("arg", ["n", "k", "s", "d"])
def test_same_padding(arg, v):
    a = {**dict(n=5, k=3, s=2, d=1), arg: v}
    check(lambda: shapes.same_padding(a["n"], a["k"], a["s"], a["d"]), same_ref(**a))


def test_issue_13_size_reproducers():
    with pytest.raises(ValueError, match="int64"):
        shapes.conv_transpose_output_size(5, 3, 1, 2**63 - 1)
    assert shapes.same_padding(5, 3, stride=2**63 - 1) == (0, 0)  # one output, no padding needed
    with pytest.raises(ValueError, match="padding"):
        fastconv.conv_transpose2d(
            np.ones((1, 2, 5, 5), np.float32), np.ones((2, 1, 3, 3), np.float32), padding=2**63 - 1
        )


def test_huge_average_pool_divides_by_the_true_window_area():
    """kernel 2**40, padding 2**39: the padded window area (2**40 + 5)**2 overflows int64 (torch gives garbage)."""
    y = fastconv.avg_pool2d(np.ones((1, 2, 5, 5), np.float32), 2**40, 1, 2**39)
    assert y.shape == (1, 2, 6, 6)
    np.testing.assert_allclose(y, 25 / (2**40 + 5) ** 2, rtol=1e-6)
    y = fastconv.avg_pool2d(np.ones((1, 2, 5, 5)), 2**40, 1, 2**39, count_include_pad=False)
    np.testing.assert_allclose(y, 1.0)


# Every array function with every size argument set to each huge value, in a
# subprocess with a timeout: a hang (a loop over 2**40 taps) or a crash fails.
ARRAY_GRID = """
import numpy as np, fastconv
x = np.ones((1, 2, 5, 5), np.float32)
w = np.ones((2, 1, 3, 3), np.float32)
cols = fastconv.unfold(x, 2)
calls = {
    "conv2d": lambda **a: fastconv.conv2d(x, w, **{"groups": 2, **a}),
    "conv2d_backward": lambda **a: fastconv.conv2d_backward(
        fastconv.conv2d(x, w, groups=2), x, w, **{"groups": 2, **a}
    ),
    "conv_transpose2d": lambda **a: fastconv.conv_transpose2d(x, w, **{"groups": 2, **a}),
    "unfold": lambda **a: fastconv.unfold(x, **{"kernel_size": 2, **a}),
    "fold": lambda **a: fastconv.fold(cols, **{"output_size": 5, "kernel_size": 2, **a}),
    "max_pool2d": lambda **a: fastconv.max_pool2d(x, **{"kernel_size": 2, **a}),
    "avg_pool2d": lambda **a: fastconv.avg_pool2d(x, **{"kernel_size": 2, **a}),
}
# Backwards take the forward's output shape as grad_output: the forward runs first
# with the same huge argument (and refuses first when it must).
def transpose_bwd(**a):
    a = {"groups": 2, **a}
    return fastconv.conv_transpose2d_backward(np.ones_like(fastconv.conv_transpose2d(x, w, **a)), x, w, **a)
def max_bwd(**a):
    a = {"kernel_size": 2, **a}
    y, i = fastconv.max_pool2d(x, return_indices=True, **a)
    return fastconv.max_pool2d_backward(np.ones_like(y), x, i, **a)
def avg_bwd(**a):
    a = {"kernel_size": 2, **a}
    return fastconv.avg_pool2d_backward(np.ones_like(fastconv.avg_pool2d(x, **a)), x, **a)
calls.update(conv_transpose2d_backward=transpose_bwd, max_pool2d_backward=max_bwd, avg_pool2d_backward=avg_bwd)
args = {
    "conv2d": ["stride", "padding", "dilation", "groups"],
    "conv2d_backward": ["stride", "padding", "dilation", "groups"],
    "conv_transpose2d": ["stride", "padding", "output_padding", "dilation", "groups"],
    "unfold": ["kernel_size", "stride", "padding", "dilation"],
    "fold": ["output_size", "kernel_size", "stride", "padding", "dilation"],
    "max_pool2d": ["kernel_size", "stride", "padding", "dilation"],
    "avg_pool2d": ["kernel_size", "stride", "padding", "divisor_override"],
}
args["conv_transpose2d_backward"] = args["conv_transpose2d"]
args["max_pool2d_backward"] = args["max_pool2d"]
args["avg_pool2d_backward"] = args["avg_pool2d"]
cases = refused = 0
for name, call in calls.items():
    for arg in args[name]:
        for v in HUGE:
            for form in (v, (v, 1), (1, v)):
                if arg in ("groups", "divisor_override") and form != v:
                    continue
                cases += 1
                try:
                    out = call(**{arg: form})
                except ValueError as exc:
                    msg = str(exc)
                    assert msg and "incompatible function arguments" not in msg, (name, arg, form, msg)
                    refused += 1
                    continue
                except MemoryError as exc:  # a valid size whose result or workspace exceeds memory
                    assert "not enough memory" in str(exc) or "Unable to allocate" in str(exc), (name, arg, form, exc)
                    refused += 1
                    continue
                for a in (out if isinstance(out, tuple) else (out,)):
                    a = np.asarray(a)
                    # Inputs are ones: every value is a small finite count or average,
                    # never uninitialised memory.
                    ok = a.size < 10**6 and np.isfinite(a).all() and np.abs(a).max(initial=0) <= 100
                    assert ok, (name, arg, form)
print("ok", cases, refused)
"""


def test_array_functions_with_huge_sizes():
    out = run_script(f"HUGE = {HUGE!r}\n" + ARRAY_GRID, timeout=120)
    assert out.startswith("ok")
    _, cases, refused = out.split()
    assert int(cases) > 400 and int(refused) > 0
    print(f"array grid: {cases} calls, {refused} refused with a message")
