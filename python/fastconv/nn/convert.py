"""torch models to fastconv.nn."""

from __future__ import annotations

import numpy as np

from .activation import ELU, GELU, Hardswish, Identity, LeakyReLU, LogSoftmax, ReLU, ReLU6, Sigmoid, SiLU, Softmax, Tanh
from .containers import Concat, Residual, Sequential
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


def _is_block(m, names) -> bool:
    return all(hasattr(m, n) for n in names)


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
    # torchvision's ResNet blocks: relu(bn2(conv2(relu(bn1(conv1(x))))) + downsample(x)), and the
    # Bottleneck's three-conv form.
    if name == "BasicBlock" and _is_block(m, ("conv1", "bn1", "conv2", "bn2")):
        body = Sequential(_convert(m.conv1, f"{path}.conv1"), _convert(m.bn1, f"{path}.bn1"), ReLU(),
                          _convert(m.conv2, f"{path}.conv2"), _convert(m.bn2, f"{path}.bn2"))  # fmt: skip
        short = getattr(m, "downsample", None)
        return Sequential(Residual(body, None if short is None else _convert(short, f"{path}.downsample")), ReLU())
    if name == "Bottleneck" and _is_block(m, ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3")):
        parts = []
        for i in (1, 2, 3):
            parts.append(_convert(getattr(m, f"conv{i}"), f"{path}.conv{i}"))
            parts.append(_convert(getattr(m, f"bn{i}"), f"{path}.bn{i}"))
            if i < 3:
                parts.append(ReLU())
        short = getattr(m, "downsample", None)
        return Sequential(
            Residual(Sequential(*parts), None if short is None else _convert(short, f"{path}.downsample")), ReLU()
        )
    # Modules written like fastconv's own: a `body` (and for Residual an optional `shortcut`).
    if name == "Residual" and hasattr(m, "body"):
        short = getattr(m, "shortcut", None)
        return Residual(
            _convert(m.body, f"{path}.body"), None if short is None else _convert(short, f"{path}.shortcut")
        )
    if name == "Concat" and hasattr(m, "body"):
        return Concat(_convert(m.body, f"{path}.body"))
    raise TypeError(
        f"from_torch: {path or 'model'} is a {name}, which fastconv.nn cannot run; supported: Sequential, Conv2d, "
        "ConvTranspose2d, BatchNorm2d, Linear, pools, activations, Flatten, Dropout, Upsample, torchvision "
        "BasicBlock/Bottleneck, and Residual/Concat modules with `body` (and `shortcut`) attributes"
    )


def from_torch(module) -> Module:
    """A ``fastconv.nn`` model computing what a torch model computes, its weights and statistics copied.

    So a model trained in torch runs (and trains on) where torch is not installed: save
    ``from_torch(model).state_dict()`` with :meth:`Module.save` and load it into the same
    ``fastconv.nn`` structure later.

    Parameters
    ----------
    module : torch.nn.Module
        Built from ``Sequential`` nesting of the supported modules (the error names any other
        class): convolutions (``padding_mode='zeros'``), ``BatchNorm2d``, ``Linear``, max/average/
        adaptive-average pools, activations, ``Flatten``, ``Dropout``, ``Upsample``; torchvision's
        ``BasicBlock`` and ``Bottleneck`` become :class:`Residual` blocks followed by a ReLU; a module
        named ``Residual`` (``body``, optional ``shortcut``) or ``Concat`` (``body``) maps to its
        namesake.

    Returns
    -------
    Module
        Every module in its torch counterpart's train/eval mode.

    Notes
    -----
    The state-dict keys follow the fastconv structure (a BasicBlock's ``conv1`` is
    ``0.body.0``), not torch's.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from fastconv import nn
    >>> t = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).eval()
    >>> f = nn.from_torch(t)
    >>> x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    >>> bool(np.allclose(f(x), t(torch.from_numpy(x)).detach().numpy(), atol=1e-5))
    True
    """
    return _convert(module, "")
