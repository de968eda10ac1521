"""NSGA-Net macro networks (:mod:`arnas_zoo.macro`): phases of 3x3 conv-BN-ReLU nodes wired by bits."""

from __future__ import annotations

import torch
from torch import nn

from arnas_zoo.config import ModelConfig
from arnas_zoo.errors import ConfigError, GenotypeError
from arnas_zoo.macro import MacroGenotype
from arnas_zoo.models.base import ZooModel, input_normalization, register_family


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class Phase(nn.Module):
    """Input node -> the active nodes of the bit string's DAG -> output node (+ the residual bit)."""

    def __init__(self, genotype: MacroGenotype, index: int, c_in: int, channels: int):
        super().__init__()
        edges, self.residual = genotype.connections(index)
        touched = {i for e in edges for i in e}
        self.active = sorted(touched)  # nodes with neither an input nor an output bit are dropped
        self.inputs = {j: [i for i, jj in edges if jj == j] for j in self.active}
        has_out = {i for i, _ in edges}
        self.leaves = [j for j in self.active if j not in has_out]
        self.input_node = conv_bn_relu(c_in, channels)
        self.nodes = nn.ModuleDict({str(j): conv_bn_relu(channels, channels) for j in self.active})
        self.output_node = conv_bn_relu(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_node(x)
        if not self.active:
            return self.output_node(x)
        outs: dict[int, torch.Tensor] = {}
        for j in self.active:
            preds = self.inputs[j]
            h = x if not preds else sum((outs[i] for i in preds[1:]), outs[preds[0]])
            outs[j] = self.nodes[str(j)](h)
        y = sum((outs[j] for j in self.leaves[1:]), outs[self.leaves[0]])
        if self.residual:
            y = y + x
        return self.output_node(y)


def genotype_of(config: ModelConfig) -> MacroGenotype:
    raw = config.extra.get("macro_genotype") if config.extra else None
    if raw is None:
        raise ConfigError("arch 'macro' needs extra.macro_genotype (a macro genotype JSON object)")
    try:
        return MacroGenotype.from_dict(dict(raw), "extra.macro_genotype")
    except GenotypeError as exc:
        raise ConfigError(str(exc)) from None


class MacroNetwork(ZooModel):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        genotype = genotype_of(config)
        self.normalize = input_normalization(config)
        phases, c_in = [], config.in_channels
        for p in range(len(genotype.phases)):
            channels = config.init_channels * 2**p
            phases.append(Phase(genotype, p, c_in, channels))
            c_in = channels
        self.phases = nn.ModuleList(phases)
        self.pool = nn.MaxPool2d(2)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_in, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        for p, phase in enumerate(self.phases):
            if p:
                x = self.pool(x)
            x = phase(x)
        return self.classifier(self.global_pool(x).flatten(1))


def _check(config: ModelConfig) -> None:
    genotype = genotype_of(config)
    if config.input_size < 2 ** (len(genotype.phases) - 1):
        raise ConfigError(f"input_size {config.input_size} is too small for {len(genotype.phases)} phases")


def _estimate(config: ModelConfig) -> int:
    genotype = genotype_of(config)
    total, c_in = 0, config.in_channels
    for p in range(len(genotype.phases)):
        c = config.init_channels * 2**p
        edges, _ = genotype.connections(p)
        nodes = len({i for e in edges for i in e})
        total += 9 * c_in * c + 2 * c + (nodes + 1) * (9 * c * c + 2 * c)
        c_in = c
    return total + c_in * config.num_classes + config.num_classes


@register_family("macro", check=_check, estimate_params=_estimate, description="NSGA-Net macro phases (RoCo-NAS)")
def build_macro(config: ModelConfig) -> ZooModel:
    return MacroNetwork(config)
