"""torch models with their own ``forward`` (ResNet-18/50, MobileNetV2, a U-Net with both upsamplings, a DenseNet
block, a squeeze-and-excitation block) converted by ``nn.from_torch`` through torch.fx, against torch: eval and
training outputs, input and parameter gradients, SGD and Adam steps, batch-norm statistics, state_dict both
ways, ``nn.freeze`` of the graphs, and ``nn.save``/``nn.load`` read back in a process without torch."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch

from conftest import run_script
from fastconv import nn
from fastconv._torch_zoo import randomize_batch_norms, zoo

Z = zoo(torch)
# (builder, input shape): small widths, real structure.
MODELS = {
    "resnet18": (lambda: Z["resnet18"](num_classes=10, width=8), (2, 3, 32, 32)),
    "resnet50": (lambda: Z["resnet50"](num_classes=10, width=4), (2, 3, 32, 32)),
    "mobilenet_v2": (lambda: Z["mobilenet_v2"](num_classes=10, width=0.25), (2, 3, 32, 32)),
    "unet": (lambda: Z["unet"](width=4, depth=3), (2, 3, 16, 16)),
    "densenet_block": (lambda: Z["densenet_block"](), (2, 16, 8, 8)),
    "se_block": (lambda: Z["se_block"](), (2, 16, 8, 8)),
}


def build(name, seed=0):
    torch.manual_seed(seed)
    make, shape = MODELS[name]
    model = randomize_batch_norms(torch, make(), seed)
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return model, x


def close(got, ref, atol=2e-4, rtol=2e-3):
    ref = ref.detach().numpy() if isinstance(ref, torch.Tensor) else ref
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(got, ref, atol=atol * scale, rtol=rtol)


@pytest.mark.parametrize("name", MODELS)
def test_eval_forward_and_input_grad(name):
    tmodel, x = build(name)
    tmodel.eval()
    fmodel = nn.from_torch(tmodel)
    assert isinstance(fmodel, nn.GraphModule) and not fmodel.training
    assert list(fmodel.state_dict()) == list(tmodel.state_dict())
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = tmodel(xt)
    g = np.random.default_rng(1).standard_normal(yt.shape).astype(np.float32)
    yt.backward(torch.from_numpy(g))
    close(fmodel(x), yt)
    close(fmodel.backward(g), xt.grad)


def same_kinks(tmodel, fmodel):
    """Makes the float64 reference take fastconv's side of every ReLU and ReLU6 kink: each activation module of
    ``tmodel`` passes its input where fastconv's output of that node lay strictly inside the linear range and its
    clamp elsewhere.  A value rounding to within 1e-5 of 0 after a batch norm of 16 values lands on either side in
    float32 (torch's own float32 run as much as fastconv's), and one flipped element of a 2x2 map moves its
    channel's weight gradient by a tenth of the gradients' scale.  Returns a dict counting the activations met."""
    nodes: dict[str, list[str]] = {}  # a module called several times (ResNet's shared ReLU): its nodes in order
    for n in fmodel.nodes:
        if n.op == "module":
            nodes.setdefault(n.target, []).append(n.name)
    state = {"seen": 0, "calls": {}}

    def hook(module, inputs, output, path):
        k = state["calls"].get(path, 0)
        state["calls"][path] = k + 1
        ours = torch.from_numpy(np.asarray(fmodel._values[nodes[path][k]], dtype=np.float64))
        inside = ours > 0 if isinstance(module, torch.nn.ReLU) else (ours > 0) & (ours < 6)
        state["seen"] += 1
        return torch.where(inside, inputs[0], output.detach())

    tmodel.register_forward_pre_hook(lambda mod, i: state["calls"].clear())
    for path, m in tmodel.named_modules():
        if isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6)) and path in nodes:
            m.inplace = False  # the hook needs the input as it was
            m.register_forward_hook(lambda mod, i, o, path=path: hook(mod, i, o, path))
    return state


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("name", MODELS)
def test_training_steps_match_torch(name, optimizer):
    """Two training steps: outputs with batch statistics, every parameter's gradient, the optimiser's update and
    the running statistics the batch norms keep.  The reference is torch in float64 (torch's own float32 weight
    gradients of ResNet-50's stem are 1% off it, more than fastconv's)."""
    import copy

    tmodel, x = build(name)
    if name in ("resnet18", "resnet50", "mobilenet_v2"):
        # Batch statistics of a few values (a 1x1 map at batch 2) amplify rounding: 4 images of 64x64 leave 2x2
        # maps to the last norms.
        x = np.random.default_rng(3).standard_normal((4, 3, 64, 64)).astype(np.float32)
    for m in tmodel.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0  # random masks cannot match
    tmodel.train()
    fmodel = nn.from_torch(tmodel)
    assert fmodel.training
    tmodel = copy.deepcopy(tmodel).double()
    tparams = dict(tmodel.named_parameters())
    fparams = dict(fmodel.named_parameters())
    assert list(fparams) == list(tparams)
    # Small steps: with random output gradients these nets' weight gradients reach hundreds, and larger steps
    # leave a net whose second step is ill-conditioned in any precision (ResNet-50 after an SGD step of 1e-5:
    # torch float32 gradients 7% of their scale off float64's).
    if optimizer == "sgd":
        topt = torch.optim.SGD(tparams.values(), lr=1e-7, momentum=0.9, weight_decay=1e-2)
        fopt = nn.SGD(list(fparams.values()), lr=1e-7, momentum=0.9, weight_decay=1e-2)
    else:
        topt = torch.optim.Adam(tparams.values(), lr=1e-6)
        fopt = nn.Adam(list(fparams.values()), lr=1e-6)
    start = {key: p.data.copy() for key, p in fparams.items()}
    rng = np.random.default_rng(2)
    # ResNet-50 at this width is ill-conditioned after any step (its second step's gradients in torch float32 are
    # several % off float64's even after Adam moves each weight by 1e-6): one step there.
    kinks = same_kinks(tmodel, fmodel)
    for _ in range(1 if name == "resnet50" else 2):
        xs = x + rng.standard_normal(x.shape).astype(np.float32) * 0.1
        fopt.zero_grad()
        ys = fmodel(xs)
        topt.zero_grad()
        yt = tmodel(torch.from_numpy(xs).double())
        g = rng.standard_normal(yt.shape).astype(np.float32)
        yt.backward(torch.from_numpy(g).double())
        close(ys, yt)
        # Every activation module took fastconv's kinks, once per call (DenseNet's functional ReLUs keep torch's).
        assert kinks["seen"] >= sum(isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6)) for m in tmodel.modules())
        kinks["seen"] = 0
        fmodel.backward(g)
        for key, p in fparams.items():
            close(p.grad, tparams[key].grad, atol=1e-3)
        topt.step()
        fopt.step()
    for key, p in fparams.items():  # the updates the optimisers made
        close(p.data - start[key], tparams[key].detach().numpy() - start[key], atol=5e-3)
    state = fmodel.state_dict()
    for key, value in tmodel.state_dict().items():
        if "running" in key:
            close(state[key], value, atol=1e-4)
        elif key.endswith("num_batches_tracked"):
            assert int(state[key]) == int(value), key


@pytest.mark.parametrize("name", ["resnet18", "unet", "se_block"])
def test_state_dict_both_ways(name):
    """torch weights into a converted model of fresh torch weights, and the converted model's back into torch."""
    tmodel, x = build(name, seed=0)
    other, _ = build(name, seed=5)
    tmodel.eval()
    other.eval()
    fmodel = nn.from_torch(other)
    fmodel.load_state_dict({k: v.numpy() for k, v in tmodel.state_dict().items()})
    with torch.no_grad():
        ref = tmodel(torch.from_numpy(x))
    close(fmodel(x), ref)
    back, _ = build(name, seed=9)
    back.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in fmodel.state_dict().items()})
    back.eval()
    with torch.no_grad():
        close(back(torch.from_numpy(x)), ref)


