"""RobNets (Guo et al., CVPR 2020): one-shot adversarial supernet, sampled architectures, analyses, FSP.

This module: the codes, the supernet, weight inheritance and FSP. :mod:`search.robnet.run`: the
configuration, the stages and the pipeline; :mod:`search.robnet.analysis`: analyses and export.

The method, as this module builds it:

1. **Supernet** (:class:`RobNetSupernet`): the RobNet macro (cells of 4 nodes, 14 edges, every edge
   may carry a non-affine ``sep_conv_3x3`` and/or an identity; FactorizedReduce on the stride-2 edges
   of reduction cells). An architecture is a binary code ``(cells, 14, 2)``: ``[..., 0]`` the
   convolution bit, ``[..., 1]`` the identity bit (RobNet's two-bit strings are ``f"{id}{conv}"``:
   '01' conv, '10' identity, '11' both). One code row shared by all cells ("cell-based") or one per
   cell ("cell-free"). Training samples a code per step and runs only its ops (path sampling), with
   PGD crafted against the sampled sub-network.
2. **Scoring and finetuning**: ``K`` sampled codes (uniform, or within a budget of convolutions) are
   scored on the supernet (clean and PGD accuracy without finetuning, the FSP distances per cell),
   optionally filtered by FSP, then each inherits the supernet's weights
   (:func:`inherited_state`) and is finetuned briefly with adversarial training. Both are jobs
   (:mod:`arnas_zoo.jobs`): a killed run never recomputes a finished architecture, and ``--backend
   ray`` spreads them over a cluster.
3. **Analyses** (:func:`analyze`): density vs PGD accuracy, convolutions on direct vs skip edges, a
   linear classifier on the codes of the top vs the bottom architectures, budgets, FSP distance vs
   the clean-adversarial gap, with Spearman correlations and their p-values; plots and a table.
4. **Export**: the best architectures as genotype JSON (space ``robnet``) that ``create_model`` and
   ``arnas-zoo info`` accept; a cell-based genotype gets the RobNet macro (20 cells, C=36).

Choices where the paper is silent (stated in docs/search.md): a *direct* edge joins consecutive
states (s1 -> n0, n0 -> n1, n1 -> n2, n2 -> n3), every other edge is a *skip* edge; budgets count a
cell's convolutions: small <= 7, medium 8-10, large >= 11 (the paper: "smaller than 7", "between 8
and 10", "larger than 11"); the FSP input of a cell is its preprocessed second input (the previous
cell's output, C channels) and the output the cell's concatenated nodes, on normal cells only (a
reduction cell's input and output differ in size); an FSP score is the mean distance over the deeper
half of the normal cells (the paper: deeper cells carry the signal).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np
import torch
from torch import nn

from arnas_zoo.config import ModelConfig
from arnas_zoo.errors import ConfigError, GenotypeError
from arnas_zoo.genotype import NUM_CELL_INPUTS, Genotype, cell_from_robnet_code
from arnas_zoo.models.base import input_normalization
from arnas_zoo.ops import FactorizedReduce, Identity, ReLUConvBN, SepConv, Zero

NODES = 4
EDGES = sum(NUM_CELL_INPUTS + i for i in range(NODES))  # 14
#: (source state, node) of every edge, in RobNet's order (node by node, sources ascending)
EDGE_LIST: tuple[tuple[int, int], ...] = tuple(
    (src, node) for node in range(NODES) for src in range(NUM_CELL_INPUTS + node)
)
#: edges joining consecutive states: s1 -> n0, n0 -> n1, n1 -> n2, n2 -> n3
DIRECT = np.array([src == node + NUM_CELL_INPUTS - 1 for src, node in EDGE_LIST])
BUDGETS = {"small": (0, 7), "medium": (8, 10), "large": (11, EDGES), "any": (0, EDGES)}
STATE_SCHEMA = "arnas-zoo/robnet-supernet-state@1"
CODE_STREAM, SAMPLE_STREAM, FINETUNE_STREAM = 11, 12, 13


# ---- codes -------------------------------------------------------------------------------------------
def code_strings(code: np.ndarray) -> list[list[str]]:
    """``(cells, 14, 2)`` bits -> RobNet's two-bit strings per cell ('01' conv, '10' identity, '11' both)."""
    return [[f"{int(e[1])}{int(e[0])}" for e in cell] for cell in np.asarray(code)]


