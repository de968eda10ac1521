"""RobNets (Guo et al., CVPR 2020): one-shot adversarial supernet, sampled architectures, analyses, FSP.

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

import csv
import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from arnas_zoo.attacks import pgd
from arnas_zoo.config import ModelConfig
from arnas_zoo.errors import ConfigError, GenotypeError
from arnas_zoo.genotype import NUM_CELL_INPUTS, Genotype, cell_from_robnet_code
from arnas_zoo.models.base import input_normalization
from arnas_zoo.ops import FactorizedReduce, Identity, ReLUConvBN, SepConv, Zero
from arnas_zoo.runs import generator, seed_for

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


# ---- configuration -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RobNetConfig:
    name: str = "robnet"
    dataset: str = "cifar10"
    data_dir: str | None = None
    n_images: int | None = None  # first rows of the train split (None: all)
    resize: int | None = None
    holdout: int = 1000  # the last rows: never trained on; scores every architecture
    cell_free: bool = False
    init_channels: int = 16
    layers: int = 8
    seed: int = 0
    # supernet training (paper Sec. 3.3: PGD-7, step 0.01, eps 8/255)
    epochs: int = 50
    steps_per_epoch: int | None = None
    batch_size: int = 128
    lr: float = 0.1
    lr_min: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    grad_clip: float = 5.0
    eps: float = 8 / 255
    step_size: float = 0.01
    pgd_steps: int = 7
    attack_bn: str = "batch"
    # sampling, scoring, finetuning
    samples: int = 1000
    budget: str = "any"
    fsp_keep: float = 1.0  # the fraction with the lowest FSP score that is finetuned
    finetune_epochs: float = 3.0  # passes over the training rows (paper: 3 epochs)
    finetune_lr: float = 0.01
    eval_n: int = 500
    eval_steps: int = 20  # PGD steps when scoring (eps and step size as in training)
    fsp_n: int = 64
    top_k: int = 5

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RobNetConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"robnet config: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**data)

    def with_overrides(self, pairs: list[str] | tuple[str, ...]) -> RobNetConfig:
        types = {f.name: f.type for f in fields(self)}
        changes: dict[str, Any] = {}
        for pair in pairs:
            key, sep, text = pair.partition("=")
            if not sep or key not in types:
                raise ConfigError(f"--set {pair!r}: expected KEY=VALUE with KEY in {sorted(types)}")
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = text
            if text in ("none", "null"):
                value = None
            changes[key] = value
        return replace(self, **changes)

    def validate(self) -> None:
        if self.budget not in BUDGETS:
            raise ConfigError(f"budget: expected one of {sorted(BUDGETS)}, got {self.budget!r}")
        if not 0.0 < self.fsp_keep <= 1.0:
            raise ConfigError(f"fsp_keep: expected 0 < fsp_keep <= 1, got {self.fsp_keep}")
        for key in ("samples", "epochs", "batch_size", "layers", "init_channels", "eval_n", "holdout"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"{key}: expected >= 1, got {getattr(self, key)}")
        if self.layers < 3:
            raise ConfigError(f"layers: the macro has two reduction cells; expected >= 3, got {self.layers}")


PRESETS: dict[str, RobNetConfig] = {
    # The paper's analysis setting (Sec. 3.3): CIFAR-10, PGD-7 (step 0.01, eps 8/255) supernet training,
    # 1000 sampled architectures finetuned for 3 epochs. Width and depth of the supernet are not stated.
    "robnet": RobNetConfig(name="robnet"),
    "robnet-free": RobNetConfig(name="robnet-free", cell_free=True, samples=50),
    # minutes on 2 CPU cores: 16x16 CIFAR-10, 5 cells of C=8, PGD-3 at eps 4/255 (8/255 leaves a network
    # this small at about 0% PGD accuracy, and nothing to correlate), tens of architectures
    "robnet-tiny": RobNetConfig(
        name="robnet-tiny",
        n_images=2304,
        resize=16,
        holdout=256,
        init_channels=8,
        layers=5,
        epochs=12,
        steps_per_epoch=32,
        batch_size=64,
        lr=0.1,
        eps=4 / 255,
        pgd_steps=3,
        step_size=2 / 255,
        samples=40,
        finetune_epochs=0.25,
        finetune_lr=0.01,
        eval_n=256,
        eval_steps=7,
        fsp_n=64,
        top_k=3,
    ),
}
PRESETS["robnet-free-tiny"] = replace(PRESETS["robnet-tiny"], name="robnet-free-tiny", cell_free=True)


# ---- data -----------------------------------------------------------------------------------------
_DATA_CACHE: dict[str, Any] = {}


def load_data(config: RobNetConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(x_train, y_train, x_holdout, y_holdout, classes): the last ``holdout`` rows are held out."""
    from arnas_zoo.data import load_dataset

    key = json.dumps([config.dataset, config.data_dir, config.n_images, config.resize, config.holdout])
    if key not in _DATA_CACHE:
        data = load_dataset(config.dataset, "train", data_dir=config.data_dir, n=config.n_images)
        x = data.x
        if config.resize and config.resize != x.shape[-1]:
            x = F.interpolate(x, size=(config.resize, config.resize), mode="area").clamp_(0.0, 1.0)
        if config.holdout >= len(x):
            raise ConfigError(f"holdout: {config.holdout} rows leave nothing to train on ({len(x)} images)")
        cut = len(x) - config.holdout
        classes = int(data.y.max()) + 1
        _DATA_CACHE[key] = (x[:cut], data.y[:cut], x[cut:], data.y[cut:], classes)
    return _DATA_CACHE[key]


