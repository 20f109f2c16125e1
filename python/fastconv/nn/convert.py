"""torch models to fastconv.nn."""

from __future__ import annotations

import numpy as np

from .activation import ELU, GELU, Hardswish, Identity, LeakyReLU, LogSoftmax, ReLU, ReLU6, Sigmoid, SiLU, Softmax, Tanh
from .containers import Sequential
from .conv import Conv2d, ConvTranspose2d
from .linear import Dropout, Dropout2d, Flatten, Linear
from .module import Module, Parameter
from .normalization import BatchNorm2d, GroupNorm, LayerNorm
from .pooling import AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, MaxPool2d, Upsample, ZeroPad2d

__all__ = ["from_torch"]


def _copy(param: Parameter | None, tensor) -> None:
    # A copy, never a view: torch's optimisers update their tensors in place.
    if param is not None and tensor is not None:
        param.data = np.array(tensor.detach().cpu().numpy(), dtype=param.data.dtype, order="C", copy=True)


def _torch_dtype(module) -> np.dtype:
    for t in list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point()]:
        return np.dtype(str(t.dtype).replace("torch.", ""))
    return np.dtype(np.float32)


def _convert(m, path: str):
    """The fastconv module for torch module m, in m's own train/eval mode (modules made for its parts
    keep theirs: a torch container's mode says nothing about its children's)."""
    out = _convert_module(m, path)
    out.training = bool(m.training)
    return out


def _convert_module(m, path: str):  # noqa: C901 - one branch per supported module
    import torch.nn as tnn

    name = type(m).__name__
    if isinstance(m, tnn.Sequential):
        return Sequential(*[_convert(c, f"{path}.{i}" if path else str(i)) for i, c in enumerate(m)])
    if isinstance(m, (tnn.Conv2d, tnn.ConvTranspose2d)):
        if m.padding_mode != "zeros":
            raise TypeError(
                f"from_torch: {path or 'model'} ({name}) uses padding_mode={m.padding_mode!r}; only 'zeros' runs"
            )
        dt = m.weight.detach().numpy().dtype
        if isinstance(m, tnn.Conv2d):
            out = Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                         m.bias is not None, dtype=dt)  # fmt: skip
        else:
            out = ConvTranspose2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                                  m.output_padding, m.groups, m.bias is not None, m.dilation, dtype=dt)  # fmt: skip
        _copy(out.weight, m.weight)
        _copy(out.bias_param, m.bias)
        return out
    if isinstance(m, tnn.BatchNorm2d):
        out = BatchNorm2d(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats, dtype=_torch_dtype(m))
        if m.affine:
            _copy(out.weight, m.weight)
            _copy(out.bias_param, m.bias)
        if m.track_running_stats:
            for key in ("running_mean", "running_var", "num_batches_tracked"):
                out._buffers[key] = np.array(getattr(m, key).detach().numpy(), dtype=out._buffers[key].dtype)
        return out
    if isinstance(m, (tnn.GroupNorm, tnn.LayerNorm)):
        dt = _torch_dtype(m)
        if isinstance(m, tnn.GroupNorm):
            out = GroupNorm(m.num_groups, m.num_channels, m.eps, m.affine, dtype=dt)
        else:
            out = LayerNorm(m.normalized_shape, m.eps, m.elementwise_affine, dtype=dt)
        if getattr(out, "weight", None) is not None:
            _copy(out.weight, m.weight)
            _copy(out.bias_param, m.bias)
        return out
    if isinstance(m, tnn.Linear):
        out = Linear(m.in_features, m.out_features, m.bias is not None, dtype=m.weight.detach().numpy().dtype)
        _copy(out.weight, m.weight)
        _copy(out.bias_param, m.bias)
        return out
    simple = {
        tnn.ReLU: lambda: ReLU(),
        tnn.ReLU6: lambda: ReLU6(),
        tnn.LeakyReLU: lambda: LeakyReLU(m.negative_slope),
        tnn.ELU: lambda: ELU(m.alpha),
        tnn.GELU: lambda: GELU(m.approximate),
        tnn.SiLU: lambda: SiLU(),
        tnn.Sigmoid: lambda: Sigmoid(),
        tnn.Tanh: lambda: Tanh(),
        tnn.Hardswish: lambda: Hardswish(),
        tnn.Identity: lambda: Identity(),
        tnn.Flatten: lambda: Flatten(m.start_dim, m.end_dim),
        tnn.Dropout: lambda: Dropout(m.p),
        tnn.MaxPool2d: lambda: MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation, False, m.ceil_mode),
        tnn.AvgPool2d: lambda: AvgPool2d(
            m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad, m.divisor_override
        ),
        tnn.AdaptiveAvgPool2d: lambda: AdaptiveAvgPool2d(m.output_size),
        tnn.Upsample: lambda: Upsample(m.size, m.scale_factor, m.mode, m.align_corners),
        tnn.AdaptiveMaxPool2d: lambda: AdaptiveMaxPool2d(m.output_size),
        tnn.ZeroPad2d: lambda: ZeroPad2d(tuple(m.padding)),
        tnn.Dropout2d: lambda: Dropout2d(m.p),
        tnn.Softmax: lambda: Softmax(m.dim),
        tnn.LogSoftmax: lambda: LogSoftmax(m.dim),
    }
    for cls, make in simple.items():
        if type(m) is cls:
            return make()
    raise TypeError(
        f"from_torch: {path or 'model'} is a {name}, which fastconv.nn cannot run; supported layers: Conv2d, "
        "ConvTranspose2d, BatchNorm2d, GroupNorm, LayerNorm, Linear, pools, activations, Flatten, Dropout, Upsample, "
        "ZeroPad2d, Softmax (and any module whose forward combines them, captured by torch.fx)"
    )


