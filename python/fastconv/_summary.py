"""Keras-like model summaries computed from layer descriptions, without a forward pass."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

from . import layers as L
from . import shapes
from .shapes import RFState

__all__ = ["summary", "Summary", "SummaryRow", "DroppedPixelsWarning", "GriddingWarning", "from_torch", "parse_shape"]


class GriddingWarning(UserWarning):
    """Input pixels inside an output's receptive field never reach it (stacked dilations, long strides).

    Turn it into an error with ``warnings.simplefilter("error", fastconv.GriddingWarning)``.
    """


class DroppedPixelsWarning(UserWarning):
    """A layer's windows never read the last input rows or columns.

    Turn it into an error with
    ``warnings.simplefilter("error", fastconv.DroppedPixelsWarning)``.
    """


@dataclass(frozen=True)
class SummaryRow:
    name: str
    type: str
    output_shape: tuple
    params: int
    macs: int
    receptive_field: tuple | None
    dropped: tuple  # (rows, cols) of input the layer never reads


def parse_shape(shape: Any) -> tuple:
    """``"3x224x224"``, ``(3, 224, 224)`` or a batched 4-tuple -> ``(C, H, W)``."""
    if isinstance(shape, str):
        try:
            shape = tuple(int(v) for v in shape.lower().split("x"))
        except ValueError:
            raise ValueError(f"input_shape must look like 3x224x224, got {shape!r}") from None
    shape = tuple(int(v) for v in shape)
    if len(shape) == 4:
        shape = shape[1:]
    if len(shape) not in (1, 3) or min(shape) <= 0:
        raise ValueError(f"input_shape must be (C, H, W) with positive sizes, got {shape}")
    return shape


class Summary:
    """Result of :func:`fastconv.summary`; ``str()`` gives the table."""

    def __init__(self, model: L.Layer, input_shape: tuple, rows: list[SummaryRow], gridding=None):
        self.model = model
        self.input_shape = input_shape
        self.rows = rows
        self.gridding = gridding  # shapes.Gridding of the spatial part, or None
        self.total_params = model.param_count()
        self.total_macs = sum(r.macs for r in rows)
        self.output_shape = rows[-1].output_shape if rows else input_shape

    def to_dict(self) -> dict:
        return {
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "total_params": self.total_params,
            "total_macs": self.total_macs,
            "gridding": None if self.gridding is None else asdict(self.gridding),
            "rows": [
                {
                    **asdict(r),
                    "output_shape": list(r.output_shape),
                    "receptive_field": None if r.receptive_field is None else list(r.receptive_field),
                    "dropped": list(r.dropped),
                }
                for r in self.rows
            ],
        }

    def __str__(self) -> str:
        head = ("Layer (type)", "Output Shape", "Param #", "MACs", "RF")
        body = []
        for r in self.rows:
            rf = "-" if r.receptive_field is None else "x".join(_num(v) for v in r.receptive_field)
            mark = " !" if any(r.dropped) else ""
            body.append(
                (f"{r.name} ({r.type}){mark}", str((None, *r.output_shape)), f"{r.params:,}", f"{r.macs:,}", rf)
            )
        widths = [max(len(row[i]) for row in [head, *body]) for i in range(5)]
        fmt = lambda row: "  ".join(  # noqa: E731
            c.ljust(widths[i]) if i < 2 else c.rjust(widths[i]) for i, c in enumerate(row)
        )
        rule = "=" * len(fmt(head))
        lines = [
            fmt(head),
            rule,
            *(fmt(b) for b in body),
            rule,
            f"Total params: {self.total_params:,}",
            f"Total MACs: {self.total_macs:,} per sample "
            f"(FLOPs = 2 x MACs = {2 * self.total_macs:,}; bias adds not counted)",
        ]
        for r in self.rows:
            if any(r.dropped):
                lines.append(
                    f"! {r.name} ({r.type}) never reads {r.dropped[0]} input row(s) and {r.dropped[1]} column(s): "
                    "trailing ones ((n + 2p - d(k-1) - 1) % s != 0) and those between windows (s > d(k-1) + 1)"
                )
        if self.gridding is not None and self.gridding.fraction < 1:
            g = self.gridding
            lines.append(
                f"! gridding: {100 * g.fraction:.1f}% of one output's {g.box[0]}x{g.box[1]} receptive field reaches "
                f"it through the taps; caused by {', '.join(g.culprits)}"
            )
        return "\n".join(lines)

    def _repr_pretty_(self, p, cycle):  # IPython
        p.text(str(self))


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def summary(model, input_shape) -> Summary:
    """Trace shapes, parameters, MACs and receptive fields through a model.

    Parameters
    ----------
    model : fastconv.layers.Layer, list of layers, or torch.nn.Module
        A torch module is read from its registered submodules (no forward pass;
        torch is imported only then) and treated as the chain of its children,
        so write residual or concatenating networks with
        :class:`fastconv.layers.Residual` / :class:`~fastconv.layers.Concat`.
    input_shape : (C, H, W), (N, C, H, W) or "CxHxW"

    Returns
    -------
    Summary
        ``.rows`` (name, type, output_shape, params, macs, receptive_field,
        dropped), ``.total_params``, ``.total_macs``, ``.to_dict()``.

    Warns
    -----
    DroppedPixelsWarning
        For every layer that never reads some trailing input rows/columns.

    Examples
    --------
    >>> import fastconv
    >>> from fastconv import layers as L
    >>> s = fastconv.summary([L.Conv2d(1, 8, 3), L.ReLU(), L.MaxPool2d(2)], "1x28x28")
    >>> s.rows[-1].output_shape, s.total_params
    ((8, 13, 13), 80)
    """
    if type(model).__name__ in ("GraphModule", "FrozenGraph"):
        return _graph_summary(model, parse_shape(input_shape))
    if not isinstance(model, L.Layer) and not isinstance(model, (list, tuple)):
        model = from_torch(model)
    if isinstance(model, (list, tuple)):
        model = L.Sequential(*model)
    if not isinstance(model, L.Sequential):
        model = L.Sequential(model)
    shape = parse_shape(input_shape)
    rows = []
    field: RFState | None = RFState()
    for name, layer, in_shape, out_shape in model.walk(shape):
        if isinstance(layer, (L.Flatten, L.Linear)):
            field = None  # fully connected: every input pixel
        elif field is not None and len(in_shape) == 3:
            field = field.after(layer, in_shape)
        dropped = tuple(layer.dropped(in_shape)) if len(in_shape) == 3 else (0, 0)
        if isinstance(dropped, int):
            dropped = (dropped, dropped)
        own_params = 0 if isinstance(layer, (L.Residual, L.Concat)) else layer.param_count()
        own_macs = 0 if isinstance(layer, (L.Residual, L.Concat)) else layer.macs(in_shape)
        rows.append(
            SummaryRow(
                name,
                type(layer).__name__,
                tuple(out_shape),
                own_params,
                own_macs,
                None if field is None else field.size,
                dropped,
            )
        )
        if any(dropped):
            warnings.warn(
                f"{name} ({type(layer).__name__}) never reads {dropped[0]} input row(s) and "
                f"{dropped[1]} column(s) of its {in_shape[1]}x{in_shape[2]} input",
                DroppedPixelsWarning,
                stacklevel=2,
            )
    # Gridding of the spatial part, up to the first fully connected layer.
    spatial = []
    for name, layer, in_shape, _ in model.walk(shape):
        if isinstance(layer, (L.Flatten, L.Linear)) or len(in_shape) != 3:
            break
        spatial.append((name, layer, in_shape))
    grid = shapes.gridding_walk(spatial)
    if grid.fraction < 1:
        warnings.warn(
            f"gridding: {100 * grid.fraction:.1f}% of one output's {grid.box[0]}x{grid.box[1]} receptive field "
            f"reaches it through the taps; caused by {', '.join(grid.culprits)}",
            GriddingWarning,
            stacklevel=2,
        )
    return Summary(model, shape, rows, grid)


def _graph_summary(gm, shape) -> Summary:
    """summary() of a fastconv.nn.GraphModule: one row per layer and per operation on arrays, receptive fields
    along the graph's edges (a merge sees what the widest of its inputs sees)."""
    rows = []
    fields = {n.name: RFState() for n in gm.nodes if n.op == "input"}
    for label, layer, in_shape, out_shape, ins, node in gm.trace_shapes(shape):
        known = [fields[i] for i in ins if i in fields]
        field = max(known, key=lambda f: f.size) if known else (RFState() if not ins else None)
        if isinstance(layer, (L.Flatten, L.Linear)) or (ins and not known):
            field = None
        elif field is not None and len(in_shape) == 3:
            field = field.after(layer, in_shape)
        if field is not None:
            fields[node] = field
        dropped = tuple(layer.dropped(in_shape)) if len(in_shape) == 3 else (0, 0)
        name = getattr(layer, "op", None)
        rows.append(SummaryRow(label, name if name else type(layer).__name__, tuple(out_shape), layer.param_count(),
                               layer.macs(in_shape) if len(in_shape) else 0, None if field is None else field.size,
                               dropped))  # fmt: skip
    return Summary(gm, shape, rows, None)


