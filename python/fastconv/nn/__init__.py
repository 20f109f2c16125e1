"""NumPy layers with forward and backward passes, losses and optimisers.

Each layer subclasses its :mod:`fastconv.layers` description, so geometry,
output shapes and parameter counts are defined once.  Parameters are NumPy
arrays named as in torch, so ``load_state_dict`` accepts a torch ``state_dict``
converted with ``{k: v.numpy() for k, v in sd.items()}``.

Examples
--------
>>> import numpy as np
>>> from fastconv import nn
>>> rng = np.random.default_rng(0)
>>> model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
...                       nn.Flatten(), nn.Linear(4 * 4 * 4, 10, rng=rng))
>>> x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
>>> loss_fn = nn.CrossEntropyLoss()
>>> loss = loss_fn(model(x), np.array([3, 7]))
>>> grad_input = model.backward(loss_fn.backward())
>>> grad_input.shape, model[0].weight.grad.shape
((2, 1, 8, 8), (4, 1, 3, 3))
"""

from .activation import ELU, GELU, Hardswish, Identity, LeakyReLU, LogSoftmax, ReLU, ReLU6, Sigmoid, SiLU, Softmax, Tanh
from .containers import Concat, Residual, Sequential
from .conv import Conv2d, ConvTranspose2d
from .convert import from_torch
from .frozen import FrozenBatchNorm2d, FrozenConv2d, FrozenGraph, FrozenModel, fold_batch_norm, freeze
from .graph import GraphModule
from .io import load, save
from .linear import Dropout, Dropout2d, Flatten, Linear
from .loss import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from .module import Module, Parameter
from .normalization import BatchNorm2d, GroupNorm, LayerNorm
from .optim import SGD, Adam, AdamW
from .pooling import AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, MaxPool2d, MaxUnpool2d, Upsample, ZeroPad2d

__all__ = [
    "Parameter",
    "Module",
    "Conv2d",
    "ConvTranspose2d",
    "MaxPool2d",
    "MaxUnpool2d",
    "Upsample",
    "AvgPool2d",
    "BatchNorm2d",
    "ReLU",
    "ReLU6",
    "LeakyReLU",
    "ELU",
    "GELU",
    "SiLU",
    "Sigmoid",
    "Tanh",
    "Hardswish",
    "Identity",
    "AdaptiveAvgPool2d",
    "Residual",
    "Concat",
    "AdaptiveMaxPool2d",
    "ZeroPad2d",
    "Dropout2d",
    "GroupNorm",
    "LayerNorm",
    "Softmax",
    "LogSoftmax",
    "MSELoss",
    "BCEWithLogitsLoss",
    "Dropout",
    "Flatten",
    "Linear",
    "Sequential",
    "CrossEntropyLoss",
    "SGD",
    "Adam",
    "AdamW",
    "from_torch",
    "fold_batch_norm",
    "freeze",
    "FrozenConv2d",
    "FrozenBatchNorm2d",
    "FrozenModel",
    "GraphModule",
    "FrozenGraph",
    "save",
    "load",
]
