"""The tiled-inference targets of fastconv.dask, measured (not timed unit tests):

python bench/bench_dask.py memory --size 12288   # peak resident memory, zarr in and out
python bench/bench_dask.py cost --size 3072      # tiled at the default tile vs the whole-image run
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))


def cost(size: int, rounds: int = 3) -> None:
    import dask
    from dask_large_image import network

    import fastconv.dask

    model = network()
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    whole, tiled = [], []
    for _ in range(rounds):  # the two take turns; each keeps its best
        t = time.perf_counter()
        ref = model(x)
        whole.append(time.perf_counter() - t)
        y = fastconv.dask.apply(model, x)
        t = time.perf_counter()
        with dask.config.set(scheduler="threads", num_workers=1):
            got = y.compute()
        tiled.append(time.perf_counter() - t)
    err = float(np.abs(got - ref).max() / max(1e-12, np.abs(ref).max()))
    print(f"{size}x{size}: whole image {min(whole):.2f} s, tiled ({y.numblocks[2]}x{y.numblocks[3]} tiles at the "
          f"default tile) {min(tiled):.2f} s: {min(tiled) / min(whole):.2f}x; largest difference {err:.1e} of the "
          "largest output")  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["memory", "cost"])
    p.add_argument("--size", type=int, default=None)
    args = p.parse_args()
    if args.what == "memory":
        return subprocess.call([sys.executable, os.path.join(HERE, "..", "examples", "dask_large_image.py"),
                                "--size", str(args.size or 12288)])  # fmt: skip
    cost(args.size or 3072)
    return 0


if __name__ == "__main__":
    sys.exit(main())
