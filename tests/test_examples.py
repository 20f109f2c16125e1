"""The bundled examples run and do what they claim."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def test_autoencoder_learns_and_plots(tmp_path):
    png = tmp_path / "rec.png"
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "digits_autoencoder.py"), "--epochs", "3", "--plot", str(png)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    test, baseline = map(float, re.search(r"test MSE ([\d.]+) against ([\d.]+)", out.stdout).groups())
    assert test < baseline / 2, out.stdout  # reconstructs far better than the mean image
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_autoencoder_refuses_a_missing_plot_folder(tmp_path):
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "digits_autoencoder.py"), "--plot", str(tmp_path / "no" / "x.png")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "--plot: folder" in out.stderr and "Traceback" not in out.stderr


def test_resnet_and_densenet_examples_learn():
    """Both real-CNN examples train in fastconv.nn and classify the digits far above chance (10%)."""
    for model, epochs, floor in (("resnet", 3, 90.0), ("densenet", 3, 40.0)):
        out = subprocess.run(
            [sys.executable, str(EXAMPLES / "digits_resnet_densenet.py"), "--model", model, "--epochs", str(epochs)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr
        acc = float(re.search(r"test accuracy ([\d.]+)% after", out.stdout).group(1))
        assert acc > floor, out.stdout