@pytest.mark.parametrize("name", MODELS)
def test_freeze_graph_matches_eval(name):
    tmodel, x = build(name)
    tmodel.eval()
    fmodel = nn.from_torch(tmodel)
    frozen = nn.freeze(fmodel)
    assert isinstance(frozen, nn.FrozenGraph)
    kinds = [type(m) for _, m in frozen.named_modules()]
    assert nn.FrozenConv2d in kinds and nn.Conv2d not in kinds
    assert nn.BatchNorm2d not in kinds  # folded, or (densenet_block's, before their convolutions) frozen alone
    assert (nn.FrozenBatchNorm2d in kinds) == (name == "densenet_block")
    assert len(frozen.nodes) < len(fmodel.nodes)  # norms and activations folded into the convolutions
    with torch.no_grad():
        ref = tmodel(torch.from_numpy(x))
    close(frozen(x), ref)
    close(frozen(x[:1]), ref[:1])  # batch 1, a new input shape for every plan
    with pytest.raises(TypeError, match="inference-only"):
        frozen.train()
    with pytest.raises(TypeError, match="inference-only"):
        frozen.backward(np.ones(ref.shape, np.float32))


def test_freeze_fuses_residual_sums():
    """In a ResNet the shortcut's sum and ReLU go into the second convolution of every block."""
    tmodel, x = build("resnet18")
    frozen = nn.freeze(nn.from_torch(tmodel.eval()))
    assert not [n for n in frozen.nodes if n.op == "call" and n.target == "add"]
    assert sum(bool(n.kwargs.get("residual")) for n in frozen.nodes) == 8


