"""Reference architectures built from :mod:`fastconv.nn` layers: ResNet-18/50, MobileNetV2, a CIFAR VGG, a U-Net.

They are what ``fastconv bench --network`` takes every distinct convolution from, and ordinary trainable
models: torch's layer arrangement (torchvision's ResNet v1.5 with the stride on the 3x3 convolution,
MobileNetV2's inverted residuals, U-Net's "same"-padded 3x3 pairs with transposed-convolution upsampling),
so a torch model of the same architecture has the same layers in the same order, and shapes, parameter
counts and MACs are those of the published networks (ResNet-18: 11,689,512 parameters at 1000 classes).

Examples
--------
>>> import numpy as np
>>> from fastconv import models
>>> net = models.resnet18(num_classes=10, rng=0).eval()
>>> net(np.zeros((1, 3, 64, 64), np.float32)).shape
(1, 10)
>>> sum(p.data.size for p in models.resnet18().parameters())
11689512
"""

from __future__ import annotations

from . import nn
from .nn.module import _rng

__all__ = ["NETWORKS", "resnet18", "resnet50", "mobilenet_v2", "vgg_cifar", "unet", "conv_layers"]


def _rngs(rng):
    """A generator of per-layer seeds, so that layers differ and a model is reproducible from one seed."""
    r = _rng(rng)
    while True:
        yield int(r.integers(2**31))


def _conv_bn(seeds, cin, cout, k, stride=1, groups=1, relu=True, relu6=False):
    layers = [
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False, rng=next(seeds)),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU6() if relu6 else nn.ReLU())
    return layers


def _basic_block(seeds, cin, cout, stride):
    body = nn.Sequential(*_conv_bn(seeds, cin, cout, 3, stride), *_conv_bn(seeds, cout, cout, 3, relu=False))
    short = None
    if stride != 1 or cin != cout:
        short = nn.Sequential(*_conv_bn(seeds, cin, cout, 1, stride, relu=False))
    return [nn.Residual(body, short), nn.ReLU()]


def _bottleneck(seeds, cin, width, stride):
    cout = 4 * width
    body = nn.Sequential(
        *_conv_bn(seeds, cin, width, 1), *_conv_bn(seeds, width, width, 3, stride),
        *_conv_bn(seeds, width, cout, 1, relu=False),
    )  # fmt: skip
    short = None
    if stride != 1 or cin != cout:
        short = nn.Sequential(*_conv_bn(seeds, cin, cout, 1, stride, relu=False))
    return [nn.Residual(body, short), nn.ReLU()]


def _resnet(block, depths, expansion, num_classes, rng):
    seeds = _rngs(rng)
    layers = [*_conv_bn(seeds, 3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for stage, depth in enumerate(depths):
        width = 64 * 2**stage
        for i in range(depth):
            layers += block(seeds, cin, width, 2 if stage > 0 and i == 0 else 1)
            cin = width * expansion
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes, rng=next(seeds))]
    return nn.Sequential(*layers)


def resnet18(num_classes=1000, *, rng=None) -> nn.Sequential:
    """ResNet-18 (torchvision's arrangement): 3x224x224 images to ``num_classes`` logits.

    Parameters
    ----------
    num_classes : int
        Outputs of the final linear layer.
    rng : int or numpy.random.Generator, optional
        Seeds the weights (torch's initialisation rules, layer by layer).

    Returns
    -------
    fastconv.nn.Sequential
        In training mode, as every new model.
    """
    return _resnet(_basic_block, (2, 2, 2, 2), 1, num_classes, rng)


def resnet50(num_classes=1000, *, rng=None) -> nn.Sequential:
    """ResNet-50 v1.5 (the stride on each stage's first 3x3 convolution): 3x224x224 images to logits.

    Parameters and returns as :func:`resnet18`.
    """
    return _resnet(_bottleneck, (3, 4, 6, 3), 4, num_classes, rng)


def mobilenet_v2(num_classes=1000, *, rng=None) -> nn.Sequential:
    """MobileNetV2 (width 1.0): inverted residuals of 1x1 expansion, 3x3 depthwise, 1x1 projection.

    Parameters and returns as :func:`resnet18`.
    """
    seeds = _rngs(rng)
    layers = _conv_bn(seeds, 3, 32, 3, 2, relu6=True)
    cin = 32
    # (expansion, output channels, repeats, first stride) of the paper's table 2
    for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                       (6, 320, 1, 1)):  # fmt: skip
        for i in range(n):
            stride, hidden = s if i == 0 else 1, cin * t
            body = [] if t == 1 else _conv_bn(seeds, cin, hidden, 1, relu6=True)
            body += _conv_bn(seeds, hidden, hidden, 3, stride, groups=hidden, relu6=True)
            body += _conv_bn(seeds, hidden, c, 1, relu=False)
            if stride == 1 and cin == c:
                layers.append(nn.Residual(nn.Sequential(*body)))
            else:
                layers.extend(body)
            cin = c
    layers += _conv_bn(seeds, cin, 1280, 1, relu6=True)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(1280, num_classes, rng=next(seeds))]
    return nn.Sequential(*layers)


