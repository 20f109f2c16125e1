"""Output sizes, TensorFlow 'same' padding and receptive fields.

Every rule here is computed by the same C++ functions the kernels and the size
solver use (``csrc/core/geometry.hpp``), so a size printed by the toolkit is
the size the kernels produce.  The single-layer rules live in
``fastconv._sizes`` (the layer specs build on them); the model-level tools here
build on the specs.  Sizes and geometry are an int or an ``(h, w)`` pair; the
result has the pair form when any argument does.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import _valid
from . import layers as _layers
from ._args import as_pair
from ._sizes import (
    conv_output_size,
    conv_transpose_output_size,
    dropped_pixels,
    pool_output_size,
    same_padding,
)
from ._tiling import halo as _halo

__all__ = [
    "halo",
    "valid_inputs",
    "conv_output_size",
    "pool_output_size",
    "conv_transpose_output_size",
    "same_padding",
    "dropped_pixels",
    "receptive_field",
    "ReceptiveField",
    "gridding",
    "Gridding",
]


@dataclass(frozen=True)
class RFState:
    """Receptive-field recurrence state: size, jump and start per axis.

    Each geometric step with effective kernel ``e = d(k-1)+1``, stride ``s`` and
    leading padding ``p`` maps ``size += (e-1)*jump``, ``start += ((e-1)/2 - p)*jump``,
    ``jump *= s``.  ``start`` is the input coordinate (pixel index) of the centre
    of the first output's field.
    """

    size: tuple = (1, 1)
    jump: tuple = (1, 1)
    start: tuple = (0.0, 0.0)

    def step(self, k, s, p, d) -> RFState:
        size, jump, start = list(self.size), list(self.jump), list(self.start)
        for a in range(2):
            eff = d[a] * (k[a] - 1) + 1
            start[a] = start[a] + ((eff - 1) / 2 - p[a]) * jump[a]
            size[a] = size[a] + (eff - 1) * jump[a]
            jump[a] = jump[a] * s[a]
        return RFState(tuple(size), tuple(jump), tuple(start))

    def after(self, layer, in_shape) -> RFState:
        state = self
        for k, s, p, d in layer.geometry(in_shape):
            state = state.step(k, s, p, d)
        return state


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field after one layer, per axis ``(h, w)``.

    ``size``: input pixels one output pixel sees; ``jump``: input pixels between
    adjacent outputs (the effective stride); ``start``: input coordinate of the
    centre of the first output's field (negative when it lies in the padding).
    """

    name: str
    size: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[float, float]


def _specs(layers) -> list:
    """Layer specs from specs, containers or ``(kernel, stride, padding, dilation)`` tuples."""
    Layer, Window = _layers.Layer, _layers.Window
    if isinstance(layers, Layer):
        layers = [layers]
    specs = []
    for layer in layers:
        if isinstance(layer, Layer):
            specs.append(layer)
        else:
            k, s, p, d = (tuple(layer) + (1, 1, 0, 1)[len(layer) :])[:4]
            specs.append(Window(k, s, p, d))
    return specs


def receptive_field(layers, input_size=None) -> list[ReceptiveField]:
    """Receptive field, jump and start offset after each layer of a chain.

    Parameters
    ----------
    layers : sequence
        ``fastconv.layers`` specs (containers are flattened; layers without
        geometry pass the field through), or ``(kernel, stride, padding,
        dilation)`` tuples.
    input_size : int or (int, int), optional
        Needed only to resolve ``padding='same'``.

    Examples
    --------
    >>> from fastconv.shapes import receptive_field
    >>> [r.size for r in receptive_field([(3, 1, 1, 1), (3, 2, 1, 1), (3, 1, 1, 1)])]
    [(3, 3), (5, 5), (9, 9)]
    """
    Sequential = _layers.Sequential
    specs = _specs(layers)
    shape = None if input_size is None else (1, *as_pair(input_size, "input_size"))
    rows: list[ReceptiveField] = []
    field = RFState()
    for name, layer, in_shape, _ in Sequential(*specs).walk(shape):
        field = field.after(layer, in_shape)
        rows.append(ReceptiveField(name, field.size, field.jump, field.start))
    return rows


@dataclass(frozen=True)
class Gridding:
    """How much of one output's receptive-field box actually reaches it.

    ``fraction``: reached pixels over the box's area (1.0: no holes);
    ``per_axis``: the same along (h, w); ``box``: the receptive field (h, w);
    ``culprits``: names of the layers after which the fraction fell.
    """

    fraction: float
    per_axis: tuple[float, float]
    box: tuple[int, int]
    culprits: tuple[str, ...]