def code_from_strings(rows: list[list[str]]) -> np.ndarray:
    out = np.zeros((len(rows), EDGES, 2), dtype=np.uint8)
    for c, row in enumerate(rows):
        if len(row) != EDGES:
            raise GenotypeError(f"cell {c}: expected {EDGES} two-bit codes, got {len(row)}")
        for e, s in enumerate(row):
            if s not in ("00", "01", "10", "11"):
                raise GenotypeError(f"cell {c} edge {e}: expected a two-bit code, got {s!r}")
            out[c, e] = (int(s[1]), int(s[0]))
    return out


def code_genotype(code: np.ndarray, name: str = "robnet-search", notes: str | None = None) -> Genotype:
    """A code -> a RobNet-space genotype: one row -> cell ``shared`` (cell-based), else ``cell0..``."""
    rows = code_strings(code)
    if len(rows) == 1:
        cells = {"shared": cell_from_robnet_code(rows[0], NODES)}
    else:
        cells = {f"cell{i}": cell_from_robnet_code(r, NODES) for i, r in enumerate(rows)}
    data: dict[str, Any] = {"space": "robnet", "name": name, "cells": cells}
    if notes:
        data["notes"] = notes
    return Genotype.from_dict(data)


def genotype_code(genotype: Genotype) -> np.ndarray:
    """The inverse of :func:`code_genotype` (cells in ``shared`` or ``cell0, cell1, ...`` order)."""
    names = list(genotype.cells)
    if names != ["shared"] and names != [f"cell{i}" for i in range(len(names))]:
        raise GenotypeError(f"{genotype.name}: expected cells 'shared' or 'cell0..', got {names[:4]}")
    index = {pair: e for e, pair in enumerate(EDGE_LIST)}
    out = np.zeros((len(names), EDGES, 2), dtype=np.uint8)
    for c, name in enumerate(names):
        for node, edges in enumerate(genotype.cells[name].nodes):
            for edge in edges:
                if edge.op == "none":
                    continue
                e = index[(edge.input, node)]
                if edge.op in ("sep_conv_3x3", "res_sep_conv_3x3"):
                    out[c, e, 0] = 1
                if edge.op in ("skip_connect", "res_sep_conv_3x3"):
                    out[c, e, 1] = 1
                if edge.op not in ("sep_conv_3x3", "res_sep_conv_3x3", "skip_connect"):
                    raise GenotypeError(f"{genotype.name}: op {edge.op!r} is not in the RobNet space")
    return out


def sample_code(gen: torch.Generator, cells: int, budget: str = "any") -> np.ndarray:
    """A uniform code; within a budget: a uniform convolution count in its range, then uniform edges."""
    if budget not in BUDGETS:
        raise ConfigError(f"budget: expected one of {sorted(BUDGETS)}, got {budget!r}")
    out = np.zeros((cells, EDGES, 2), dtype=np.uint8)
    for c in range(cells):
        if budget == "any":
            out[c] = torch.randint(0, 2, (EDGES, 2), generator=gen).numpy()
        else:
            low, high = BUDGETS[budget]
            k = int(torch.randint(low, high + 1, (1,), generator=gen))
            convs = torch.randperm(EDGES, generator=gen)[:k].numpy()
            out[c, convs, 0] = 1
            out[c, :, 1] = torch.randint(0, 2, (EDGES,), generator=gen).numpy()
    return out


def code_features(code: np.ndarray) -> dict[str, float]:
    """Density (Eq. 2), convolutions (all, on direct and on skip edges) per cell, averaged over cells."""
    code = np.asarray(code)
    convs = code[..., 0]
    return {
        "density": float(code.sum() / code.size),
        "convs": float(convs.sum(1).mean()),
        "direct_convs": float(convs[:, DIRECT].sum(1).mean()),
        "skip_convs": float(convs[:, ~DIRECT].sum(1).mean()),
        "direct_share": float(convs[:, DIRECT].sum() / max(convs.sum(), 1)),
    }


