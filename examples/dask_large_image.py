"""A large image on disk through a CNN into a result on disk, tile by tile, exactly (fastconv.dask).

    python examples/dask_large_image.py --size 12288 --plot crop.png

Writes a random RGB image of size x size float32 pixels to a zarr store (1.7 GiB at 12,288), runs a 4-layer
network with 16-channel intermediates over it with fastconv.dask.apply into another zarr store, prints the peak
resident memory (VmHWM) and, with --plot, saves an input crop beside the same crop of the output.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np


def peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def network():
    from fastconv import nn

    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, rng=0), nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=1, rng=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=2, dilation=2, rng=2), nn.ReLU(),
        nn.ConvTranspose2d(16, 3, 2, stride=2, rng=3),
    ).eval()  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="image side in pixels (default 4096)")
    parser.add_argument("--tile", type=int, default=None, help="output tile side (default: from the memory budget)")
    parser.add_argument("--store", default=None, help="folder for the zarr stores (default: a temporary one)")
    parser.add_argument("--plot", default=None, help="save an input crop beside the output crop to this PNG")
    args = parser.parse_args(argv)
    if args.size < 64:
        parser.error(f"--size must be at least 64, got {args.size}")
    try:
        import dask
        import zarr
    except ImportError:
        parser.error('this example needs dask and zarr: pip install "fastconv[dask]"')
    import fastconv.dask

    folder = args.store or tempfile.mkdtemp()
    n = args.size
    src = zarr.open_array(os.path.join(folder, "image.zarr"), mode="w", shape=(3, n, n), chunks=(3, 1024, 1024),
                          dtype="f4")  # fmt: skip
    rng = np.random.default_rng(0)
    for r in range(0, n, 1024):  # written in strips: the image is never whole in memory
        rows = min(1024, n - r)
        yy, xx = np.mgrid[r : r + rows, 0:n]
        strip = np.stack([np.sin(xx / 37.0), np.cos(yy / 23.0), np.sin((xx + yy) / 51.0)]).astype(np.float32)
        src[:, r : r + rows] = strip + 0.1 * rng.standard_normal(strip.shape).astype(np.float32)
    model = network()
    out = fastconv.dask.apply(model, src, tile=args.tile)
    t = time.perf_counter()
    with dask.config.set(scheduler="threads", num_workers=1):  # fastconv's pool works inside each tile
        out.to_zarr(os.path.join(folder, "result.zarr"), overwrite=True)
    seconds = time.perf_counter() - t
    print(f"{n}x{n} RGB float32 ({3 * 4 * n * n / 2**30:.2f} GiB) -> {out.shape} in {seconds:.1f} s, "
          f"{out.numblocks[1] * out.numblocks[2]} tiles; peak resident memory {peak_rss_mib():.0f} MiB")  # fmt: skip
    if args.plot:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            parser.error("--plot needs matplotlib: pip install matplotlib")
        res = zarr.open_array(os.path.join(folder, "result.zarr"), mode="r")
        crop = np.s_[:, n // 2 : n // 2 + 256, n // 2 : n // 2 + 256]
        fig, axes = plt.subplots(1, 2, figsize=(8, 4))
        for ax, img, title in ((axes[0], src[crop], "input crop"), (axes[1], res[crop], "output crop")):
            img = np.moveaxis(img, 0, -1)
            ax.imshow((img - img.min()) / (np.ptp(img) + 1e-12))
            ax.set_title(title)
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