def _leaf_types():
    import torch.nn as tnn

    return (tnn.Conv2d, tnn.ConvTranspose2d, tnn.BatchNorm2d, tnn.GroupNorm, tnn.LayerNorm, tnn.Linear, tnn.ReLU,
            tnn.ReLU6, tnn.LeakyReLU, tnn.ELU, tnn.GELU, tnn.SiLU, tnn.Sigmoid, tnn.Tanh, tnn.Hardswish, tnn.Identity,
            tnn.Flatten, tnn.Dropout, tnn.MaxPool2d, tnn.AvgPool2d, tnn.AdaptiveAvgPool2d, tnn.Upsample,
            tnn.AdaptiveMaxPool2d, tnn.ZeroPad2d, tnn.Dropout2d, tnn.Softmax, tnn.LogSoftmax)  # fmt: skip


def _is_tree(m) -> bool:
    """A Sequential tree of layers fastconv.nn has (converted layer by layer: its keys are torch's already)."""
    import torch.nn as tnn

    if type(m) is tnn.Sequential:
        return all(_is_tree(c) for c in m)
    return type(m) in _leaf_types()


def _user_frame(frames):
    """The innermost frame of `frames` ((filename, lineno, name, line) tuples) outside torch, as text."""
    import os

    import torch

    torch_dir = os.path.dirname(torch.__file__)
    fastconv_dir = os.path.dirname(os.path.dirname(__file__))
    user = [f for f in frames if not f[0].startswith((torch_dir, fastconv_dir))]
    if not user:
        return ""
    filename, lineno, name, line = user[-1]
    line = (line or "").strip()
    return f"File {filename!r}, line {lineno}, in {name}" + (f": {line}" if line else "")


def _node_line(node) -> str:
    import re

    trace = node.stack_trace or ""
    # A frame's source line is the indented line after it, absent where the source is not a file (stdin).
    frame = re.compile(r'File "([^"]+)", line (\d+), in (\S+)\n(?:[ \t]+(?!File ")(.*))?')
    frames = [(m.group(1), int(m.group(2)), m.group(3), m.group(4)) for m in frame.finditer(trace)]
    return _user_frame(frames)


