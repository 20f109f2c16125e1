"""Exact tiled inference on images larger than memory, on Dask (``pip install dask``; zarr for zarr inputs).

:func:`apply` cuts the model's output into blocks; each block is computed from its input region plus exactly the
context the model needs (its receptive field), clipped at the image's borders (where the model's own padding
applies, as in the whole-image run) and started at a multiple of the model's total stride, so the tiled result
equals the whole-image result, borders included.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from . import _tiling

__all__ = ["apply", "progress"]


def _import_dask():
    try:
        import dask
        import dask.array as da
    except ImportError:
        raise ImportError('fastconv.dask needs dask: pip install "fastconv[dask]" (dask, zarr, distributed)') from None
    return dask, da


_copies = threading.local()


def _own_copy(model, token):
    """The calling thread's copy of `model` (layers keep per-call state, so threads must not share one); made once
    per thread per apply() call."""
    import copy

    cache = getattr(_copies, "models", None)
    if cache is None:
        cache = _copies.models = {}
    if token not in cache:
        if len(cache) > 8:
            cache.clear()
        cache[token] = copy.deepcopy(model)
    return cache[token]


def _run_block(model, token, crop, rows, cols):
    out = _own_copy(model, token)(np.ascontiguousarray(crop))
    r0, r1 = rows
    c0, c1 = cols
    if out.shape[2] < r1 or out.shape[3] < c1:  # the plan guarantees it; a violation is a bug, never a wrong answer
        raise RuntimeError(f"fastconv.dask: a tile's output {out.shape[2:]} is short of rows {rows}, columns {cols}")
    return out[:, :, r0:r1, c0:c1]


def progress(result, **kwargs):
    """``result.compute()`` with a progress display: Dask's ``ProgressBar`` under the local schedulers, or
    ``distributed.progress`` when a ``distributed.Client`` is active (then the computation is persisted on the
    cluster and gathered).  Keyword arguments go to ``compute``."""
    _import_dask()
    try:
        from distributed import get_client
        from distributed import progress as dist_progress

        client = get_client()
    except (ImportError, ValueError):
        client = None
    if client is not None:
        future = client.compute(result, **kwargs)
        dist_progress(future)
        return future.result()
    from dask.diagnostics import ProgressBar

    with ProgressBar():
        return result.compute(**kwargs)


def _max_channels(model):
    best = 1
    for _, m in model.named_modules():
        for attr in ("in_channels", "out_channels", "num_features"):
            v = getattr(m, attr, None)
            if isinstance(v, int):
                best = max(best, v)
    return best


def _splits(total, size):
    """[(start, stop)] covering range(total) in pieces of `size` (the last shorter)."""
    return [(s, min(s + size, total)) for s in range(0, total, size)] or [(0, 0)]


def apply(model, image, *, tile=None, batch=None, memory=64 << 20):
    """Run a local fastconv.nn model over a large image, tile by tile, as a lazy Dask array equal to
    ``model(image)``.

    Parameters
    ----------
    model : fastconv.nn.Module
        A model whose layers are local: convolutions (any padding but size-dependent ``'same'`` with strides),
        transposed convolutions, pools, integer-factor upsampling (not ``align_corners=True``), element-wise
        activations, batch norm and dropout in eval mode, ``Sequential``, ``Residual``, ``Concat`` trees, and the
        frozen models :func:`fastconv.nn.freeze` makes of them.  Anything else raises ``ValueError`` naming the
        layer and why it cannot be tiled.
    image : numpy.ndarray, dask.array.Array or zarr array, shape (N, C, H, W) or (C, H, W)
        Read block by block: only the regions a tile needs are loaded.
    tile : int or (int, int), optional
        Output rows and columns per block.  Default: the largest square whose input region, context included,
        fits `memory` at the model's widest layer.
    batch : int, optional
        Images per block (default: all of them).
    memory : int
        Bytes a block may use for one of its widest activations (the default tile's budget), 64 MiB by default
        (a block holds a few such activations at once: its layers keep their outputs during the forward).

    Returns
    -------
    dask.array.Array
        The model's output, lazily: ``.compute()``, ``.to_zarr(...)``, ``dask.array.store``.

    Notes
    -----
    Each block runs on its own copy of the model (layers keep per-call state), made once per thread.  fastconv's
    thread pool serves one call at a time: under Dask's threaded scheduler the first running block uses the pool
    and the others run on their own Dask threads, so at most ``get_num_threads() + num_workers - 1`` threads
    compute.  For the fewest, either leave fastconv's pool at the core count and run Dask with
    ``dask.config.set(num_workers=1)`` (large tiles, each parallel inside), or ``fastconv.set_num_threads(1)``
    with as many Dask workers (or ``distributed`` worker threads) as cores.  See :func:`fastconv.shapes.halo`
    for the context and stride the tiles respect.

    Examples
    --------
    >>> import numpy as np, fastconv.dask
    >>> from fastconv import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, rng=0), nn.ReLU(),
    ...                       nn.Conv2d(8, 4, 3, padding=1, rng=1)).eval()
    >>> x = np.random.default_rng(0).standard_normal((1, 3, 100, 90)).astype(np.float32)
    >>> y = fastconv.dask.apply(model, x, tile=16)
    >>> y.shape, y.numblocks
    ((1, 4, 50, 45), (1, 1, 4, 3))
    >>> bool(np.allclose(y.compute(), model(x), atol=1e-5))
    True
    """
    _, da = _import_dask()
    from .nn.module import Module

    if not isinstance(model, Module):
        raise TypeError(f"fastconv.dask.apply: model must be a fastconv.nn Module, got {type(model).__name__}")
    if image is None or not hasattr(image, "shape") or not hasattr(image, "dtype"):
        raise TypeError(f"fastconv.dask.apply: image must be a NumPy, Dask or zarr array, got {type(image).__name__}")
    if isinstance(image, da.Array):
        arr = image
    else:  # a zarr array read in its own chunks (one whole-image chunk would load it all for every tile)
        chunks = getattr(image, "chunks", None)
        arr = da.from_array(image, chunks=chunks if isinstance(chunks, tuple) and len(chunks) == image.ndim
                            else image.shape)  # fmt: skip
    if arr.ndim not in (3, 4):
        raise ValueError(f"fastconv.dask.apply: image must be (N, C, H, W) or (C, H, W), got shape {arr.shape}")
    if np.dtype(arr.dtype) not in (np.float32, np.float64):
        raise TypeError(f"fastconv.dask.apply: image must be float32 or float64, got dtype {arr.dtype}")
    unbatched = arr.ndim == 3
    if unbatched:
        arr = arr[None]
    n, c, h, w = arr.shape
    plans = [_tiling.local_plan(model, axis, (c, h, w)) for axis in (0, 1)]  # refuses what cannot be tiled
    out_c, out_h, out_w = model.output_shape((c, h, w))
    if tile is None:
        per_pos = _max_channels(model) * np.dtype(arr.dtype).itemsize * max(1, batch or n)
        halo = _tiling.halo(model, max(h, w, 64))
        side = int(math.sqrt(max(memory, 1) / per_pos)) - max(halo.before) - max(halo.after)
        scale = float(min(halo.scale))
        tile = max(8, int(side * scale))
    tiles = (tile, tile) if isinstance(tile, (int, np.integer)) else tuple(tile)
    if len(tiles) != 2 or any(isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 1 for t in tiles):
        raise ValueError(f"fastconv.dask.apply: tile must be a positive int or two, got {tile!r}")
    bsize = n if batch is None else batch
    if isinstance(bsize, bool) or not isinstance(bsize, (int, np.integer)) or bsize < 1:
        raise ValueError(f"fastconv.dask.apply: batch must be a positive int, got {batch!r}")

    def crop_out(axis, length):
        """The model's output length on `axis` for a crop `length` long (geometry only)."""
        shape = (c, length, w) if axis == 0 else (c, h, length)
        try:
            return model.output_shape(shape)[1 + axis]
        except ValueError:  # too short for some window
            return 0

    def spans(axis, total_in, total_out, size):
        back, r, align = plans[axis]
        out = []
        for a, b in _splits(total_out, size):
            lo, hi = back(a, b - 1)
            lo = max(0, (lo // align) * align)
            hi = min(total_in - 1, hi)
            # A block whose outputs read only padding (a padded 1x1 layer's border) still needs one real position:
            # layers refuse empty inputs.  More context, never a different value; lo stays aligned.
            lo = min(lo, (total_in - 1) // align * align)
            hi = max(hi, lo)
            start = int(lo * r)  # the crop's first output, in the image's output positions
            # Layers that trim a crop's end (negative padding, a transposed convolution's padding) can leave it
            # short of the block: more context on the right, never a different value.
            while hi < total_in - 1 and crop_out(axis, hi + 1 - lo) < b - start:
                hi = min(total_in - 1, hi + align)
            out.append(((lo, hi + 1), (a - start, b - start), b - a))
        return out

    rows, cols = spans(0, h, out_h, tiles[0]), spans(1, w, out_w, tiles[1])
    dtype = np.dtype(arr.dtype)
    import uuid

    import dask

    token = uuid.uuid4().hex
    shared = dask.delayed(model, pure=True)  # one copy of the model in the graph, not one per block
    grid = []
    for n0, n1 in _splits(n, bsize):
        plane = []
        for r_in, r_out, r_len in rows:
            line = []
            for c_in, c_out, c_len in cols:
                crop = arr[n0:n1, :, r_in[0] : r_in[1], c_in[0] : c_in[1]]
                block = dask.delayed(_run_block, pure=True)(shared, token, crop, r_out, c_out)
                line.append(da.from_delayed(block, (n1 - n0, out_c, r_len, c_len), dtype=dtype))
            plane.append(line)
        grid.append([plane])
    out = da.block(grid)
    return out[0] if unbatched else out