def test_frozen_graph_drops_values_after_their_last_reader():
    """A frozen graph (no backward) keeps a value only until its last reader has run: along a chain of layers at
    most the one input of the next node is held, where the trainable graph holds every value for its backward.
    The U-Net's skips (values read much later) are covered by test_freeze_graph_matches_eval."""

    class Chain(torch.nn.Module):  # its own forward: converted to a graph, not a Sequential
        def __init__(self):
            super().__init__()
            self.convs = torch.nn.ModuleList(torch.nn.Conv2d(3 if i == 0 else 8, 8, 3, padding=1) for i in range(6))

        def forward(self, x):
            for conv in self.convs:
                x = torch.nn.functional.max_pool2d(torch.relu(conv(x)), 1)
            return x

    torch.manual_seed(0)
    tmodel = Chain().eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 12, 12)).astype(np.float32)
    graph = nn.from_torch(tmodel).eval()
    frozen = nn.freeze(graph)

    def held(model):
        counts, run = [], model._run
        model._run = lambda node, env, inputs: (counts.append(len(env)), run(node, env, inputs))[1]
        out = model(x)
        return max(counts), out

    most, out = held(frozen)
    assert most == 1, most
    assert held(graph)[0] == len(graph.nodes) - 1
    with torch.no_grad():
        close(out, tmodel(torch.from_numpy(x)))
    close(frozen(x), out)  # and again, on the same buffers


def test_freeze_sequential_matches_eval(rng):
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, rng=0), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Residual(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, rng=1), nn.BatchNorm2d(8))),
        nn.ReLU(), nn.Conv2d(8, 4, 1, rng=2), nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )  # fmt: skip
    for _, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            m._buffers["running_mean"][:] = rng.standard_normal(8) * 0.3
            m._buffers["running_var"][:] = rng.uniform(0.5, 2, 8)
    model.eval()
    x = rng.standard_normal((2, 3, 10, 10)).astype(np.float32)
    frozen = nn.freeze(model)
    assert isinstance(frozen, nn.FrozenModel)
    assert not any(isinstance(m, nn.BatchNorm2d) for _, m in frozen.named_modules())
    close(frozen(x), model(x))


@pytest.mark.parametrize("kind", ["graph", "frozen"])
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "unet", "densenet_block", "se_block"])
def test_save_load_without_torch(name, kind, tmp_path):
    """A converted (or frozen) model saved, loaded and run in a fresh interpreter where importing torch fails; its
    output against torch's."""
    tmodel, x = build(name)
    tmodel.eval()
    fmodel = nn.from_torch(tmodel)
    model = nn.freeze(fmodel) if kind == "frozen" else fmodel
    nn.save(model, tmp_path / "model.fcnn")
    np.save(tmp_path / "x.npy", x)
    run_script(f"""
        import sys
        sys.modules["torch"] = None  # any import of torch raises ImportError
        import numpy as np
        from fastconv import nn
        m = nn.load({str(tmp_path / "model.fcnn")!r})
        assert type(m).__name__ == {type(model).__name__!r} and not m.training
        np.save({str(tmp_path / "y.npy")!r}, m(np.load({str(tmp_path / "x.npy")!r})))
    """)
    with torch.no_grad():
        ref = tmodel(torch.from_numpy(x))
    close(np.load(tmp_path / "y.npy"), ref)


def test_save_load_keeps_training_state(tmp_path):
    """A model in training mode comes back in training mode, and trains on as the original does."""
    tmodel, x = build("se_block")
    fmodel = nn.from_torch(tmodel.train())
    nn.save(fmodel, tmp_path / "m.fcnn")
    loaded = nn.load(tmp_path / "m.fcnn")
    assert loaded.training
    g = np.ones(fmodel(x).shape, np.float32)
    np.testing.assert_array_equal(loaded(x), fmodel(x))
    np.testing.assert_array_equal(loaded.backward(g), fmodel.backward(g))


def _rewrite(src, dst, edit):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            out = edit(item, data)
            if out is not None:
                zout.writestr(item, out)


