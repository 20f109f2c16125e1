"""A ResNet-style and a DenseNet-BC-style network trained on scikit-learn's digits with fastconv.nn only.

    python examples/digits_resnet_densenet.py --model resnet
    python examples/digits_resnet_densenet.py --model densenet

The 8x8 digits are upsampled bilinearly to 16x16 (fastconv.interpolate).  The ResNet
has a 3x3 stem and three stages of one BasicBlock each (a strided 3x3 plus a strided
1x1 shortcut between stages) written with nn.Residual; the DenseNet two dense blocks
of three BN-ReLU-1x1-BN-ReLU-3x3 layers (growth 12) written with nn.Concat, and a
transition.  Both end in global average pooling and a linear layer, train with AdamW,
and print the test accuracy.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import fastconv
from fastconv import nn
from fastconv.demo import load_digits_split


def basic_block(cin, cout, stride, rng):
    body = nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False, rng=rng), nn.BatchNorm2d(cout), nn.ReLU(),
        nn.Conv2d(cout, cout, 3, 1, 1, bias=False, rng=rng), nn.BatchNorm2d(cout),
    )  # fmt: skip
    shortcut = None
    if stride != 1 or cin != cout:
        shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False, rng=rng), nn.BatchNorm2d(cout))
    return nn.Sequential(nn.Residual(body, shortcut), nn.ReLU())


def resnet(rng, width=16):
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1, bias=False, rng=rng), nn.BatchNorm2d(width), nn.ReLU(),
        basic_block(width, width, 1, rng), basic_block(width, 2 * width, 2, rng),
        basic_block(2 * width, 4 * width, 2, rng),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, 10, rng=rng),
    )  # fmt: skip


def dense_layer(cin, growth, rng):
    return nn.Concat(
        nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, 4 * growth, 1, bias=False, rng=rng),
            nn.BatchNorm2d(4 * growth), nn.ReLU(), nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False, rng=rng),
        )
    )  # fmt: skip


def densenet(rng, growth=12):
    c = 2 * growth
    layers = [nn.Conv2d(1, c, 3, padding=1, bias=False, rng=rng)]
    for block in range(2):
        for _ in range(3):
            layers.append(dense_layer(c, growth, rng))
            c += growth
        if block == 0:  # transition: compress by half, pool
            layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False, rng=rng), nn.AvgPool2d(2)]
            c //= 2
    layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10, rng=rng)]
    return nn.Sequential(*layers)


def accuracy(model, x, y, batch=256):
    model.eval()
    pred = np.concatenate([model(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)])
    model.train()
    return float((pred == y).mean())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["resnet", "densenet"], default="resnet")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.epochs <= 0 or args.batch_size <= 0 or not args.lr > 0:
        parser.error("--epochs, --batch-size and --lr must be positive")
    rng = np.random.default_rng(args.seed)
    x_train, x_test, y_train, y_test = load_digits_split(args.seed)
    x_train, x_test = (fastconv.interpolate(x, scale_factor=2, mode="bilinear") for x in (x_train, x_test))
    model = (resnet if args.model == "resnet" else densenet)(rng)
    opt = nn.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(x_train))
        losses = []
        for i in range(0, len(order), args.batch_size):
            idx = order[i : i + args.batch_size]
            opt.zero_grad()
            losses.append(loss_fn(model(x_train[idx]), y_train[idx]))
            model.backward(loss_fn.backward(), input_grad=False)
            opt.step()
        print(
            f"epoch {epoch:2d}: loss {np.mean(losses):.4f}, test accuracy {100 * accuracy(model, x_test, y_test):.1f}%"
        )
    acc = accuracy(model, x_test, y_test)
    params = sum(p.data.size for p in model.parameters())
    print(f"{args.model}: {params:,} parameters, test accuracy {100 * acc:.1f}% "
          f"after {args.epochs} epochs ({time.perf_counter() - start:.1f} s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
