"""Pooling kernels and fastconv.nn layers, losses and optimisers against torch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from conftest import tols
from fastconv import nn

POOLS = [
    ("k2", 2, None, 0, 1, False),
    ("k3_s2_p1", 3, 2, 1, 1, False),
    ("ceil", 3, 2, 0, 1, True),
    ("ceil_pad", 2, 2, 1, 1, True),
    ("dilated", 3, 1, 1, 2, False),
    ("rect", (2, 3), (1, 2), (1, 1), 1, False),
    ("ceil_overhang", 4, 3, 2, 1, True),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", POOLS, ids=[p[0] for p in POOLS])
def test_max_pool_matches_torch(case, dtype, rng):
    _, k, s, p, d, ceil = case
    x = rng.standard_normal((2, 3, 9, 10)).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt, it = TF.max_pool2d(xt, k, s, p, d, ceil, return_indices=True)
    y, idx = fastconv.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    torch.testing.assert_close(y, yt.detach().numpy())
    np.testing.assert_array_equal(idx, it.numpy())
    gy = rng.standard_normal(y.shape).astype(dtype)
    yt.backward(torch.tensor(gy))
    gx = fastconv.max_pool2d_backward(gy, x, idx, k, s, p, d, ceil)
    torch.testing.assert_close(gx, xt.grad.numpy(), **tols(dtype))


AVG = [
    ("k2", 2, None, 0, False, True, None),
    ("pad_include", 3, 2, 1, False, True, None),
    ("pad_exclude", 3, 2, 1, False, False, None),
    ("ceil_include", 3, 2, 1, True, True, None),
    ("ceil_exclude", 2, 2, 1, True, False, None),
    ("divisor", 3, 1, 1, False, True, 5),
    ("rect", (2, 3), (2, 1), (1, 0), True, True, None),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", AVG, ids=[a[0] for a in AVG])
def test_avg_pool_matches_torch(case, dtype, rng):
    _, k, s, p, ceil, include, div = case
    x = rng.standard_normal((2, 3, 9, 8)).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt = TF.avg_pool2d(xt, k, s, p, ceil, include, div)
    y = fastconv.avg_pool2d(x, k, s, p, ceil, include, div)
    torch.testing.assert_close(y, yt.detach().numpy(), **tols(dtype))
    gy = rng.standard_normal(y.shape).astype(dtype)
    yt.backward(torch.tensor(gy))
    torch.testing.assert_close(
        fastconv.avg_pool2d_backward(gy, x, k, s, p, ceil, include, div), xt.grad.numpy(), **tols(dtype)
    )


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 10),
    w=st.integers(1, 10),
    k=st.integers(1, 4),
    s=st.integers(1, 3),
    p=st.integers(0, 2),
    d=st.integers(1, 2),
    ceil=st.booleans(),
    seed=st.integers(0, 999),
)
def test_random_pools_match_torch(h, w, k, s, p, d, ceil, seed):
    x = np.random.default_rng(seed).standard_normal((1, 2, h, w))
    try:
        ref = TF.max_pool2d(torch.tensor(x), k, s, p, d, ceil)
    except RuntimeError:
        with pytest.raises(ValueError):
            fastconv.max_pool2d(x, k, s, p, d, ceil)
        return
    torch.testing.assert_close(fastconv.max_pool2d(x, k, s, p, d, ceil), ref.numpy())
    if d == 1:
        ref = TF.avg_pool2d(torch.tensor(x), k, s, p, ceil, p == 0)
        torch.testing.assert_close(fastconv.avg_pool2d(x, k, s, p, ceil, p == 0), ref.numpy())


def test_pool_unbatched_and_errors():
    x = np.arange(32.0).reshape(2, 4, 4)
    torch.testing.assert_close(fastconv.max_pool2d(x, 2), TF.max_pool2d(torch.tensor(x), 2).numpy())
    torch.testing.assert_close(fastconv.avg_pool2d(x, 2), TF.avg_pool2d(torch.tensor(x), 2).numpy())
    with pytest.raises(ValueError, match="padding"):
        fastconv.max_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match="stride"):
        fastconv.avg_pool2d(x, 2, stride=0)
    with pytest.raises(TypeError, match="int64"):
        fastconv.max_pool2d(np.ones((1, 4, 4), np.int64), 2)
    with pytest.raises(ValueError, match="divisor_override"):
        fastconv.avg_pool2d(x, 2, divisor_override=0)


@pytest.mark.parametrize("divisor", [3, -2, 7], ids=["positive", "negative", "larger_than_window"])
def test_avg_pool_divisor_override_matches_torch(divisor):
    """torch takes any non-zero divisor (a negative one flips the sign), forward and backward."""
    x = np.random.default_rng(3).standard_normal((2, 3, 7, 6))
    xt = torch.tensor(x, requires_grad=True)
    ref = TF.avg_pool2d(xt, 3, 2, 1, divisor_override=divisor)
    g = np.random.default_rng(4).standard_normal(ref.shape)
    ref.backward(torch.tensor(g))
    torch.testing.assert_close(fastconv.avg_pool2d(x, 3, 2, 1, divisor_override=divisor), ref.detach().numpy())
    pool = fastconv.nn.AvgPool2d(3, 2, 1, divisor_override=divisor)
    torch.testing.assert_close(pool(x), ref.detach().numpy())
    torch.testing.assert_close(pool.backward(g), xt.grad.numpy())


def copy_into_torch(ours, theirs):
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})


LAYERS = [
    (
        "conv",
        lambda: nn.Conv2d(3, 4, 3, 2, 1, rng=0, dtype=np.float64),
        lambda: torch.nn.Conv2d(3, 4, 3, 2, 1).double(),
    ),
    (
        "conv_grouped_same",
        lambda: nn.Conv2d(4, 6, 3, 1, "same", 2, 2, rng=0, dtype=np.float64),
        lambda: torch.nn.Conv2d(4, 6, 3, 1, "same", 2, 2).double(),
    ),
    (
        "convT",
        lambda: nn.ConvTranspose2d(3, 4, 3, 2, 1, 1, rng=0, dtype=np.float64),
        lambda: torch.nn.ConvTranspose2d(3, 4, 3, 2, 1, 1).double(),
    ),
    ("maxpool", lambda: nn.MaxPool2d(3, 2, 1, ceil_mode=True), lambda: torch.nn.MaxPool2d(3, 2, 1, ceil_mode=True)),
    (
        "avgpool",
        lambda: nn.AvgPool2d(2, count_include_pad=False, padding=1),
        lambda: torch.nn.AvgPool2d(2, count_include_pad=False, padding=1),
    ),
    ("relu", lambda: nn.ReLU(), lambda: torch.nn.ReLU()),
    ("flatten", lambda: nn.Flatten(), lambda: torch.nn.Flatten()),
]


@pytest.mark.parametrize("case", LAYERS, ids=[c[0] for c in LAYERS])
def test_layer_forward_backward_match_torch(case, rng):
    _, make_ours, make_theirs = case
    ours, theirs = make_ours(), make_theirs()
    copy_into_torch(ours, theirs)
    x = rng.standard_normal((2, 3 if "grouped" not in case[0] else 4, 8, 8))
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    y = ours(x)
    torch.testing.assert_close(y, yt.detach().numpy())
    gy = rng.standard_normal(y.shape)
    yt.backward(torch.tensor(gy))
    torch.testing.assert_close(ours.backward(gy), xt.grad.numpy())
    for (name, p), (tname, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert name == tname
        torch.testing.assert_close(p.grad, tp.grad.numpy())


def test_linear_and_dropout_eval_match_torch(rng):
    ours, theirs = nn.Linear(5, 3, rng=1, dtype=np.float64), torch.nn.Linear(5, 3).double()
    copy_into_torch(ours, theirs)
    x = rng.standard_normal((4, 5))
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    torch.testing.assert_close(ours(x), yt.detach().numpy())
    gy = rng.standard_normal((4, 3))
    yt.backward(torch.tensor(gy))
    torch.testing.assert_close(ours.backward(gy), xt.grad.numpy())
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad.numpy())
    drop = nn.Dropout(0.5, rng=0).eval()
    np.testing.assert_array_equal(drop(x), x)


def test_dropout_train_scales_kept_units():
    drop = nn.Dropout(0.25, rng=0)
    x = np.ones((200, 50))
    y = drop(x)
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1 / 0.75)
    assert abs(kept.mean() - 0.75) < 0.02
    np.testing.assert_array_equal(drop.backward(np.ones_like(x)), y)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm_train_and_eval_match_torch(momentum, rng):
    ours, theirs = (
        nn.BatchNorm2d(3, momentum=momentum, dtype=np.float64),
        torch.nn.BatchNorm2d(3, momentum=momentum).double(),
    )
    ours.weight.data[:] = [0.5, 1.5, -1.0]
    ours.bias_param.data[:] = [0.1, -0.2, 0.3]
    copy_into_torch(ours, theirs)
    for step in range(3):
        x = rng.standard_normal((4, 3, 5, 6)) * (step + 1) + step
        xt = torch.tensor(x, requires_grad=True)
        yt = theirs(xt)
        torch.testing.assert_close(ours(x), yt.detach().numpy())
        gy = rng.standard_normal(x.shape)
        yt.backward(torch.tensor(gy))
        torch.testing.assert_close(ours.backward(gy), xt.grad.numpy())
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad.numpy())
    torch.testing.assert_close(ours.bias_param.grad, theirs.bias.grad.numpy())
    for key, value in theirs.state_dict().items():
        torch.testing.assert_close(np.asarray(ours.state_dict()[key]), value.numpy(), check_dtype=False)
    ours.eval()
    theirs.eval()
    x = rng.standard_normal((2, 3, 4, 4))
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    torch.testing.assert_close(ours(x), yt.detach().numpy())
    gy = rng.standard_normal(x.shape)
    yt.backward(torch.tensor(gy))
    torch.testing.assert_close(ours.backward(gy), xt.grad.numpy())


def test_cross_entropy_matches_torch(rng):
    z = rng.standard_normal((6, 4))
    t = np.array([0, 3, 1, 1, 2, 0])
    for reduction in ("mean", "sum"):
        zt = torch.tensor(z, requires_grad=True)
        lt = TF.cross_entropy(zt, torch.tensor(t), reduction=reduction)
        lt.backward()
        loss = nn.CrossEntropyLoss(reduction)
        assert loss(z, t) == pytest.approx(lt.item(), rel=1e-12)
        torch.testing.assert_close(loss.backward(), zt.grad.numpy())
    with pytest.raises(ValueError, match="target"):
        nn.CrossEntropyLoss()(z, np.array([0, 1, 2, 3, 4, 5]))


def small_models():
    ours = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, rng=3, dtype=np.float64),
        nn.BatchNorm2d(4, dtype=np.float64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 5, rng=4, dtype=np.float64),
    )
    theirs = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 5),
    ).double()
    copy_into_torch(ours, theirs)
    return ours, theirs


@pytest.mark.parametrize("opt", ["sgd", "sgd_nesterov", "adam"])
def test_three_optimizer_steps_match_torch(opt, rng):
    ours, theirs = small_models()
    if opt == "sgd":
        o1 = nn.SGD(ours.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        o2 = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    elif opt == "sgd_nesterov":
        o1 = nn.SGD(ours.parameters(), lr=0.05, momentum=0.8, nesterov=True)
        o2 = torch.optim.SGD(theirs.parameters(), lr=0.05, momentum=0.8, nesterov=True)
    else:
        o1 = nn.Adam(ours.parameters(), lr=0.01, weight_decay=1e-2)
        o2 = torch.optim.Adam(theirs.parameters(), lr=0.01, weight_decay=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(3):
        x = rng.standard_normal((8, 1, 8, 8))
        t = rng.integers(0, 5, 8)
        o1.zero_grad()
        loss_fn(ours(x), t)
        ours.backward(loss_fn.backward())
        o1.step()
        o2.zero_grad()
        TF.cross_entropy(theirs(torch.tensor(x)), torch.tensor(t)).backward()
        o2.step()
    for key, value in theirs.state_dict().items():
        torch.testing.assert_close(
            np.asarray(ours.state_dict()[key]), value.numpy(), rtol=1e-7, atol=1e-9, check_dtype=False
        )


def test_state_dict_roundtrip_and_torch_loading(tmp_path):
    ours, theirs = small_models()
    torch.nn.init.normal_(theirs[0].weight)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    np.testing.assert_array_equal(ours[0].weight.data, theirs[0].weight.detach().numpy())
    ours.save(tmp_path / "model.npz")
    fresh, _ = small_models()
    fresh.load(tmp_path / "model.npz")
    for (key, a), (key2, b) in zip(fresh.state_dict().items(), ours.state_dict().items()):
        assert key == key2
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="missing keys"):
        fresh.load_state_dict({})
    with pytest.raises(ValueError, match="expected shape"):
        fresh.load_state_dict({**ours.state_dict(), "0.weight": np.zeros((1, 1, 1, 1))})


def test_default_init_statistics_like_torch():
    conv = nn.Conv2d(16, 32, 3, rng=np.random.default_rng(0))
    bound = 1 / np.sqrt(16 * 9)
    assert np.abs(conv.weight.data).max() <= bound
    assert np.abs(conv.weight.data).max() > 0.9 * bound
    t = torch.nn.Conv2d(16, 32, 3)
    assert float(t.weight.detach().abs().max()) <= bound + 1e-7
    a = nn.Conv2d(2, 2, 3, rng=5).weight.data
    b = nn.Conv2d(2, 2, 3, rng=5).weight.data
    np.testing.assert_array_equal(a, b)


def test_digits_example_learns():
    from fastconv.demo import train

    model, history, (x_test, y_test) = train(epochs=2, seed=1, quiet=True)
    assert history["test_acc"][-1] > 0.8  # chance is 0.1
    assert history["loss"][-1] < history["loss"][0]


def test_demo_cli_with_plot(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "digits.png"
    r = subprocess.run(
        [sys.executable, "-m", "fastconv", "demo", "--epochs", "1", "--plot", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "test accuracy" in r.stdout and out.stat().st_size > 10_000


@pytest.mark.parametrize("kernel", [2, 3], ids=["2x2", "3x3"])
def test_max_pool_in_eval_mode_skips_indices_and_still_has_a_backward(kernel):
    """Eval mode computes no arg-max positions in forward; a backward then finds them, as torch's gradient."""
    x = np.random.default_rng(12).integers(-2, 3, (2, 3, 9, 10)).astype(np.float32)  # ties
    pool = nn.MaxPool2d(kernel).eval()
    y = pool(x)
    assert pool._indices is None
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = TF.max_pool2d(xt, kernel)
    g = np.random.default_rng(13).standard_normal(y.shape).astype(np.float32)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(pool.backward(g), xt.grad.numpy())
    np.testing.assert_array_equal(
        fastconv.max_pool2d(x, kernel), fastconv.max_pool2d(x, kernel, return_indices=True)[0]
    )


