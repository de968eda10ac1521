"""Cell networks built from a genotype: ARNAS, DARTS-space networks, RobNets and the Table 4 ablations.

Layout (see :mod:`arnas_zoo.config`): a 3x3 conv + BN stem, then ``L`` DARTS-style cells; cells
``L//3`` and ``2L//3`` reduce; each stage has its cell type and filter multiplier; an optional
DARTS auxiliary head after cell ``2L//3`` (training only); global average pool and a linear head.
"""

from __future__ import annotations

import torch
from torch import nn

from arnas_zoo.config import CELL_ARCH, ModelConfig
from arnas_zoo.errors import ConfigError
from arnas_zoo.genotype import NUM_CELL_INPUTS, CellGenotype
from arnas_zoo.models.base import ZooModel, input_normalization, register_family
from arnas_zoo.ops import FactorizedReduce, Identity, ReLUConvBN, after_relu, create_op, shared_relu


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
        # which ops begin with a ReLU (arnas_zoo.ops.after_relu): plain lists, not in the state dict; the
        # types do not change when an attack folds BatchNorm (that swaps modules inside the ops)
        self.relu_first = [after_relu(op) is not None for op in self.ops]
        self.preprocess_relu_first = all(after_relu(p) is not None for p in (self.preprocess0, self.preprocess1))

    def forward(
        self,
        s0: torch.Tensor,
        s1: torch.Tensor,
        drop_prob: float = 0.0,
        r0: torch.Tensor | None = None,
        r1: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The cell's output; ``r0``/``r1``, when given, are ``relu(s0)``/``relu(s1)`` computed once by the caller.

        With :func:`shared_relu` on (the default), ``relu`` of each state is computed once and every op that
        begins with a ReLU starts from it (:func:`arnas_zoo.ops.after_relu`): the same values, fewer passes
        over memory, one saved tensor for the backward instead of one per op.
        """
        share = self.preprocess_relu_first and shared_relu()
        if share:
            states = [
                self.preprocess0.forward_after_relu(r0 if r0 is not None else torch.relu(s0)),  # type: ignore[operator]
                self.preprocess1.forward_after_relu(r1 if r1 is not None else torch.relu(s1)),
            ]
        else:
            states = [self.preprocess0(s0), self.preprocess1(s1)]
        relu: dict[int, torch.Tensor] = {}  # relu(state), made once for all the ops that begin with one
        for entries in self.node_edges:
            total: torch.Tensor | None = None
            for op_index, src in entries:
                op = self.ops[op_index]
                if share and self.relu_first[op_index]:
                    if src not in relu:
                        relu[src] = torch.relu(states[src])
                    h = op.forward_after_relu(relu[src])  # type: ignore[operator]
                else:
                    h = op(states[src])
                if self.training and drop_prob > 0.0 and not isinstance(op, Identity):
                    h = drop_path(h, drop_prob)
                total = h if total is None else total + h
            assert total is not None  # a validated genotype has no empty node
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


class CellNetwork(ZooModel):
    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.arch != CELL_ARCH or config.genotype is None:
            raise ConfigError(f"CellNetwork needs arch={CELL_ARCH!r} and a genotype, got arch={config.arch!r}")
        self.config = config
        self.normalize = input_normalization(config)
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
        genotype = config.genotype
        for i, (cell_name, channels) in enumerate(zip(config.layer_cell_types(), config.layer_channels())):
            reduction = i in reductions
            cell = Cell(
                genotype.cells[cell_name], c_prev_prev, c_prev, channels, reduction, reduction_prev, config.affine
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
        # each cell's output is read through a ReLU by the next two cells' preprocessing (and the stem's by
        # three): computed once here and handed on when the cells share ReLUs
        share = shared_relu()
        r0 = r1 = torch.relu(s1) if share else None
        last = len(self.cells) - 1
        for i, cell in enumerate(self.cells):
            out = cell(s0, s1, drop, r0, r1)
            s0, s1 = s1, out
            r0, r1 = r1, (torch.relu(out) if share and i < last else None)
            if want_aux and i == self.config.auxiliary_layer and self.auxiliary_head is not None:
                aux = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pool(s1).flatten(1))
        return logits, aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, want_aux=False)[0]

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self._run(x, want_aux=self.training)


def estimate_cell_params(config: ModelConfig) -> int:
    """An upper bound of the parameter count, from the layout alone (no module is built).

    Every edge is charged as the largest op (a 5x5 separable conv plus a shortcut), so the bound
    is loose but cheap; it only guards against configs that would exhaust memory.
    """
    assert config.genotype is not None  # checked by ModelConfig
    c_stem = config.stem_multiplier * config.init_channels
    total = config.in_channels * c_stem * 9 + 2 * c_stem
    c_prev_prev = c_prev = c_stem
    for cell_name, c in zip(config.layer_cell_types(), config.layer_channels()):
        cell = config.genotype.cells[cell_name]
        edges = sum(len(node) for node in cell.nodes)
        total += (c_prev_prev + c_prev) * c + 4 * c
        total += edges * (2 * 25 * c + 3 * c * c + 8 * c)
        c_prev_prev, c_prev = c_prev, len(cell.concat) * c
    total += c_prev * config.num_classes + config.num_classes
    if config.auxiliary:
        total += c_prev * 128 + 128 * 768 * 4 + 768 * config.num_classes + 2000
    return total


@register_family(CELL_ARCH, estimate_params=estimate_cell_params, description="genotype-built cell networks")
def build_cell_network(config: ModelConfig) -> ZooModel:
    return CellNetwork(config)
