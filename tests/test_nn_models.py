"""fastconv.nn for real CNNs against torch: activations, adaptive pooling, Residual and Concat blocks,
AdamW, and from_torch on VGG-, ResNet- and DenseNet-style models (forward, backward, a training step)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import fastconv
from fastconv import nn
from fastconv.bench import torch_blocks, torch_models


@pytest.fixture(autouse=True)
def seeded_torch():
    """Each test's torch weights from one seed: a seed set once at import made them depend on which tests ran
    before (and some random models are ill-conditioned enough for a training step to leave the tolerance)."""
    torch.manual_seed(0)


def close(got, ref, atol=1e-5, rtol=1e-4):
    ref = ref.detach().numpy() if isinstance(ref, torch.Tensor) else ref
    torch.testing.assert_close(torch.from_numpy(np.ascontiguousarray(got)), torch.from_numpy(np.asarray(ref)),
                               atol=atol, rtol=rtol)  # fmt: skip


ACTIVATIONS = [
    (nn.ReLU6(), torch.nn.ReLU6()),
    (nn.LeakyReLU(0.2), torch.nn.LeakyReLU(0.2)),
    (nn.ELU(0.7), torch.nn.ELU(0.7)),
    (nn.GELU(), torch.nn.GELU()),
    (nn.GELU("tanh"), torch.nn.GELU("tanh")),
    (nn.SiLU(), torch.nn.SiLU()),
    (nn.Sigmoid(), torch.nn.Sigmoid()),
    (nn.Tanh(), torch.nn.Tanh()),
    (nn.Hardswish(), torch.nn.Hardswish()),
    (nn.Identity(), torch.nn.Identity()),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("ours, theirs", ACTIVATIONS, ids=[repr(a[1]) for a in ACTIVATIONS])
def test_activation_forward_and_backward(ours, theirs, dtype):
    # values around every kink (0, +-3, 6) and far out, where exp would overflow
    x = np.concatenate([np.linspace(-8, 8, 161), [-3, 3, 0, 6, -100, 100, 1e-3]]).astype(dtype).reshape(1, 1, 12, 14)
    g = np.cos(np.arange(x.size)).reshape(x.shape).astype(dtype)
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = theirs(xt)
    yt.backward(torch.from_numpy(g))
    tol = dict(atol=1e-6, rtol=1e-5) if dtype == np.float32 else dict(atol=1e-12, rtol=1e-10)
    y = ours(x)
    assert y.dtype == dtype
    close(y, yt, **tol)
    close(ours.backward(g), xt.grad, **tol)


@pytest.mark.parametrize("size", [1, (3, 2), 5, (None, 4)], ids=str)
def test_adaptive_avg_pool(size):
    x = np.random.default_rng(1).standard_normal((2, 3, 7, 9)).astype(np.float32)
    g = np.random.default_rng(2).standard_normal(torch.nn.AdaptiveAvgPool2d(size)(torch.zeros(2, 3, 7, 9)).shape)
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = torch.nn.AdaptiveAvgPool2d(size)(xt)
    yt.backward(torch.from_numpy(g.astype(np.float32)))
    layer = nn.AdaptiveAvgPool2d(size)
    close(layer(x), yt)
    close(layer.backward(g.astype(np.float32)), xt.grad)


class Residual(torch.nn.Module):
    """The torch form of fastconv.nn.Residual: body and shortcut attributes."""

    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body, self.shortcut = body, shortcut

    def forward(self, x):
        return self.body(x) + (x if self.shortcut is None else self.shortcut(x))


BasicBlock, Concat = torch_blocks(torch)
MODELS = torch_models(torch)


def torch_params_in_fastconv_order(tmodel, fmodel):
    """torch's parameters matched to fastconv's by shape and order (from_torch keeps the order)."""
    tp, fp = list(tmodel.parameters()), fmodel.parameters()
    assert [tuple(p.shape) for p in tp] == [p.data.shape for p in fp]
    return tp, fp


@pytest.mark.parametrize("name", MODELS)
def test_from_torch_train_step_matches_torch(name):
    tmodel = MODELS[name](16).train()
    fmodel = nn.from_torch(tmodel)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 3, 16, 16)).astype(np.float32)
    target = rng.integers(0, 10, 6)
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.05, momentum=0.9)
    fopt = nn.SGD(fmodel.parameters(), lr=0.05, momentum=0.9)
    tp, fp = torch_params_in_fastconv_order(tmodel, fmodel)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(2):  # the second step uses the momentum buffers and updated running statistics
        xt = torch.from_numpy(x).requires_grad_(True)
        tloss = torch.nn.functional.cross_entropy(tmodel(xt), torch.from_numpy(target))
        topt.zero_grad()
        tloss.backward()
        fopt.zero_grad()
        floss = loss_fn(fmodel(x), target)
        gx = fmodel.backward(loss_fn.backward())
        assert abs(floss - tloss.item()) < 1e-4
        close(gx, xt.grad, atol=1e-5)
        for a, b in zip(fp, tp):
            close(a.grad, b.grad, atol=1e-4)
        topt.step()
        fopt.step()
        for a, b in zip(fp, tp):
            close(a.data, b, atol=1e-4)
    # running statistics followed torch's
    tbuf = [b for n, b in tmodel.named_buffers() if "running" in n]
    fbuf = [v for k, v in fmodel.state_dict().items() if "running" in k]
    for a, b in zip(fbuf, tbuf):
        close(a, b, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_from_torch_eval_matches_no_grad_forward(name):
    tmodel = MODELS[name](16)
    with torch.no_grad():  # non-trivial statistics and affine parameters
        for m in tmodel.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    tmodel.eval()
    fmodel = nn.from_torch(tmodel)
    assert not fmodel.training
    x = np.random.default_rng(4).standard_normal((4, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        ref = tmodel(torch.from_numpy(x))
    close(fmodel(x), ref, atol=1e-4)


def test_residual_and_concat_blocks_against_torch():
    body = torch.nn.Sequential(torch.nn.Conv2d(4, 6, 3, 2, 1), torch.nn.BatchNorm2d(6))
    short = torch.nn.Sequential(torch.nn.Conv2d(4, 6, 1, 2))
    for tblock in (Residual(body, short), Residual(torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, padding=1))),
                   Concat(torch.nn.Sequential(torch.nn.Conv2d(4, 3, 3, padding=1))), BasicBlock(4, 6, 2)):  # fmt: skip
        fblock = nn.from_torch(tblock)
        x = np.random.default_rng(5).standard_normal((2, 4, 8, 8)).astype(np.float32)
        xt = torch.from_numpy(x).requires_grad_(True)
        yt = tblock(xt)
        g = np.random.default_rng(6).standard_normal(yt.shape).astype(np.float32)
        yt.backward(torch.from_numpy(g))
        close(fblock(x), yt)
        close(fblock.backward(g), xt.grad)
        for a, b in zip(*torch_params_in_fastconv_order(tblock, fblock)[::-1]):
            close(a.grad, b.grad, atol=1e-4)


def torch_forward_backward(fn, x, seed):
    """fn on x as a tensor, and its backward from a random gradient: (output, the input with .grad, gradient)."""
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = fn(xt)
    g = np.random.default_rng(seed).standard_normal(yt.shape).astype(x.dtype)
    yt.backward(torch.from_numpy(g))
    return yt, xt, g


def same_with_nan(got, ref):
    torch.testing.assert_close(torch.from_numpy(np.ascontiguousarray(got)), ref.detach(), atol=1e-5, rtol=1e-4,
                               equal_nan=True)  # fmt: skip


@pytest.mark.parametrize("with_nan", [False, True], ids=["finite", "nan"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_fused_relu_after_conv_and_residual_against_torch(dtype, with_nan):
    """Sequential fuses a ReLU into the Residual sum before it and rectifies a Conv2d's output in place: values,
    NaNs (kept, as torch's ReLU), input and weight gradients as torch's."""
    tconv = torch.nn.Conv2d(3, 3, 3, padding=1).to(torch.float64 if dtype == np.float64 else torch.float32)
    fmodel = nn.Sequential(nn.Residual(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, dtype=dtype), nn.ReLU())), nn.ReLU())
    fconv = fmodel.layers[0].body.layers[0]
    fconv.weight.data[...] = tconv.weight.detach().numpy()
    fconv.bias_param.data[...] = tconv.bias.detach().numpy()
    x = np.random.default_rng(8).standard_normal((2, 3, 6, 6)).astype(dtype)
    if with_nan:
        x[0, 1, 2, 3] = np.nan
    yt, xt, g = torch_forward_backward(lambda t: torch.relu(torch.relu(tconv(t)) + t), x, 9)
    y = fmodel(x)
    same_with_nan(y, yt)
    assert (np.isnan(y).sum() > 0) == with_nan
    same_with_nan(fmodel.backward(g), xt.grad)
    same_with_nan(fconv.weight.grad, tconv.weight.grad)


@pytest.mark.parametrize("with_nan", [False, True], ids=["finite", "nan"])
@pytest.mark.parametrize("relu", [False, True], ids=["sum", "sum_relu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_residual_sum_in_the_last_convolution_against_torch(dtype, relu, with_nan):
    """A Residual whose body ends in a Conv2d adds the shortcut (and the ReLU after the block) as that convolution
    writes its output: values, NaNs, input and parameter gradients as torch's."""
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    tbody = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(5, 5, 3, padding=1))
    tshort = torch.nn.Conv2d(3, 5, 1, 2, bias=False)
    tblock = torch.nn.Sequential(Residual(tbody, tshort), *([torch.nn.ReLU()] if relu else [])).to(tdt)
    fblock = nn.from_torch(tblock)
    x = np.random.default_rng(10).standard_normal((2, 3, 9, 8)).astype(dtype)
    if with_nan:
        x[1, 2, 4, 4] = np.nan
    yt, xt, g = torch_forward_backward(tblock, x, 11)
    y = fblock(x)
    assert y.dtype == dtype
    same_with_nan(y, yt)
    same_with_nan(fblock.backward(g), xt.grad)
    for a, b in zip(*torch_params_in_fastconv_order(tblock, fblock)[::-1]):
        same_with_nan(a.grad, b.grad)