@pytest.mark.parametrize("width", [11, 1031], ids=["narrow", "rows-of-several-blocks"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_max_pool_2x2_ties_and_nans_match_torch(dtype, width):
    """The 2x2 stride-2 fast path: ties keep the first tap, a NaN anywhere wins (the last in scan order),
    odd sizes drop the last row and column; values and indices as torch's.  1031 columns give output
    rows longer than the kernel's blocks of 256 windows."""
    rng = np.random.default_rng(11)
    x = rng.integers(-2, 3, (2, 3, 9, width)).astype(dtype)  # many ties
    x[0, 0, 0, 1] = x[0, 1, 3, 2] = x[1, 2, 5, 5] = x[1, 2, 4, 4] = np.nan
    x[1, 1, 2, width - 4] = x[0, 2, 7, width // 2] = np.nan
    yt, it = TF.max_pool2d(torch.from_numpy(x), 2, return_indices=True)
    y, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(y, yt.numpy())
    np.testing.assert_array_equal(idx, it.numpy())


# Pools over padded column phases: max values without indices (eval mode, frozen models) and with them (training),
# every window shape, against torch bit for bit, with ties, signed zeros (the first in scan order is kept), NaN and
# -inf in the data; average pools on the same windows; at more threads than cores.
VALUE_POOLS = [
    (3, 2, 1, 1, False),
    (3, 1, 1, 1, False),
    (2, 1, 0, 1, False),
    (3, 3, 0, 1, True),
    (5, 2, 2, 1, False),
    (2, 2, 1, 2, True),
    ((1, 4), (3, 1), (0, 2), (1, 2), False),
    (4, 3, 2, 1, True),
]


@pytest.mark.parametrize("threads", [1, 3, 8, 64], ids=lambda t: f"{t}threads")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(
    "k, s, p, d, ceil", VALUE_POOLS, ids=[f"k{c[0]}s{c[1]}p{c[2]}d{c[3]}c{int(c[4])}" for c in VALUE_POOLS]
)
def test_pools_on_column_phases_match_torch(k, s, p, d, ceil, dtype, threads):
    rng = np.random.default_rng(5)
    x = rng.integers(-2, 3, (2, 5, 13, 17)).astype(dtype)  # many ties
    x[x == 0] = rng.choice([0.0, -0.0], size=int((x == 0).sum()))  # signed zeros tie too
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, 12, replace=False)] = np.nan
    flat[rng.choice(flat.size, 12, replace=False)] = -np.inf
    x[1, 4] = -np.inf  # a whole plane of -inf
    ref, ref_i = TF.max_pool2d(torch.from_numpy(x), k, s, p, d, ceil, return_indices=True)
    ref = ref.numpy()
    xa = np.abs(x)  # average pools: no dilation, finite sums
    xa[~np.isfinite(xa)] = 1.5
    old = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(threads)
        y = fastconv.max_pool2d(x, k, s, p, d, ceil)
        yi, i = fastconv.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
        avg = [fastconv.avg_pool2d(xa, k, s, p, ceil, inc) for inc in (True, False)] if d == 1 else []
    finally:
        fastconv.set_num_threads(old)
    np.testing.assert_array_equal(y, ref)  # NaN where torch has NaN
    np.testing.assert_array_equal(np.signbit(y), np.signbit(ref))
    np.testing.assert_array_equal(yi, ref)
    np.testing.assert_array_equal(i, ref_i.numpy())  # a -inf plane: the first real tap of each window
    for got, inc in zip(avg, (True, False)):
        torch.testing.assert_close(got, TF.avg_pool2d(torch.from_numpy(xa), k, s, p, ceil, inc).numpy(), **tols(dtype))


# Products with one row or one column (one image through a classifier, one output feature): GEMVs, and at more
# threads than cores column blocks of the weight matrix; forward and both gradients against torch.
@pytest.mark.parametrize("threads", [1, 3, 8, 64], ids=lambda t: f"{t}threads")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("batch, fin, fout", [(1, 300, 1000), (1, 7, 1), (5, 64, 1), (1, 1, 70), (2, 33, 129)])
def test_linear_one_row_or_column_matches_torch(batch, fin, fout, dtype, threads):
    rng = np.random.default_rng(batch + fin + fout)
    lin = nn.Linear(fin, fout, rng=1, dtype=dtype)
    x = rng.standard_normal((batch, fin)).astype(dtype)
    ref = torch.nn.Linear(fin, fout).to(torch.float64)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(lin.weight.data))
        ref.bias.copy_(torch.from_numpy(lin.bias_param.data))
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    yt = ref(xt)
    gy = rng.standard_normal(yt.shape)
    yt.backward(torch.from_numpy(gy))
    old = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(threads)
        y = lin(x)
        gx = lin.backward(gy.astype(dtype))
    finally:
        fastconv.set_num_threads(old)
    torch.testing.assert_close(y, yt.detach().numpy().astype(dtype), **tols(dtype))
    torch.testing.assert_close(gx, xt.grad.numpy().astype(dtype), **tols(dtype))
    torch.testing.assert_close(lin.weight.grad, ref.weight.grad.numpy().astype(dtype), **tols(dtype))