def _torch_ops():
    """fx call targets -> fastconv.nn.graph operation names."""
    import operator

    import torch
    import torch.nn.functional as tf

    functions = {
        operator.add: "add", operator.iadd: "add", torch.add: "add", operator.sub: "sub", operator.isub: "sub",
        torch.sub: "sub", operator.mul: "mul", operator.imul: "mul", torch.mul: "mul", operator.truediv: "div",
        operator.itruediv: "div", torch.div: "div", torch.cat: "cat", torch.concat: "cat", torch.flatten: "flatten",
        torch.reshape: "reshape", operator.getitem: "getitem", getattr: "getattr", torch.relu: "relu",
        tf.relu: "relu", tf.relu6: "relu6", torch.sigmoid: "sigmoid", tf.sigmoid: "sigmoid", tf.silu: "silu",
        tf.hardswish: "hardswish", tf.gelu: "gelu", torch.tanh: "tanh", tf.tanh: "tanh", tf.leaky_relu: "leaky_relu",
        tf.elu: "elu", tf.softmax: "softmax", torch.softmax: "softmax", tf.log_softmax: "log_softmax",
        tf.max_pool2d: "max_pool2d", tf.avg_pool2d: "avg_pool2d", tf.adaptive_avg_pool2d: "adaptive_avg_pool2d",
        tf.adaptive_max_pool2d: "adaptive_max_pool2d", tf.interpolate: "interpolate", tf.pad: "pad",
        tf.dropout: "dropout", tf.dropout2d: "dropout2d", torch.mean: "mean", torch.sum: "sum",
    }  # fmt: skip
    methods = {
        "add": "add", "add_": "add", "sub": "sub", "sub_": "sub", "mul": "mul", "mul_": "mul", "div": "div",
        "div_": "div", "view": "reshape", "reshape": "reshape", "flatten": "flatten", "size": "size", "relu": "relu",
        "relu_": "relu", "sigmoid": "sigmoid", "sigmoid_": "sigmoid", "tanh": "tanh", "tanh_": "tanh", "mean": "mean",
        "sum": "sum", "contiguous": "identity", "clone": "identity", "detach": "detach", "expand_as": "expand_as",
        "dim": "dim", "softmax": "softmax", "log_softmax": "log_softmax",
    }  # fmt: skip
    return functions, methods


def _fx_arg(a, where):
    import torch
    import torch.fx as fx

    from .graph import Ref

    if isinstance(a, fx.Node):
        return Ref(a.name)
    if isinstance(a, torch.Size):
        return tuple(int(v) for v in a)
    if isinstance(a, tuple):
        return tuple(_fx_arg(v, where) for v in a)
    if isinstance(a, list):
        return [_fx_arg(v, where) for v in a]
    if isinstance(a, dict):
        return {k: _fx_arg(v, where) for k, v in a.items()}
    if isinstance(a, slice):
        return slice(_fx_arg(a.start, where), _fx_arg(a.stop, where), _fx_arg(a.step, where))
    if a is None or a is Ellipsis or isinstance(a, (bool, int, float, str)):
        return a
    raise TypeError(f"from_torch: {where} takes an argument fastconv.nn cannot hold: {type(a).__name__} {a!r}")