def test_residual_ending_in_a_convolution_still_checks_shapes():
    block = nn.Residual(nn.Sequential(nn.ReLU(), nn.Conv2d(2, 4, 3, padding=1)))
    with pytest.raises(ValueError, match=r"body output \(1, 4, 8, 8\) and shortcut output \(1, 2, 8, 8\)"):
        block(np.ones((1, 2, 8, 8), np.float32))


def test_fused_residual_relu_of_integer_arrays():
    """Without a float kernel (integers), the fused sum and ReLU fall back to NumPy with the same results."""
    block = nn.Sequential(nn.Residual(nn.Identity()), nn.ReLU())
    x = np.array([[[[-3, -1, 0, 2]]]])
    np.testing.assert_array_equal(block(x), np.maximum(2 * x, 0))
    np.testing.assert_array_equal(block.backward(np.ones_like(x)), 2 * (x > 0))


def test_residual_state_dict_keys_and_shape_check():
    block = nn.Residual(nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4)), nn.Conv2d(2, 4, 1))
    keys = list(block.state_dict())
    assert keys[:2] == ["body.0.weight", "body.0.bias"] and "shortcut.0.weight" in keys
    with pytest.raises(ValueError, match="Residual: body output shape"):
        nn.Residual(nn.Conv2d(2, 4, 3, padding=1)).output_shape((2, 8, 8))


