"""A convolutional autoencoder on scikit-learn's 8x8 digits with fastconv only (no PyTorch).

    python examples/digits_autoencoder.py --epochs 12 --plot reconstructions.png

The encoder pools twice (8 -> 4 -> 2): the first pool keeps its indices; the
decoder brings the code back with bilinear upsampling (2 -> 4), max unpooling at
the first pool's indices (4 -> 8) and a transposed convolution to one channel.
It prints the test reconstruction error against the error of predicting the mean
image, and with --plot saves test digits above their reconstructions.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from fastconv import nn


class AutoEncoder:
    """Not a Sequential: the unpooling layer needs the first pool's indices, so forward/backward are written out."""

    def __init__(self, rng):
        self.enc1 = nn.Conv2d(1, 16, 3, padding=1, rng=rng)
        self.act1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2, return_indices=True)
        self.enc2 = nn.Conv2d(16, 32, 3, padding=1, rng=rng)
        self.act2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear")
        self.dec1 = nn.Conv2d(32, 16, 3, padding=1, rng=rng)
        self.act3 = nn.ReLU()
        self.unpool = nn.MaxUnpool2d(2)
        self.out = nn.ConvTranspose2d(16, 1, 3, padding=1, rng=rng)
        self.order = [
            self.enc1,
            self.act1,
            self.pool1,
            self.enc2,
            self.act2,
            self.pool2,
            self.up,
            self.dec1,
            self.act3,
            self.unpool,
            self.out,
        ]

    def parameters(self):
        return [p for m in self.order for p in m.parameters()]

    def forward(self, x):
        h, idx = self.pool1(self.act1(self.enc1(x)))
        code = self.pool2(self.act2(self.enc2(h)))  # 32 x 2 x 2
        h = self.act3(self.dec1(self.up(code)))
        return self.out(self.unpool(h, idx))

    def backward(self, grad):
        for module in reversed(self.order):
            grad = module.backward(grad)
        return grad


def load(seed):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x = (load_digits().images / 16.0).astype(np.float32)[:, None]
    return train_test_split(x, test_size=0.2, random_state=seed)


def mse(model, x, batch=256):
    return float(
        np.mean([np.mean((model.forward(x[i : i + batch]) - x[i : i + batch]) ** 2) for i in range(0, len(x), batch)])
    )


def plot(model, x, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rec = model.forward(x[:10])
    fig, axes = plt.subplots(2, 10, figsize=(10, 2.4))
    for i in range(10):
        for row, img in enumerate((x[i, 0], rec[i, 0])):
            axes[row, i].imshow(np.clip(img, 0, 1), cmap="gray_r", vmin=0, vmax=1)
            axes[row, i].axis("off")
    axes[0, 0].set_title("input", fontsize=8, loc="left")
    axes[1, 0].set_title("reconstruction", fontsize=8, loc="left")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", metavar="PNG", help="save test digits above their reconstructions")
    args = parser.parse_args(argv)
    if args.epochs <= 0 or args.batch_size <= 0 or not args.lr > 0:
        parser.error("--epochs, --batch-size and --lr must be positive")
    if args.plot and not os.path.isdir(os.path.dirname(os.path.abspath(args.plot))):
        parser.error(f"--plot: folder {os.path.dirname(os.path.abspath(args.plot))!r} does not exist")
    rng = np.random.default_rng(args.seed)
    x_train, x_test = load(args.seed)
    model = AutoEncoder(rng)
    opt = nn.Adam(model.parameters(), lr=args.lr)
    baseline = float(np.mean((x_test - x_train.mean(0)) ** 2))  # predicting the mean image
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(x_train))
        for i in range(0, len(order), args.batch_size):
            xb = x_train[order[i : i + args.batch_size]]
            opt.zero_grad()
            y = model.forward(xb)
            model.backward((2.0 / y.size) * (y - xb))  # d mean((y - x)^2) / dy
            opt.step()
        print(f"epoch {epoch:2d}: train MSE {mse(model, x_train):.4f}, test MSE {mse(model, x_test):.4f}")
    test = mse(model, x_test)
    print(f"test MSE {test:.4f} against {baseline:.4f} for the mean image ({baseline / test:.1f}x lower)")
    if args.plot:
        plot(model, x_test, args.plot)
        print(f"saved {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
