"""Hand-crafted baselines under the same protocol as the searched networks.

- ``resnet18``: ResNet-18 with the CIFAR stem (3x3 conv, no max pool), as in adversarial-training
  papers (Madry et al.; Rice et al.).
- ``resnet18_imagenet``: torchvision's ImageNet-style ResNet-18 (7x7 stride-2 stem + max pool),
  which is the network the ARNAS paper's Table 1 counted at 32x32.
- ``wrn34_10``: WideResNet-34-10 (Zagoruyko & Komodakis), the usual robust-training baseline.

For these families ``init_channels`` is the width of the first stage (64 for ResNet-18, 160 = 16x10
for WRN-34-10) and, for the WideResNet, ``layers`` is the depth; torchvision's ResNet-18 has fixed
widths. Smaller values give the tiny versions the tests use.
"""

from __future__ import annotations

import torch
from torch import nn

from arnas_zoo.config import ModelConfig
from arnas_zoo.errors import ConfigError
from arnas_zoo.models.base import ZooModel, input_normalization, register_family
from arnas_zoo.ops import PointwiseConv2d


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(PointwiseConv2d(c_in, c_out, stride=stride), nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet18(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width: int = 64):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=False)
        )
        layers = []
        c_in = width
        for c_out, stride in ((width, 1), (2 * width, 2), (4 * width, 2), (8 * width, 2)):
            layers += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


class WideBlock(nn.Module):
    """Pre-activation wide residual block."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = PointwiseConv2d(c_in, c_out, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(x))
        residual = x if self.shortcut is None else self.shortcut(out)
        out = self.conv2(self.relu2(self.bn2(self.conv1(out))))
        return out + residual


class WideResNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, depth: int = 34, width: int = 160):
        super().__init__()
        n = (depth - 4) // 6
        widths = [16, width, 2 * width, 4 * width]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        blocks = []
        c_in = widths[0]
        for c_out, stride in zip(widths[1:], (1, 2, 2)):
            for j in range(n):
                blocks.append(WideBlock(c_in, c_out, stride if j == 0 else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(c_in)
        self.relu = nn.ReLU(inplace=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn(self.blocks(self.conv1(x))))
        return self.fc(self.pool(out).flatten(1))


class BaselineNetwork(ZooModel):
    """A hand-crafted network behind the zoo's interface (normalization inside, logits out)."""

    def __init__(self, config: ModelConfig, body: nn.Module):
        super().__init__()
        self.config = config
        self.normalize = input_normalization(config)
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalize(x))


def _resnet18_params(config: ModelConfig) -> int:
    w = config.init_channels
    return 2_800 * w * w + 9 * config.in_channels * w + 8 * w * config.num_classes + 100 * w


@register_family("resnet18", estimate_params=_resnet18_params, description="ResNet-18, CIFAR stem")
def build_resnet18(config: ModelConfig) -> ZooModel:
    return BaselineNetwork(config, CifarResNet18(config.in_channels, config.num_classes, config.init_channels))


def _imagenet_params(config: ModelConfig) -> int:
    return 11_200_000 + 49 * 64 * config.in_channels + 513 * config.num_classes


@register_family("resnet18_imagenet", estimate_params=_imagenet_params, description="torchvision ResNet-18")
def build_resnet18_imagenet(config: ModelConfig) -> ZooModel:
    from torchvision.models import resnet18

    net = resnet18(weights=None, num_classes=config.num_classes)
    if config.in_channels != 3:
        net.conv1 = nn.Conv2d(config.in_channels, 64, 7, stride=2, padding=3, bias=False)
    return BaselineNetwork(config, net)


def _check_wrn(config: ModelConfig) -> None:
    if (config.layers - 4) % 6 or config.layers < 10:
        raise ConfigError(f"layers: a WideResNet needs depth 6n+4 with n >= 1 (e.g. 34), got {config.layers}")


def _wrn_params(config: ModelConfig) -> int:
    n, w = (config.layers - 4) // 6, config.init_channels
    return n * 2 * 9 * (w * w + 4 * w * w + 16 * w * w) + 9 * 16 * (config.in_channels + w) + 4 * w * config.num_classes


@register_family("wrn34_10", check=_check_wrn, estimate_params=_wrn_params, description="WideResNet (pre-activation)")
def build_wide_resnet(config: ModelConfig) -> ZooModel:
    return BaselineNetwork(
        config, WideResNet(config.in_channels, config.num_classes, config.layers, config.init_channels)
    )