def test_adamw_matches_torch():
    w0 = np.random.default_rng(7).standard_normal((5, 3)).astype(np.float32)
    tw = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    fw = nn.Parameter(w0.copy())
    topt = torch.optim.AdamW([tw], lr=0.01, weight_decay=0.1)
    fopt = nn.AdamW([fw], lr=0.01, weight_decay=0.1)
    for step in range(4):
        g = np.sin(np.arange(15.0) + step).reshape(5, 3).astype(np.float32)
        tw.grad = torch.from_numpy(g.copy())
        fw.grad = g.copy()
        topt.step()
        fopt.step()
        close(fw.data, tw, atol=1e-6)


def test_from_torch_refuses_unsupported_modules():
    """What fastconv.nn cannot run is refused with a TypeError naming the operation or module and the user's
    line that called it; forwards torch.fx cannot capture are refused naming the reason."""

    class Sorts(torch.nn.Module):
        def forward(self, x):
            return torch.sort(x, dim=1).values  # the unsupported call

    class Branches(torch.nn.Module):
        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow
                return x
            return -x

    class Recurrent(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(3, 3)

        def forward(self, x):
            return self.rnn(x)

    here = re.escape(__file__)
    with pytest.raises(TypeError, match=rf"{here}.*the unsupported call.*calls sort, which fastconv.nn cannot run"):
        nn.from_torch(torch.nn.Sequential(torch.nn.ReLU(), Sorts()))
    with pytest.raises(TypeError, match=rf"Branches.forward cannot be captured by torch.fx.*control flow.*{here}"):
        nn.from_torch(Branches())
    with pytest.raises(TypeError, match=rf"rnn is a LSTM, which fastconv.nn cannot run.*{here}.*self.rnn\(x\)"):
        nn.from_torch(Recurrent())
    with pytest.raises(TypeError, match="padding_mode='reflect'"):
        nn.from_torch(torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("affine, track, training", [(True, True, True), (False, True, True), (True, False, False),
                                                     (True, True, False), (False, False, True)], ids=str)  # fmt: skip
@pytest.mark.parametrize("fused_relu", [False, True], ids=["bn", "bn+relu"])
def test_batch_norm_kernels_against_torch(affine, track, training, fused_relu, dtype):
    """The fused C++ BatchNorm2d (and BatchNorm2d + ReLU in one pass) in every mode, forward and backward,
    on data with a large mean (the statistics' shift) against torch in the same dtype."""
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((3, 5, 6, 7)) * 2 + 40).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    tbn = torch.nn.BatchNorm2d(5, affine=affine, track_running_stats=track).to(torch.float64 if dtype == np.float64
                                                                             else torch.float32)  # fmt: skip
    if affine:
        with torch.no_grad():
            tbn.weight.uniform_(0.5, 1.5)
            tbn.bias.uniform_(-1, 1)
    if track:
        with torch.no_grad():
            tbn.running_mean.fill_(40.0)
            tbn.running_var.fill_(3.0)
    tbn.train(training)
    tlayers = [tbn] + ([torch.nn.ReLU()] if fused_relu else [])
    tmodel = torch.nn.Sequential(*tlayers)
    fmodel = nn.from_torch(tmodel)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = tmodel(xt)
    yt.backward(torch.from_numpy(g))
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == np.float32 else dict(atol=1e-10, rtol=1e-9)
    y = fmodel(x)
    assert y.dtype == dtype
    close(y, yt, **tol)
    close(fmodel.backward(g), xt.grad, **tol)
    if affine:
        close(fmodel[0].weight.grad, tbn.weight.grad, **tol)
        close(fmodel[0].bias_param.grad, tbn.bias.grad, **tol)
    if track:
        close(fmodel.state_dict()["0.running_mean"], tbn.running_mean, **tol)
        close(fmodel.state_dict()["0.running_var"], tbn.running_var, **tol)


def test_relu_keeps_nan_as_torch():
    x = np.array([[-1.0, 0.0, np.nan, 2.0]], np.float32)
    relu = nn.ReLU()
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = torch.relu(xt)
    yt.backward(torch.ones_like(yt))
    np.testing.assert_array_equal(relu(x), yt.detach().numpy())
    np.testing.assert_array_equal(relu.backward(np.ones_like(x)), xt.grad.numpy())


def test_first_layer_skips_its_input_gradient():
    """input_grad=False: the same parameter gradients, no input gradient (None), and conv2d_backward's
    output_mask gives None for what it leaves out."""
    tmodel = MODELS["vgg"](16).train()
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)
    target = rng.integers(0, 10, 4)
    grads = []
    for input_grad in (True, False):
        f = nn.from_torch(tmodel)
        loss_fn = nn.CrossEntropyLoss()
        loss_fn(f(x), target)
        gx = f.backward(loss_fn.backward(), input_grad=input_grad)
        assert (gx is None) == (not input_grad)
        grads.append([p.grad for p in f.parameters()])
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)
    w = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    gx, gw, gb = fastconv.conv2d_backward(np.ones((4, 2, 14, 14), np.float32), x, w, output_mask=(False, True, False))
    assert gx is None and gb is None and gw.shape == w.shape
    with pytest.raises(TypeError, match="output_mask must be a bool"):
        fastconv.conv2d_backward(np.ones((4, 2, 14, 14), np.float32), x, w, output_mask=(1, 1, 1))