def test_load_refuses_broken_files(tmp_path):
    tmodel, _ = build("se_block")
    good = tmp_path / "good.fcnn"
    nn.save(nn.from_torch(tmodel.eval()), good)

    def header(change):
        def edit(item, data):
            if item != "model.json":
                return data
            h = json.loads(data)
            change(h)
            return json.dumps(h)

        return edit

    cases = {
        "not_zip": (lambda p: p.write_bytes(b"not a model at all"), "corrupt or truncated"),
        "truncated": (lambda p: p.write_bytes(good.read_bytes()[: good.stat().st_size // 2]), "corrupt or truncated"),
        "foreign_format": (lambda p: _rewrite(good, p, header(lambda h: h.update(format="keras"))), "format 'keras'"),
        "newer_version": (lambda p: _rewrite(good, p, header(lambda h: h.update(version=99))), "version 99"),
        "missing_array": (lambda p: _rewrite(good, p, lambda i, d: None if i == "arrays/0.npy" else d),
                          "arrays/0.npy\\) is missing"),
        "no_header": (lambda p: _rewrite(good, p, lambda i, d: None if i == "model.json" else d), "no model.json"),
        "bad_json": (lambda p: _rewrite(good, p, lambda i, d: b"{" if i == "model.json" else d), "not valid JSON"),
        "wrong_shape": (lambda p: _rewrite(good, p, lambda i, d: _npy(np.zeros(3, np.float32)) if i == "arrays/0.npy"
                                           else d), "do not fit its architecture"),
        "pickled_array": (lambda p: _rewrite(good, p, lambda i, d: _npy(np.array([{}], object)) if i == "arrays/0.npy"
                                             else d), "unreadable"),
    }  # fmt: skip
    for case, (write, message) in cases.items():
        path = tmp_path / f"{case}.fcnn"
        write(path)
        with pytest.raises(ValueError, match=message):
            nn.load(path)
    with pytest.raises(FileNotFoundError):
        nn.load(tmp_path / "absent.fcnn")
    with pytest.raises(TypeError, match="model must be a fastconv.nn Module, got dict"):
        nn.save({}, tmp_path / "x.fcnn")


def _npy(arr):
    import io

    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=True)
    return buf.getvalue()


def test_summary_of_a_converted_graph():
    """summary() walks a graph: its parameter count is torch's, its output shape torch's."""
    import fastconv

    tmodel, x = build("resnet18")
    s = fastconv.summary(nn.from_torch(tmodel.eval()), x.shape[1:])
    assert s.total_params == sum(p.numel() for p in tmodel.parameters())
    with torch.no_grad():
        assert tuple(s.rows[-1].output_shape) == tuple(tmodel(torch.from_numpy(x)).shape[1:])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_freeze_keeps_pre_activation_norms_as_scale_and_shift(dtype, rng):
    """Batch norms before their convolution (pre-activation blocks) cannot be folded: frozen alone, their scale and
    shift made once and a ReLU after them applied in the same pass; a norm without running statistics stays."""
    model = nn.Sequential(
        nn.BatchNorm2d(3, dtype=dtype), nn.ReLU(), nn.Conv2d(3, 6, 3, padding=1, rng=0, dtype=dtype),
        nn.BatchNorm2d(6, dtype=dtype), nn.ReLU6(),
        nn.Concat(nn.Sequential(nn.BatchNorm2d(6, dtype=dtype), nn.Conv2d(6, 2, 1, rng=1, dtype=dtype))),
        nn.BatchNorm2d(8, dtype=dtype), nn.BatchNorm2d(8, track_running_stats=False, dtype=dtype),
    )  # fmt: skip
    for _, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d) and m.track_running_stats:
            m._buffers["running_mean"][:] = rng.standard_normal(m.num_features) * 0.3
            m._buffers["running_var"][:] = rng.uniform(0.5, 2, m.num_features)
            m.weight.data[:] = rng.uniform(0.5, 1.5, m.num_features)
            m.bias_param.data[:] = rng.standard_normal(m.num_features) * 0.1
    model.eval()
    frozen = nn.freeze(model)
    kinds = [type(m).__name__ for _, m in frozen.named_modules()]
    assert kinds.count("FrozenBatchNorm2d") == 3 and kinds.count("BatchNorm2d") == 1 and "ReLU" not in kinds, kinds
    assert frozen.layers[0].relu and not frozen.layers[-2].relu
    x = rng.standard_normal((2, 3, 7, 9)).astype(dtype)
    close(frozen(x), model(x))
    with pytest.raises(ValueError, match=r"FrozenBatchNorm2d: expected input \(N, 3, H, W\), got shape \(1, 4, 5, 5\)"):
        frozen.layers[0](np.zeros((1, 4, 5, 5), dtype))
    with pytest.raises(TypeError, match="inference-only"):
        frozen.layers[0].backward(np.zeros((1, 3, 5, 5), dtype))
    # Its state is its buffers: a state dict loaded into another frozen copy reaches its results.
    other = nn.freeze(nn.Sequential(nn.BatchNorm2d(3, dtype=dtype)).eval())
    close(other(x), x)  # a fresh norm: the identity (its casts made now, and made again after the load)
    other.load_state_dict({k: v for k, v in frozen.state_dict().items() if k.startswith("0.")})
    ref = np.maximum(other(x), 0)
    frozen.layers[0].relu = False
    close(np.maximum(frozen.layers[0](x), 0), ref)