def budget_of(code: np.ndarray) -> str:
    n = code_features(code)["convs"]
    for name in ("small", "medium", "large"):
        low, high = BUDGETS[name]
        if n <= high:
            return name
    return "large"


# ---- the supernet ------------------------------------------------------------------------------------
class SuperEdge(nn.Module):
    """One edge with both of RobNet's ops; runs only those the current bits select."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.conv = SepConv(channels, channels, 3, stride, 1, affine=False)
        self.shortcut: nn.Module = Identity() if stride == 1 else FactorizedReduce(channels, channels, affine=False)

    def forward(self, x: torch.Tensor, bits: tuple[int, int]) -> torch.Tensor | None:
        out = None
        if bits[0]:
            out = self.conv(x)
        if bits[1]:
            s = self.shortcut(x)
            out = s if out is None else out + s
        return out


class SuperCell(nn.Module):
    def __init__(self, c_prev_prev: int, c_prev: int, channels: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_prev_prev, channels, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(c_prev_prev, channels, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(c_prev, channels, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList(
            SuperEdge(channels, 2 if reduction and src < NUM_CELL_INPUTS else 1) for src, _ in EDGE_LIST
        )
        self.zero = Zero(2 if reduction else 1)
        self.multiplier = NODES

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, code: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The cell's output and its preprocessed second input (the FSP input)."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        e = 0
        for node in range(NODES):
            total: torch.Tensor | None = None
            for src in range(NUM_CELL_INPUTS + node):
                h = self.edges[e](states[src], (int(code[e, 0]), int(code[e, 1])))
                e += 1
                if h is not None:
                    total = h if total is None else total + h
            states.append(total if total is not None else self.zero(states[0]))
        return torch.cat(states[NUM_CELL_INPUTS:], dim=1), states[1]


class RobNetSupernet(nn.Module):
    """The RobNet macro with every op on every edge; :meth:`set_code` picks the sub-network to run.

    Parameter names follow :class:`arnas_zoo.models.cells.CellNetwork` (``stem``, ``cells.i.preprocess*``,
    ``classifier``) so that :func:`inherited_state` maps them one to one.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.normalize = input_normalization(config)
        c_stem = config.stem_multiplier * config.init_channels
        self.stem = nn.Sequential(
            nn.Conv2d(config.in_channels, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem)
        )
        c_prev_prev, c_prev, reduction_prev = c_stem, c_stem, False
        reductions = config.reduction_layers()
        self.cells = nn.ModuleList()
        for i, channels in enumerate(config.layer_channels()):
            reduction = i in reductions
            cell = SuperCell(c_prev_prev, c_prev, channels, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, cell.multiplier * channels
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, config.num_classes)
        self.code = np.ones((1, EDGES, 2), dtype=np.uint8)
        self.fsp_pairs: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # set to [] to record

    @property
    def layers(self) -> int:
        return len(self.cells)

    def set_code(self, code: np.ndarray) -> None:
        code = np.asarray(code, dtype=np.uint8)
        if code.ndim != 3 or code.shape[1:] != (EDGES, 2) or code.shape[0] not in (1, self.layers):
            raise ConfigError(f"code: expected shape (1 or {self.layers}, {EDGES}, 2), got {code.shape}")
        self.code = code

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(self.normalize(x))
        for i, cell in enumerate(self.cells):
            row = self.code[0 if len(self.code) == 1 else i]
            out, cell_in = cell(s0, s1, row)
            if self.fsp_pairs is not None and not cell.reduction:
                self.fsp_pairs.append((cell_in, out))
            s0, s1 = s1, out
        return self.classifier(self.global_pool(s1).flatten(1))


def macro_config(
    *, init_channels: int, layers: int, in_channels: int, input_size: int, num_classes: int, **extra: Any
) -> ModelConfig:
    """The RobNet macro (registry ``robnet_large``) at this width, depth and input."""
    from arnas_zoo.registry import get_config

    return get_config("robnet_large").replace(
        init_channels=init_channels,
        layers=layers,
        in_channels=in_channels,
        input_size=input_size,
        num_classes=num_classes,
        **extra,
    )