def vgg_cifar(num_classes=10, *, rng=None) -> nn.Sequential:
    """VGG-16 with batch norm for 3x32x32 images (CIFAR): thirteen 3x3 convolutions, five 2x2 max pools.

    Parameters and returns as :func:`resnet18`.
    """
    seeds = _rngs(rng)
    layers, cin = [], 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1, rng=next(seeds)), nn.BatchNorm2d(v), nn.ReLU()]
            cin = v
    layers += [nn.Flatten(), nn.Linear(512, num_classes, rng=next(seeds))]
    return nn.Sequential(*layers)


def unet(in_channels=3, num_classes=2, *, width=64, depth=4, rng=None) -> nn.Sequential:
    """U-Net (Ronneberger et al.) with "same" padding: ``depth`` 2x2 max pools down, as many 2x2/2
    transposed convolutions up, each level's encoder output concatenated before its decoder (a
    :class:`fastconv.nn.Concat` of ``[x, up(deeper(pool(x)))]``), then a 1x1 convolution to
    ``num_classes`` maps of the input's size.  Inputs need sides divisible by ``2**depth``.

    Parameters
    ----------
    in_channels, num_classes : int
        Input and output channels.
    width : int
        Channels of the first level (doubling at each level below: 64 ... 1024 by default).
    depth : int
        Number of poolings.
    rng : int or numpy.random.Generator, optional
        Seeds the weights.

    Returns
    -------
    fastconv.nn.Sequential
    """
    seeds = _rngs(rng)

    def pair(cin, c):
        return [*_conv_bn(seeds, cin, c, 3), *_conv_bn(seeds, c, c, 3)]

    def level(cin, c, d):
        enc = pair(cin, c)
        if d == 0:
            return nn.Sequential(*enc)
        deeper = level(c, 2 * c, d - 1)
        up = nn.ConvTranspose2d(2 * c, c, 2, stride=2, rng=next(seeds))
        return nn.Sequential(*enc, nn.Concat(nn.Sequential(nn.MaxPool2d(2), deeper, up)), *pair(2 * c, c))

    return nn.Sequential(level(in_channels, width, depth), nn.Conv2d(width, num_classes, 1, rng=next(seeds)))


# name -> (builder, input shape (C, H, W)) of the networks `fastconv bench --network` knows
NETWORKS = {
    "resnet18": (resnet18, (3, 224, 224)),
    "resnet50": (resnet50, (3, 224, 224)),
    "mobilenet_v2": (mobilenet_v2, (3, 224, 224)),
    "vgg_cifar": (vgg_cifar, (3, 32, 32)),
    "unet": (unet, (3, 256, 256)),
}


def conv_layers(model, input_shape):
    """Every distinct convolution of a model, in order of first use, with its input shape and count.

    Parameters
    ----------
    model : fastconv.layers.Layer
        Any model :func:`fastconv.summary` walks (``fastconv.nn`` models included).
    input_shape : tuple of int
        ``(C, H, W)``.

    Returns
    -------
    list of (name, layer, input_shape, count)
        ``name``: the first layer's path in the model; ``count``: how many layers share that geometry and
        input shape.  Transposed convolutions are included.

    Examples
    --------
    >>> from fastconv import models
    >>> rows = models.conv_layers(models.resnet18(), (3, 224, 224))
    >>> len(rows), rows[0][2], sum(r[3] for r in rows)
    (11, (3, 224, 224), 20)
    """
    from . import layers as L

    seen, rows = {}, []
    if not isinstance(model, L.Sequential):
        model = L.Sequential(model)
    for name, layer, in_shape, _ in model.walk(tuple(input_shape)):
        if not isinstance(layer, (L.Conv2d, L.ConvTranspose2d)):
            continue
        key = (type(layer).__name__, repr(layer).split("(", 1)[1], tuple(in_shape))
        if key in seen:
            rows[seen[key]][3] += 1
            continue
        seen[key] = len(rows)
        rows.append([name, layer, tuple(in_shape), 1])
    return [tuple(r) for r in rows]
