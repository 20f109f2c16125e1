"""Train a small CNN on scikit-learn's bundled 8x8 digits with fastconv only.

``fastconv demo [--epochs N] [--plot out.png] [--seed S]``; also
``examples/digits_cnn.py``.  Needs the ``examples`` extra (scikit-learn, and
matplotlib for ``--plot``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

from . import nn


def build_model(rng: np.random.Generator) -> nn.Sequential:
    """Conv-BN-ReLU x2, max pool, dropout and a linear head: 1x8x8 -> 10 classes."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, rng=rng),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, rng=rng),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.25, rng=rng),
        nn.Linear(32 * 4 * 4, 10, rng=rng),
    )


def load_digits_split(seed: int):
    """The 1797 digits scaled to [0, 1], split 80/20 stratified."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    return train_test_split(x, digits.target, test_size=0.2, random_state=seed, stratify=digits.target)


def accuracy(model, x, y, batch=256) -> float:
    model.eval()
    preds = np.concatenate([model(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)])
    model.train()
    return float((preds == y).mean())


def _bar(epoch, epochs, done, total, loss, acc, width=24, stream=sys.stderr):
    filled = int(width * done / total)
    stream.write(
        f"\repoch {epoch:2d}/{epochs} [{'#' * filled}{'.' * (width - filled)}] "
        f"loss {loss:.4f} train acc {100 * acc:5.1f}%"
    )
    stream.flush()


def train(epochs=15, batch_size=32, lr=3e-3, seed=0, quiet=False):
    """Train and return ``(model, history, (x_test, y_test))``.

    ``history`` has per-epoch ``loss``, ``train_acc`` and ``test_acc``.
    """
    rng = np.random.default_rng(seed)
    x_train, x_test, y_train, y_test = load_digits_split(seed)
    model = build_model(rng)
    loss_fn = nn.CrossEntropyLoss()
    opt = nn.Adam(model.parameters(), lr=lr)
    history = {"loss": [], "train_acc": [], "test_acc": []}
    live = not quiet and sys.stderr.isatty()  # redraw the bar per batch only on a terminal
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x_train))
        total_loss, correct, seen = 0.0, 0, 0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            xb, yb = x_train[idx], y_train[idx]
            logits = model(xb)
            loss = loss_fn(logits, yb)
            opt.zero_grad()
            model.backward(loss_fn.backward())
            opt.step()
            total_loss += loss * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(idx)
            if live:
                _bar(epoch, epochs, seen, len(order), total_loss / seen, correct / seen)
        history["loss"].append(total_loss / seen)
        history["train_acc"].append(correct / seen)
        history["test_acc"].append(accuracy(model, x_test, y_test))
        if not quiet:
            _bar(epoch, epochs, 1, 1, history["loss"][-1], history["train_acc"][-1])
            sys.stderr.write(f"  test acc {100 * history['test_acc'][-1]:5.1f}%\n")
    return model, history, (x_test, y_test)


def plot(history, model, x_test, y_test, path):
    """Loss/accuracy curves and a grid of misclassified test digits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model.eval()
    preds = model(x_test).argmax(1)
    wrong = np.flatnonzero(preds != y_test)[:16]
    fig = plt.figure(figsize=(11, 4.5))
    epochs = np.arange(1, len(history["loss"]) + 1)
    ax = fig.add_subplot(1, 3, 1)
    ax.plot(epochs, history["loss"], marker="o")
    ax.set(title="training loss", xlabel="epoch", ylabel="cross-entropy")
    ax = fig.add_subplot(1, 3, 2)
    ax.plot(epochs, np.array(history["train_acc"]) * 100, marker="o", label="train")
    ax.plot(epochs, np.array(history["test_acc"]) * 100, marker="o", label="test")
    ax.set(title="accuracy", xlabel="epoch", ylabel="%")
    ax.legend()
    grid = fig.add_gridspec(4, 4, left=0.70, right=0.98, top=0.88, bottom=0.1, wspace=0.3, hspace=0.6)
    for i in range(16):
        ax = fig.add_subplot(grid[i // 4, i % 4])
        ax.axis("off")
        if i < len(wrong):
            j = wrong[i]
            ax.imshow(x_test[j, 0], cmap="gray_r")
            ax.set_title(f"{y_test[j]}→{preds[j]}", fontsize=8)
    fig.suptitle(
        f"fastconv digits CNN: {len(wrong) if len(wrong) < 16 else '16+'} misclassified "
        f"(true→predicted), test acc {100 * history['test_acc'][-1]:.1f}%"
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastconv demo", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", metavar="PNG", help="save loss/accuracy curves and misclassified digits")
    args = parser.parse_args(argv)
    if args.epochs <= 0:
        parser.error(f"--epochs must be positive, got {args.epochs}")
    if args.batch_size <= 0:
        parser.error(f"--batch-size must be positive, got {args.batch_size}")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        parser.error(f"--lr must be a positive number, got {args.lr}")
    if args.plot:  # refused before training, not after it
        folder = os.path.dirname(os.path.abspath(args.plot))
        if not os.path.isdir(folder):
            parser.error(f"--plot: folder {folder!r} does not exist (got {args.plot!r})")
    try:
        import sklearn  # noqa: F401
    except ImportError:
        parser.error('scikit-learn is needed for the demo: pip install "fastconv[examples]"')
    start = time.perf_counter()
    model, history, (x_test, y_test) = train(args.epochs, args.batch_size, args.lr, args.seed)
    elapsed = time.perf_counter() - start
    print(
        f"test accuracy {100 * history['test_acc'][-1]:.2f}% after {args.epochs} epochs in {elapsed:.1f} s "
        f"({model.param_count():,} parameters, fastconv only)"
    )
    if args.plot:
        plot(history, model, x_test, y_test, args.plot)
        print(f"saved {args.plot}")
    return 0
