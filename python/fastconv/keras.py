"""Port a Keras 3 model (``model.to_json()`` + ``model.get_weights()``) to PyTorch.

Contract: the torch module takes NCHW inputs (``x.transpose(0, 3, 1, 2)`` of
Keras' NHWC input) and returns NCHW for 4-D outputs, (N, features) otherwise;
with the weights it reproduces Keras' outputs.  ``padding='same'`` follows
TensorFlow's rule for every stride (asymmetric padding computed from the static
input size); max pools pad with -inf and average pools exclude the padding from
each window's count, as TensorFlow does.  Keras flattens NHWC, so a Dense after
a Flatten gets its kernel rows permuted to torch's NCHW order (a Flatten feeding
anything else flattens channels-last).

Transposed convolutions crop their full output as TensorFlow/JAX (and Keras 3 on
every backend) do: with ``padding='same'`` and an odd ``d(k-1)+1-stride`` the
extra row is cropped at the bottom, which torch's symmetric ``padding`` cannot
express, so a ``ZeroPad2d`` with negative amounts crops it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np

from .shapes import conv_output_size, conv_transpose_output_size, pool_output_size, same_padding

__all__ = ["to_torch", "to_torch_code", "convert_weights"]

_HELPERS = {
    "BatchNormOnDim": '''
class BatchNormOnDim(nn.BatchNorm2d):
    """BatchNorm2d over dimension `dim` of an NCHW tensor (Keras BatchNormalization(axis=1 or 2))."""

    def __init__(self, num_features, dim, eps=1e-5, momentum=0.1):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.dim = dim

    def forward(self, x):
        return super().forward(x.transpose(1, self.dim)).transpose(1, self.dim)
''',
    "AvgPool2dSame": '''
class AvgPool2dSame(nn.Module):
    """TensorFlow 'same' average pooling: asymmetric padding excluded from every window's count."""

    def __init__(self, kernel_size, stride, padding):  # padding: (left, right, top, bottom)
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        total = F.avg_pool2d(F.pad(x, self.padding), self.kernel_size, self.stride)
        count = F.avg_pool2d(F.pad(torch.ones_like(x[:1, :1]), self.padding), self.kernel_size, self.stride)
        return total / count
''',
    "ChannelsLastFlatten": '''
class ChannelsLastFlatten(nn.Module):
    """Flatten in Keras' (H, W, C) order."""

    def forward(self, x):
        return torch.flatten(x.permute(0, 2, 3, 1), 1)
