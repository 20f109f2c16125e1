"""Size rules, receptive fields and summaries against torch."""

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import layers as L
from fastconv.shapes import (
    conv_output_size,
    conv_transpose_output_size,
    dropped_pixels,
    pool_output_size,
    receptive_field,
    same_padding,
)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 30), k=st.integers(1, 7), s=st.integers(1, 4), p=st.integers(0, 4), d=st.integers(1, 3))
def test_conv_output_size_matches_torch(n, k, s, p, d):
    try:
        want = F.conv2d(torch.zeros(1, 1, n, n), torch.zeros(1, 1, k, k), None, s, p, d).shape[-1]
    except RuntimeError:
        with pytest.raises(ValueError, match="kernel_size"):
            conv_output_size(n, k, s, p, d)
        return
    assert conv_output_size(n, k, s, p, d) == want
    assert conv_output_size((n, n + 1), k, s, p, d)[0] == want


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 30),
    k=st.integers(1, 6),
    s=st.integers(1, 4),
    p=st.integers(0, 3),
    d=st.integers(1, 3),
    ceil=st.booleans(),
)
def test_pool_output_size_matches_torch(n, k, s, p, d, ceil):
    try:
        want = F.max_pool2d(torch.zeros(1, 1, n, n), k, s, p, d, ceil_mode=ceil).shape[-1]
    except RuntimeError:
        with pytest.raises(ValueError):
            pool_output_size(n, k, s, p, d, ceil)
        return
    assert pool_output_size(n, k, s, p, d, ceil) == want


# ceil_mode cases from pytorch issues 57178, 88144, 88464 and 46929: the last window
# must not start in the right padding.
@pytest.mark.parametrize(
    "n,k,s,p",
    [
        (5, 2, 2, 1),
        (6, 3, 2, 1),
        (7, 3, 2, 1),
        (4, 2, 2, 1),
        (3, 3, 2, 1),
        (10, 4, 3, 2),
        (2, 2, 2, 1),
        (8, 3, 3, 1),
        (9, 5, 4, 2),
    ],
)
def test_ceil_mode_issue_cases(n, k, s, p):
    for fn in (F.max_pool2d, F.avg_pool2d):
        want = fn(torch.zeros(1, 1, n, n), k, s, p, ceil_mode=True).shape[-1]
        assert pool_output_size(n, k, s, p, ceil_mode=True) == want


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 12),
    k=st.integers(1, 5),
    s=st.integers(1, 4),
    p=st.integers(0, 3),
    op=st.integers(0, 3),
    d=st.integers(1, 3),
)
def test_conv_transpose_output_size_matches_torch(n, k, s, p, op, d):
    try:
        want = F.conv_transpose2d(torch.zeros(1, 1, n, n), torch.zeros(1, 1, k, k), None, s, p, op, 1, d).shape[-1]
        if want < 1:
            raise RuntimeError
    except RuntimeError:
        with pytest.raises(ValueError):
            conv_transpose_output_size(n, k, s, p, op, d)
        return
    assert conv_transpose_output_size(n, k, s, p, op, d) == want


def test_transpose_output_padding_rule_message():
    with pytest.raises(ValueError, match="output_padding"):
        conv_transpose_output_size(5, 3, stride=2, output_padding=2)