_TORCH_LEAVES = {
    "Conv2d": lambda m: L.Conv2d(
        m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups, m.bias is not None
    ),
    "ConvTranspose2d": lambda m: L.ConvTranspose2d(
        m.in_channels,
        m.out_channels,
        m.kernel_size,
        m.stride,
        m.padding,
        m.output_padding,
        m.groups,
        m.bias is not None,
        m.dilation,
    ),
    "MaxPool2d": lambda m: L.MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation, ceil_mode=m.ceil_mode),
    "MaxUnpool2d": lambda m: L.MaxUnpool2d(m.kernel_size, m.stride, m.padding),
    "AvgPool2d": lambda m: L.AvgPool2d(
        m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad, m.divisor_override
    ),
    "AdaptiveAvgPool2d": lambda m: L.AdaptiveAvgPool2d(m.output_size),
    "BatchNorm2d": lambda m: L.BatchNorm2d(m.num_features, m.eps, m.momentum, m.affine),
    "ReLU": lambda m: L.ReLU(),
    "ReLU6": lambda m: L.ReLU6(),
    "SiLU": lambda m: L.SiLU(),
    "GELU": lambda m: L.GELU(),
    "LeakyReLU": lambda m: L.LeakyReLU(m.negative_slope),
    "ELU": lambda m: L.ELU(m.alpha),
    "Sigmoid": lambda m: L.Sigmoid(),
    "Tanh": lambda m: L.Tanh(),
    "Softmax": lambda m: L.Softmax(m.dim),
    "Identity": lambda m: L.Identity(),
    "Dropout": lambda m: L.Dropout(m.p),
    "Dropout2d": lambda m: L.Dropout(m.p),
    "Flatten": lambda m: L.Flatten(m.start_dim, m.end_dim),
    "Linear": lambda m: L.Linear(m.in_features, m.out_features, m.bias is not None),
    "Upsample": lambda m: L.Upsample(m.size, m.scale_factor, m.mode, m.align_corners),
    "ZeroPad2d": lambda m: L.ZeroPad2d(tuple(m.padding)),
}


def from_torch(module) -> L.Layer:
    """Describe a ``torch.nn.Module`` with ``fastconv.layers`` specs, by introspection.

    Known leaf modules map one to one; any module with children becomes a
    Sequential of them.  An unknown leaf raises ValueError naming its class.
    """
    import torch.nn as nn  # only here: torch is never a runtime dependency

    if not isinstance(module, nn.Module):
        raise TypeError(
            f"model must be a fastconv layer, a list of them or a torch.nn.Module, got {type(module).__name__}"
        )
    name = type(module).__name__
    children = list(module.named_children())
    if name in _TORCH_LEAVES and not children:
        return _TORCH_LEAVES[name](module)
    if not children:
        raise ValueError(f"summary: torch module {name} is not supported; describe it with fastconv.layers")
    return L.Sequential(*(from_torch(child) for _, child in children))
