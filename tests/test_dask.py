"""fastconv.dask.apply against the whole-image run (exact tiling: every tile size, borders included), the halo
against perturbation (an independent measure of what each output reads), zarr in and out, threads and processes,
and the refusals of layers that cannot be tiled."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fastconv import layers as L
from fastconv import nn, shapes

dask = pytest.importorskip("dask")
import dask.array as da  # noqa: E402

import fastconv.dask as fd  # noqa: E402


def bn(c, seed):
    m = nn.BatchNorm2d(c)
    r = np.random.default_rng(seed)
    m._buffers["running_mean"][:] = r.standard_normal(c) * 0.3
    m._buffers["running_var"][:] = r.uniform(0.5, 2, c)
    return m


def models():
    C = nn.Conv2d
    return {
        "strided_stack": nn.Sequential(C(3, 8, 3, stride=2, padding=1, rng=0), bn(8, 1), nn.ReLU(),
                                       C(8, 8, 5, stride=2, padding=2, rng=2), nn.SiLU(), C(8, 4, 1, rng=3)),
        "dilated_asymmetric": nn.Sequential(C(3, 6, 3, padding=2, dilation=2, rng=0),
                                            C(6, 4, 3, padding=(0, 2, 1, 0), rng=1), nn.Tanh()),
        "pools": nn.Sequential(C(3, 6, 3, padding=1, rng=0), nn.MaxPool2d(3, 2, 1), nn.ReLU(),
                               nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False), C(6, 4, 3, rng=1)),
        "same_stride1": nn.Sequential(C(3, 4, 4, padding="same", rng=0), C(4, 4, (3, 5), padding="same", rng=1)),
        "transposed": nn.Sequential(C(3, 8, 3, stride=2, padding=1, rng=0), nn.ReLU(),
                                    nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1, rng=1),
                                    nn.ConvTranspose2d(4, 2, 3, stride=1, padding=1, rng=2)),
        "upsample_modes": nn.Sequential(C(3, 4, 3, stride=2, rng=0), nn.Upsample(scale_factor=2, mode="bilinear"),
                                        C(4, 4, 3, stride=2, padding=1, rng=1),
                                        nn.Upsample(scale_factor=(2, 3), mode="nearest-exact"),
                                        C(4, 4, 3, stride=2, padding=1, rng=2),
                                        nn.Upsample(scale_factor=2, mode="bicubic"),
                                        nn.Upsample(scale_factor=2, mode="nearest")),
        "zero_pad_crop": nn.Sequential(nn.ZeroPad2d((2, -1, 1, 3)), C(3, 4, 3, stride=2, rng=0)),
        "residual": nn.Sequential(C(3, 8, 3, padding=1, rng=0),
                                  nn.Residual(nn.Sequential(C(8, 8, 3, stride=2, padding=1, rng=1), bn(8, 2),
                                                            nn.ReLU(), C(8, 8, 3, padding=1, rng=3)),
                                              nn.Sequential(C(8, 8, 1, stride=2, rng=4), bn(8, 5))),
                                  nn.ReLU()),
        "unet_skip": nn.Sequential(C(3, 4, 3, padding=1, rng=0), nn.Concat(nn.Sequential(
            nn.MaxPool2d(2), C(4, 8, 3, padding=1, rng=1), nn.ReLU(),
            nn.Concat(nn.Sequential(nn.MaxPool2d(2), C(8, 8, 3, padding=1, rng=2),
                                    nn.ConvTranspose2d(8, 8, 2, stride=2, rng=3))),
            nn.ConvTranspose2d(16, 4, 2, stride=2, rng=4))), C(8, 2, 1, rng=5)),
    }  # fmt: skip


MODELS = models()


def whole(model, x):
    return model(x)


@pytest.mark.parametrize("tile", [4, 13, (7, 11), 1000], ids=lambda t: f"tile{t}")
@pytest.mark.parametrize("name", MODELS)
def test_tiled_equals_whole_image(name, tile):
    model = MODELS[name].eval()
    x = np.random.default_rng(1).standard_normal((2, 3, 36, 44)).astype(np.float32)
    if name != "unet_skip":
        x = x[..., 1:, 3:]  # odd sizes (a U-Net takes multiples of 4)
    ref = whole(model, x)
    y = fd.apply(model, x, tile=tile, batch=1)
    assert y.shape == ref.shape and y.dtype == ref.dtype
    np.testing.assert_allclose(y.compute(), ref, rtol=1e-5, atol=1e-5)


def test_frozen_models_tile_too():
    model = MODELS["residual"].eval()
    frozen = nn.freeze(model)
    x = np.random.default_rng(2).standard_normal((1, 3, 40, 33)).astype(np.float32)
    np.testing.assert_allclose(fd.apply(frozen, x, tile=9).compute(), model(x), rtol=1e-5, atol=1e-5)


@settings(max_examples=12, deadline=None)
@given(h=st.integers(8, 40), w=st.integers(8, 40), th=st.integers(1, 20), tw=st.integers(1, 20),
       k=st.sampled_from([1, 2, 3, 5]), s=st.sampled_from([1, 2, 3]), p=st.integers(0, 2), d=st.sampled_from([1, 2]),
       pool=st.booleans(), up=st.sampled_from([None, "nearest", "bilinear"]))  # fmt: skip
# Found by hypothesis: 1x1 tiles whose outputs read only a padded 1x1 layer's border made empty crops.
@example(h=8, w=8, th=1, tw=1, k=1, s=1, p=1, d=1, pool=False, up="nearest")
@example(h=9, w=8, th=3, tw=2, k=1, s=2, p=2, d=1, pool=True, up=None)
def test_random_geometries_tile_exactly(h, w, th, tw, k, s, p, d, pool, up):
    layers = [nn.Conv2d(2, 3, k, stride=s, padding=p, dilation=d, rng=0), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(2, ceil_mode=True))
    if up:
        layers.append(nn.Upsample(scale_factor=2, mode=up))
    layers.append(nn.Conv2d(3, 2, 3, padding=1, rng=1))
    model = nn.Sequential(*layers).eval()
    x = np.random.default_rng(h * w).standard_normal((1, 2, h, w)).astype(np.float32)
    try:
        ref = model(x)
    except ValueError:
        return  # the image is too small for this geometry
    np.testing.assert_allclose(fd.apply(model, x, tile=(th, tw)).compute(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["strided_stack", "dilated_asymmetric", "pools", "transposed", "upsample_modes"])
def test_halo_bounds_what_each_output_reads(name):
    """Perturb one input pixel at a time; every output that changes must lie within the halo of it (the halo
    measured independently of the tiling code's intervals), and some output must reach the halo's edge."""
    model = MODELS[name].eval()
    h = shapes.halo(model)
    size = 36
    x = np.random.default_rng(3).standard_normal((1, 3, size, size))
    base = model(x)
    reach_before = reach_after = 0
    for i in (13, 17, 18):
        xp = x.copy()
        xp[0, :, i, size // 2] += 1.0
        changed = np.nonzero(np.abs(model(xp) - base).max(axis=(0, 1, 3)) > 1e-9)[0]
        r = h.scale[0]
        for o in changed:
            own_lo, own_hi = int(np.floor(o / r)), int(np.ceil((o + 1) / r)) - 1
            assert own_lo - h.before[0] <= i <= own_hi + h.after[0], (o, i, h)
            reach_before = max(reach_before, own_lo - i)
            reach_after = max(reach_after, i - own_hi)
    assert reach_before <= h.before[0] and reach_after <= h.after[0]


def test_halo_of_layer_specs_and_nn_models_agree():
    spec = L.Sequential(L.Conv2d(3, 8, 7, 2, 3), L.MaxPool2d(3, 2, 1), L.Conv2d(8, 8, 3, 1, 1))
    net = nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3), nn.MaxPool2d(3, 2, 1), nn.Conv2d(8, 8, 3, 1, 1))
    a, b = shapes.halo(spec), shapes.halo(net)
    assert (a.before, a.after, a.stride) == (b.before, b.after, b.stride)
    assert a.stride == (4, 4) and a.scale == (0.25, 0.25)


@pytest.mark.parametrize(
    "model, message",
    [(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2)), r"Flatten at '1' cannot be tiled"),
     (nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1)), r"AdaptiveAvgPool2d at '1' cannot be tiled: ad"),
     (nn.Sequential(nn.BatchNorm2d(3)).train(), r"BatchNorm2d at '0' cannot be tiled: in training mode"),
     (nn.Sequential(nn.Dropout(0.5)).train(), r"Dropout at '0' cannot be tiled: in training mode"),
     (nn.Sequential(nn.GroupNorm(1, 3)), r"GroupNorm at '0' cannot be tiled: its statistics"),
     (nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)), r"align_corners=True"),
     (nn.Sequential(nn.Upsample(size=(9, 9))), r"a fixed output size is not local"),
     (nn.Sequential(nn.Upsample(scale_factor=1.5)), r"scale factor 1.5 is not a whole number"),
     (nn.Sequential(nn.Conv2d(3, 3, 3, stride=2, padding="same")), r"padding='same' with a stride of 2"),
     (nn.Sequential(nn.Residual(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.Linear(3, 3)))),
      r"Linear at '0.body.1' cannot be tiled")],
    ids=["flatten", "adaptive", "bn_train", "dropout_train", "groupnorm", "align_corners", "size", "fractional",
         "same_strided", "nested_path"],
)  # fmt: skip
def test_refuses_layers_that_cannot_be_tiled(model, message):
    if not any(isinstance(m, (nn.BatchNorm2d, nn.Dropout)) for _, m in model.named_modules()):
        model.eval()
    x = np.zeros((1, 3, 16, 16), np.float32)
    with pytest.raises(ValueError, match=message):
        fd.apply(model, x, tile=4)
    with pytest.raises(ValueError, match=message):
        shapes.halo(model)


def test_refuses_graphs_and_bad_arguments():
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            return torch.relu(self.conv(x)) + x

    graph = nn.from_torch(Net().eval())
    x = np.zeros((1, 3, 8, 8), np.float32)
    with pytest.raises(ValueError, match="GraphModule cannot be tiled"):
        fd.apply(graph, x)
    model = MODELS["pools"].eval()
    x = np.zeros((1, 3, 16, 16), np.float32)
    with pytest.raises(TypeError, match="model must be a fastconv.nn Module, got str"):
        fd.apply("model", x)
    with pytest.raises(TypeError, match="image must be a NumPy, Dask or zarr array, got list"):
        fd.apply(model, [[1.0]])
    with pytest.raises(ValueError, match=r"image must be \(N, C, H, W\) or \(C, H, W\), got shape \(16, 16\)"):
        fd.apply(model, x[0, 0])
    with pytest.raises(TypeError, match="image must be float32 or float64, got dtype int64"):
        fd.apply(model, x.astype(np.int64))
    with pytest.raises(ValueError, match="tile must be a positive int or two, got 0"):
        fd.apply(model, x, tile=0)
    with pytest.raises(ValueError, match="batch must be a positive int, got 0"):
        fd.apply(model, x, batch=0)


def test_dask_and_zarr_inputs_and_outputs(tmp_path):
    zarr = pytest.importorskip("zarr")
    model = MODELS["strided_stack"].eval()
    x = np.random.default_rng(4).standard_normal((3, 3, 45, 38)).astype(np.float32)
    ref = model(x)
    # a dask array with its own awkward chunks, unbatched input, and a default tile from a small memory budget
    darr = da.from_array(x, chunks=(2, 3, 17, 13))
    np.testing.assert_allclose(fd.apply(model, darr, tile=6).compute(), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fd.apply(model, x[1], tile=7).compute(), ref[1], rtol=1e-5, atol=1e-5)
    small = fd.apply(model, x, memory=1 << 16)
    assert max(small.numblocks[2:]) > 1
    np.testing.assert_allclose(small.compute(), ref, rtol=1e-5, atol=1e-5)
    z = zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=x.shape, chunks=(1, 3, 16, 16), dtype="f4")
    z[:] = x
    out = fd.apply(model, z, tile=8, batch=2)
    out.to_zarr(str(tmp_path / "out.zarr"))
    np.testing.assert_allclose(zarr.open_array(str(tmp_path / "out.zarr"), mode="r")[:], ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 8, 64], ids=lambda t: f"{t}fastconv_threads")
def test_threaded_scheduler_many_workers(threads):
    """Blocks on 4 Dask threads at once, each on its own model copy, fastconv's pool at 1-64 threads."""
    import fastconv

    model = MODELS["residual"].eval()
    x = np.random.default_rng(5).standard_normal((2, 3, 48, 48)).astype(np.float32)
    ref = model(x)
    old = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(threads)
        with dask.config.set(scheduler="threads", num_workers=4):
            got = fd.apply(model, x, tile=8, batch=1).compute()
    finally:
        fastconv.set_num_threads(old)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_process_scheduler_pickles_the_model():
    """As on a cluster: the model (a frozen one, with prepared plans) travels to other processes by pickle."""
    model = nn.freeze(MODELS["strided_stack"].eval())
    x = np.random.default_rng(6).standard_normal((1, 3, 30, 30)).astype(np.float32)
    with dask.config.set(scheduler="processes", num_workers=2):
        got = fd.apply(model, x, tile=8).compute()
    np.testing.assert_allclose(got, model(x), rtol=1e-5, atol=1e-5)


def test_local_cluster_of_worker_processes():
    """A distributed LocalCluster of two worker processes on 127.0.0.1: the active Client runs the same call, the
    model shipped once in the graph."""
    distributed = pytest.importorskip("distributed")
    model = nn.freeze(MODELS["residual"].eval())
    x = np.random.default_rng(7).standard_normal((1, 3, 40, 36)).astype(np.float32)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster):  # fmt: skip
        y = fd.apply(model, x, tile=10)
        graph = dict(y.__dask_graph__())
        shipped = [k for k, v in graph.items() if v is model or getattr(v, "value", None) is model]
        assert len(shipped) <= 1
        got = fd.progress(y)
    np.testing.assert_allclose(got, model(x), rtol=1e-5, atol=1e-5)


def test_progress_under_the_local_scheduler(capsys):
    model = MODELS["pools"].eval()
    x = np.random.default_rng(8).standard_normal((1, 3, 30, 30)).astype(np.float32)
    got = fd.progress(fd.apply(model, x, tile=5))
    np.testing.assert_allclose(got, model(x), rtol=1e-5, atol=1e-5)
    assert "100%" in capsys.readouterr().out
