"""Exhaustive search for conv/pool chains that map an input size to a target size.

The dynamic program runs in C++ (``csrc/solver/solver.cpp``); this module validates the
options, lays out the layer plan and presents the designs.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from . import _core
from ._args import as_bool, as_int

__all__ = ["solve", "SolveResult", "Solution", "DesignLayer"]

_OBJECTIVES = ("params", "macs", "kernel", "depth")  # the C++ Objective order
_PROGRESS_AFTER = 0.5  # seconds before a progress bar is drawn
_PHASES = ("sizes", "counting", "top designs", "Pareto front")  # the C++ solver's progress phases
_KINDS = ("conv", "pool")


@dataclass(frozen=True)
class DesignLayer:
    """One layer of a design; sizes are ints for square problems, (h, w) otherwise."""

    kind: str
    kernel: int
    stride: int
    padding: int
    dilation: int
    in_size: Any
    out_size: Any
    in_channels: int
    out_channels: int


@dataclass(frozen=True)
class Solution:
    """A design: one (kernel, stride, padding, dilation) per layer, and its cost.

    ``cost`` is under the ranking objective (a Pareto front's: its first);
    ``costs`` under every objective: ``params`` and ``macs`` of the convs,
    ``kernel`` (the sum of every layer's kernel size) and ``depth`` (the layers
    that act on space: all but 1x1 stride-1 unpadded ones).
    """

    cost: int
    layers: tuple[DesignLayer, ...]
    costs: dict = field(default_factory=dict, compare=False)

    @property
    def receptive_field(self) -> int:
        """Input pixels one output sees: ``1 + sum(d_i (k_i - 1) prod(s_j, j < i))`` over the layers."""
        rf, jump = 1, 1
        for layer in self.layers:
            rf += layer.dilation * (layer.kernel - 1) * jump
            jump *= layer.stride
        return rf

    def chain(self) -> str:
        """The size chain, e.g. ``'28 -> 27 -> 26 -> 13 -> 1'``."""
        fmt = lambda s: str(s) if isinstance(s, int) else f"{s[0]}x{s[1]}"  # noqa: E731
        return " -> ".join([fmt(self.layers[0].in_size)] + [fmt(layer.out_size) for layer in self.layers])

    def to_dict(self) -> dict:
        return {
            "cost": self.cost,
            "costs": dict(self.costs),
            "receptive_field": self.receptive_field,
            "layers": [
                {k: (list(v) if isinstance(v, tuple) else v) for k, v in layer.__dict__.items()}
                for layer in self.layers
            ],
        }

    def to_torch(self) -> str:
        """PyTorch source for this design: conv blocks as Conv2d + BatchNorm2d + ReLU, pools as MaxPool2d."""
        lines = ["import torch.nn as nn", "", "model = nn.Sequential("]
        for layer in self.layers:
            sizes = f"  # {layer.in_size} -> {layer.out_size}"
            if layer.kind == "conv":
                lines.append(
                    f"    nn.Conv2d({layer.in_channels}, {layer.out_channels}, kernel_size={layer.kernel}, "
                    f"stride={layer.stride}, padding={layer.padding}, dilation={layer.dilation}),{sizes}"
                )
                lines.append(f"    nn.BatchNorm2d({layer.out_channels}),")
                lines.append("    nn.ReLU(inplace=True),")
            else:
                lines.append(
                    f"    nn.MaxPool2d(kernel_size={layer.kernel}, stride={layer.stride}, "
                    f"padding={layer.padding}),{sizes}"
                )
        lines.append(")")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class SolveResult:
    """``count``: exact number of designs; ``solutions``: the best ones, best first.

    With ``solve(..., pareto=...)``, ``front`` holds one design per
    non-dominated vector of costs under ``pareto`` (objective names), sorted by
    the first objective, then the next.
    """

    count: int
    solutions: tuple[Solution, ...]
    plan: tuple[tuple[str, int, int], ...] = field(repr=False, default=())
    front: tuple[Solution, ...] = ()
    pareto: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        out = {"count": self.count, "solutions": [s.to_dict() for s in self.solutions]}
        if self.pareto:
            out["pareto"] = list(self.pareto)
            out["front"] = [s.to_dict() for s in self.front]
        return out

    def plot_front(self, path=None, *, ax=None):
        """Draw the Pareto front of the first two objectives, each design labelled by its size chain.

        Parameters
        ----------
        path : str or path-like, optional
            Save the figure there (any format matplotlib writes).
        ax : matplotlib Axes, optional
            Draw into these axes instead of a new figure.

        Returns
        -------
        matplotlib.axes.Axes

        Notes
        -----
        Needs matplotlib (an optional dependency) and a result of
        ``solve(..., pareto=...)``.  Costs spanning more than a factor of 100
        are drawn on log axes.
        """
        if not self.pareto:
            raise ValueError("plot_front needs a result of solve(..., pareto=(...)); this one has no front")
        try:
            import matplotlib

            if ax is None:
                matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError("plot_front needs matplotlib: pip install matplotlib") from None
        a, b = self.pareto[:2]
        xs = [s.costs[a] for s in self.front]
        ys = [s.costs[b] for s in self.front]
        if ax is None:
            _, ax = plt.subplots(figsize=(8, 5.5))
        ax.step(xs, ys, where="post", color="0.7", zorder=1)
        ax.margins(0.12)
        ax.scatter(xs, ys, zorder=2)
        for x, y, s in zip(xs, ys, self.front):
            ax.annotate(f"{s.chain()}  rf {s.receptive_field}", (x, y), fontsize=7, xytext=(4, 4),
                        textcoords="offset points")  # fmt: skip
        for values, setter in ((xs, ax.set_xscale), (ys, ax.set_yscale)):
            if values and min(values) > 0 and max(values) > 100 * min(values):
                setter("log")
        ax.set_xlabel(a)
        ax.set_ylabel(b)
        ax.set_title(f"Pareto front: {len(self.front)} designs of {self.count:,}")
        if path is not None:
            ax.figure.savefig(path, bbox_inches="tight", dpi=120)
        return ax

    def to_torch(self, index: int = 0) -> str:
        """PyTorch ``nn.Sequential`` source for solution ``index``."""
        if not self.solutions:
            raise ValueError("no design reaches the target size, so there is no model to write")
        return self.solutions[index].to_torch()


def _size(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, str):
        parts = value.lower().split("x")
        try:
            value = tuple(int(p) for p in parts) if len(parts) == 2 else int(value)
        except ValueError:
            raise ValueError(f"{name} must be a size like 28 or 32x24, got {value!r}") from None
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or (h, w), got {value!r}")
        h, w = as_int(value[0], name), as_int(value[1], name)
    else:
        h = w = as_int(value, name)
    if h <= 0 or w <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return h, w


def _range(value: Any, name: str, minimum: int) -> tuple[int, int]:
    if isinstance(value, str):
        parts = value.split(":")
        try:
            value = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else None
        except ValueError:
            value = None
        if value is None:
            raise ValueError(f"{name} must be a range like 2:10, got {parts!r}")
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an inclusive range (lo, hi), got {value!r}")
        lo, hi = as_int(value[0], name), as_int(value[1], name)
    else:
        lo = hi = as_int(value, name)
    if lo > hi:
        raise ValueError(f"{name} range is reversed: {lo}:{hi}")
    if lo < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {lo}:{hi}")
    return lo, hi


def layer_plan(channels, block) -> list[tuple[str, int, int]]:
    """(kind, in_channels, out_channels) per layer for channels c0..cB and a block pattern."""
    if isinstance(block, str):
        block = tuple(k.strip() for k in block.split(","))
    block = tuple(block)
    if not block:
        raise ValueError("block must name at least one layer kind")
    for kind in block:
        if kind not in _KINDS:
            raise ValueError(f"block: unknown layer kind {kind!r} (use 'conv' or 'pool')")
    if isinstance(channels, str):
        try:
            channels = [int(c) for c in channels.split(",")]
        except ValueError:
            raise ValueError(f"channels must be integers like 1,5,10, got {channels!r}") from None
    channels = [as_int(c, "channels") for c in channels]
    if len(channels) < 2:
        raise ValueError(f"channels needs at least two values (c0, c1), got {channels}")
    if min(channels) <= 0:
        raise ValueError(f"channels must be positive, got {channels}")
    if "conv" not in block and any(a != b for a, b in zip(channels, channels[1:])):
        raise ValueError(f"block {','.join(block)} has no conv, so channels cannot change: {channels}")
    plan = []
    for c_in, c_out in zip(channels, channels[1:]):
        current = c_in
        for kind in block:
            if kind == "conv":
                plan.append(("conv", current, c_out))
                current = c_out
            else:
                plan.append(("pool", current, current))
    return plan


def solve(
    input,
    output,
    channels,
    *,
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
    top=1,
    progress=None,
    lossless=False,
    min_rf=None,
    max_rf=None,
    pareto=None,
) -> SolveResult:
    """Find every conv/pool design that maps ``input`` to ``output``; count and rank them.

    Parameters
    ----------
    input, output : int, (h, w) or "HxW"
        Feature-map sizes at the start and the end.
    channels : sequence of int or "c0,c1,..."
        ``B + 1`` channel counts give ``B`` blocks.
    block : sequence of 'conv'/'pool' or "conv,pool"
        Layer kinds of every block.  The first conv of block i maps
        ``c_i -> c_{i+1}``; later convs keep ``c_{i+1}``; pools keep channels.
    kernel, stride, padding, dilation : (lo, hi), int or "lo:hi"
        Inclusive search ranges for convs.
    pool_kernel, pool_stride, pool_padding : (lo, hi), int or "lo:hi"
        Inclusive ranges for max pools (dilation 1; padding at most kernel // 2).
    exact : bool
        Only designs where no layer drops trailing input rows or columns
        (``(n + 2p - d(k-1) - 1) % s == 0``).  Rows between windows, skipped when
        a stride is longer than its dilated kernel, are not ruled out (see
        :func:`fastconv.shapes.dropped_pixels`).
    lossless : bool
        Only designs where every input pixel reaches the output with no hole on
        the way: every layer's taps read every row and column of its input (no
        trailing rows, no rows between windows, and, stricter than
        :func:`fastconv.shapes.dropped_pixels`, no row that only a dilated
        window's holes cover), and no receptive field at any depth has holes
        (:func:`fastconv.shapes.gridding` of every prefix of the chain is 1.0: a
        layer's dilation times the product of the strides before it never exceeds
        the receptive field so far).  Counted exactly and ranked like the other
        modes.
    min_rf, max_rf : int, optional
        Bounds on the receptive field of one output, in input pixels:
        ``1 + sum(d_i (k_i - 1) prod(s_j, j < i))`` over every layer, pools
        included (the same on both axes: kernels are square).  Counts stay
        exact: ``count`` is the number of designs within the bounds, and the top
        designs are the cheapest of those.  Works with ``exact`` and
        ``lossless``.
    objective : {'params', 'macs', 'kernel', 'depth'}
        Parameters of the convs, MACs per sample of the convs, the sum of all
        kernel sizes, or the number of layers that act on space (all but 1x1
        stride-1 unpadded ones).  Ties go to the lexicographically smallest
        (k, s, p, d) sequence.
    pareto : sequence of two to four objectives, or "params,macs", optional
        Also find the exact Pareto front over these objectives: ``front`` gets
        one design for every vector of costs no other design beats (at most as
        large on each, smaller on one), sorted by the first objective, each the
        lexicographically smallest design with those costs.  ``count`` still
        counts every design.
    top : int
        How many of the best designs to return.
    progress : bool, optional
        Draw a progress bar on stderr; by default only when stderr is a terminal.

    Returns
    -------
    SolveResult
        ``.count`` is exact (a Python int), ``.solutions`` best first,
        ``.front`` the Pareto front when ``pareto`` is given.

    Examples
    --------
    >>> import fastconv
    >>> r = fastconv.solve(28, 1, [1, 5, 10], top=2)
    >>> r.count
    84164
    >>> r.solutions[0].chain(), r.solutions[0].cost
    ('28 -> 27 -> 26 -> 13 -> 1', 235)
    >>> f = fastconv.solve(28, 1, [1, 5, 10], min_rf=28, pareto="params,macs").front
    >>> [(s.costs["params"], s.costs["macs"], s.chain()) for s in f]
    [(235, 4720, '28 -> 14 -> 7 -> 2 -> 1'), (260, 2420, '28 -> 6 -> 5 -> 2 -> 1')]
    """
    in_hw, out_hw = _size(input, "input"), _size(output, "output")
    plan = layer_plan(channels, block)
    ranges = dict(
        kernel=_range(kernel, "kernel", 1),
        stride=_range(stride, "stride", 1),
        padding=_range(padding, "padding", 0),
        dilation=_range(dilation, "dilation", 1),
        pool_kernel=_range(pool_kernel, "pool_kernel", 1),
        pool_stride=_range(pool_stride, "pool_stride", 1),
        pool_padding=_range(pool_padding, "pool_padding", 0),
    )
    if objective not in _OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(_OBJECTIVES)}, got {objective!r}")
    objectives = _pareto(pareto)
    top = as_int(top, "top")
    if top < 0:
        raise ValueError(f"top must be non-negative, got {top}")
    bounds = {}
    for name, value in (("min_rf", min_rf), ("max_rf", max_rf)):
        if value is not None:
            v = as_int(value, name)
            if v < 1:
                raise ValueError(f"{name} must be a positive number of pixels, got {value!r}")
            bounds[name] = v
    if "min_rf" in bounds and "max_rf" in bounds and bounds["min_rf"] > bounds["max_rf"]:
        raise ValueError(f"min_rf must be at most max_rf, got min_rf={min_rf!r} and max_rf={max_rf!r}")
    args = (
        in_hw,
        out_hw,
        plan,
        *ranges.values(),
        as_bool(exact, "exact"),
        as_bool(lossless, "lossless"),
        objective,
        top,
    )
    bounds["pareto"] = list(objectives)

    if progress is None:
        progress = sys.stderr.isatty()
    if progress:
        count, designs, front = _solve_with_progress(args, bounds)
    else:
        count, designs, front = _core.solve(*args, **bounds)

    square = in_hw[0] == in_hw[1] and out_hw[0] == out_hw[1]
    size = (lambda hw: hw[0]) if square else (lambda hw: tuple(hw))

    def solutions(found):
        return tuple(
            Solution(
                cost,
                tuple(DesignLayer(kd, k, s, p, d, size(i), size(o), ci, co) for kd, k, s, p, d, i, o, ci, co in rows),
                dict(zip(_OBJECTIVES, costs)),
            )
            for cost, costs, rows in found
        )

    return SolveResult(count, solutions(designs), tuple(plan), solutions(front), objectives)


def _pareto(value) -> tuple[str, ...]:
    """The objectives of a Pareto front: two to four distinct names, or () for none."""
    if value is None:
        return ()
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"pareto: objectives are names like 'params', got {name!r}")
        if name not in _OBJECTIVES:
            raise ValueError(f"pareto: unknown objective {name!r} (use {', '.join(_OBJECTIVES)})")
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ValueError(f"pareto: objective {name!r} is named twice in {value!r}")
    if not 2 <= len(names) <= len(_OBJECTIVES):
        raise ValueError(f"pareto: needs two to four objectives, got {value!r}")
    return tuple(names)


def _solve_with_progress(args, bounds):
    state = _core.SolveProgress()
    box: dict = {}

    def run():
        try:
            box["result"] = _core.solve(*args, state, **bounds)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    worker.start()
    drawn = False
    while worker.is_alive():
        worker.join(0.1)
        if worker.is_alive() and time.monotonic() - started > _PROGRESS_AFTER and state.total:
            phase = state.phase
            frac = min(1.0, state.done / state.total)
            bar = "#" * int(30 * frac)
            label = f"{phase + 1}/{4 if bounds.get('pareto') else 3} {_PHASES[phase]}"
            sys.stderr.write(f"\rsolving {label:<15} [{bar:<30}] {100 * frac:5.1f}%")
            sys.stderr.flush()
            drawn = True
    if drawn:
        sys.stderr.write("\r" + " " * 70 + "\r")
    if "error" in box:
        raise box["error"]
    return box["result"]