def gridding(layers, input_size=None) -> Gridding:
    """Gridding of a chain: the fraction of one output's receptive field that reaches it through taps.

    Stacked dilated convolutions leave holes (the seed's conv arithmetic, question 3):
    input pixels inside the receptive-field box that no chain of taps connects to
    the output.  Taps form rectangular grids, so the reach is the product of one set
    per axis, built layer by layer: a layer with kernel k, dilation d and effective
    stride ``jump`` so far reads offsets ``i * d * jump + r`` for its taps i and the
    offsets r reached before it.

    Parameters
    ----------
    layers : sequence
        ``fastconv.layers`` specs or ``(kernel, stride, padding, dilation)`` tuples,
        as :func:`receptive_field` takes them (containers are flattened).
    input_size : int or (int, int), optional
        Needed only to resolve ``padding='same'``.

    Returns
    -------
    Gridding

    Examples
    --------
    >>> from fastconv.shapes import gridding
    >>> round(gridding([(3, 1, 2, 2)] * 3).fraction, 3)  # 49 / 169
    0.29
    >>> gridding([(3, 1, 1, 1), (3, 1, 2, 2), (3, 1, 3, 3)]).fraction  # dilations 1, 2, 3
    1.0
    """
    Sequential = _layers.Sequential
    specs = _specs(layers)
    shape = None if input_size is None else (1, *as_pair(input_size, "input_size"))
    return gridding_walk((name, layer, in_shape) for name, layer, in_shape, _ in Sequential(*specs).walk(shape))


def gridding_walk(steps) -> Gridding:
    """:func:`gridding` over ``(name, layer, input shape)`` triples (the summary passes its own walk)."""
    import numpy as np

    reach = [np.ones(1, bool), np.ones(1, bool)]
    jump = [1, 1]
    culprits = []
    fraction = 1.0
    for name, layer, in_shape in steps:
        for k, st, _, d in layer.geometry(in_shape):
            for a in range(2):
                step = d[a] * jump[a]
                grown = np.zeros(len(reach[a]) + (k[a] - 1) * step, bool)
                for i in range(k[a]):
                    grown[i * step : i * step + len(reach[a])] |= reach[a]
                reach[a] = grown
                jump[a] *= st[a]
        now = float(reach[0].mean() * reach[1].mean())
        if now < fraction - 1e-12:
            culprits.append(name)
        fraction = now
    per_axis = (float(reach[0].mean()), float(reach[1].mean()))
    return Gridding(per_axis[0] * per_axis[1], per_axis, (len(reach[0]), len(reach[1])), tuple(culprits))


def halo(model, size=4096):
    """The context a local model needs on each side of a tile, and the stride tiles must start at.

    Parameters
    ----------
    model : fastconv.nn.Module or fastconv.layers spec
        Any model :func:`fastconv.summary` accepts whose layers are local (see :func:`fastconv.dask.apply`);
        otherwise ``ValueError`` naming the first layer that is not and why.
    size : int
        The image's size along each axis (only layers padded ``'same'`` depend on it).

    Returns
    -------
    Halo
        ``before`` and ``after`` (rows, columns): input positions an output position reads beyond the ones it
        covers; ``stride``: the multiple of input positions a tile must start at for the tiled result to equal
        the whole-image one; ``scale``: output positions per input position.

    Examples
    --------
    >>> from fastconv import layers as L, shapes
    >>> h = shapes.halo(L.Sequential(L.Conv2d(3, 8, 3, stride=2, padding=1), L.Conv2d(8, 8, 3, padding=1)))
    >>> h.before, h.after, h.stride
    ((3, 3), (2, 2), (2, 2))
    """

    return _halo(model, size)


def valid_inputs(model, lo, hi, channels=None):
    """Every input size in ``[lo, hi]`` a model accepts, and why each other one fails.

    Every layer must be valid and every merge (a U-Net's skip concatenation, a residual sum) meet equal sizes.

    Parameters
    ----------
    model : fastconv.layers spec, list of specs, fastconv.nn model or torch.nn.Module
        Anything :func:`fastconv.summary` accepts (torch modules go through :func:`fastconv.nn.from_torch`).
    lo, hi : int or (int, int)
        Square sizes ``lo..hi``, or ``(H, W)`` ranges.
    channels : int, optional
        Input channels (default: the first layer's).

    Returns
    -------
    fastconv._valid.ValidInputs
        ``valid`` (size -> output shape), ``invalid`` (size -> the failing layer or merge and why), ``sizes``.

    Examples
    --------
    >>> from fastconv import layers as L, shapes
    >>> shapes.valid_inputs(L.Sequential(L.Conv2d(1, 1, 3, stride=2)), 1, 6).sizes
    [3, 4, 5, 6]
    """

    return _valid.valid_inputs(model, lo, hi, channels)
