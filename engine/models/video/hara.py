"""ResNet-50 R3D and R(2+1)D of Hara et al. (kenshohara/3D-ResNets-PyTorch, models/resnet.py and
models/resnet2p1d.py) with that repository's module names and shapes, so its checkpoints load strictly."""

from __future__ import annotations

from torch import Tensor, nn

BLOCK_PLANES = (64, 128, 256, 512)
BLOCKS_50 = (3, 4, 6, 3)
EXPANSION = 4


def _add_conv(owner: nn.Module, name: str, planes: tuple[int, int], kernel: tuple[int, int],
              stride: tuple[int, int], factorized: bool) -> list[str]:
    """Register conv{name}/bn{name} (a t x k x k conv) on `owner`, or its (2+1)D split conv{name}_s/bn{name}_s,
    conv{name}_t/bn{name}_t with Hara's mid width; return the registered suffixes in forward order."""
    (cin, cout), (t, k), (t_stride, s_stride) = planes, kernel, stride
    if not factorized:
        convs = {name: nn.Conv3d(cin, cout, (t, k, k), (t_stride, s_stride, s_stride), (t // 2, k // 2, k // 2),
                                 bias=False)}
    else:
        mid = (cin * cout * t * k * k) // (cin * k * k + t * cout)
        convs = {f"{name}_s": nn.Conv3d(cin, mid, (1, k, k), (1, s_stride, s_stride), (0, k // 2, k // 2), bias=False),
                 f"{name}_t": nn.Conv3d(mid, cout, (t, 1, 1), (t_stride, 1, 1), (t // 2, 0, 0), bias=False)}
    for suffix, conv in convs.items():
        owner.add_module(f"conv{suffix}", conv)
        owner.add_module(f"bn{suffix}", nn.BatchNorm3d(conv.out_channels))
    return list(convs)


def _conv_bn_relu(owner: nn.Module, suffixes: list[str], x: Tensor) -> Tensor:
    """conv -> bn -> ReLU through the named stages of `owner`."""
    for suffix in suffixes:
        x = owner.relu(getattr(owner, f"bn{suffix}")(getattr(owner, f"conv{suffix}")(x)))
    return x


class Bottleneck(nn.Module):
    """1x1x1 reduce, 3x3x3 (or its (2+1)D split) with the stride, 1x1x1 expand x4, residual add."""

    def __init__(self, in_planes: int, planes: int, stride: int, factorized: bool) -> None:
        super().__init__()
        self.stages = _add_conv(self, "1", (in_planes, planes), (1, 1), (1, 1), False)
        self.stages += _add_conv(self, "2", (planes, planes), (3, 3), (stride, stride), factorized)
        _add_conv(self, "3", (planes, planes * EXPANSION), (1, 1), (1, 1), False)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_planes != planes * EXPANSION:  # shortcut type 'B'
            self.downsample = nn.Sequential(nn.Conv3d(in_planes, planes * EXPANSION, 1, stride, bias=False),
                                            nn.BatchNorm3d(planes * EXPANSION))

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn3(self.conv3(_conv_bn_relu(self, self.stages, x)))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class HaraResNet(nn.Module):
    """Hara's ResNet with Bottleneck blocks: 7x7x7 stem (stride 1,2,2), max pool, layer1..4, global pool, fc."""

    def __init__(self, blocks: tuple[int, ...], num_classes: int, factorized: bool) -> None:
        super().__init__()
        self.stem = _add_conv(self, "1", (3, BLOCK_PLANES[0]), (7, 7), (1, 2), factorized)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        in_planes = BLOCK_PLANES[0]
        for index, (planes, count) in enumerate(zip(BLOCK_PLANES, blocks)):
            stride = 1 if index == 0 else 2
            layer = []
            for block in range(count):
                layer.append(Bottleneck(in_planes, planes, stride if block == 0 else 1, factorized))
                in_planes = planes * EXPANSION
            self.add_module(f"layer{index + 1}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.fc = nn.Linear(in_planes, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm3d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(_conv_bn_relu(self, self.stem, x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def hara_r3d50(num_classes: int) -> HaraResNet:
    """Hara's 3D ResNet-50 (`--model resnet --model_depth 50`, defaults conv1_t_size 7, shortcut B)."""
    return HaraResNet(BLOCKS_50, num_classes, factorized=False)


def hara_r2plus1d50(num_classes: int) -> HaraResNet:
    """Hara's R(2+1)D-50 (`--model resnet2p1d --model_depth 50`, same defaults)."""
    return HaraResNet(BLOCKS_50, num_classes, factorized=True)