def _from_fx(model):
    """A GraphModule of a torch model's torch.fx graph."""
    import traceback

    import torch
    import torch.fx as fx

    from .graph import GraphModule, Node

    tracer = fx.Tracer()
    tracer.record_stack_traces = True
    name = type(model).__name__
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # data-dependent control flow, unsupported Python on proxies, ...
        line = _user_frame([(f.filename, f.lineno, f.name, f.line) for f in traceback.extract_tb(exc.__traceback__)])
        raise TypeError(
            f"from_torch: {name}.forward cannot be captured by torch.fx ({type(exc).__name__}: {exc})"
            + (f"; at {line}" if line else "")
        ) from None
    functions, methods = _torch_ops()
    nodes, modules, attrs, inputs = [], {}, {}, 0
    for n in graph.nodes:
        line = _node_line(n)
        where = f"{name}.forward ({line})" if line else f"{name}.forward"
        if n.op == "placeholder":
            nodes.append(Node(n.name, "input", inputs, line=line))
            inputs += 1
            continue
        if n.op == "get_attr":
            value = tracer.root
            for part in n.target.split("."):
                value = getattr(value, part)
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"from_torch: {where} reads {n.target}, a {type(value).__name__}, not a tensor")
            kind = "parameter" if isinstance(value, torch.nn.Parameter) else "buffer"
            attrs[n.target] = (kind, value.detach().cpu().numpy())
            nodes.append(Node(n.name, "attr", n.target, line=line))
            continue
        args, kwargs = _fx_arg(tuple(n.args), where), _fx_arg(dict(n.kwargs), where)
        if n.op == "call_module":
            if n.target not in modules:
                sub = tracer.root.get_submodule(n.target)
                try:
                    modules[n.target] = _convert(sub, n.target)
                except TypeError as exc:
                    raise TypeError(f"{exc} (called at {line})" if line else str(exc)) from None
            nodes.append(Node(n.name, "module", n.target, args, kwargs, line))
        elif n.op in ("call_function", "call_method"):
            table = functions if n.op == "call_function" else methods
            try:
                op = table.get(n.target)
            except TypeError:  # an unhashable target
                op = None
            if op is None:
                what = getattr(n.target, "__name__", str(n.target))
                kind = "function" if n.op == "call_function" else "method ." + str(n.target)
                raise TypeError(f"from_torch: {where} calls {kind if n.op != 'call_function' else what}, which "
                                "fastconv.nn cannot run")  # fmt: skip
            nodes.append(Node(n.name, "call", op, args, kwargs, line))
        elif n.op == "output":
            nodes.append(Node(n.name, "output", None, args, kwargs, line))
        else:  # pragma: no cover - fx has no other ops
            raise TypeError(f"from_torch: {where}: unknown fx node {n.op}")
    # Layers the forward never calls still belong to the model (and its state_dict): converted where fastconv.nn
    # has them, in torch's registration order with the called ones.
    ordered = {}
    for path, sub in model.named_modules():
        if path in modules:
            ordered[path] = modules[path]
        elif path and type(sub) in _leaf_types() and not any(path.startswith(p + ".") for p in ordered):
            has_state = any(True for _ in sub.parameters(recurse=False)) or any(
                True for _ in sub.buffers(recurse=False)
            )
            if has_state:
                ordered[path] = _convert(sub, path)
    out = GraphModule(nodes, ordered, attrs)
    out.training = bool(model.training)
    return out


def from_torch(module) -> Module:
    """A ``fastconv.nn`` model computing what a torch model computes, its weights and statistics copied.

    So a model trained in torch runs (and trains on) where torch is not installed: save it with
    :func:`fastconv.nn.save` and load it with :func:`fastconv.nn.load` there.

    Parameters
    ----------
    module : torch.nn.Module
        A ``Sequential`` tree of the layers fastconv.nn has is converted layer by layer into a
        :class:`~fastconv.nn.Sequential`.  Any other model, with its own ``forward`` (shortcuts added with
        ``+``, ``+=`` or ``torch.add``, skips joined with ``torch.cat``, ``torch.flatten`` or ``.view(n, -1)``,
        ``F.relu``, ``F.interpolate``, ``F.pad``, a squeeze-and-excitation product, ...), is captured with
        ``torch.fx.symbolic_trace`` and becomes a :class:`~fastconv.nn.GraphModule`.

    Returns
    -------
    Module
        Every layer in its torch counterpart's train/eval mode; ``state_dict()`` keys equal torch's.

    Raises
    ------
    TypeError
        For a layer or an operation fastconv.nn cannot run, or a forward ``torch.fx`` cannot capture
        (control flow that depends on the data), naming it and the line of the model's source it came from.

    Notes
    -----
    ``F.dropout(x, training=self.training)`` follows the converted model's own ``train()``/``eval()`` mode,
    not the mode the model had when it was captured.  Converted convolutions need ``padding_mode='zeros'``.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from fastconv import nn
    >>> t = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).eval()
    >>> f = nn.from_torch(t)
    >>> x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    >>> bool(np.allclose(f(x), t(torch.from_numpy(x)).detach().numpy(), atol=1e-5))
    True
    >>> class Block(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)
    ...     def forward(self, x):
    ...         return torch.relu(self.conv(x) + x)
    >>> g = nn.from_torch(Block())
    >>> type(g).__name__, list(g.state_dict())
    ('GraphModule', ['conv.weight', 'conv.bias'])
    """
    if _is_tree(module):
        return _convert(module, "")
    return _from_fx(module)
