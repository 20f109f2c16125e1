"""fastconv.keras against Keras 3's own predictions (torch backend)."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

keras = pytest.importorskip("keras")
from keras import layers as K  # noqa: E402

from fastconv.keras import convert_weights, to_torch, to_torch_code  # noqa: E402

RNG = np.random.default_rng(7)


def randomise(model):
    """Non-trivial weights everywhere, including BatchNorm statistics."""
    for layer in model.layers:
        ws = layer.get_weights()
        if not ws:
            continue
        if isinstance(layer, K.BatchNormalization):
            ws = [RNG.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in ws]
        else:  # kernels scaled by 1/sqrt(fan-in), as trained models are, so float32 drift stays small
            ws = [
                RNG.standard_normal(w.shape).astype(np.float32) / np.sqrt(max(1, np.prod(w.shape[:-1])))
                if w.ndim > 1
                else RNG.standard_normal(w.shape).astype(np.float32) * 0.1
                for w in ws
            ]
        layer.set_weights(ws)
    return model


def seq(shape, *layers):
    return randomise(keras.Sequential([keras.Input(shape), *layers]))


MODELS = {
    # seed 001: Keras 'same' + BatchNormalization(axis=1) on channels-last data, then a strided same conv
    "seed001": lambda: seq(
        (32, 32, 3),
        K.Conv2D(64, (3, 3)),
        K.BatchNormalization(axis=1),
        K.Activation("relu"),
        K.Dropout(0.3),
        K.Conv2D(64, (3, 3), padding="same"),
        K.BatchNormalization(axis=1),
        K.Activation("relu"),
        K.MaxPooling2D(pool_size=(2, 2), strides=(2, 2), padding="same"),
        K.Conv2D(128, (3, 3), padding="same"),
    ),
    "strided_same": lambda: seq(
        (17, 16, 2),
        K.Conv2D(4, 3, strides=2, padding="same"),
        K.Conv2D(5, (4, 3), strides=(3, 2), padding="same", activation="relu"),
        K.Conv2D(3, 2, strides=2, padding="same", use_bias=False),
    ),
    "dilated_grouped": lambda: seq(
        (20, 19, 4),
        K.Conv2D(8, 3, dilation_rate=2, padding="same", groups=2),
        K.Conv2D(6, 3, dilation_rate=(1, 3), padding="valid", activation="tanh"),
        K.Conv2D(4, 5, padding="same", dilation_rate=2, activation="sigmoid"),
    ),
    "depthwise_separable": lambda: seq(
        (15, 15, 3),
        K.DepthwiseConv2D(3, padding="same", depth_multiplier=2),
        K.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False, activation="relu6"),
        K.SeparableConv2D(8, 3, padding="same", depth_multiplier=2, activation="elu"),
        K.SeparableConv2D(4, 3, strides=2, padding="valid", use_bias=False),
    ),
    "transposed": lambda: seq(
        (5, 6, 3),
        K.Conv2DTranspose(4, 3, strides=2, padding="same"),
        K.Conv2DTranspose(3, 3, strides=2, padding="valid", activation="relu"),
        K.Conv2DTranspose(2, 4, strides=2, padding="same", use_bias=False),
        K.Conv2DTranspose(2, 2, strides=3, padding="valid"),
        K.Conv2DTranspose(2, 3, strides=2, padding="same", output_padding=1),
    ),
    "batchnorm_variants": lambda: seq(
        (8, 8, 4),
        K.BatchNormalization(epsilon=1e-2, momentum=0.9),
        K.BatchNormalization(center=False),
        K.BatchNormalization(scale=False),
        K.BatchNormalization(axis=2),
        K.Flatten(),
        K.BatchNormalization(),
    ),
    "activations": lambda: seq(
        (6, 6, 3),
        K.ReLU(),
        K.Conv2D(4, 1),
        K.LeakyReLU(negative_slope=0.1),
        K.Conv2D(4, 1),
        K.ELU(alpha=0.7),
        K.Conv2D(4, 1),
        K.Activation("tanh"),
        K.Conv2D(4, 1),
        K.Activation("sigmoid"),
        K.ReLU(max_value=6.0),
        K.Softmax(),
    ),
    "pools": lambda: seq(
        (13, 12, 3),
        K.MaxPooling2D(3, strides=2, padding="same"),
        K.AveragePooling2D(2, strides=1, padding="same"),
        K.MaxPooling2D(2),
        K.AveragePooling2D(3, strides=2, padding="valid"),
        K.GlobalMaxPooling2D(),
    ),
    "avg_same_symmetric": lambda: seq(
        (9, 9, 2),
        K.AveragePooling2D(3, strides=1, padding="same"),
        K.AveragePooling2D(3, strides=2, padding="same"),
        K.GlobalAveragePooling2D(),
        K.Dense(3, activation="softmax"),
    ),
    "padding_upsampling": lambda: seq(
        (5, 7, 2),
        K.ZeroPadding2D(((1, 2), (3, 0))),
        K.ZeroPadding2D(1),
        K.UpSampling2D(2),
        K.Conv2D(3, 3),
        K.UpSampling2D((2, 3), interpolation="bilinear"),
        K.ZeroPadding2D((2, 1)),
    ),
    "flatten_dense": lambda: seq(
        (7, 5, 3),
        K.Conv2D(4, 3, padding="same", activation="relu"),
        K.Flatten(),
        K.Dropout(0.2),
        K.Dense(16, activation="relu"),
        K.Dense(5, use_bias=False),
    ),
    "flatten_last": lambda: seq((4, 3, 2), K.Conv2D(3, 2), K.Flatten()),
    "global_keepdims": lambda: seq((6, 6, 4), K.GlobalAveragePooling2D(keepdims=True), K.Conv2D(2, 1)),
}


def functional_chain():
    inp = keras.Input((16, 16, 3))
    x = K.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    x = K.BatchNormalization()(x)
    x = K.MaxPooling2D(2, padding="same")(x)
    x = K.Flatten()(x)
    out = K.Dense(4, activation="softmax")(x)
    return randomise(keras.Model(inp, out))


MODELS["functional_chain"] = functional_chain


def torch_input(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def to_keras_layout(a):
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


@pytest.mark.parametrize("name", list(MODELS))
def test_outputs_and_shapes_match_keras(name):
    model = MODELS[name]()
    x = RNG.standard_normal((2, *model.input_shape[1:])).astype(np.float32)
    ref = model.predict(x, verbose=0)
    ported = to_torch(model.to_json(), model.get_weights())
    with torch.no_grad():
        out = ported(torch_input(x)).numpy()
    np.testing.assert_allclose(to_keras_layout(out), ref, atol=1e-4, rtol=1e-4)
    # per-layer shapes: the last torch module of every Keras layer
    acts, h = {}, torch_input(x)
    with torch.no_grad():
        for mod_name, module in ported.named_children():
            h = module(h)
            acts[mod_name] = tuple(to_keras_layout(h.numpy()).shape[1:])
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        own = {layer.name} | {
            f"{layer.name}_{suffix}" for suffix in ("pad", "act", "depthwise", "pointwise", "flatten")
        }
        mine = [v for k, v in acts.items() if k in own]
        assert mine, f"no torch module for Keras layer {layer.name}"
        assert mine[-1] == tuple(layer.output.shape[1:]), layer.name


@pytest.mark.parametrize("name", ["seed001", "transposed", "batchnorm_variants", "pools", "flatten_dense"])
def test_generated_code_runs_and_builds_the_same_module(name, tmp_path):
    model = MODELS[name]()
    code = to_torch_code(model.to_json())
    namespace = {}
    exec(compile(code, "generated.py", "exec"), namespace)
    generated = namespace["model"]
    ported = to_torch(model.to_json(), model.get_weights())
    assert str(generated) == str(ported)
    generated.load_state_dict(ported.state_dict())
    x = RNG.standard_normal((2, *model.input_shape[1:])).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(generated(torch_input(x)).numpy(), ported(torch_input(x)).numpy(), atol=1e-6)


def test_asymmetric_same_average_pool_excludes_padding():
    """TensorFlow's rule, checked against a direct NumPy computation (Keras' torch backend
    replicate-pads here instead, which differs for windows of 3 or more)."""
    model = seq((6, 7, 2), K.AveragePooling2D(3, strides=2, padding="same"))
    x = RNG.standard_normal((1, 6, 7, 2)).astype(np.float32)
    with torch.no_grad():
        out = to_keras_layout(to_torch(model.to_json(), model.get_weights())(torch_input(x)).numpy())
    # TF same: out = ceil(n/2); total pad = max(0, (out-1)*2 + 3 - n), before = total // 2
    ref = np.zeros((1, 3, 4, 2), np.float32)
    for i in range(3):
        for j in range(4):
            t0, l0 = i * 2 - 0, j * 2 - 1  # H: total 1 -> before 0; W: total 2 -> before 1
            win = x[0, max(t0, 0) : min(t0 + 3, 6), max(l0, 0) : min(l0 + 3, 7)]
            ref[0, i, j] = win.mean(axis=(0, 1))
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_dynamic_input_with_strided_same_is_refused_with_reason():
    model = keras.Sequential([keras.Input((None, None, 3)), K.Conv2D(4, 3, strides=2, padding="same")])
    with pytest.raises(ValueError, match="static input size"):
        to_torch(model.to_json())
    ok = keras.Sequential([keras.Input((None, None, 3)), K.Conv2D(4, 3, padding="same"), K.GlobalAveragePooling2D()])
    randomise(ok)
    x = RNG.standard_normal((1, 9, 11, 3)).astype(np.float32)
    with torch.no_grad():
        out = to_torch(ok.to_json(), ok.get_weights())(torch_input(x)).numpy()
    np.testing.assert_allclose(out, ok.predict(x, verbose=0), atol=1e-4)


def test_unsupported_layer_is_named():
    model = keras.Sequential([keras.Input((8, 8, 3)), K.Conv2D(2, 3), K.LayerNormalization()])
    with pytest.raises(ValueError, match=r"layer_normalization.*LayerNormalization"):
        to_torch(model.to_json())


def test_non_chain_functional_model_is_refused():
    inp = keras.Input((8, 8, 3))
    a = K.Conv2D(3, 1)(inp)
    out = K.Add()([inp, a])
    with pytest.raises(ValueError, match="not a chain|Add"):
        to_torch(keras.Model(inp, out).to_json())


def test_wrong_weight_count():
    model = MODELS["flatten_dense"]()
    with pytest.raises(ValueError, match="ran out"):
        to_torch(model.to_json(), model.get_weights()[:-1])
    with pytest.raises(ValueError, match="more arrays"):
        to_torch(model.to_json(), model.get_weights() + [np.zeros(3)])


def test_cli_keras2torch_with_weights(tmp_path):
    model = MODELS["seed001"]()
    (tmp_path / "model.json").write_text(model.to_json())
    np.savez(tmp_path / "weights.npz", *model.get_weights())
    r = subprocess.run(
        [sys.executable, "-m", "fastconv", "keras2torch", "model.json", "--weights", "weights.npz"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    (tmp_path / "model.py").write_text(r.stdout)
    namespace = {}
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(r.stdout, "model.py", "exec"), namespace)
    finally:
        os.chdir(old)
    x = RNG.standard_normal((2, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        out = namespace["model"](torch_input(x)).numpy()
    np.testing.assert_allclose(to_keras_layout(out), model.predict(x, verbose=0), atol=1e-4, rtol=1e-4)
    state = convert_weights(json.loads(model.to_json()), model.get_weights())
    assert set(state) <= set(namespace["model"].state_dict())
    bad = subprocess.run(
        [sys.executable, "-m", "fastconv", "keras2torch", "missing.json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert bad.returncode == 2 and "missing.json" in bad.stderr


def test_batchnorm_epsilon_and_momentum_are_mapped():
    model = seq((4, 4, 2), K.BatchNormalization(epsilon=0.01, momentum=0.8))
    bn = to_torch(model.to_json(), model.get_weights())[0]
    assert bn.eps == pytest.approx(0.01) and bn.momentum == pytest.approx(0.2)


def test_to_torch_without_torch_raises_a_clear_import_error():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from fastconv.keras import to_torch\n"
        "try:\n    to_torch({'class_name': 'Sequential', 'config': {'layers': []}})\n"
        "except ImportError as e:\n    print('IMPORT-ERROR', e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "IMPORT-ERROR" in r.stdout and "torch==2.13.0" in r.stdout


def test_model_built_without_an_input_layer():
    model = keras.Sequential([K.Conv2D(3, 3, strides=2, padding="same"), K.Flatten(), K.Dense(2)])
    model.build((None, 9, 9, 2))
    randomise(model)
    x = RNG.standard_normal((2, 9, 9, 2)).astype(np.float32)
    with torch.no_grad():
        out = to_torch(model.to_json(), model.get_weights())(torch_input(x)).numpy()
    np.testing.assert_allclose(out, model.predict(x, verbose=0), atol=1e-4, rtol=1e-4)


def test_weight_files_keep_get_weights_order():
    from fastconv.cli import _npz_order

    keys = ["arr_10", "arr_2", "note", "arr_0", "arr_1"]
    assert sorted(keys, key=_npz_order) == ["arr_0", "arr_1", "arr_2", "arr_10", "note"]