''',
}

_ACTIVATIONS = {
    "relu": "nn.ReLU()",
    "sigmoid": "nn.Sigmoid()",
    "tanh": "nn.Tanh()",
    "elu": "nn.ELU()",
    "selu": "nn.SELU()",
    "softplus": "nn.Softplus()",
    "relu6": "nn.ReLU6()",
    "silu": "nn.SiLU()",
    "swish": "nn.SiLU()",
    "gelu": 'nn.GELU(approximate="tanh")',
    "leaky_relu": "nn.LeakyReLU(0.2)",
    "hard_sigmoid": "nn.Hardsigmoid()",
}
_ELEMENTWISE = {"Activation", "ReLU", "LeakyReLU", "ELU", "Dropout", "Softmax"}


class _Step:
    """One torch module: its name, constructor source and, with weights, its tensors."""

    def __init__(self, name: str, code: str, comment: str = ""):
        self.name, self.code, self.comment = name, code, comment
        self.state: dict[str, np.ndarray] = {}


class _Converter:
    def __init__(self, model_json, weights=None):
        cfg = json.loads(model_json) if isinstance(model_json, (str, bytes)) else model_json
        if not isinstance(cfg, dict) or "config" not in cfg:
            raise ValueError("model_json must be the output of Keras' model.to_json() (a string or dict)")
        self.model_name = cfg["config"].get("name", "model")
        self.layers = _chain(cfg)
        self.weights: Iterator[np.ndarray] | None = None if weights is None else iter([np.asarray(w) for w in weights])
        self.steps: list[_Step] = []
        self.helpers: list[str] = []
        self.shape = _input_shape(cfg)
        self.flatten_from: tuple | None = None  # (H, W, C) when a Flatten awaits its Dense

    # -- plumbing
    def take(self, layer: str, n: int) -> list[np.ndarray] | None:
        if self.weights is None:
            return None
        out = []
        for _ in range(n):
            try:
                out.append(next(self.weights))
            except StopIteration:
                raise ValueError(f"weights: ran out of arrays at layer {layer!r}; pass model.get_weights()") from None
        return out

    def add(self, name, code, state=None):
        step = _Step(_ident(name), code, f"Keras output {_fmt_shape(self.shape)}")
        if state:
            step.state = state
        self.steps.append(step)
        return step

    def helper(self, name):
        if name not in self.helpers:
            self.helpers.append(name)

    def spatial(self, layer):
        if len(self.shape) != 3:
            raise ValueError(f"layer {layer!r} needs a 4-D (N, H, W, C) input, got {_fmt_shape(self.shape)}")
        return self.shape

    def same_pads(self, layer, cls, k, s, d, size):
        """(before, after) per axis for TensorFlow 'same'; a static size is needed for stride > 1."""
        pads = []
        for axis in range(2):
            n = size[axis]
            if n is None:
                if s[axis] != 1:
                    raise ValueError(
                        f"layer {layer!r} ({cls}): padding='same' with strides {tuple(s)} needs a static "
                        f"input size, but the model's input is {_fmt_shape(self.shape)}; build the model "
                        "with a fixed input shape"
                    )
                n = 1  # at stride 1 the padding does not depend on the size
            pads.append(same_padding(n, k[axis], s[axis], d[axis]))
        return pads

    def activation(self, layer, name, module_name=None):
        """Append the activation of `layer` (named `<layer>_act` unless `module_name` is given)."""
        module_name = module_name or f"{layer}_act"
        if name in (None, "linear"):
            if module_name == layer:
                self.add(module_name, "nn.Identity()")
            return
        if name == "softmax":
            self.add(module_name, f"nn.Softmax(dim={1 if len(self.shape) == 3 else -1})")
            return
        if name not in _ACTIVATIONS:
            raise ValueError(f"layer {layer!r}: activation {name!r} is not supported")
        self.add(module_name, _ACTIVATIONS[name])

    def convert(self):
        for cls, name, conf, nxt in self.layers:
            if conf.get("data_format", "channels_last") != "channels_last":
                raise ValueError(f"layer {name!r} ({cls}): only data_format='channels_last' is supported")
            handler = getattr(self, f"_{cls}", None)
            if handler is None:
                raise ValueError(f"layer {name!r} of class {cls} is not supported by fastconv.keras")
            handler(name, conf, nxt)
        if self.weights is not None and next(self.weights, None) is not None:
            raise ValueError("weights: more arrays than the model's layers use")
        return self

    # -- layers
    def _InputLayer(self, name, conf, nxt):
        pass

    def _conv_common(self, name, cls, conf):
        h, w, c = self.spatial(name)
        k, s, d = _pair(conf["kernel_size"]), _pair(conf.get("strides", 1)), _pair(conf.get("dilation_rate", 1))
        if conf.get("padding", "valid") == "same":
            (t, b), (le, r) = self.same_pads(name, cls, k, s, d, (h, w))
        elif conf.get("padding", "valid") == "valid":
            t = b = le = r = 0
        else:
            raise ValueError(f"layer {name!r} ({cls}): padding={conf['padding']!r} is not supported")
        if (t, le) == (b, r):
            torch_pad = (t, le)
        else:
            self.add(f"{name}_pad", f"nn.ZeroPad2d(({le}, {r}, {t}, {b}))")
            torch_pad = (0, 0)
        size = (_axis_out(h, k[0], s[0], t, b, d[0]), _axis_out(w, k[1], s[1], le, r, d[1]))
        return k, s, d, torch_pad, c, size

    def _Conv2D(self, name, conf, nxt):
        k, s, d, pad, c, size = self._conv_common(name, "Conv2D", conf)
        filters, groups, bias = conf["filters"], conf.get("groups", 1), conf.get("use_bias", True)
        ws = self.take(name, 2 if bias else 1)
        self.shape = (*size, filters)
        state = None if ws is None else {"weight": ws[0].transpose(3, 2, 0, 1), **({"bias": ws[1]} if bias else {})}
        self.add(
            name,
            f"nn.Conv2d({c}, {filters}, kernel_size={k}, stride={s}, padding={pad}, dilation={d}, "
            f"groups={groups}, bias={bias})",
            state,
        )
        self.activation(name, conf.get("activation"))

    def _DepthwiseConv2D(self, name, conf, nxt):
        k, s, d, pad, c, size = self._conv_common(name, "DepthwiseConv2D", conf)
        mult, bias = conf.get("depth_multiplier", 1), conf.get("use_bias", True)
        self.shape = (*size, c * mult)
        self._add_depthwise(name, k, s, d, pad, c, mult, bias, self.take(name, 2 if bias else 1))
        self.activation(name, conf.get("activation"))

    def _add_depthwise(self, name, k, s, d, pad, c, mult, bias, ws):
        """A Keras depthwise kernel (kh, kw, c, mult) as an nn.Conv2d with c groups and c * mult outputs."""
        state = None
        if ws is not None:
            state = {
                "weight": ws[0].transpose(2, 3, 0, 1).reshape(c * mult, 1, *k),
                **({"bias": ws[1]} if bias else {}),
            }
        self.add(
            name,
            f"nn.Conv2d({c}, {c * mult}, kernel_size={k}, stride={s}, padding={pad}, dilation={d}, "
            f"groups={c}, bias={bias})",
            state,
        )

    def _SeparableConv2D(self, name, conf, nxt):
        k, s, d, pad, c, size = self._conv_common(name, "SeparableConv2D", conf)
        mult, filters, bias = conf.get("depth_multiplier", 1), conf["filters"], conf.get("use_bias", True)
        ws = self.take(name, 3 if bias else 2)
        self.shape = (*size, filters)
        pw = None
        if ws is not None:
            pw = {"weight": ws[1].transpose(3, 2, 0, 1), **({"bias": ws[2]} if bias else {})}
        self._add_depthwise(f"{name}_depthwise", k, s, d, pad, c, mult, False, None if ws is None else ws[:1])
        self.add(f"{name}_pointwise", f"nn.Conv2d({c * mult}, {filters}, kernel_size=1, bias={bias})", pw)
        self.activation(name, conf.get("activation"))

    def _Conv2DTranspose(self, name, conf, nxt):
        h, w, c = self.spatial(name)
        k, s, d = _pair(conf["kernel_size"]), _pair(conf.get("strides", 1)), _pair(conf.get("dilation_rate", 1))
        padding = conf.get("padding", "valid")
        if padding not in ("valid", "same"):
            raise ValueError(f"layer {name!r} (Conv2DTranspose): padding={padding!r} is not supported")
        op_conf = conf.get("output_padding")
        op_conf = None if op_conf is None else _pair(op_conf)
        tpad, tout, extra, size = [], [], [], []
        for a, n in enumerate((h, w)):
            left, right = _keras_transpose_crops(k[a], s[a], d[a], padding, None if op_conf is None else op_conf[a])
            # torch crops `padding` from both ends, then adds `output_padding` at the end
            p, q, more = (left, left - right, 0) if right <= left else (left, 0, right - left)
            if q >= max(s[a], d[a]):
                raise ValueError(f"layer {name!r} (Conv2DTranspose): output_padding {q} is not expressible in torch")
            tpad.append(p)
            tout.append(q)
            extra.append(more)
            size.append(None if n is None else conv_transpose_output_size(n, k[a], s[a], p, q, d[a]) - more)
        filters, bias = conf["filters"], conf.get("use_bias", True)
        ws = self.take(name, 2 if bias else 1)
        self.shape = (*size, filters)
        state = None if ws is None else {"weight": ws[0].transpose(3, 2, 0, 1), **({"bias": ws[1]} if bias else {})}
        self.add(
            name,
            f"nn.ConvTranspose2d({c}, {filters}, kernel_size={k}, stride={s}, padding={tuple(tpad)}, "
            f"output_padding={tuple(tout)}, dilation={d}, bias={bias})",
            state,
        )
        if any(extra):  # crop the last rows/columns that torch's symmetric padding left
            self.add(f"{name}_pad", f"nn.ZeroPad2d((0, {-extra[1]}, 0, {-extra[0]}))")
        self.activation(name, conf.get("activation"))

    def _BatchNormalization(self, name, conf, nxt):
        axis = conf.get("axis", -1)
        axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
        ndim = len(self.shape) + 1
        if not isinstance(axis, int):
            raise ValueError(f"layer {name!r} (BatchNormalization): axis={axis!r} is not supported")
        axis %= ndim
        if axis == 0:
            raise ValueError(f"layer {name!r} (BatchNormalization): axis=0 normalises over the batch axis")
        features = self.shape[axis - 1]
        if features is None:
            raise ValueError(f"layer {name!r} (BatchNormalization): the size of axis {axis} must be static")
        eps, momentum = conf.get("epsilon", 1e-3), 1 - conf.get("momentum", 0.99)
        scale, center = conf.get("scale", True), conf.get("center", True)
        ws = self.take(name, 2 + int(scale) + int(center))
        state = None
        if ws is not None:
            it = iter(ws)
            gamma = next(it) if scale else np.ones(features, np.float32)
            beta = next(it) if center else np.zeros(features, np.float32)
            state = {"weight": gamma, "bias": beta, "running_mean": next(it), "running_var": next(it)}
        momentum = round(momentum, 10)
        if ndim == 2:
            code = f"nn.BatchNorm1d({features}, eps={eps}, momentum={momentum})"
        elif axis == 3:
            code = f"nn.BatchNorm2d({features}, eps={eps}, momentum={momentum})"
        else:  # a spatial axis of NHWC -> dim 2 (H) or 3 (W) of NCHW
            self.helper("BatchNormOnDim")
            code = f"BatchNormOnDim({features}, dim={axis + 1}, eps={eps}, momentum={momentum})"
        self.add(name, code, state)

    def _Activation(self, name, conf, nxt):
        self.activation(name, conf["activation"], module_name=name)

    def _ReLU(self, name, conf, nxt):
        mx, slope, thr = conf.get("max_value"), conf.get("negative_slope", 0.0), conf.get("threshold", 0.0)
        if thr:
            raise ValueError(f"layer {name!r} (ReLU): threshold={thr} is not supported")
        if mx is None and not slope:
            self.add(name, "nn.ReLU()")
        elif mx == 6 and not slope:
            self.add(name, "nn.ReLU6()")
        elif mx is None:
            self.add(name, f"nn.LeakyReLU({slope})")
        else:
            raise ValueError(f"layer {name!r} (ReLU): max_value={mx} with negative_slope={slope} is not supported")

    def _LeakyReLU(self, name, conf, nxt):
        self.add(name, f"nn.LeakyReLU({conf.get('negative_slope', conf.get('alpha', 0.3))})")

    def _ELU(self, name, conf, nxt):
        self.add(name, f"nn.ELU(alpha={conf.get('alpha', 1.0)})")

    def _Softmax(self, name, conf, nxt):
        axis = conf.get("axis", -1)
        if axis not in (-1, len(self.shape)):
            raise ValueError(f"layer {name!r} (Softmax): only the last (channel) axis is supported, got axis={axis}")
        self.add(name, f"nn.Softmax(dim={1 if len(self.shape) == 3 else -1})")

    def _Dropout(self, name, conf, nxt):
        self.add(name, f"nn.Dropout({conf.get('rate', 0.5)})")

    def _pool(self, name, conf, cls, kind):
        h, w, c = self.spatial(name)
        k = _pair(conf.get("pool_size", 2))
        s = _pair(conf.get("strides") or k)
        padding = conf.get("padding", "valid")
        torch_cls = "nn.MaxPool2d" if kind == "max" else "nn.AvgPool2d"
        if padding == "valid":
            size = [None if n is None else pool_output_size(n, k[a], s[a]) for a, n in enumerate((h, w))]
            self.shape = (*size, c)
            self.add(name, f"{torch_cls}(kernel_size={k}, stride={s})")
            return
        if padding != "same":
            raise ValueError(f"layer {name!r} ({cls}): padding={padding!r} is not supported")
        (t, b), (le, r) = self.same_pads(name, cls, k, s, (1, 1), (h, w))
        self.shape = (
            *[None if n is None else conv_output_size(n, k[a], s[a], "same") for a, n in enumerate((h, w))],
            c,
        )
        extra = "" if kind == "max" else ", count_include_pad=False"
        if (t, le) == (b, r):
            self.add(name, f"{torch_cls}(kernel_size={k}, stride={s}, padding={(t, le)}{extra})")
        elif kind == "max":
            self.add(f"{name}_pad", f'nn.ConstantPad2d(({le}, {r}, {t}, {b}), float("-inf"))')
            self.add(name, f"nn.MaxPool2d(kernel_size={k}, stride={s})")
        else:
            self.helper("AvgPool2dSame")
            self.add(name, f"AvgPool2dSame(kernel_size={k}, stride={s}, padding=({le}, {r}, {t}, {b}))")

    def _MaxPooling2D(self, name, conf, nxt):
        self._pool(name, conf, "MaxPooling2D", "max")

    def _AveragePooling2D(self, name, conf, nxt):
        self._pool(name, conf, "AveragePooling2D", "avg")

    def _global(self, name, conf, kind):
        _, _, c = self.spatial(name)
        self.add(name, f"nn.Adaptive{kind}Pool2d(1)")
        if conf.get("keepdims", False):
            self.shape = (1, 1, c)
        else:
            self.shape = (c,)
            self.add(f"{name}_flatten", "nn.Flatten()")

    def _GlobalAveragePooling2D(self, name, conf, nxt):
        self._global(name, conf, "Avg")

    def _GlobalMaxPooling2D(self, name, conf, nxt):
        self._global(name, conf, "Max")

    def _ZeroPadding2D(self, name, conf, nxt):
        h, w, c = self.spatial(name)
        p = conf.get("padding", 1)
        if isinstance(p, int):
            (t, b), (le, r) = (p, p), (p, p)
        elif isinstance(p[0], int):
            (t, b), (le, r) = (p[0], p[0]), (p[1], p[1])
        else:
            (t, b), (le, r) = p
        self.shape = (None if h is None else h + t + b, None if w is None else w + le + r, c)
        self.add(name, f"nn.ZeroPad2d(({le}, {r}, {t}, {b}))")

    def _UpSampling2D(self, name, conf, nxt):
        h, w, c = self.spatial(name)
        size = _pair(conf.get("size", 2))
        mode = conf.get("interpolation", "nearest")
        if mode not in ("nearest", "bilinear"):
            raise ValueError(f"layer {name!r} (UpSampling2D): interpolation={mode!r} is not supported")
        self.shape = (None if h is None else h * size[0], None if w is None else w * size[1], c)
        extra = ", align_corners=False" if mode == "bilinear" else ""
        self.add(name, f'nn.Upsample(scale_factor={tuple(float(v) for v in size)}, mode="{mode}"{extra})')

    def _Flatten(self, name, conf, nxt):
        if len(self.shape) == 1:
            self.add(name, "nn.Flatten()")
            return
        if any(v is None for v in self.shape):
            raise ValueError(f"layer {name!r} (Flatten): needs a static input size, got {_fmt_shape(self.shape)}")
        if nxt == "Dense":  # permute the Dense kernel instead of the activations
            self.flatten_from = self.shape
            self.add(name, "nn.Flatten()")
        else:
            self.helper("ChannelsLastFlatten")
            self.add(name, "ChannelsLastFlatten()")
        self.shape = (int(np.prod(self.shape)),)

    def _Dense(self, name, conf, nxt):
        if len(self.shape) != 1:
            raise ValueError(
                f"layer {name!r} (Dense): only 2-D (N, features) inputs are supported, got {_fmt_shape(self.shape)}"
            )
        units, bias = conf["units"], conf.get("use_bias", True)
        ws = self.take(name, 2 if bias else 1)
        state = None
        if ws is not None:
            kernel = ws[0]
            if self.flatten_from is not None:  # rows in Keras' (h, w, c) order -> torch's (c, h, w)
                hh, ww, cc = self.flatten_from
                kernel = kernel.reshape(hh, ww, cc, units).transpose(2, 0, 1, 3).reshape(-1, units)
            state = {"weight": kernel.T, **({"bias": ws[1]} if bias else {})}
        self.flatten_from = None
        in_features = self.shape[0]
        self.shape = (units,)
        self.add(name, f"nn.Linear({in_features}, {units}, bias={bias})", state)
        self.activation(name, conf.get("activation"))


def _axis_out(n, k, s, before, after, d):
    """Conv output length along one axis (None for a dynamic size), by fastconv's shared rule."""
    return None if n is None else conv_output_size(n, k, s, (0, 0, before, after), d)


def _keras_transpose_crops(k, s, d, padding, output_padding):
    """(left, right) crop of the full transposed output ``(n-1)*s + d(k-1) + 1``, as Keras 3 computes it.

    Negative values extend with zeros (before the bias is added).
    """
    e = (k - 1) * d + 1
    if padding == "valid":
        op = max(e, s) - e if output_padding is None else output_padding
        left_pad, right_pad = e - 1, e - 1 + op
    else:
        pad_len = s + e - 2 if output_padding is None else e + e % 2 - 2 + output_padding
        left_pad = min(pad_len // 2 + pad_len % 2, e - 1)
        right_pad = pad_len - left_pad
    return (e - 1) - left_pad, (e - 1) - right_pad


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, float)) else (int(v[0]), int(v[1]))


def _ident(name: str) -> str:
    return re.sub(r"\W", "_", name)


def _fmt_shape(shape) -> str:
    return str((None, *shape))


def _layers_of(cfg: dict) -> list[dict]:
    return cfg["config"]["layers"]


def _chain(cfg: dict) -> list[tuple[str, str, dict, str | None]]:
    """(class, name, config, next class) per layer; functional models must be chains."""
    kind = cfg.get("class_name")
    layers = _layers_of(cfg)
    out = []
    if kind == "Sequential":
        for layer in layers:
            out.append((layer["class_name"], layer["config"].get("name", layer["class_name"]), layer["config"]))
    elif kind in ("Functional", "Model"):
        previous = None
        for layer in layers:
            name = layer.get("name") or layer["config"]["name"]
            inbound = _inbound_names(layer)
            if previous is None:
                if inbound:
                    raise ValueError(f"layer {name!r} comes first but has inputs {inbound}")
            elif inbound != [previous]:
                raise ValueError(
                    f"the model is not a chain: layer {name!r} ({layer['class_name']}) takes "
                    f"{inbound or 'no inputs'}, expected [{previous!r}]"
                )
            previous = name
            out.append((layer["class_name"], name, layer["config"]))
    else:
        raise ValueError(f"model_json: expected a Sequential or Functional model, got class {kind!r}")
    return [(c, n, conf, _next_non_elementwise(out, i)) for i, (c, n, conf) in enumerate(out)]


def _next_non_elementwise(out, i):
    for c, _, _ in out[i + 1 :]:
        if c not in _ELEMENTWISE:
            return c
    return None


def _inbound_names(layer: dict) -> list[str]:
    names = []

    def visit(obj):
        if isinstance(obj, dict):
            history = (
                obj.get("config", {}).get("keras_history") if obj.get("class_name") == "__keras_tensor__" else None
            )
            if history:
                names.append(history[0])
                return
            for v in obj.values():
                visit(v)
        elif isinstance(obj, list):
            if len(obj) >= 3 and isinstance(obj[0], str) and isinstance(obj[1], int):
                names.append(obj[0])  # Keras 2 style [name, node, tensor, kwargs]
                return
            for v in obj:
                visit(v)

    visit(layer.get("inbound_nodes", []))
    return names


def _input_shape(cfg: dict) -> tuple:
    """(H, W, C) without the batch axis: from the first layer (an InputLayer or a layer given an input shape),
    else from the model's build shape."""
    raw = _layers_of(cfg)
    if raw:
        first = raw[0]
        shape = first["config"].get("batch_shape") or first["config"].get("batch_input_shape")
        shape = shape or (first.get("build_config") or {}).get("input_shape")
        if shape:
            return tuple(shape[1:])
    build = cfg["config"].get("build_input_shape") or (cfg.get("build_config") or {}).get("input_shape")
    if build:
        return tuple(build[1:])
    raise ValueError("model_json: the model's input shape is unknown; give it an Input or build it")


def _code(conv: _Converter, weights_file: str | None = None) -> str:
    lines = [
        f'"""PyTorch port of the Keras model {conv.model_name!r}, generated by fastconv.keras.',
        "",
        "Inputs are NCHW: x_torch = torch.from_numpy(x_keras.transpose(0, 3, 1, 2)); 4-D outputs are NCHW.",
        '"""',
        "",
        "from collections import OrderedDict",
        "",
    ]
    if weights_file:
        lines.append("import numpy as np")
    lines += ["import torch", "import torch.nn as nn", "import torch.nn.functional as F", ""]
    for h in conv.helpers:
        lines.append(_HELPERS[h].rstrip() + "\n")
    lines += ["", "def build_model():", "    return nn.Sequential(OrderedDict(["]
    for step in conv.steps:
        lines.append(f'        ("{step.name}", {step.code}),  # {step.comment}')
    lines += ["    ]))", "", "", "model = build_model().eval()"]
    if weights_file:
        lines += [
            f"_state = np.load({weights_file!r})",
            "model.load_state_dict({k: torch.from_numpy(_state[k]) for k in _state.files}, strict=False)",
        ]
    return "\n".join(lines) + "\n"


def convert_weights(model_json, weights) -> dict[str, np.ndarray]:
    """Keras ``get_weights()`` arrays as a torch-layout state dict for the ported module."""
    conv = _Converter(model_json, weights).convert()
    return {f"{s.name}.{k}": np.ascontiguousarray(v, dtype=np.float32) for s in conv.steps for k, v in s.state.items()}


def to_torch_code(model_json, weights_file: str | None = None) -> str:
    """Readable PyTorch source for the model: ``build_model()`` and ``model``.

    With ``weights_file`` (an ``.npz`` written from :func:`convert_weights`) the
    code also loads the weights.
    """
    return _code(_Converter(model_json).convert(), weights_file)


def to_torch(model_json, weights=None):
    """Build the equivalent ``torch.nn.Module`` (in eval mode), with Keras' weights if given.

    Parameters
    ----------
    model_json : str or dict
        ``model.to_json()`` of a Keras 3 Sequential model or a functional chain.
    weights : list of arrays, optional
        ``model.get_weights()``.

    Raises
    ------
    ImportError
        When torch is not installed.
    ValueError
        For an unsupported layer (named with its class), a non-chain model, or
        strided ``'same'`` padding without a static input size.
    """
    try:
        import torch
    except ImportError:
        raise ImportError("fastconv.keras.to_torch needs PyTorch: pip install torch==2.13.0") from None
    conv = _Converter(model_json, weights).convert()
    namespace: dict[str, Any] = {}
    exec(compile(_code(conv), f"<fastconv.keras:{conv.model_name}>", "exec"), namespace)
    model = namespace["model"]
    if weights is not None:
        state = {
            f"{s.name}.{k}": torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
            for s in conv.steps
            for k, v in s.state.items()
        }
        missing = [k for k in model.state_dict() if k not in state and not k.endswith("num_batches_tracked")]
        if missing:
            raise ValueError(f"weights: no values for {missing}")
        model.load_state_dict(state, strict=False)
    return model.eval()