def sampled_config(supernet_config: ModelConfig, code: np.ndarray, name: str = "robnet-sample") -> ModelConfig:
    """The evaluation config of ``code`` at the supernet's width and depth."""
    from arnas_zoo.registry import config_for_genotype

    genotype = code_genotype(code, name)
    keep = {f.name: getattr(supernet_config, f.name) for f in fields(ModelConfig)}
    for key in ("genotype", "name", "placement", "reduction_cell", "cell_types", "layers"):
        keep.pop(key, None)
    config = config_for_genotype(genotype, **keep)
    if len(code) == 1:
        config = config.replace(layers=supernet_config.layers)
    return config


def inherited_state(supernet: RobNetSupernet, code: np.ndarray) -> dict[str, torch.Tensor]:
    """The supernet's weights (and BatchNorm statistics) under the names of ``code``'s CellNetwork."""
    source = supernet.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        if not key.startswith("cells.") or ".edges." not in key:
            out[key] = value.clone()
    for i in range(supernet.layers):
        row = code[0 if len(code) == 1 else i]
        k = 0  # CellNetwork's op index: the cell's non-zero edges in order, a zero op for an empty node
        for node in range(NODES):
            edges = [e for e, (_, n) in enumerate(EDGE_LIST) if n == node]
            if not any(row[e].any() for e in edges):
                k += 1  # the explicit "none" op: no parameters
                continue
            for e in edges:
                conv, skip = int(row[e, 0]), int(row[e, 1])
                if not (conv or skip):
                    continue
                prefix = f"cells.{i}.edges.{e}."
                for key, value in source.items():
                    if not key.startswith(prefix):
                        continue
                    rest = key[len(prefix) :]
                    if conv and skip:  # ResSepConv: conv.* and shortcut.*
                        out[f"cells.{i}.ops.{k}.{rest}"] = value.clone()
                    elif conv and rest.startswith("conv."):
                        out[f"cells.{i}.ops.{k}.{rest[len('conv.') :]}"] = value.clone()
                    elif skip and rest.startswith("shortcut."):
                        out[f"cells.{i}.ops.{k}.{rest[len('shortcut.') :]}"] = value.clone()
                k += 1
    return out


def build_sampled(supernet: RobNetSupernet, code: np.ndarray, name: str = "robnet-sample") -> nn.Module:
    """``code``'s CellNetwork with the supernet's weights (strict load: every tensor accounted for)."""
    from arnas_zoo.models import build_model

    model = build_model(sampled_config(supernet.config, code, name))
    model.load_state_dict(inherited_state(supernet, code), strict=True)
    return model


# ---- FSP (paper Eq. 3-4) ---------------------------------------------------------------------------
def fsp_matrix(f_in: torch.Tensor, f_out: torch.Tensor) -> torch.Tensor:
    """G = sum_{s,t} F_in[:, s, t] F_out[:, s, t]^T / (h w), per sample: ``(N, C_in, C_out)``."""
    n, c_in, h, w = f_in.shape
    return torch.einsum("nihw,njhw->nij", f_in, f_out) / (h * w)


@torch.no_grad()
def fsp_distances(model: RobNetSupernet, x: torch.Tensor, x_adv: torch.Tensor) -> list[float]:
    """Per normal cell: mean over samples of ||G(x) - G(x')||_2^2 (squared Frobenius)."""
    was = model.training
    model.eval()
    try:
        model.fsp_pairs = []
        model(x)
        clean = [fsp_matrix(a, b) for a, b in model.fsp_pairs]
        model.fsp_pairs = []
        model(x_adv)
        adv = [fsp_matrix(a, b) for a, b in model.fsp_pairs]
    finally:
        model.fsp_pairs = None
        model.train(was)
    return [float((g - h).pow(2).sum((1, 2)).mean()) for g, h in zip(clean, adv)]


def fsp_score(distances: list[float]) -> float:
    """The mean FSP distance over the deeper half of the normal cells."""
    deep = distances[len(distances) // 2 :]
    return float(np.mean(deep)) if deep else float("nan")
