"""torch models written the way people write them (their own ``forward``), for the benchmarks and the tests.

torchvision is not a dependency (nor installable beside this torch build), so its ResNet, MobileNetV2 and the usual
U-Net, DenseNet and squeeze-and-excitation blocks are written out here, with torchvision's layer names and forward
code: shortcuts added with ``+=``, a ``ReLU`` module used twice, ``torch.flatten``, ``torch.cat`` skips,
``F.interpolate``, ``x * s.view(...)``.  Imported only where torch is.
"""

from __future__ import annotations


def zoo(torch):
    """Builders by name: ``resnet18``, ``resnet50``, ``mobilenet_v2``, ``unet``, ``densenet_block``, ``se_block``."""
    nn = torch.nn
    F = torch.nn.functional

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = downsample

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            if self.downsample is not None:
                identity = self.downsample(x)
            out += identity
            return self.relu(out)

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            if self.downsample is not None:
                identity = self.downsample(x)
            out = out + identity
            return self.relu(out)

    class ResNet(nn.Module):
        def __init__(self, block, layers, num_classes=1000, width=64):
            super().__init__()
            self.inplanes = width
            self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            self.layer1 = self._make_layer(block, width, layers[0])
            self.layer2 = self._make_layer(block, 2 * width, layers[1], 2)
            self.layer3 = self._make_layer(block, 4 * width, layers[2], 2)
            self.layer4 = self._make_layer(block, 8 * width, layers[3], 2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(8 * width * block.expansion, num_classes)

        def _make_layer(self, block, planes, blocks, stride=1):
            downsample = None
            if stride != 1 or self.inplanes != planes * block.expansion:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                    nn.BatchNorm2d(planes * block.expansion),
                )
            layers = [block(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes * block.expansion
            layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
            return nn.Sequential(*layers)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            x = torch.flatten(self.avgpool(x), 1)
            return self.fc(x)

    class InvertedResidual(nn.Module):
        def __init__(self, inp, oup, stride, expand_ratio):
            super().__init__()
            hidden = inp * expand_ratio
            self.use_res_connect = stride == 1 and inp == oup
            layers = []
            if expand_ratio != 1:
                layers += [nn.Conv2d(inp, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
            layers += [
                nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                nn.ReLU6(inplace=True), nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup),
            ]  # fmt: skip
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            if self.use_res_connect:
                return x + self.conv(x)
            return self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self, num_classes=1000, width=1.0):
            super().__init__()

            def c(v):
                return max(8, int(v * width + 4) // 8 * 8)

            inp = c(32)
            features = [nn.Sequential(nn.Conv2d(3, inp, 3, 2, 1, bias=False), nn.BatchNorm2d(inp), nn.ReLU6(True))]
            for t, ch, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                                (6, 160, 3, 2), (6, 320, 1, 1)):  # fmt: skip
                for i in range(n):
                    features.append(InvertedResidual(inp, c(ch), s if i == 0 else 1, t))
                    inp = c(ch)
            last = max(1280, c(1280))
            features.append(nn.Sequential(nn.Conv2d(inp, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(True)))
            self.features = nn.Sequential(*features)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

        def forward(self, x):
            x = self.features(x)
            x = F.adaptive_avg_pool2d(x, (1, 1))
            x = torch.flatten(x, 1)
            return self.classifier(x)

    class DoubleConv(nn.Sequential):
        def __init__(self, cin, cout):
            super().__init__(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            )  # fmt: skip

    class Up(nn.Module):
        """Upsampling by a transposed convolution, or bilinear interpolation then a 1x1 convolution."""

        def __init__(self, cin, cout, bilinear):
            super().__init__()
            self.bilinear = bilinear
            self.up = nn.Conv2d(cin, cin // 2, 1) if bilinear else nn.ConvTranspose2d(cin, cin // 2, 2, stride=2)
            self.conv = DoubleConv(cin, cout)

        def forward(self, x1, x2):
            if self.bilinear:
                x1 = self.up(F.interpolate(x1, scale_factor=2, mode="bilinear", align_corners=False))
            else:
                x1 = self.up(x1)
            return self.conv(torch.cat([x2, x1], dim=1))

    class UNet(nn.Module):
        def __init__(self, in_channels=3, num_classes=2, width=64, depth=4, bilinear=(False, True)):
            super().__init__()
            chans = [width * 2**i for i in range(depth + 1)]
            self.inc = DoubleConv(in_channels, chans[0])
            self.downs = nn.ModuleList(DoubleConv(chans[i], chans[i + 1]) for i in range(depth))
            self.ups = nn.ModuleList(Up(chans[i + 1], chans[i], bilinear[i % len(bilinear)])
                                     for i in reversed(range(depth)))  # fmt: skip
            self.outc = nn.Conv2d(chans[0], num_classes, 1)

        def forward(self, x):
            skips = [self.inc(x)]
            for down in self.downs:
                skips.append(down(F.max_pool2d(skips[-1], 2)))
            x = skips.pop()
            for up in self.ups:
                x = up(x, skips.pop())
            return self.outc(x)

    class DenseLayer(nn.Module):
        def __init__(self, cin, growth):
            super().__init__()
            self.norm1 = nn.BatchNorm2d(cin)
            self.conv1 = nn.Conv2d(cin, 4 * growth, 1, bias=False)
            self.norm2 = nn.BatchNorm2d(4 * growth)
            self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

        def forward(self, features):
            x = torch.cat(features, 1)
            x = self.conv1(F.relu(self.norm1(x)))
            return self.conv2(F.relu(self.norm2(x)))

    class DenseBlock(nn.Module):
        def __init__(self, cin=16, growth=8, layers=3):
            super().__init__()
            self.layers = nn.ModuleList(DenseLayer(cin + i * growth, growth) for i in range(layers))

        def forward(self, x):
            features = [x]
            for layer in self.layers:
                features.append(layer(features))
            return torch.cat(features, 1)

    class SEBlock(nn.Module):
        """A residual block with squeeze-and-excitation, as in SE-ResNet: the channels scaled by a gate."""

        def __init__(self, c=16, reduction=4):
            super().__init__()
            self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(c)
            self.avg_pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Sequential(nn.Linear(c, c // reduction), nn.ReLU(inplace=True), nn.Linear(c // reduction, c),
                                    nn.Sigmoid())  # fmt: skip

        def forward(self, x):
            out = self.bn(self.conv(x))
            b, c, _, _ = out.size()
            y = self.fc(self.avg_pool(out).view(b, c)).view(b, c, 1, 1)
            out = out * y.expand_as(out)
            return F.relu(out + x)

    return {
        "resnet18": lambda **kw: ResNet(BasicBlock, (2, 2, 2, 2), **kw),
        "resnet50": lambda **kw: ResNet(Bottleneck, (3, 4, 6, 3), **kw),
        "mobilenet_v2": MobileNetV2,
        "unet": UNet,
        "densenet_block": DenseBlock,
        "se_block": SEBlock,
    }


def randomize_batch_norms(torch, model, seed=0):
    """Non-trivial running statistics and affine parameters for every batch norm (fresh ones are 0 and 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model
