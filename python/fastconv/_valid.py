"""Which input sizes a model accepts: every layer valid and every merge (a skip's concatenation, a residual sum)
meeting equal sizes, found by running the layers' own size rules (``output_shape``) on each size."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import layers as L

__all__ = ["ValidInputs", "valid_inputs"]


class _Failure(ValueError):
    def __init__(self, path, text):
        super().__init__(f"{path or 'the model'}: {text}")
        self.path = path


def _shape_of(layer, shape, path):
    """The output shape of `layer` for `shape`, merges checked here so a failure names its path."""
    if isinstance(layer, L.Sequential):
        for i, child in enumerate(layer.layers):
            shape = _shape_of(child, shape, f"{path}.{i}" if path else str(i))
        return shape
    if isinstance(layer, L.Residual):
        body = _shape_of(layer.body, shape, f"{path}.body" if path else "body")
        sub = f"{path}.shortcut" if path else "shortcut"
        short = tuple(shape) if layer.shortcut is None else _shape_of(layer.shortcut, shape, sub)
        if tuple(body) != tuple(short):
            what = "its input" if layer.shortcut is None else "the shortcut's output"
            raise _Failure(path, f"residual sum of the body's output {tuple(body)} and {what} {tuple(short)}")
        return tuple(short)
    if isinstance(layer, L.Concat):
        body = _shape_of(layer.body, shape, f"{path}.body" if path else "body")
        if tuple(body[1:]) != tuple(shape[1:]):
            raise _Failure(path, f"concatenation of the input {tuple(shape[1:])} and the body's output "
                                 f"{tuple(body[1:])} (sizes differ)")  # fmt: skip
        return (shape[0] + body[0], *shape[1:])
    try:
        return tuple(layer.output_shape(tuple(shape)))
    except ValueError as exc:
        raise _Failure(path, f"{type(layer).__name__}: {exc}") from None


@dataclass
class ValidInputs:
    """What :func:`fastconv.shapes.valid_inputs` returns.

    Attributes
    ----------
    valid : dict
        ``(H, W) -> output shape`` for every accepted input size, in increasing order.
    invalid : dict
        ``(H, W) -> reason``: the first layer or merge that fails (its path in the model) and why.
    """

    valid: dict = field(default_factory=dict)
    invalid: dict = field(default_factory=dict)

    @property
    def sizes(self) -> list:
        """The accepted sizes: ints for square ranges, ``(H, W)`` pairs otherwise."""
        return [h if self._square else (h, w) for h, w in self.valid]

    _square: bool = True

    def __str__(self):
        shown = ", ".join(str(s) for s in self.sizes[:20]) + (" ..." if len(self.valid) > 20 else "")
        return f"{len(self.valid)} valid input sizes of {len(self.valid) + len(self.invalid)}: {shown or 'none'}"


_SPATIAL_ATTRS = ("kernel_size", "output_size", "scale_factor", "start_dim")  # convs, pools, resizes, flattens
_SPATIAL_CALLS = ("max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "interpolate", "pad",
                  "flatten", "reshape")  # fmt: skip


def _has_spatial_layer(model) -> bool:
    """Whether any layer (or graph operation) looks at or changes the map's size: without one every size is
    accepted and there is nothing to search."""
    if any(hasattr(model, a) for a in _SPATIAL_ATTRS) or type(model).__name__ in ("ZeroPad2d", "MaxUnpool2d"):
        return True
    for node in getattr(model, "nodes", ()):
        if getattr(node, "op", None) == "call" and node.target in _SPATIAL_CALLS:
            return True
    children = model.children() if hasattr(model, "children") else []
    return any(_has_spatial_layer(child) for _, child in children)


def _as_model(model):
    if isinstance(model, (list, tuple)):
        return L.Sequential(*model)
    if isinstance(model, L.Layer) or hasattr(model, "output_shape"):
        return model
    if type(model).__module__.startswith("torch") or hasattr(model, "named_children"):
        from .nn import from_torch

        return from_torch(model)
    raise TypeError(f"valid_inputs: model must be fastconv layers, a fastconv.nn model or a torch module, got "
                    f"{type(model).__name__}")  # fmt: skip


def _pairs(lo, hi):
    def pair(v, name):
        if isinstance(v, bool):
            raise TypeError(f"valid_inputs: {name} must be an int or (H, W), got {v!r}")
        if isinstance(v, int):
            return (v, v), True
        if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool)
                                                                for x in v):  # fmt: skip
            return tuple(v), False
        raise TypeError(f"valid_inputs: {name} must be an int or (H, W), got {v!r}")

    (lh, lw), sq1 = pair(lo, "lo")
    (hh, hw), sq2 = pair(hi, "hi")
    if min(lh, lw) < 1:
        raise ValueError(f"valid_inputs: sizes start at 1, got lo={lo!r}")
    if lh > hh or lw > hw:
        raise ValueError(f"valid_inputs: lo {lo!r} is above hi {hi!r}")
    square = sq1 and sq2
    count = (hh - lh + 1) if square else (hh - lh + 1) * (hw - lw + 1)
    if count > 1_000_000:
        raise ValueError(f"valid_inputs: {count} sizes to try; at most 1,000,000")
    if square:
        return [(n, n) for n in range(lh, hh + 1)], True
    return [(h, w) for h in range(lh, hh + 1) for w in range(lw, hw + 1)], False


def valid_inputs(model, lo, hi, channels=None) -> ValidInputs:
    """Every input size in ``[lo, hi]`` the model accepts, with its output shape; for each size it refuses, the
    first layer or merge that fails and why.

    Parameters
    ----------
    model : fastconv.layers spec, list of specs, fastconv.nn model or torch.nn.Module
        Anything :func:`fastconv.summary` accepts (torch modules go through :func:`fastconv.nn.from_torch`).
    lo, hi : int or (int, int)
        Square sizes ``lo..hi``, or ``(H, W)`` ranges (every pair with ``lo[0] <= H <= hi[0]`` and
        ``lo[1] <= W <= hi[1]``).
    channels : int, optional
        Input channels (default: the first layer's).

    Returns
    -------
    ValidInputs
        ``valid`` (size -> output shape), ``invalid`` (size -> reason), ``sizes``.

    Examples
    --------
    >>> from fastconv import layers as L, shapes
    >>> down = L.Sequential(L.MaxPool2d(2), L.Conv2d(4, 4, 3, padding=1), L.ConvTranspose2d(4, 4, 2, stride=2))
    >>> unet = L.Sequential(L.Conv2d(1, 4, 3, padding=1), L.Concat(down))
    >>> r = shapes.valid_inputs(unet, 1, 12)
    >>> r.sizes
    [2, 4, 6, 8, 10, 12]
    >>> r.invalid[(5, 5)]
    "1: concatenation of the input (5, 5) and the body's output (4, 4) (sizes differ)"
    """
    model = _as_model(model)
    if not _has_spatial_layer(model):
        raise ValueError(f"valid_inputs: {type(model).__name__} has no spatial layer (conv, pool, resize, pad or "
                         "flatten), so it accepts every size; there is nothing to search")  # fmt: skip
    c = channels if channels is not None else L.input_channels(model)
    if c is None:
        raise ValueError(f"valid_inputs: no layer of {type(model).__name__} names its input channels (a conv or a "
                         "norm would); give channels=")  # fmt: skip
    if isinstance(c, bool) or not isinstance(c, int) or c < 1:
        raise ValueError(f"valid_inputs: channels must be a positive int, got {channels!r}")
    sizes, square = _pairs(lo, hi)
    out = ValidInputs(_square=square)
    graph = not isinstance(model, L.Layer)
    for h, w in sizes:
        try:
            shape = tuple(model.output_shape((c, h, w))) if graph else _shape_of(model, (c, h, w), "")
        except ValueError as exc:
            out.invalid[(h, w)] = str(exc)
            continue
        out.valid[(h, w)] = shape
    return out