LAYERS = [
    ("adaptive_max_1", lambda: torch.nn.AdaptiveMaxPool2d(1), (2, 3, 7, 9)),
    ("adaptive_max_3x2", lambda: torch.nn.AdaptiveMaxPool2d((3, 2)), (2, 3, 7, 9)),
    ("zeropad", lambda: torch.nn.ZeroPad2d((1, 2, 0, 3)), (2, 3, 5, 4)),
    ("zeropad_crop", lambda: torch.nn.ZeroPad2d((-1, 2, 1, -2)), (2, 3, 5, 4)),
    ("groupnorm", lambda: torch.nn.GroupNorm(3, 6), (2, 6, 5, 4)),
    ("groupnorm_plain", lambda: torch.nn.GroupNorm(2, 6, affine=False), (2, 6, 5, 4)),
    ("layernorm_chw", lambda: torch.nn.LayerNorm((6, 5, 4)), (2, 6, 5, 4)),
    ("layernorm_w", lambda: torch.nn.LayerNorm(4), (2, 6, 5, 4)),
    ("softmax", lambda: torch.nn.Softmax(1), (3, 10)),
    ("logsoftmax", lambda: torch.nn.LogSoftmax(-1), (3, 10)),
]


@pytest.mark.parametrize("name, make, shape", LAYERS, ids=[c[0] for c in LAYERS])
def test_more_layers_against_torch(name, make, shape):
    torch.manual_seed(1)
    tlayer = make()
    if getattr(tlayer, "weight", None) is not None:
        with torch.no_grad():
            tlayer.weight.uniform_(0.5, 1.5)
            tlayer.bias.uniform_(-1, 1)
    flayer = nn.from_torch(tlayer)
    rng = np.random.default_rng(10)
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = tlayer(xt)
    g = rng.standard_normal(yt.shape).astype(np.float32)
    yt.backward(torch.from_numpy(g))
    close(flayer(x), yt)
    close(flayer.backward(g), xt.grad)
    for a, b in zip(flayer.parameters(), tlayer.parameters()):
        close(a.grad, b.grad, atol=1e-4)


