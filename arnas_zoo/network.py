"""Evaluation networks built from a genotype and a macro configuration.

:class:`ModelConfig` is everything needed to rebuild a network exactly (it is what ``config.json``
holds); :func:`build_model` turns it into a :class:`CellNetwork` (cell-based: ARNAS, DARTS, RobNet
and the Table 4 ablations) or a hand-crafted baseline (ResNet-18, WideResNet-34-10).

Layout of a cell network with ``L`` layers: a 3x3 conv + BN stem with ``stem_multiplier * C``
channels, then ``L`` cells. Cells ``L//3`` and ``2L//3`` are reduction cells. Stage ``s`` (before
the first reduction, between the two, after the second) runs ``placement[s]`` cells with
``C * filter_multipliers[s]`` channels per node; a reduction cell takes the channel count of the
stage it opens. ARNAS is ``placement=("accurate", "accurate", "robust")``,
``filter_multipliers=(1, 2, 2)``; DARTS is ``("normal",) * 3`` with ``(1, 2, 4)``.

Inputs are float NCHW in [0, 1]; normalization (``mean``/``std``) happens inside the model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch
from torch import nn

from arnas_zoo.errors import ConfigError, GenotypeError
from arnas_zoo.genotype import NUM_CELL_INPUTS, CellGenotype, Genotype
from arnas_zoo.ops import FactorizedReduce, Identity, ReLUConvBN, create_op

CELL_ARCH = "cell"
BASELINE_ARCHS = ("resnet18", "resnet18_imagenet", "wrn34_10")
ARCHS = (CELL_ARCH, *BASELINE_ARCHS)
CONFIG_SCHEMA = "arnas-zoo/model-config@1"


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a network exactly; serialised as ``config.json``."""

    arch: str = CELL_ARCH
    genotype: Genotype | None = None
    num_classes: int = 10
    in_channels: int = 3
    input_size: int = 32
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    # cell-network macro
    layers: int = 20
    init_channels: int = 36
    stem_multiplier: int = 3
    placement: tuple[str, ...] = ("normal", "normal", "normal")
    filter_multipliers: tuple[int, ...] = (1, 2, 4)
    reduction_cell: str = "reduce"
    cell_types: tuple[str, ...] | None = None
    affine: bool = True
    auxiliary: bool = True
    auxiliary_weight: float = 0.4
    drop_path_prob: float = 0.0
    # what the weights were trained for (informational; filled in by training)
    threat_model: str | None = None
    eps: float | None = None
    name: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    # ---- validation -----------------------------------------------------------------------------
    def validate(self) -> None:
        if self.arch not in ARCHS:
            raise ConfigError(f"arch: expected one of {list(ARCHS)}, got {self.arch!r}")
        for key in ("num_classes", "in_channels", "input_size", "layers", "init_channels", "stem_multiplier"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{key}: expected a positive integer, got {value!r}")
        if self.num_classes < 2:
            raise ConfigError(f"num_classes: expected at least 2, got {self.num_classes}")
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None and len(value) != self.in_channels:
                raise ConfigError(
                    f"{key}: expected {self.in_channels} values (one per input channel), got {len(value)}"
                )
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ConfigError(f"std: expected positive values, got {list(self.std)}")
        if (self.mean is None) != (self.std is None):
            raise ConfigError("mean/std: give both or neither")
        if not 0.0 <= self.drop_path_prob < 1.0:
            raise ConfigError(f"drop_path_prob: expected a value in [0, 1), got {self.drop_path_prob}")
        if self.arch != CELL_ARCH:
            return
        if self.genotype is None:
            raise ConfigError("genotype: a cell network needs a genotype")
        if self.layers < 3:
            raise ConfigError(f"layers: a cell network needs at least 3 layers (two reductions), got {self.layers}")
        if len(self.placement) != 3 or len(self.filter_multipliers) != 3:
            raise ConfigError(
                "placement/filter_multipliers: expected one entry per stage (3 each), got "
                f"{list(self.placement)} and {list(self.filter_multipliers)}"
            )
        if any(not isinstance(m, int) or m < 1 for m in self.filter_multipliers):
            raise ConfigError(f"filter_multipliers: expected positive integers, got {list(self.filter_multipliers)}")
        if self.cell_types is not None and len(self.cell_types) != self.layers:
            raise ConfigError(f"cell_types: expected {self.layers} entries (one per layer), got {len(self.cell_types)}")
        for i, cell_name in enumerate(self.layer_cell_types()):
            if cell_name not in self.genotype.cells:
                raise ConfigError(
                    f"layer {i}: cell type {cell_name!r} is not in the genotype; it has {sorted(self.genotype.cells)}"
                )
            if i in self.reduction_layers():
                bad = [c for c in self.genotype.cells[cell_name].concat if c < NUM_CELL_INPUTS]
                if bad:
                    raise ConfigError(
                        f"layer {i}: reduction cell {cell_name!r} concatenates cell inputs {bad}, which are "
                        "not reduced; expected only intermediate nodes"
                    )

    # ---- layout ---------------------------------------------------------------------------------
    def reduction_layers(self) -> tuple[int, int]:
        return (self.layers // 3, 2 * self.layers // 3)

    def stage_of(self, layer: int) -> int:
        first, second = self.reduction_layers()
        return 0 if layer < first else (1 if layer < second else 2)

    def layer_cell_types(self) -> list[str]:
        if self.cell_types is not None:
            return list(self.cell_types)
        reductions = self.reduction_layers()
        return [
            self.reduction_cell if i in reductions else self.placement[self.stage_of(i)] for i in range(self.layers)
        ]

    def layer_channels(self) -> list[int]:
        """Channels per node of each cell (the cell outputs ``len(concat)`` times this)."""
        return [self.init_channels * self.filter_multipliers[self.stage_of(i)] for i in range(self.layers)]

    @property
    def auxiliary_layer(self) -> int:
        return 2 * self.layers // 3

    # ---- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema": CONFIG_SCHEMA}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "genotype":
                value = None if value is None else value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[f.name] = value
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        if not isinstance(data, Mapping):
            raise ConfigError(f"config: expected a JSON object, got {type(data).__name__}")
        data = dict(data)
        schema = data.pop("schema", CONFIG_SCHEMA)
        if schema != CONFIG_SCHEMA:
            raise ConfigError(f"config.schema: expected {CONFIG_SCHEMA!r}, got {schema!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"config.{unknown[0]}: unknown key; expected only {sorted(known)}")
        if data.get("genotype") is not None:
            try:
                data["genotype"] = Genotype.from_dict(data["genotype"])
            except GenotypeError as exc:
                raise ConfigError(f"config.genotype: {exc}") from None
        for key in ("mean", "std", "placement", "filter_multipliers", "cell_types"):
            if data.get(key) is not None:
                if not isinstance(data[key], Sequence) or isinstance(data[key], str):
                    raise ConfigError(f"config.{key}: expected a list, got {type(data[key]).__name__}")
                data[key] = tuple(data[key])
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"config: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config: malformed JSON ({exc})") from None

    def replace(self, **changes: Any) -> ModelConfig:
        for key in ("mean", "std", "placement", "filter_multipliers", "cell_types"):
            if isinstance(changes.get(key), list):
                changes[key] = tuple(changes[key])
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise ConfigError(f"{unknown[0]}: not a model config field; expected one of {sorted(asdict(self))}")
        return replace(self, **changes)


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` inside the model, so that inputs stay in [0, 1]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples of a branch with probability ``drop_prob`` (scaled to keep the mean)."""
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x.div(keep) * mask


class Cell(nn.Module):
    """A DARTS-style evaluation cell: two preprocessed inputs, nodes summing their edges, concat."""

    def __init__(
        self,
        genotype: CellGenotype,
        c_prev_prev: int,
        c_prev: int,
        channels: int,
        reduction: bool,
        reduction_prev: bool,
        affine: bool = True,
    ):
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_prev_prev, channels, affine)
        else:
            self.preprocess0 = ReLUConvBN(c_prev_prev, channels, 1, 1, 0, affine)
        self.preprocess1 = ReLUConvBN(c_prev, channels, 1, 1, 0, affine)
        self.node_edges: list[list[tuple[int, int]]] = []  # per node: (op index, input state)
        self.ops = nn.ModuleList()
        for node in genotype.nodes:
            entries = []
            for edge in node:
                stride = 2 if reduction and edge.input < NUM_CELL_INPUTS else 1
                entries.append((len(self.ops), edge.input))
                self.ops.append(create_op(edge.op, channels, stride, affine))
            self.node_edges.append(entries)
        self.concat = list(genotype.concat)
        self.multiplier = len(self.concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for entries in self.node_edges:
            total = None
            for op_index, src in entries:
                op = self.ops[op_index]
                h = op(states[src])
                if self.training and drop_prob > 0.0 and not isinstance(op, Identity):
                    h = drop_path(h, drop_prob)
                total = h if total is None else total + h
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """DARTS' CIFAR auxiliary classifier (training only).

    On the 8x8 maps of a 32x32 input it is exactly DARTS' head (5x5 average pool with stride 3 ->
    2x2); for other map sizes an adaptive pool to 2x2 keeps the same parameters.
    """

    def __init__(self, channels: int, num_classes: int, spatial: int):
        super().__init__()
        if spatial == 8:
            pool: nn.Module = nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False)
        else:
            pool = nn.AdaptiveAvgPool2d(2)
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            pool,
            nn.Conv2d(channels, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=False),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=False),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class ZooModel(nn.Module):
    """Common interface of every network in the zoo.

    ``forward(x)`` takes [0, 1] NCHW images and returns logits. ``forward_train(x)`` returns
    ``(logits, aux_logits)`` where ``aux_logits`` is None unless the model has an auxiliary head
    and is in training mode.
    """

    config: ModelConfig

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self(x), None


class CellNetwork(ZooModel):
    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.arch != CELL_ARCH or config.genotype is None:
            raise ConfigError(f"CellNetwork needs arch={CELL_ARCH!r} and a genotype, got arch={config.arch!r}")
        self.config = config
        self.normalize = Normalize(config.mean, config.std) if config.mean is not None else nn.Identity()
        c_stem = config.stem_multiplier * config.init_channels
        self.stem = nn.Sequential(
            nn.Conv2d(config.in_channels, c_stem, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_stem),
        )
        c_prev_prev, c_prev = c_stem, c_stem
        reductions = config.reduction_layers()
        reduction_prev = False
        spatial = config.input_size
        self.cells = nn.ModuleList()
        self.auxiliary_head: AuxiliaryHead | None = None
        for i, (cell_name, channels) in enumerate(zip(config.layer_cell_types(), config.layer_channels())):
            reduction = i in reductions
            cell = Cell(
                config.genotype.cells[cell_name],
                c_prev_prev,
                c_prev,
                channels,
                reduction,
                reduction_prev,
                config.affine,
            )
            self.cells.append(cell)
            if reduction:
                spatial = (spatial + 1) // 2
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, cell.multiplier * channels
            if config.auxiliary and i == config.auxiliary_layer:
                self.auxiliary_head = AuxiliaryHead(c_prev, config.num_classes, spatial)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, config.num_classes)

    def _run(self, x: torch.Tensor, want_aux: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        s0 = s1 = self.stem(self.normalize(x))
        aux = None
        drop = self.config.drop_path_prob
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, drop)
            if want_aux and i == self.config.auxiliary_layer and self.auxiliary_head is not None:
                aux = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pool(s1).flatten(1))
        return logits, aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, want_aux=False)[0]

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self._run(x, want_aux=self.training)


def build_model(config: ModelConfig) -> ZooModel:
    """Build the (randomly initialised, training-mode) network that ``config`` describes."""
    if config.arch == CELL_ARCH:
        return CellNetwork(config)
    from arnas_zoo.baselines import build_baseline

    return build_baseline(config)
