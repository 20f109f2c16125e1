"""shapes.valid_inputs against running the model on zeros of each size (fastconv.nn models and torch models), the
reasons it gives, HxW ranges, the CLI, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from fastconv import layers as L
from fastconv import models, nn, shapes
from fastconv._torch_zoo import zoo


def runs(model, c, h, w):
    try:
        return model(np.zeros((1, c, h, w), np.float32)).shape[1:]
    except ValueError:
        return None


@pytest.mark.parametrize("depth", [2, 3])
def test_unet_sizes_match_running_it(depth):
    model = models.unet(1, 2, width=2, depth=depth, rng=0).eval()
    r = shapes.valid_inputs(model, 1, 40)
    for n in range(1, 41):
        got = runs(model, 1, n, n)
        assert ((n, n) in r.valid) == (got is not None), n
        if got is not None:
            assert r.valid[(n, n)] == tuple(got)
        else:
            assert r.invalid[(n, n)]
    assert r.sizes == [n for n in range(1, 41) if n % 2**depth == 0]


def test_torch_unet_through_from_torch():
    tmodel = zoo(torch)["unet"](in_channels=3, num_classes=2, width=2, depth=2).eval()
    r = shapes.valid_inputs(tmodel, 1, 24)
    for n in range(1, 25):
        try:
            with torch.no_grad():
                ok = tuple(tmodel(torch.zeros(1, 3, n, n)).shape[1:])
        except RuntimeError:
            ok = None
        assert r.valid.get((n, n)) == ok, n


def test_reasons_name_the_failing_layer_or_merge():
    body = L.Sequential(L.Conv2d(4, 4, 3, stride=2, padding=1), L.Conv2d(4, 4, 3, padding=1))
    model = L.Sequential(L.Conv2d(3, 4, 3, padding=1), L.Residual(body, L.Conv2d(4, 4, 1, stride=2)),
                         L.Conv2d(4, 4, 5))  # fmt: skip
    r = shapes.valid_inputs(model, 1, 12)
    assert "2: Conv2d:" in r.invalid[(1, 1)]  # the 5x5 layer does not fit a 1x1 map
    assert r.sizes == [n for n in range(1, 13) if (n + 1) // 2 >= 5]
    odd = L.Sequential(L.Conv2d(3, 4, 3, padding=1), L.Residual(body))  # identity shortcut: never equal sizes
    r = shapes.valid_inputs(odd, 4, 6)
    assert not r.valid and r.invalid[(4, 4)].startswith("1: residual sum of the body's output (4, 2, 2) and its input")


def test_rectangular_ranges():
    model = L.Sequential(L.Conv2d(1, 2, (3, 1), stride=(2, 1)), L.MaxPool2d((1, 2)))
    r = shapes.valid_inputs(model, (1, 1), (5, 4))
    expect = {(h, w) for h in range(1, 6) for w in range(1, 5) if h >= 3 and w >= 2}
    assert set(r.valid) == expect and r.sizes == sorted(expect)
    assert r.valid[(5, 4)] == (2, 2, 2)


def test_bad_arguments():
    model = L.Sequential(L.Conv2d(1, 1, 3))
    with pytest.raises(ValueError, match="lo 9 is above hi 3"):
        shapes.valid_inputs(model, 9, 3)
    with pytest.raises(ValueError, match="sizes start at 1, got lo=0"):
        shapes.valid_inputs(model, 0, 3)
    with pytest.raises(TypeError, match="lo must be an int or"):
        shapes.valid_inputs(model, "1", 3)
    with pytest.raises(ValueError, match="no layer of Sequential names its input channels .*; give channels="):
        shapes.valid_inputs(L.Sequential(L.MaxPool2d(2)), 1, 3)
    assert shapes.valid_inputs(L.Sequential(L.MaxPool2d(2)), 1, 3, channels=2).sizes == [2, 3]
    for flat in (L.Sequential(L.ReLU(), L.BatchNorm2d(2)), nn.Sequential(nn.ReLU(), nn.Dropout())):
        with pytest.raises(ValueError, match="Sequential has no spatial layer .* accepts every size"):
            shapes.valid_inputs(flat, 1, 3, channels=2)
    with pytest.raises(ValueError, match="channels must be a positive int, got 0"):
        shapes.valid_inputs(model, 1, 3, channels=0)
    with pytest.raises(TypeError, match="model must be fastconv layers"):
        shapes.valid_inputs(42, 1, 3)
    with pytest.raises(ValueError, match="at most 1,000,000"):
        shapes.valid_inputs(model, (1, 1), (2000, 2000))


def test_cli(tmp_path):
    spec = [{"type": "Conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": 1},
            {"type": "Concat", "body": [{"type": "MaxPool2d", "kernel_size": 2},
                                        {"type": "ConvTranspose2d", "in_channels": 4, "out_channels": 4,
                                         "kernel_size": 2, "stride": 2}]}]  # fmt: skip
    path = tmp_path / "m.json"
    path.write_text(json.dumps(spec))
    r = subprocess.run([sys.executable, "-m", "fastconv", "shape", "valid-inputs", "--model", str(path), "--range",
                        "1:9"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0 and r.stdout.startswith("4 valid input sizes of 9: 2, 4, 6, 8"), r.stdout + r.stderr
    assert "8x8 -> 8x8x8" in r.stdout
    r = subprocess.run([sys.executable, "-m", "fastconv", "shape", "valid-inputs", "--model", str(path), "--range",
                        "5"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and "--range must be LO:HI" in r.stderr and "Traceback" not in r.stderr