def test_dropout2d_drops_whole_channels():
    layer = nn.Dropout2d(0.5, rng=0)
    x = np.ones((4, 8, 3, 3), np.float32)
    y = layer(x)
    per_channel = y.reshape(4, 8, -1)
    assert np.all((per_channel == 0).all(axis=2) | (per_channel == 2).all(axis=2))
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), y)
    assert layer.eval()(x) is x


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_and_bce_with_logits_against_torch(reduction):
    rng = np.random.default_rng(12)
    z = (rng.standard_normal((5, 3)) * 10).astype(np.float32)  # large logits: the stable form matters
    t = rng.random((5, 3)).astype(np.float32)
    pw = [1.0, 2.0, 0.5]
    pairs = [
        (nn.MSELoss(reduction), torch.nn.MSELoss(reduction=reduction)),
        (nn.BCEWithLogitsLoss(reduction, np.array(pw)), torch.nn.BCEWithLogitsLoss(reduction=reduction,
                                                                                   pos_weight=torch.tensor(pw))),
    ]  # fmt: skip
    for ours, theirs in pairs:
        zt = torch.from_numpy(z.copy()).requires_grad_(True)
        lt = theirs(zt, torch.from_numpy(t))
        lt.backward()
        assert abs(ours(z, t) - lt.item()) < 1e-4 * max(1, abs(lt.item()))
        close(ours.backward(), zt.grad)


@pytest.mark.parametrize("name", MODELS)
def test_fold_batch_norm_matches_eval_forward(name):
    tmodel = MODELS[name](16)
    with torch.no_grad():
        for m in tmodel.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    tmodel.eval()
    fmodel = nn.from_torch(tmodel)
    folded = nn.fold_batch_norm(fmodel)
    count = lambda m: sum(isinstance(x, nn.BatchNorm2d) for _, x in m.named_modules())  # noqa: E731
    assert count(folded) < count(fmodel)  # some were folded (DenseNet's pre-activation norms cannot be)
    x = np.random.default_rng(13).standard_normal((3, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        ref = tmodel(torch.from_numpy(x))
    close(folded(x), ref, atol=1e-4)
    close(fmodel(x), ref, atol=1e-4)  # the original is untouched


@pytest.mark.parametrize("threads", [8, 16, 64], ids=lambda t: f"{t}threads")
def test_fused_layers_at_many_threads(threads):
    """BatchNorm2d(+ReLU), ReLU, Linear, Winograd (the generic one at the avx2 level) and fused convolution
    epilogues give the same results with more threads than cores (races show there) as with one."""
    rng = np.random.default_rng(14)
    x = rng.standard_normal((8, 16, 12, 12)).astype(np.float32)
    g = rng.standard_normal((8, 16, 12, 12)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)

    def run():
        model = nn.Sequential(nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 144, 7, rng=0))
        y = model(x)
        gx = model.backward(np.ones_like(y))
        relu = nn.ReLU()
        outs = [y, gx, model[0].weight.grad, model[3].weight.grad, relu(g), relu.backward(x)]
        outs.append(fastconv.conv2d(x, w, padding=1))
        outs.append(fastconv.conv2d(x, w, padding=1, residual=g, relu=True))  # the epilogue per operator piece
        outs.append(fastconv.conv2d(x[:, :3], w[:, :3], padding=1, residual=g, relu=True))
        outs += list(fastconv.conv2d_backward(g, x, w, padding=1)[:2])
        return outs

    old = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(1)
        ref = run()
        fastconv.set_num_threads(threads)
        for _ in range(3):
            for a, b in zip(run(), ref):  # sums split over workers round differently, races err far more
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(b).max())))
    finally:
        fastconv.set_num_threads(old)
