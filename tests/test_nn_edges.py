"""fastconv.nn at its edges, table-driven against torch: every layer and container given unbatched input, empty
batches, empty planes, wrong ranks and channel counts, integer, float64, list, None, non-contiguous and read-only
arrays, in train and eval mode; fastconv must make torch's accept/refuse decision (except the deliberate
differences below), refuse with a ValueError or TypeError naming the layer, and where it accepts, give torch's
result.  Then atomic load_state_dict and optimiser steps, backward misuse, and random geometries (hypothesis)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastconv import nn

T = torch.nn
C = 4
LAYERS = {
    "Conv2d": (lambda: nn.Conv2d(C, 6, 3, padding=1, rng=0), lambda: T.Conv2d(C, 6, 3, padding=1), (2, C, 5, 5)),
    "ConvTranspose2d": (
        lambda: nn.ConvTranspose2d(C, 6, 3, stride=2, rng=0),
        lambda: T.ConvTranspose2d(C, 6, 3, stride=2),
        (2, C, 5, 5),
    ),
    "MaxPool2d": (lambda: nn.MaxPool2d(2), lambda: T.MaxPool2d(2), (2, C, 6, 6)),
    "AvgPool2d": (lambda: nn.AvgPool2d(2), lambda: T.AvgPool2d(2), (2, C, 6, 6)),
    "Upsample": (lambda: nn.Upsample(scale_factor=2), lambda: T.Upsample(scale_factor=2), (2, C, 3, 3)),
    "BatchNorm2d": (lambda: nn.BatchNorm2d(C), lambda: T.BatchNorm2d(C), (2, C, 3, 3)),
    "GroupNorm": (lambda: nn.GroupNorm(2, C), lambda: T.GroupNorm(2, C), (2, C, 3, 3)),
    "LayerNorm": (lambda: nn.LayerNorm([3, 3]), lambda: T.LayerNorm([3, 3]), (2, C, 3, 3)),
    "ReLU": (lambda: nn.ReLU(), lambda: T.ReLU(), (2, C, 3, 3)),
    "ReLU6": (lambda: nn.ReLU6(), lambda: T.ReLU6(), (2, C, 3, 3)),
    "LeakyReLU": (lambda: nn.LeakyReLU(), lambda: T.LeakyReLU(), (2, C, 3, 3)),
    "ELU": (lambda: nn.ELU(), lambda: T.ELU(), (2, C, 3, 3)),
    "GELU": (lambda: nn.GELU(), lambda: T.GELU(), (2, C, 3, 3)),
    "SiLU": (lambda: nn.SiLU(), lambda: T.SiLU(), (2, C, 3, 3)),
    "Sigmoid": (lambda: nn.Sigmoid(), lambda: T.Sigmoid(), (2, C, 3, 3)),
    "Tanh": (lambda: nn.Tanh(), lambda: T.Tanh(), (2, C, 3, 3)),
    "Hardswish": (lambda: nn.Hardswish(), lambda: T.Hardswish(), (2, C, 3, 3)),
    "Identity": (lambda: nn.Identity(), lambda: T.Identity(), (2, C, 3, 3)),
    "AdaptiveAvgPool2d": (lambda: nn.AdaptiveAvgPool2d(2), lambda: T.AdaptiveAvgPool2d(2), (2, C, 5, 5)),
    "AdaptiveMaxPool2d": (lambda: nn.AdaptiveMaxPool2d(2), lambda: T.AdaptiveMaxPool2d(2), (2, C, 5, 5)),
    "ZeroPad2d": (lambda: nn.ZeroPad2d(1), lambda: T.ZeroPad2d(1), (2, C, 3, 3)),
    "Dropout2d": (lambda: nn.Dropout2d(0.5), lambda: T.Dropout2d(0.5), (2, C, 3, 3)),
    "Dropout": (lambda: nn.Dropout(0.5), lambda: T.Dropout(0.5), (2, C, 3, 3)),
    "Softmax": (lambda: nn.Softmax(1), lambda: T.Softmax(1), (2, C, 3, 3)),
    "LogSoftmax": (lambda: nn.LogSoftmax(1), lambda: T.LogSoftmax(1), (2, C, 3, 3)),
    "Flatten": (lambda: nn.Flatten(), lambda: T.Flatten(), (2, C, 3, 3)),
    "Linear": (lambda: nn.Linear(C, 3, rng=0), lambda: T.Linear(C, 3), (2, C)),
    "Sequential": (
        lambda: nn.Sequential(nn.Conv2d(C, 4, 1, rng=0), nn.ReLU()),
        lambda: T.Sequential(T.Conv2d(C, 4, 1), T.ReLU()),
        (2, C, 3, 3),
    ),
    "Residual": (lambda: nn.Residual(nn.Conv2d(C, C, 3, padding=1, rng=0)), None, (2, C, 3, 3)),
    "Concat": (lambda: nn.Concat(nn.Conv2d(C, 2, 1, rng=0)), None, (2, C, 3, 3)),
}


def inputs(shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    out = {"ok": x, "unbatched": x[0], "empty_batch": np.zeros((0,) + shape[1:], np.float32)}
    if len(shape) == 4:
        out["zero_spatial"] = np.zeros(shape[:2] + (0, shape[3]), np.float32)
        out["rank5"] = x[None]
        out["rank2"] = x[:, :, 0, 0]
        out["wrong_channels"] = rng.standard_normal((shape[0], shape[1] + 1) + shape[2:]).astype(np.float32)
        out["noncontig"] = np.asfortranarray(x)[:, :, ::1, :]
        out["strided"] = rng.standard_normal(shape[:3] + (shape[3] * 2,)).astype(np.float32)[..., ::2]
    else:
        out["wrong_channels"] = rng.standard_normal((shape[0], shape[1] + 1)).astype(np.float32)
        out["rank1"] = x[0, :]
        out["rank3"] = x[None]
    ro = x.copy()
    ro.flags.writeable = False
    out["readonly"] = ro
    out["int64"] = (x * 3).astype(np.int64)
    out["float64"] = x.astype(np.float64)
    out["list"] = x.tolist()
    out["none"] = None
    return out


class TorchResidual(T.Module):
    def __init__(self):
        super().__init__()
        self.body = T.Sequential(T.Conv2d(C, C, 3, padding=1))

    def forward(self, x):
        return self.body(x) + x


class TorchConcat(T.Module):
    def __init__(self):
        super().__init__()
        self.body = T.Sequential(T.Conv2d(C, 2, 1))

    def forward(self, x):
        return torch.cat([x, self.body(x)], 1)


LAYERS["Residual"] = (LAYERS["Residual"][0], TorchResidual, LAYERS["Residual"][2])
LAYERS["Concat"] = (LAYERS["Concat"][0], TorchConcat, LAYERS["Concat"][2])

# Where fastconv decides otherwise on purpose (the docs list these): pools and upsampling compute in floating
# point only; Upsample is 2-D (a 3-D input is one (C, H, W) image, where torch's Upsample reads (N, C, L) and
# upsamples 1-D; 5-D inputs are refused, where torch upsamples volumes).
DELIBERATE = {("MaxPool2d", "int64"), ("AvgPool2d", "int64"), ("Upsample", "unbatched"), ("Upsample", "rank5")}
INPUTS = ["ok", "unbatched", "empty_batch", "zero_spatial", "rank5", "rank2", "rank1", "rank3", "wrong_channels",
          "noncontig", "strided", "readonly", "int64", "float64", "list", "none"]  # fmt: skip
CASES = [(layer, inp, mode) for layer in LAYERS for inp in INPUTS for mode in ("train", "eval")
         if inp in inputs(LAYERS[layer][2])]  # fmt: skip


def torch_input(v):
    if v is None:
        return None
    return torch.from_numpy(np.array(v))  # a list as NumPy makes it (float64): fastconv takes array-likes so


@pytest.mark.parametrize("layer, inp, mode", CASES, ids=["-".join(c) for c in CASES])
def test_edge_decisions_match_torch(layer, inp, mode):
    fmake, tmake, shape = LAYERS[layer]
    v = inputs(shape)[inp]
    tm, fm = tmake().train(mode == "train"), fmake().train(mode == "train")
    if inp in ("float64", "list"):
        tm = tm.double()
    state = {k: x.numpy() for k, x in tm.state_dict().items()}
    if state:
        fm.load_state_dict(state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ref, refused = tm(torch_input(v)), None
        except Exception as exc:  # noqa: BLE001 - torch's refusals come as many types
            ref, refused = None, exc
        if (layer, inp) in DELIBERATE:
            with pytest.raises((TypeError, ValueError), match=layer) if refused is None and inp != "unbatched" \
                    else warnings.catch_warnings():  # fmt: skip
                fm(v)
            return
        if refused is not None:
            with pytest.raises((TypeError, ValueError)) as info:
                fm(v)
            assert layer in str(info.value), info.value
            return
        got = fm(v)
    if "Dropout" in layer and mode == "train":
        assert np.asarray(got).shape == tuple(ref.shape)
        return
    if ref is None:  # Identity passes anything on, None included
        assert got is None
        return
    ref = ref.detach().numpy()
    got = np.asarray(got)
    assert got.shape == ref.shape and got.dtype == ref.dtype, (got.shape, got.dtype, ref.shape, ref.dtype)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_messages_name_the_path_inside_a_model():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, rng=0), nn.Sequential(nn.ReLU(), nn.Linear(5, 2, rng=0)))
    with pytest.raises(ValueError, match=r"Sequential layer '1.1' \(Linear: input's last axis must have "
                                         r"in_features=5 values, got shape \(1, 4, 3, 3\)\)"):  # fmt: skip
        model(np.ones((1, 3, 5, 5), np.float32))
    with pytest.raises(TypeError, match=r"Sequential layer '0' \(Conv2d: input must be float32 or float64"):
        model(np.ones((1, 3, 5, 5), np.int32))
    with pytest.raises(TypeError, match="float16 is refused on purpose"):
        nn.ReLU()(np.ones(3, np.float16))


def test_backward_misuse():
    conv = nn.Conv2d(3, 8, 3, rng=0)
    g = np.ones((1, 8, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"Conv2d.backward: called before forward"):
        conv.backward(g)
    conv(np.ones((1, 3, 5, 5), np.float32))
    conv.backward(g)
    with pytest.raises(ValueError, match=r"Conv2d.backward: called twice after one forward"):
        conv.backward(g)
    conv(np.ones((1, 3, 5, 5), np.float32))
    conv.backward(g)  # a new forward allows a new backward


def test_refused_load_state_dict_changes_nothing():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, rng=0), nn.BatchNorm2d(4), nn.Linear(4, 2, rng=0))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    bad = {k: np.full_like(v, 7) for k, v in before.items()}
    bad["2.weight"] = np.zeros((3, 3), np.float32)  # the last entry has the wrong shape
    with pytest.raises(ValueError, match=r"state_dict\['2.weight'\]: expected shape \(2, 4\), got \(3, 3\)"):
        model.load_state_dict(bad)
    bad["2.weight"] = np.array([["a"] * 4] * 2)
    with pytest.raises(TypeError, match=r"state_dict\['2.weight'\] must be a real numeric array, got dtype <U1"):
        model.load_state_dict(bad)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    good = {k: np.full(v.shape, 2, np.float64 if v.dtype.kind == "f" else v.dtype) for k, v in before.items()}
    model.load_state_dict(good)  # float64 values cast to the float32 parameters, as torch's copy_ casts
    assert all(v.dtype == before[k].dtype and (v == 2).all() for k, v in model.state_dict().items())
    with pytest.raises(TypeError, match="state must be a mapping"):
        model.load_state_dict([1, 2])


@pytest.mark.parametrize("opt", ["SGD", "Adam", "AdamW"])
def test_refused_step_changes_no_parameter(opt):
    model = nn.Sequential(nn.Linear(4, 3, rng=0), nn.Linear(3, 2, rng=1))
    params = model.parameters()
    optimizer = getattr(nn, opt)(params, lr=0.1)
    before = [p.data.copy() for p in params]
    params[0].grad = np.ones_like(params[0].data)
    params[-1].grad = np.ones((5,), np.float32)  # the wrong shape, on the last parameter
    with pytest.raises(ValueError, match=rf"{opt}.step: params\[3\].grad has shape \(5,\), but the parameter has "
                                         r"shape \(2,\)"):  # fmt: skip
        optimizer.step()
    params[-1].grad = "gradient"
    with pytest.raises(TypeError, match=rf"{opt}.step: params\[3\].grad must be a real NumPy array, got str"):
        optimizer.step()
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p.data, b)
    params[-1].grad = None  # parameters without gradients are skipped, as torch skips them
    optimizer.step()
    assert not np.array_equal(params[0].data, before[0]) and np.array_equal(params[-1].data, before[-1])


@pytest.mark.parametrize(
    "make, message",
    [(lambda: nn.SGD([], lr=0.1), "SGD: got an empty parameter list"),
     (lambda: nn.SGD([np.ones(3)], lr=0.1), r"SGD: params\[0\] must be a fastconv.nn Parameter, got ndarray"),
     (lambda: nn.SGD(nn.Linear(2, 2).parameters(), lr=-1), r"SGD: lr must be a finite number >= 0, got -1"),
     (lambda: nn.SGD(nn.Linear(2, 2).parameters(), lr="fast"), r"SGD: lr must be a number, got str 'fast'"),
     (lambda: nn.Adam(nn.Linear(2, 2).parameters(), betas=(0.9, 1.0)), r"Adam: betas must be in \[0, 1\)"),
     (lambda: nn.AdamW(nn.Linear(2, 2).parameters(), weight_decay=None), "AdamW: weight_decay must be a number")],
    ids=["empty", "not_parameter", "negative_lr", "string_lr", "beta_one", "none_decay"],
)  # fmt: skip
def test_optimiser_arguments(make, message):
    with pytest.raises((TypeError, ValueError), match=message):
        make()


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 3), c=st.integers(1, 5), h=st.integers(1, 9), w=st.integers(1, 9),
       layer=st.sampled_from(["AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "GroupNorm", "Flatten", "SiLU",
                              "ZeroPad2d"]))  # fmt: skip
def test_accepted_geometries_match_torch(n, c, h, w, layer):
    """Random shapes (empty batches included) through layers whose edge handling changed, against torch."""
    makers = {
        "AdaptiveAvgPool2d": (lambda: nn.AdaptiveAvgPool2d((2, 3)), lambda: T.AdaptiveAvgPool2d((2, 3))),
        "AdaptiveMaxPool2d": (lambda: nn.AdaptiveMaxPool2d(2), lambda: T.AdaptiveMaxPool2d(2)),
        "GroupNorm": (lambda: nn.GroupNorm(1, c), lambda: T.GroupNorm(1, c)),
        "Flatten": (lambda: nn.Flatten(), lambda: T.Flatten()),
        "SiLU": (lambda: nn.SiLU(), lambda: T.SiLU()),
        "ZeroPad2d": (lambda: nn.ZeroPad2d((1, -1, 2, 0)), lambda: T.ZeroPad2d((1, -1, 2, 0))),
    }
    fmake, tmake = makers[layer]
    x = np.random.default_rng(n * 100 + h * 10 + w).standard_normal((n, c, h, w)).astype(np.float32)
    try:
        ref = tmake()(torch.from_numpy(x)).detach().numpy()
    except (RuntimeError, ValueError):  # torch refuses with either
        with pytest.raises((ValueError, TypeError), match=layer):
            fmake()(x)
        return
    got = fmake()(x)
    assert got.shape == ref.shape and got.dtype == ref.dtype
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


_r = np.random.default_rng(5)
_z = _r.standard_normal((3, 5)).astype(np.float32)
_seg = _r.standard_normal((2, 4, 3, 3)).astype(np.float32)
LOSSES = {
    "ce_classes": ("CrossEntropyLoss", _z, np.array([0, 2, 4])),
    "ce_probabilities": ("CrossEntropyLoss", _z, _r.dirichlet(np.ones(5), 3).astype(np.float32)),
    "ce_unbatched": ("CrossEntropyLoss", _z[0], np.array(3)),
    "ce_per_pixel": ("CrossEntropyLoss", _seg, _r.integers(0, 4, (2, 3, 3))),
    "ce_class_out_of_range": ("CrossEntropyLoss", _z, np.array([0, 2, 5])),
    "ce_batch_mismatch": ("CrossEntropyLoss", _z, np.array([0, 2])),
    "ce_none": ("CrossEntropyLoss", None, np.array([0, 2, 4])),
    "mse": ("MSELoss", _z, _z[::-1].copy()),
    "mse_int_target": ("MSELoss", _z, np.ones((3, 5), np.int64)),
    "mse_shape": ("MSELoss", _z, _z[:2]),
    "mse_none": ("MSELoss", _z, None),
    "bce": ("BCEWithLogitsLoss", _z, (_z > 0).astype(np.float32)),
    "bce_int_target": ("BCEWithLogitsLoss", _z, (_z > 0).astype(np.int64)),
    "bce_shape": ("BCEWithLogitsLoss", _z, _z[:, :2]),
}


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("case", LOSSES)
def test_losses_at_their_edges_match_torch(case, reduction):
    name, x, t = LOSSES[case]
    ours, theirs = getattr(nn, name)(reduction=reduction), getattr(T, name)(reduction=reduction)
    try:
        xt = None if x is None else torch.tensor(x, requires_grad=True)
        ref = theirs(xt, None if t is None else torch.from_numpy(np.array(t)))
    except Exception:  # noqa: BLE001 - torch refuses with IndexError, RuntimeError, ValueError, TypeError...
        with pytest.raises((ValueError, TypeError), match=name):
            ours(x, t)
        return
    got = ours(x, t)
    np.testing.assert_allclose(got, ref.item(), rtol=1e-5)
    ref.backward()
    np.testing.assert_allclose(ours.backward(), xt.grad.numpy(), rtol=1e-5, atol=1e-7)