def supernet_for(config: RobNetConfig, classes: int, shape: tuple[int, ...]) -> RobNetSupernet:
    torch.manual_seed(config.seed)
    return RobNetSupernet(
        macro_config(
            init_channels=config.init_channels,
            layers=config.layers,
            in_channels=int(shape[0]),
            input_size=int(shape[-1]),
            num_classes=classes,
        )
    )


def _cells_in_code(config: RobNetConfig) -> int:
    return config.layers if config.cell_free else 1


def _batch(x: torch.Tensor, y: torch.Tensor, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    from arnas_zoo.runs import augment

    gen = generator(x.device, seed)
    idx = torch.randperm(len(x), generator=gen, device=x.device)[:size]
    return augment(x[idx], gen, crop_padding=max(1, x.shape[-1] // 8)), y[idx]


# ---- stage 1: the supernet (a RunTask: resumable, SIGTERM-safe) ---------------------------------------
class SupernetTraining:
    """Adversarial training of the supernet with one sampled code per step (path sampling)."""

    schema = STATE_SCHEMA

    def __init__(self, config: RobNetConfig, out_dir: Path, device: torch.device):
        self.config, self.out_dir, self.device = config, out_dir, device
        x, y, xh, yh, classes = load_data(config)
        self.x, self.y = x.to(device), y.to(device)
        self.xh, self.yh = xh.to(device), yh.to(device)
        self.model = supernet_for(config, classes, tuple(x.shape[1:])).to(device)
        self.opt = torch.optim.SGD(
            self.model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
        self.epochs = config.epochs
        most = len(x) // config.batch_size
        self.steps_per_epoch = config.steps_per_epoch or most
        if not 1 <= self.steps_per_epoch <= max(most, 1):
            raise ConfigError(f"steps_per_epoch: {self.steps_per_epoch} batches of {config.batch_size} exceed the data")

    def settings(self) -> dict[str, Any]:
        keys = ["dataset", "data_dir", "n_images", "resize", "holdout", "cell_free", "init_channels", "layers"]
        keys += ["seed", "epochs", "steps_per_epoch", "batch_size", "lr", "lr_min", "momentum", "weight_decay"]
        keys += ["grad_clip", "eps", "step_size", "pgd_steps", "attack_bn"]
        return {k: getattr(self.config, k) for k in keys}

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        from arnas_zoo.runs.state import optimizer_state, prefixed, rng_state

        tensors = prefixed("model", self.model.state_dict())
        opt_tensors, opt_meta = optimizer_state(self.opt, "opt")
        rng_tensors, rng_meta = rng_state()
        return {**tensors, **opt_tensors, **rng_tensors}, {"opt": opt_meta, "rng": rng_meta}

    def load(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        from arnas_zoo.runs.state import load_module, load_optimizer, restore_rng, unprefixed

        where = str(self.out_dir / SUPERNET_STATE)
        load_module(self.model, unprefixed("model", tensors), where)
        load_optimizer(self.opt, tensors, meta["opt"], where)
        restore_rng(tensors, meta["rng"])

    def step(self, epoch: int, step: int) -> dict[str, Any]:
        from arnas_zoo.runs import scheduled_lr

        cfg, model = self.config, self.model
        lr = scheduled_lr("cosine", epoch, lr=cfg.lr, total=cfg.epochs, lr_min=cfg.lr_min)
        for group in self.opt.param_groups:
            group["lr"] = lr
        code_gen = torch.Generator().manual_seed(seed_for(cfg.seed, epoch, step, CODE_STREAM))
        model.set_code(sample_code(code_gen, _cells_in_code(cfg)))
        x, y = _batch(self.x, self.y, cfg.batch_size, seed_for(cfg.seed, epoch, step, SAMPLE_STREAM))
        noise_gen = generator(self.device, seed_for(cfg.seed, epoch, step, FINETUNE_STREAM))
        x_adv = pgd(
            model,
            x,
            y,
            eps=cfg.eps,
            step_size=cfg.step_size,
            steps=cfg.pgd_steps,
            bn=cfg.attack_bn,
            generator=noise_gen,
            check_inputs=False,
        )
        model.train()
        logits = model(x_adv)
        loss = F.cross_entropy(logits, y)
        if not bool(torch.isfinite(loss)):
            from arnas_zoo.errors import NonFiniteError

            raise NonFiniteError(f"supernet step {epoch}/{step}: loss {float(loss)}; lower lr")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        self.opt.step()
        n = len(y)
        return {"loss": float(loss.detach()) * n, "correct": int((logits.argmax(1) == y).sum()), "seen": n}

    def end_epoch(self, epoch: int, sums: dict[str, float], seconds: float) -> dict[str, Any]:
        seen = max(sums.get("seen", 0.0), 1.0)
        import copy

        probe = copy.deepcopy(self.model)  # the full code, BatchNorm recalibrated: a diagnostic only
        probe.set_code(np.ones((_cells_in_code(self.config), EDGES, 2), dtype=np.uint8))
        recalibrate_bn(probe, self.x, seed_for(self.config.seed, epoch, -1, 24))
        n = min(256, len(self.xh))
        full = float(_accuracy(probe, self.xh[:n], self.yh[:n]).double().mean())
        return {
            "epoch": epoch + 1,
            "train_adv_loss": sums.get("loss", 0.0) / seen,
            "train_adv_acc": sums.get("correct", 0.0) / seen,
            "holdout_clean_acc_full_code": full,
            "seconds": round(seconds, 2),
            "images_per_s": round(seen / max(seconds, 1e-9), 1),
        }

    def write_outputs(self, history: list[dict[str, Any]]) -> None:
        from arnas_zoo.checkpoint import atomic_write_json

        atomic_write_json(self.out_dir / "supernet_log.json", history)


SUPERNET_STATE = "supernet_state.safetensors"


# ---- stage 2: scoring and finetuning (jobs) -----------------------------------------------------------
def _job_setup(args: dict[str, Any], run_dir: Path) -> tuple[RobNetConfig, RobNetSupernet, torch.device]:
    from arnas_zoo.devices import resolve_device
    from arnas_zoo.runs.state import load_module, read_state, unprefixed

    config = RobNetConfig.from_dict(args["config"])
    device = resolve_device(args.get("device", "cpu"))
    x, _, _, _, classes = load_data(config)
    supernet = supernet_for(config, classes, tuple(x.shape[1:]))
    tensors, meta = read_state(run_dir / SUPERNET_STATE)  # digest-checked
    if int(meta.get("epoch", 0)) < config.epochs:
        raise ConfigError(f"{run_dir / SUPERNET_STATE}: the supernet has not finished training")
    load_module(supernet, unprefixed("model", tensors), str(run_dir / SUPERNET_STATE))
    return config, supernet.to(device), device


@torch.no_grad()
def recalibrate_bn(model: nn.Module, x: torch.Tensor, seed: int, batches: int = 4, batch_size: int = 64) -> None:
    """BatchNorm running statistics of the current code (the supernet's are a mixture over codes):
    reset, then a cumulative average over ``batches`` training batches (no augmentation, no gradient)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    gen = generator(x.device, seed)
    order = torch.randperm(len(x), generator=gen, device=x.device)
    for b in range(batches):
        model(x[order[b * batch_size : (b + 1) * batch_size]])
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.eval()


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + batch]).argmax(1) == y[i : i + batch] for i in range(0, len(x), batch)])


def _robust(
    model: nn.Module, config: RobNetConfig, x: torch.Tensor, y: torch.Tensor, seed: int
) -> tuple[float, float, torch.Tensor]:
    """Clean accuracy, PGD robust accuracy (correct on clean AND adversarial), and the adversarial batch."""
    model.eval()
    clean = _accuracy(model, x, y)
    x_adv = pgd(
        model,
        x,
        y,
        eps=config.eps,
        step_size=config.eps / 4,
        steps=config.eval_steps,
        generator=generator(x.device, seed),
        check_inputs=False,
    )
    adv = _accuracy(model, x_adv, y)
    return float(clean.double().mean()), float((clean & adv).double().mean()), x_adv


def score_job(args: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Job kind ``robnet-score``: one code on the supernet, no finetuning: accuracies and FSP distances."""
    config, supernet, device = _job_setup(args, Path(run_dir))
    code = np.asarray(args["code"], dtype=np.uint8)
    supernet.set_code(code)
    x, _, xh, yh, _ = load_data(config)
    recalibrate_bn(supernet, x.to(device), seed_for(config.seed, -1, int(args["index"]), 24))
    xh, yh = xh[: config.eval_n].to(device), yh[: config.eval_n].to(device)
    clean, robust, x_adv = _robust(supernet, config, xh, yh, seed_for(config.seed, 0, int(args["index"]), 21))
    n = min(config.fsp_n, len(xh))
    distances = fsp_distances(supernet, xh[:n], x_adv[:n])
    return {"index": args["index"], "clean": clean, "pgd": robust, "fsp": distances, "fsp_score": fsp_score(distances)}


def finetune_job(args: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Job kind ``robnet-finetune``: inherit the supernet's weights, adversarial finetuning, score."""
    config, supernet, device = _job_setup(args, Path(run_dir))
    code = np.asarray(args["code"], dtype=np.uint8)
    model = build_sampled(supernet, code).to(device)
    x, y, xh, yh, _ = load_data(config)
    x, y = x.to(device), y.to(device)
    steps = max(1, int(math.ceil(config.finetune_epochs * len(x) / config.batch_size)))
    opt = torch.optim.SGD(
        model.parameters(), lr=config.finetune_lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    index = int(args["index"])
    for step in range(steps):
        for group in opt.param_groups:  # cosine over the finetuning steps
            group["lr"] = config.finetune_lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        xb, yb = _batch(x, y, config.batch_size, seed_for(config.seed, index, step, FINETUNE_STREAM))
        x_adv = pgd(
            model,
            xb,
            yb,
            eps=config.eps,
            step_size=config.step_size,
            steps=config.pgd_steps,
            bn=config.attack_bn,
            generator=generator(device, seed_for(config.seed, index, step, 22)),
            check_inputs=False,
        )
        model.train()
        loss = F.cross_entropy(model(x_adv), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
    xh, yh = xh[: config.eval_n].to(device), yh[: config.eval_n].to(device)
    clean, robust, _ = _robust(model, config, xh, yh, seed_for(config.seed, 0, index, 23))
    return {"index": index, "clean": clean, "pgd": robust, "finetune_steps": steps}


def _register() -> None:
    from arnas_zoo.jobs import register_kind

    register_kind("robnet-score", "search.robnet:score_job")
    register_kind("robnet-finetune", "search.robnet:finetune_job")


def sampled_codes(config: RobNetConfig) -> list[np.ndarray]:
    """The run's ``samples`` codes: a pure function of (seed, budget, cells)."""
    gen = torch.Generator().manual_seed(seed_for(config.seed, -1, -1, CODE_STREAM))
    return [sample_code(gen, _cells_in_code(config), config.budget) for _ in range(config.samples)]


# ---- the pipeline -----------------------------------------------------------------------------------
def run_robnet(
    config: RobNetConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    device: str = "auto",
    backend: str = "local",
    address: str | None = None,
    max_parallel: int | None = None,
    progress: Any = True,
    plots: bool = True,
) -> dict[str, Any]:
    """Supernet -> score every sampled code -> FSP filter -> finetune -> analyse -> export genotypes."""
    from arnas_zoo.checkpoint import atomic_write_json
    from arnas_zoo.devices import resolve_device
    from arnas_zoo.jobs import Job, run_jobs
    from arnas_zoo.progress import Progress
    from arnas_zoo.runs import run_task

    config.validate()
    out = Path(out_dir)
    saved = out / "config.json"
    if saved.is_file():
        if not resume:
            raise ConfigError(f"{out}: a RobNet search is already there; pass --resume to continue it")
        before = json.loads(saved.read_text())
        if before != config.to_dict():
            diff = sorted(k for k in set(before) | set(config.to_dict()) if before.get(k) != config.to_dict().get(k))
            raise ConfigError(f"{out}: --resume with a different config (changed: {diff})")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(saved, config.to_dict())
    dev = resolve_device(device)
    report = Progress.of(progress)
    task = SupernetTraining(config, out, dev)
    state = out / SUPERNET_STATE
    trained = _supernet_done(state, config)
    if not trained:
        run_task(task, state, resume=state.is_file(), progress=report, label="supernet")
    _register()
    codes = sampled_codes(config)
    job_device = "cuda" if dev.type == "cuda" else "cpu"
    base = {"config": config.to_dict(), "device": job_device}
    gpus = 1.0 if dev.type == "cuda" else 0.0
    scores = run_jobs(
        [
            Job("robnet-score", {**base, "index": i, "code": c.tolist()}, gpus=gpus, label=f"score {i}")
            for i, c in enumerate(codes)
        ],
        out,
        backend=backend,
        address=address,
        max_parallel=max_parallel,
        progress=report,
    )
    score_rows = [
        scores.results[Job("robnet-score", {**base, "index": i, "code": c.tolist()}).key] for i, c in enumerate(codes)
    ]
    order = sorted(range(len(codes)), key=lambda i: score_rows[i]["fsp_score"])
    keep = sorted(order[: max(1, int(round(config.fsp_keep * len(codes))))])
    ft_jobs = {
        i: Job("robnet-finetune", {**base, "index": i, "code": codes[i].tolist()}, gpus=gpus, label=f"finetune {i}")
        for i in keep
    }
    finetuned = run_jobs(
        list(ft_jobs.values()), out, backend=backend, address=address, max_parallel=max_parallel, progress=report
    )
    rows = []
    for i, code in enumerate(codes):
        row: dict[str, Any] = {"index": i, "code": ["".join(r) for r in code_strings(code)], "budget": budget_of(code)}
        row.update(code_features(code))
        s = score_rows[i]
        row.update(
            supernet_clean=s["clean"],
            supernet_pgd=s["pgd"],
            supernet_gap=s["clean"] - s["pgd"],
            fsp_score=s["fsp_score"],
            fsp=s["fsp"],
        )
        f = finetuned.results.get(ft_jobs[i].key) if i in ft_jobs else None
        row.update(finetuned=f is not None, clean=f["clean"] if f else None, pgd=f["pgd"] if f else None)
        rows.append(row)
    summary = analyze(rows, out, config, plots=plots)
    summary["exported"] = export_top(rows, codes, out, config)
    atomic_write_json(out / "summary.json", summary)
    return summary


def _supernet_done(state: Path, config: RobNetConfig) -> bool:
    from arnas_zoo.runs.state import read_state

    if not state.is_file():
        return False
    _, header = read_state(state)
    return int(header.get("epoch", 0)) >= config.epochs


# ---- stage 3: analyses ------------------------------------------------------------------------------
def _spearman(a: list[float], b: list[float]) -> dict[str, Any]:
    from scipy.stats import spearmanr

    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None and np.isfinite(x) and np.isfinite(y)]
    if len(pairs) < 3 or len({p[0] for p in pairs}) < 2 or len({p[1] for p in pairs}) < 2:
        return {"rho": None, "p": None, "n": len(pairs)}
    result = spearmanr([p[0] for p in pairs], [p[1] for p in pairs])
    return {"rho": float(result.statistic), "p": float(result.pvalue), "n": len(pairs)}


def _edge_classifier(rows: list[dict[str, Any]], codes: np.ndarray, fraction: float = 0.3) -> dict[str, Any]:
    """Logistic regression on the codes of the top vs the bottom ``fraction`` by PGD accuracy (paper Fig. 4b)."""
    from sklearn.linear_model import LogisticRegression

    scored = [r for r in rows if r["pgd"] is not None]
    if len(scored) < 6:
        return {"n": len(scored), "weights": None}
    scored.sort(key=lambda r: r["pgd"])
    k = max(2, int(len(scored) * fraction))
    bottom, top = scored[:k], scored[-k:]
    features = np.stack([codes[r["index"]].reshape(-1) for r in bottom + top]).astype(np.float64)
    labels = np.array([0] * k + [1] * k)
    clf = LogisticRegression(max_iter=2000).fit(features, labels)
    weights = clf.coef_[0]
    return {
        "n": 2 * k,
        "train_accuracy": float(clf.score(features, labels)),
        "weights": weights.round(4).tolist(),
        "positive_share": float((weights > 0).mean()),
    }


def analyze(rows: list[dict[str, Any]], out: Path, config: RobNetConfig, *, plots: bool = True) -> dict[str, Any]:
    """The paper's Sec. 3.3-3.5 statistics over the sampled architectures; writes the table and plots."""
    from arnas_zoo.checkpoint import atomic_write_json

    codes = np.stack([code_from_strings([list(_split(c)) for c in r["code"]]) for r in rows])
    done = [r for r in rows if r["pgd"] is not None]
    pgd_acc = [r["pgd"] for r in done]
    stats: dict[str, Any] = {
        "n_sampled": len(rows),
        "n_finetuned": len(done),
        "density_vs_pgd": _spearman([r["density"] for r in done], pgd_acc),
        "convs_vs_pgd": _spearman([r["convs"] for r in done], pgd_acc),
        "direct_convs_vs_pgd": _spearman([r["direct_convs"] for r in done], pgd_acc),
        "skip_convs_vs_pgd": _spearman([r["skip_convs"] for r in done], pgd_acc),
        "supernet_vs_finetuned_pgd": _spearman([r["supernet_pgd"] for r in done], pgd_acc),
        "fsp_vs_supernet_gap": _spearman([r["fsp_score"] for r in rows], [r["supernet_gap"] for r in rows]),
        "fsp_per_cell_vs_supernet_gap": [
            _spearman([r["fsp"][c] for r in rows], [r["supernet_gap"] for r in rows])
            for c in range(len(rows[0]["fsp"]) if rows else 0)
        ],
        "budgets": {},
        "classifier": _edge_classifier(rows, codes),
    }
    for name in ("small", "medium", "large"):
        group = [r for r in done if r["budget"] == name]
        stats["budgets"][name] = {
            "n": len(group),
            "mean_pgd": float(np.mean([r["pgd"] for r in group])) if group else None,
            "direct_share_vs_pgd": _spearman([r["direct_share"] for r in group], [r["pgd"] for r in group]),
        }
    best = sorted(done, key=lambda r: -r["pgd"])[: config.top_k]
    stats["top"] = [{k: r[k] for k in ("index", "code", "clean", "pgd", "density", "convs")} for r in best]
    atomic_write_json(out / "architectures.json", rows)
    _write_csv(out / "architectures.csv", rows)
    atomic_write_json(out / "analysis.json", stats)
    if plots:
        _plots(rows, stats, out)
    return stats


def _split(cell: str) -> list[str]:
    return [cell[i : i + 2] for i in range(0, len(cell), 2)]


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = [
        "index",
        "budget",
        "density",
        "convs",
        "direct_convs",
        "skip_convs",
        "direct_share",
        "supernet_clean",
        "supernet_pgd",
        "supernet_gap",
        "fsp_score",
        "finetuned",
        "clean",
        "pgd",
        "code",
    ]
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for r in rows:
            writer.writerow([" ".join(r[c]) if c == "code" else r[c] for c in columns])
    tmp.replace(path)


def _plots(rows: list[dict[str, Any]], stats: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = out / "plots"
    folder.mkdir(exist_ok=True)
    done = [r for r in rows if r["pgd"] is not None]

    def label(key: str) -> str:
        s = stats[key]
        return "n/a" if s["rho"] is None else f"Spearman {s['rho']:.2f} (p={s['p']:.2g}, n={s['n']})"

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    axes[0].scatter([r["density"] for r in done], [100 * r["pgd"] for r in done], s=12)
    axes[0].set(
        xlabel="architecture density D (Eq. 2)",
        ylabel="PGD accuracy after finetuning (%)",
        title=f"density: {label('density_vs_pgd')}",
    )
    axes[1].scatter([r["direct_convs"] for r in done], [100 * r["pgd"] for r in done], s=12, label="direct edges")
    axes[1].scatter(
        [r["skip_convs"] for r in done], [100 * r["pgd"] for r in done], s=12, label="skip edges", marker="x"
    )
    axes[1].set(
        xlabel="convolutions per cell",
        ylabel="PGD accuracy (%)",
        title=f"direct {label('direct_convs_vs_pgd')}\nskip {label('skip_convs_vs_pgd')}",
    )
    axes[1].legend()
    axes[2].scatter([r["fsp_score"] for r in rows], [100 * r["supernet_gap"] for r in rows], s=12)
    axes[2].set(
        xlabel="FSP distance (deeper normal cells)",
        ylabel="clean - PGD accuracy on the supernet (%)",
        title=f"FSP: {label('fsp_vs_supernet_gap')}",
    )
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(folder / f"analysis.{ext}", dpi=120)
    plt.close(fig)
    weights = stats["classifier"].get("weights")
    if weights:
        w = np.asarray(weights).reshape(-1, EDGES, 2)[0]
        fig, ax = plt.subplots(figsize=(8, 3))
        idx = np.arange(EDGES)
        ax.bar(idx - 0.2, w[:, 0], 0.4, label="sep_conv_3x3 bit")
        ax.bar(idx + 0.2, w[:, 1], 0.4, label="identity bit")
        ax.set(xlabel="edge (RobNet order)", ylabel="weight", title="linear classifier: top vs bottom architectures")
        ax.set_xticks(idx, [f"{s}>{n}" for s, n in EDGE_LIST], rotation=60, fontsize=7)
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "classifier.png", dpi=120)
        plt.close(fig)


# ---- stage 4: export --------------------------------------------------------------------------------
def export_top(rows: list[dict[str, Any]], codes: list[np.ndarray], out: Path, config: RobNetConfig) -> list[str]:
    """The ``top_k`` finetuned architectures by PGD accuracy as genotype JSON (``genotypes/``)."""
    folder = out / "genotypes"
    folder.mkdir(exist_ok=True)
    done = sorted((r for r in rows if r["pgd"] is not None), key=lambda r: -r["pgd"])[: config.top_k]
    written = []
    for rank, r in enumerate(done, 1):
        name = f"{config.name}-seed{config.seed}-top{rank}"
        notes = (
            f"python -m search robnet {config.name}: sample {r['index']} of {config.samples} "
            f"({'cell-free' if config.cell_free else 'cell-based'}, budget {config.budget}); "
            f"after finetuning on {config.dataset}: clean {r['clean']:.4f}, PGD-{config.eval_steps} "
            f"{r['pgd']:.4f} on {config.eval_n} held-out rows (eps {config.eps:.4g}), seed {config.seed}"
        )
        path = code_genotype(codes[r["index"]], name, notes).save(folder / f"top{rank}.json")
        written.append(str(path.relative_to(out)))
    return written
