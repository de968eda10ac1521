"""Parameter and FLOP counts reproduce PROTOCOLS.md's table (ARNAS paper, Table 1 convention)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from arnas_zoo.registry import create_model
from arnas_zoo.stats import count_ops, model_stats

# (params without aux, params with aux or None, paper-convention FLOPs, conv+linear MACs), in millions,
# from ../shared/reference/PROTOCOLS.md ("Parameter and FLOP counts", input 1x3x32x32, 10 classes)
PROTOCOL_TABLE = {
    "arnas": (4.5204, 4.9886, 1269.67, 1240.15),
    "darts_v2": (3.3493, 3.8258, 547.44, 528.36),
    "pdarts": (3.4338, 3.9102, 550.75, 532.17),
    "advrush": (4.1580, 4.6345, 668.53, 645.34),
    "racl": (3.5712, 4.0476, 568.86, 549.98),
    "robnet_free": (5.4398, None, 800.40, 780.18),
    "darts_v1": (3.1694, 3.6458, 518.90, 500.99),
    "robnet_large": (6.8427, None, 1058.15, 1030.34),
}


def rel(a: float, b: float) -> float:
    return abs(a - b) / b


@pytest.mark.parametrize("name", sorted(PROTOCOL_TABLE))
def test_protocol_table_within_0p1_percent(name: str) -> None:
    params, params_aux, flops, macs = PROTOCOL_TABLE[name]
    stats = model_stats(create_model(name), (3, 32, 32))
    assert rel(stats.params / 1e6, params) < 1e-3
    assert rel(stats.params_with_aux / 1e6, params_aux if params_aux is not None else params) < 1e-3
    assert rel(stats.flops_paper / 1e6, flops) < 1e-3
    assert rel(stats.macs / 1e6, macs) < 1e-3


def test_resnet18_imagenet_style_matches_table1_params() -> None:
    # Table 1 lists ResNet-18 at 11.2M parameters: torchvision's ImageNet-style network, 10-class head
    stats = model_stats(create_model("resnet18_imagenet"), (3, 32, 32))
    assert round(stats.params / 1e6, 1) == 11.2


def test_counting_convention_on_a_hand_built_net() -> None:
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=True),  # 4*8*8 outputs * (27 + 1)
        nn.BatchNorm2d(4),  # 256 * 2 (affine)
        nn.ReLU(),  # 256
        nn.MaxPool2d(2),  # input elements: 256
        nn.BatchNorm2d(4, affine=False),  # 64 * 1
        nn.AdaptiveAvgPool2d(1),  # free
        nn.Flatten(),
        nn.Linear(4, 3),  # 12 + 3
    )
    macs, flops = count_ops(net, (3, 8, 8))
    assert macs == 256 * 27 + 12
    assert flops == 256 * 28 + 512 + 256 + 256 + 64 + 15


def test_counting_restores_training_mode() -> None:
    model = create_model("arnas", init_channels=4, layers=5).train()
    model_stats(model, (3, 32, 32))
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert torch.is_grad_enabled()