@pytest.mark.parametrize(
    "n,k,s,d", [(224, 7, 2, 1), (5, 3, 2, 1), (6, 3, 2, 1), (7, 1, 3, 1), (9, 3, 1, 2), (1, 5, 4, 1), (17, 4, 4, 3)]
)
def test_same_padding_is_tensorflow_rule(n, k, s, d):
    out = -(-n // s)
    total = max(0, (out - 1) * s + d * (k - 1) + 1 - n)
    assert same_padding(n, k, s, d) == (total // 2, total - total // 2)
    assert conv_output_size(n, k, s, "same", d) == out
    padded = F.pad(torch.zeros(1, 1, n, n), (total // 2, total - total // 2) * 2)
    assert F.conv2d(padded, torch.zeros(1, 1, k, k), None, s, 0, d).shape[-1] == out


def test_pair_forms_and_errors():
    assert conv_output_size((224, 160), (7, 5), (2, 1), (3, 2)) == (112, 160)
    assert same_padding((5, 6), 3, 2) == ((1, 1), (0, 1))
    with pytest.raises(ValueError, match="stride"):
        conv_output_size(10, 3, 0)
    with pytest.raises(ValueError, match="padding"):
        pool_output_size(10, 3, 1, 2)
    with pytest.raises(ValueError, match="kernel_size"):
        conv_output_size(3, 5)
    with pytest.raises(ValueError, match="padding"):
        conv_output_size(10, 3, 1, -1)


def test_dropped_pixels():
    assert dropped_pixels(28, 3, 2) == 1  # 28 -> 13 reads rows 0..26
    assert dropped_pixels(27, 3, 2) == 0
    assert dropped_pixels(10, 3, 2, 1) == 0  # the unread trailing position is padding
    assert dropped_pixels(10, 3, 4, 1) == 2  # stride 4 > 3 skips input rows 2 and 6 (the trailing one is padding)
    assert dropped_pixels((28, 27), 3, 2) == (1, 0)


def gradient_receptive_field(modules, n):
    """Extent and centre of d out[0, 0, 0, 0] / d input, measured by autograd."""
    x = torch.zeros(1, 1, n, n, requires_grad=True)
    y = x
    for m in modules:
        y = m(y)
    y[0, 0, 0, 0].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
    return rows.min().item(), rows.max().item()


@pytest.mark.parametrize(
    "geoms",
    [
        [(3, 1, 1, 1), (3, 2, 1, 1), (3, 1, 1, 1)],
        [(7, 2, 3, 1), (3, 2, 1, 1), (3, 1, 1, 2)],
        [(5, 1, 0, 1), (2, 2, 0, 1), (3, 3, 0, 2), (3, 1, 0, 1)],
        [(3, 2, 0, 3), (4, 2, 1, 1)],
    ],
    ids=["vgg", "stem", "valid_mixed", "dilated"],
)
def test_receptive_field_matches_gradient(geoms):
    convs = []
    for k, s, p, d in geoms:
        c = nn.Conv2d(1, 1, k, s, p, d, bias=False)
        nn.init.ones_(c.weight)
        convs.append(c)
    rf = receptive_field(geoms)[-1]
    lo, hi = gradient_receptive_field(convs, 200)
    centre_hi = rf.start[0] + (rf.size[0] - 1) / 2  # last input row the first output sees
    assert hi == centre_hi
    assert lo == max(0, rf.start[0] - (rf.size[0] - 1) / 2)
    # size measured on an interior pixel
    x = torch.zeros(1, 1, 200, 200, requires_grad=True)
    y = x
    for c in convs:
        y = c(y)
    mid = y.shape[-1] // 2
    y[0, 0, mid, mid].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
    assert rows.max().item() - rows.min().item() + 1 == rf.size[0]
    assert rf.jump[0] == np.prod([g[1] for g in geoms])


def to_torch(spec):
    """An equivalent torch module for a fastconv.layers spec (containers included)."""
    if isinstance(spec, L.Sequential):
        return nn.Sequential(*(to_torch(s) for s in spec))
    if isinstance(spec, (L.Residual, L.Concat)):
        body = to_torch(spec.body)

        class Merge(nn.Module):
            def __init__(self, concat):
                super().__init__()
                self.body, self.concat = body, concat

            def forward(self, x):
                return torch.cat([x, self.body(x)], 1) if self.concat else x + self.body(x)

        return Merge(isinstance(spec, L.Concat))
    name = type(spec).__name__
    if name == "Conv2d":
        pad = spec.padding
        if pad == "same" or (isinstance(pad, tuple) and len(pad) == 4):
            raise NotImplementedError
        return nn.Conv2d(
            spec.in_channels,
            spec.out_channels,
            spec.kernel_size,
            spec.stride,
            pad,
            spec.dilation,
            spec.groups,
            spec.bias,
        )
    simple = {
        "ConvTranspose2d": lambda s: nn.ConvTranspose2d(
            s.in_channels,
            s.out_channels,
            s.kernel_size,
            s.stride,
            s.padding,
            s.output_padding,
            s.groups,
            s.bias,
            s.dilation,
        ),
        "MaxPool2d": lambda s: nn.MaxPool2d(s.kernel_size, s.stride, s.padding, s.dilation, ceil_mode=s.ceil_mode),
        "AvgPool2d": lambda s: nn.AvgPool2d(s.kernel_size, s.stride, s.padding, s.ceil_mode),
        "AdaptiveAvgPool2d": lambda s: nn.AdaptiveAvgPool2d(s.output_size),
        "BatchNorm2d": lambda s: nn.BatchNorm2d(s.num_features),
        "ReLU": lambda s: nn.ReLU(),
        "Sigmoid": lambda s: nn.Sigmoid(),
        "Tanh": lambda s: nn.Tanh(),
        "Dropout": lambda s: nn.Dropout(s.p),
        "Flatten": lambda s: nn.Flatten(s.start_dim, s.end_dim),
        "Linear": lambda s: nn.Linear(s.in_features, s.out_features, s.bias),
        "Upsample": lambda s: nn.Upsample(scale_factor=s.scale_factor, mode=s.mode),
        "ZeroPad2d": lambda s: nn.ZeroPad2d(s.padding),
        "LeakyReLU": lambda s: nn.LeakyReLU(s.negative_slope),
    }
    return simple[name](spec)


def torch_params(module):
    return sum(p.numel() for p in module.parameters())


MODELS = {
    "lenet": (
        L.Sequential(
            L.Conv2d(1, 6, 5, padding=2),
            L.ReLU(),
            L.MaxPool2d(2),
            L.Conv2d(6, 16, 5),
            L.ReLU(),
            L.MaxPool2d(2),
            L.Flatten(),
            L.Linear(400, 120),
            L.ReLU(),
            L.Linear(120, 10),
        ),
        (1, 28, 28),
    ),
    "resnet_block": (
        L.Sequential(
            L.Conv2d(3, 16, 3, 2, 1, bias=False),
            L.BatchNorm2d(16),
            L.ReLU(),
            L.Residual(L.Sequential(L.Conv2d(16, 16, 3, 1, 1), L.BatchNorm2d(16), L.ReLU(), L.Conv2d(16, 16, 3, 1, 1))),
            L.AdaptiveAvgPool2d(1),
            L.Flatten(),
            L.Linear(16, 5),
        ),
        (3, 33, 31),
    ),
    "grouped_depthwise": (
        L.Sequential(
            L.Conv2d(8, 16, 3, 1, 1, groups=4),
            L.Conv2d(16, 16, 3, 2, 1, groups=16),
            L.Conv2d(16, 32, 1),
            L.AvgPool2d(3, 2, 1, ceil_mode=True),
        ),
        (8, 15, 15),
    ),
    "decoder": (
        L.Sequential(
            L.ConvTranspose2d(8, 4, 3, 2, 1, 1),
            L.Upsample(scale_factor=2),
            L.ZeroPad2d((1, 0, 2, 1)),
            L.Conv2d(4, 2, (3, 1), dilation=(2, 1)),
            L.LeakyReLU(0.2),
            L.Dropout(0.1),
        ),
        (8, 7, 6),
    ),
    "dense_layer": (
        L.Sequential(
            L.Concat(L.Sequential(L.BatchNorm2d(4), L.ReLU(), L.Conv2d(4, 8, 1), L.Conv2d(8, 2, 3, padding=1))),
            L.MaxPool2d(3, 2, 1, 2, ceil_mode=True),
        ),
        (4, 12, 12),
    ),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_summary_matches_torch_modules_run_on_zeros(name):
    spec, shape = MODELS[name]
    module = to_torch(spec).eval()
    s = fastconv.summary(spec, shape)
    x = torch.zeros(1, *shape)
    torch_shapes = []
    with torch.no_grad():
        for m in module:
            x = m(x)
            torch_shapes.append(tuple(x.shape[1:]))
    top_rows = [r for r in s.rows if r.name.count(".") == 0 or ".body." not in r.name]
    top_rows = [r for r in s.rows if "." not in r.name]
    assert [r.output_shape for r in top_rows] == torch_shapes
    assert s.total_params == torch_params(module)
    assert s.output_shape == torch_shapes[-1]


def test_summary_of_torch_module_by_introspection():
    module = nn.Sequential(
        nn.Conv2d(3, 8, 3, 2, 1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(8, 8, 3, groups=8), nn.MaxPool2d(2, ceil_mode=True)),
        nn.Flatten(),
        nn.Linear(8 * 9 * 9, 10),
    )
    s = fastconv.summary(module, "3x37x37")
    assert s.total_params == torch_params(module)
    assert s.output_shape == tuple(module(torch.zeros(1, 3, 37, 37)).shape[1:])
    # MACs: conv out*cout*cin/groups*k*k, linear in*out
    assert s.rows[0].macs == 19 * 19 * 8 * 3 * 9
    assert s.rows[-1].macs == 648 * 10


def test_summary_rejects_unknown_torch_module():
    class Weird(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ValueError, match="Weird"):
        fastconv.summary(nn.Sequential(nn.ReLU(), Weird()), (1, 4, 4))


def test_dropped_pixel_warning_and_table():
    model = [L.Conv2d(1, 4, 3, stride=2), L.MaxPool2d(2)]
    with pytest.warns(fastconv.DroppedPixelsWarning, match="never reads 1 input row"):
        s = fastconv.summary(model, (1, 28, 28))
    assert s.rows[0].dropped == (1, 1)
    assert s.rows[1].dropped == (1, 1)  # 13 rows pooled by 2
    text = str(s)
    assert "0 (Conv2d) !" in text and "FLOPs = 2 x MACs" in text and "Total params: 40" in text
    with warnings.catch_warnings():
        warnings.simplefilter("error", fastconv.DroppedPixelsWarning)
        with pytest.raises(fastconv.DroppedPixelsWarning):
            fastconv.summary(model, (1, 28, 28))


def test_summary_receptive_field_column():
    s = fastconv.summary([L.Conv2d(1, 1, 3), L.Conv2d(1, 1, 3, stride=2), L.Conv2d(1, 1, 3)], (1, 32, 32))
    assert [r.receptive_field for r in s.rows] == [(3, 3), (5, 5), (9, 9)]
    d = s.to_dict()
    assert d["total_params"] == 30 and d["rows"][2]["receptive_field"] == [9, 9]
    json.dumps(d)


def densenet121():
    """DenseNet-121 (growth 32, blocks 6-12-24-16, bottleneck 4x, compression 0.5)."""
    growth, features = 32, 64
    net = [L.Conv2d(3, 64, 7, 2, 3, bias=False), L.BatchNorm2d(64), L.ReLU(), L.MaxPool2d(3, 2, 1)]
    for i, n_layers in enumerate((6, 12, 24, 16)):
        for _ in range(n_layers):
            net.append(
                L.Concat(
                    L.Sequential(
                        L.BatchNorm2d(features),
                        L.ReLU(),
                        L.Conv2d(features, 4 * growth, 1, bias=False),
                        L.BatchNorm2d(4 * growth),
                        L.ReLU(),
                        L.Conv2d(4 * growth, growth, 3, padding=1, bias=False),
                    )
                )
            )
            features += growth
        if i != 3:
            net += [
                L.BatchNorm2d(features),
                L.ReLU(),
                L.Conv2d(features, features // 2, 1, bias=False),
                L.AvgPool2d(2, 2),
            ]
            features //= 2
    net += [L.BatchNorm2d(features), L.ReLU(), L.AdaptiveAvgPool2d(1), L.Flatten(), L.Linear(features, 1000)]
    return L.Sequential(*net)


def test_densenet121_shapes_and_parameter_count():
    spec = densenet121()
    s = fastconv.summary(spec, "3x224x224")
    assert s.total_params == 7_978_856  # torchvision's densenet121
    assert s.output_shape == (1000,)
    module = to_torch(spec).eval()
    assert torch_params(module) == s.total_params
    shapes = [r.output_shape for r in s.rows if "." not in r.name]
    x = torch.zeros(1, 3, 224, 224)
    with torch.no_grad():
        for m, want in zip(module, shapes):
            x = m(x)
            assert tuple(x.shape[1:]) == want
    # the four dense blocks end at 256, 512, 1024 and 1024 channels
    block_ends = [r.output_shape for r in s.rows if r.type == "Concat"]
    assert block_ends[5] == (256, 56, 56) and block_ends[17] == (512, 28, 28)
    assert block_ends[41] == (1024, 14, 14) and block_ends[57] == (1024, 7, 7)


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "fastconv", *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def test_cli_shape():
    r = run_cli("shape", "conv", "--input", "224", "--kernel", "7", "--stride", "2", "--padding", "same")
    assert r.returncode == 0 and "112" in r.stdout
    r = run_cli("shape", "same", "--input", "224", "--kernel", "7", "--stride", "2")
    assert "(2, 3)" in r.stdout
    r = run_cli("shape", "pool", "--input", "5", "--kernel", "2", "--stride", "2", "--padding", "1", "--ceil-mode")
    assert "output size: 3" in r.stdout
    r = run_cli(
        "shape",
        "transpose",
        "--input",
        "7",
        "--kernel",
        "3",
        "--stride",
        "2",
        "--padding",
        "1",
        "--output-padding",
        "1",
    )
    assert "output size: 14" in r.stdout
    r = run_cli("shape", "conv", "--input", "4", "--kernel", "7")
    assert r.returncode == 2 and "kernel_size" in r.stderr


def test_cli_summary_json_and_module(tmp_path):
    model = [
        {"type": "Conv2d", "in_channels": 3, "out_channels": 8, "kernel_size": 3, "padding": 1},
        {"type": "ReLU"},
        {
            "type": "Residual",
            "body": [{"type": "Conv2d", "in_channels": 8, "out_channels": 8, "kernel_size": 3, "padding": 1}],
        },
        {"type": "MaxPool2d", "kernel_size": 2},
    ]
    path = tmp_path / "model.json"
    path.write_text(json.dumps(model))
    r = run_cli("summary", str(path), "--input", "3x32x32")
    assert r.returncode == 0, r.stderr
    assert "Total params: 808" in r.stdout and "(None, 8, 16, 16)" in r.stdout
    (tmp_path / "net.py").write_text("import torch.nn as nn\nnet = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())\n")
    r = run_cli("summary", "net.py:net", "--input", "3x10x10", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Total params: 112" in r.stdout
    path.write_text(json.dumps([{"type": "Frobnicate"}]))
    r = run_cli("summary", str(path), "--input", "3x32x32")
    assert r.returncode == 2 and "Frobnicate" in r.stderr


def _unread_rows(n, k, s, pad_before, pad_after, d):
    """Brute force: input rows inside no window's extent [o*s, o*s + d(k-1) + 1) (padded coordinates)."""
    e = d * (k - 1) + 1
    out = (n + pad_before + pad_after - e) // s + 1
    read = set()
    for o in range(out):
        read.update(range(o * s, o * s + e))
    return sum(1 for r in range(pad_before, pad_before + n) if r not in read)


def test_dropped_pixels_counts_rows_between_windows_too():
    """Issue 17: stride 3 with a 1x1 kernel reads rows 0, 3 and 6 of 7; the old rule counted trailing rows only."""
    assert fastconv.shapes.dropped_pixels(7, 1, stride=3) == 4
    cases = 0
    for n in range(1, 13):
        for k in range(1, 5):
            for s in range(1, 8):
                for d in range(1, 4):
                    for pb in range(0, 3):
                        for pa in range(0, 3):
                            if n + pb + pa < d * (k - 1) + 1:
                                continue
                            got = fastconv._core.conv_dropped(n, k, s, pb, pa, d)
                            assert got == _unread_rows(n, k, s, pb, pa, d), (n, k, s, pb, pa, d)
                            cases += 1
    assert cases > 7000


def test_summary_warns_about_rows_between_windows():
    with pytest.warns(fastconv.DroppedPixelsWarning, match="never reads 4 input row"):
        fastconv.summary([L.Conv2d(1, 1, 1, stride=3)], (1, 7, 7))


def _autograd_gridding(chain, n=64):
    """The issue's measurement: d out[centre] / d input through all-ones kernels, nonzero entries over the box."""
    modules = [nn.Conv2d(1, 1, k, stride=s, dilation=d, bias=False) for k, s, d in chain]
    for m in modules:
        nn.init.ones_(m.weight)
    x = torch.ones(1, 1, n, n, requires_grad=True)
    y = x
    for m in modules:
        y = m(y)
    c = y.shape[-1] // 2
    y[0, 0, c, c].backward()
    g = x.grad[0, 0]
    rows, cols = torch.nonzero(g.sum(1)).flatten(), torch.nonzero(g.sum(0)).flatten()
    box = g[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    return float((box != 0).sum()) / box.numel(), tuple(box.shape)


@pytest.mark.parametrize(
    "chain",
    [
        [(3, 1, 2)] * 3,
        [(3, 1, 1), (3, 1, 2), (3, 1, 3)],
        [(1, 2, 1), (3, 1, 1)],
        [(3, 2, 1), (3, 1, 1), (3, 1, 4)],
        [(2, 2, 1), (2, 2, 1), (3, 1, 2)],
        [(5, 1, 1)],
        [(3, 1, 3), (3, 3, 1), (3, 1, 1)],
    ],
    ids=str,
)
def test_gridding_matches_autograd(chain):
    g = fastconv.shapes.gridding([(k, s, 0, d) for k, s, d in chain])
    fraction, box = _autograd_gridding(chain)
    assert g.box == box
    assert g.fraction == pytest.approx(fraction)


def test_gridding_examples_from_the_issue_and_the_summary_warning():
    g = fastconv.shapes.gridding([(3, 1, 2, 2)] * 3)
    assert g.fraction == pytest.approx(49 / 169) and g.box == (13, 13) and g.culprits == ("0", "1", "2")
    assert fastconv.shapes.gridding([(3, 1, 1, 1), (3, 1, 2, 2), (3, 1, 3, 3)]).fraction == 1.0
    with pytest.warns(fastconv.GriddingWarning, match=r"29\.0% of one output's 13x13 receptive field"):
        fastconv.summary([L.Conv2d(1, 1, 3, padding=2, dilation=2)] * 3, (1, 32, 32))
    with warnings.catch_warnings():
        warnings.simplefilter("error", fastconv.GriddingWarning)  # a plain VGG-style chain has no holes
        fastconv.summary([L.Conv2d(3, 8, 3, padding=1), L.MaxPool2d(2), L.Conv2d(8, 8, 3, padding=1)], (3, 32, 32))


def test_summary_text_and_json_report_gridding(tmp_path):
    model = [{"type": "Conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 3, "dilation": 2, "padding": 2}] * 3
    path = tmp_path / "dilated.json"
    path.write_text(json.dumps(model))
    out = subprocess.run(
        [sys.executable, "-m", "fastconv", "summary", str(path), "--input", "1x32x32"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "! gridding: 29.0% of one output's 13x13 receptive field" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "fastconv", "summary", str(path), "--input", "1x32x32", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(out.stdout)["gridding"]["fraction"] == pytest.approx(49 / 169)


def test_cli_shape_gridding():
    """`fastconv shape gridding`: three dilation-2 3x3 convs reach 49 of 169 pixels; dilations 1, 2, 3 all."""
    import subprocess
    import sys

    def run(*args):
        cmd = [sys.executable, "-m", "fastconv", "shape", "gridding", *args]
        return subprocess.run(cmd, capture_output=True, text=True)

    r = run("--layers", "3:1:2:2,3:1:2:2,3:1:2:2")
    assert r.returncode == 0 and f"{49 / 169:.1%}" in r.stdout and "13x13" in r.stdout, r.stdout
    assert "holes caused by layer(s) 0, 1, 2" in r.stdout
    r = run("--layers", "3:1:1:1,3:1:2:2,3:1:3:3")
    assert r.returncode == 0 and "100.0%" in r.stdout and "holes" not in r.stdout
    r = run("--layers", "3:x")
    assert r.returncode == 2 and "--layers" in r.stderr and "Traceback" not in r.stderr
