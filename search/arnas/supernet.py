"""The search supernet: every edge a softmax-weighted mixture of all candidate ops.

Architecture parameters (one ``edges x ops`` tensor per cell type, e.g. accurate/robust/reduce) are
registered ``nn.Parameter`` s kept apart from the weights: :meth:`Supernet.arch_parameters` and
:meth:`Supernet.weight_parameters` partition :meth:`~torch.nn.Module.parameters`, so the weight
optimizer never sees an architecture tensor and vice versa. As in DARTS, mixed ops have non-affine
batch norm (learned scales would let a weight absorb the architecture weight), and pools are followed
by a non-affine BN so that their scale is comparable with the convolutions'.

``recompute=True`` (search config ``recompute``) keeps only each cell's inputs for the backward and
runs the cell's forward again there: about one more forward per backward for a fraction of the
activation memory (``benchmarks/bench_search.py --recompute``). ``recompute_cells=k`` (config
``recompute_cells``) does that for the first ``k`` cells only: they work at the highest resolution
and hold the largest share of the activations, so a small ``k`` buys most of the memory for a
fraction of the extra forward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from arnas_zoo.batchstats import holds
from arnas_zoo.genotype import NUM_CELL_INPUTS, Genotype
from arnas_zoo.models import Normalize
from arnas_zoo.ops import POOLING_OPS, FactorizedReduce, ReLUConvBN, after_relu, create_op

from .space import SearchSpace


def _flat(t: torch.Tensor) -> torch.Tensor | None:
    """A 1-D view of a dense tensor's memory (contiguous or channels_last), else None."""
    if t.is_contiguous():
        return t.view(-1)
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return t.permute(0, 2, 3, 1).reshape(-1)  # a view: the permuted tensor is contiguous
    return None


def _dot(g: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(g * y).sum()``, without the product tensor where both share one dense layout."""
    fg, fy = _flat(g), _flat(y)
    if fg is not None and fy is not None and g.stride() == y.stride() and g.dtype == y.dtype:
        return torch.dot(fg, fy)
    return (g * y).sum()


# Read when a supernet is built. FUSED_SUM: MixedOps sum their ops' outputs with :class:`_WeightedSum`;
# SHARE_RELU: cells compute one ReLU per state for every op that begins with one. False for both builds the
# supernet the way DARTS-style code computes it (benchmarks/bench_search.py's reference of the authors' passes).
# FUSED_SUM is on: it saves the per-op products of the weighted sum (paper supernet, batch 32, with
# recompute_cells=1: 4.86 instead of 5.55 GB). It changes float32 rounding only; the bf16 search test
# (tests/test_search_bilevel.py) compares means over four batches, which the fused sum meets as the plain one does.
FUSED_SUM = True
SHARE_RELU = True


class _WeightedSum(torch.autograd.Function):
    """``sum_k weights[k] * ys[k]`` as one autograd node.

    The plain expression allocates a product and a partial sum per term in the forward, and a
    product per term (``g * y_k``, summed for ``weights[k]``'s gradient) in the backward; here the
    forward accumulates into one tensor and the weights' gradients are dot products. The backward
    is written in differentiable ops, so double backward (DSRNA's Jacobian objective) works. Used
    when every output has the weights' dtype (float32 or float64).
    """

    @staticmethod
    def forward(ctx: Any, weights: torch.Tensor, *ys: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weights, *ys)
        out = ys[0] * weights[0]
        for k in range(1, len(ys)):
            out.addcmul_(ys[k], weights[k])  # the 0-dim weight: no product tensor, no host sync (unlike .item())
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        weights, *ys = ctx.saved_tensors
        grad_w = None
        if ctx.needs_input_grad[0]:
            grad_w = torch.stack([_dot(g, y) for y in ys])
        grads = [g * weights[k] if ctx.needs_input_grad[k + 1] else None for k in range(len(ys))]
        return (grad_w, *grads)


class MixedOp(nn.Module):
    """``sum_k w_k * op_k(x)`` over the candidate ops of one edge.

    ``forward(x, weights, x_relu)`` takes ``relu(x)`` from the caller when it has it: the ops that begin
    with a ReLU then start from it (:func:`arnas_zoo.ops.after_relu`), so one ReLU per state serves every
    edge and op that reads it (the cell passes it; same values, one saved tensor instead of up to 16).
    """

    def __init__(self, channels: int, stride: int, primitives: tuple[str, ...]):
        super().__init__()
        self.ops = nn.ModuleList()
        for name in primitives:
            op = create_op(name, channels, stride, affine=False)
            if name in POOLING_OPS:
                op = nn.Sequential(op, nn.BatchNorm2d(channels, affine=False))
            self.ops.append(op)
        self.relu_first = [after_relu(op) is not None for op in self.ops]  # a plain list: not in the state dict
        self.fused_sum = FUSED_SUM

    def forward(self, x: torch.Tensor, weights: torch.Tensor, x_relu: torch.Tensor | None = None) -> torch.Tensor:
        ys = [
            cast(Any, op).forward_after_relu(x_relu) if relu_first and x_relu is not None else op(x)
            for op, relu_first in zip(self.ops, self.relu_first)
        ]
        if self.fused_sum and all(type(y) is torch.Tensor and y.dtype == weights.dtype for y in ys):
            return _WeightedSum.apply(weights, *ys)
        # the plain sum: for interval bounds (DSRNA's certified objective), and for bf16/fp16 outputs under
        # autocast, whose numerics the bf16 search tests and docs were measured with
        out = weights[0] * ys[0]
        for w, y in zip(weights[1:], ys[1:]):
            out = out + w * y
        return out


class SearchCell(nn.Module):
    """A cell whose every edge ``(input state -> node)`` is a :class:`MixedOp`.

    Edge ``e`` enumerates nodes in order and, for node ``k``, its inputs ``0 .. k+1``; row ``e`` of the
    cell type's architecture tensor weighs the ops of that edge.
    """

    def __init__(
        self,
        nodes: int,
        c_prev_prev: int,
        c_prev: int,
        channels: int,
        reduction: bool,
        reduction_prev: bool,
        primitives: tuple[str, ...],
    ):
        super().__init__()
        self.reduction = reduction
        self.nodes = nodes
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_prev_prev, channels, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(c_prev_prev, channels, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(c_prev, channels, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList()
        for k in range(nodes):
            for src in range(NUM_CELL_INPUTS + k):
                stride = 2 if reduction and src < NUM_CELL_INPUTS else 1
                self.edges.append(MixedOp(channels, stride, primitives))
        self.shares_relu = SHARE_RELU and any(any(cast(MixedOp, edge).relu_first) for edge in self.edges)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        relus: list[torch.Tensor] = []  # relu(states[j]), computed once and shared by every edge that reads it
        offset = 0
        for _ in range(self.nodes):
            total = None
            if self.shares_relu:
                relus += [torch.relu(h) for h in states[len(relus) :]]
            for j, h in enumerate(states):
                out = self.edges[offset + j](h, weights[offset + j], relus[j] if relus else None)
                total = out if total is None else total + out
            offset += len(states)
            states.append(total)
        return torch.cat(states[NUM_CELL_INPUTS:], dim=1)


class Supernet(nn.Module):
    """The weight-sharing network of a :class:`~search.space.SearchSpace`.

    ``forward(x)`` takes float NCHW images in [0, 1] (normalised inside when ``mean``/``std`` are
    given) and returns logits. ``generator`` seeds the architecture initialisation
    (``arch_init_scale * randn``, 1e-3 in DARTS and ARNAS) independently of the weight init.
    """

    def __init__(
        self,
        space: SearchSpace,
        *,
        arch_init_scale: float = 1e-3,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        generator: torch.Generator | None = None,
        recompute: bool = False,
        recompute_cells: int = 0,
    ):
        super().__init__()
        if recompute_cells < 0:
            raise ValueError(f"recompute_cells: expected >= 0, got {recompute_cells}")
        self.space = space
        self.primitives = space.primitives
        self.normalize = Normalize(mean, std) if mean is not None and std is not None else nn.Identity()
        c_stem = space.stem_multiplier * space.init_channels
        self.stem = nn.Sequential(
            nn.Conv2d(space.in_channels, c_stem, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_stem),
        )
        self.layer_types = space.layer_cell_types()
        reductions = space.reduction_layers()
        c_prev_prev, c_prev, reduction_prev = c_stem, c_stem, False
        self.cells = nn.ModuleList()
        for i, channels in enumerate(space.layer_channels()):
            reduction = i in reductions
            self.cells.append(
                SearchCell(space.nodes, c_prev_prev, c_prev, channels, reduction, reduction_prev, self.primitives)
            )
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, space.nodes * channels
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, space.num_classes)
        # how many leading cells keep only their inputs for the backward
        self.recomputed_cells = len(self.cells) if recompute else min(recompute_cells, len(self.cells))
        shape = (space.num_edges, len(self.primitives))
        self.alphas = nn.ParameterDict(
            {name: nn.Parameter(arch_init_scale * torch.randn(shape, generator=generator)) for name in space.cell_types}
        )

    # ---- parameter groups ------------------------------------------------------------------------
    @property
    def arch_names(self) -> tuple[str, ...]:
        """Cell types with an architecture tensor, in the order of :meth:`arch_parameters`."""
        return tuple(self.alphas.keys())

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas[name] for name in self.arch_names]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch_ids = {id(p) for p in self.alphas.parameters()}
        return [p for p in self.parameters() if id(p) not in arch_ids]

    def named_weight_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        for name, p in self.named_parameters():
            if not name.startswith("alphas."):
                yield name, p

    # ---- forward -----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = {name: torch.softmax(alpha, dim=-1) for name, alpha in self.alphas.items()}
        s0 = s1 = self.stem(self.normalize(x))
        for i, (cell_type, cell) in enumerate(zip(self.layer_types, self.cells)):
            w = weights[cell_type].to(s1.dtype)
            if i < self.recomputed_cells and torch.is_grad_enabled() and not holds(cell):
                s0, s1 = s1, _recomputed(cast(SearchCell, cell), s0, s1, w)
            else:
                s0, s1 = s1, cell(s0, s1, w)
        return self.classifier(self.global_pool(s1).flatten(1))

    # ---- architecture read-out -----------------------------------------------------------------
    def arch_weights(self) -> dict[str, np.ndarray]:
        """Softmax op weights per cell type, ``{name: (edges, ops) float64 array}``."""
        with torch.no_grad():
            return {name: torch.softmax(a.float(), dim=-1).double().cpu().numpy() for name, a in self.alphas.items()}

    def genotype(self, name: str | None = None, notes: str | None = None) -> Genotype:
        """Discretise the current architecture (see :func:`search.discretize.discretize`)."""
        from .discretize import discretize

        return discretize(self.arch_weights(), self.primitives, self.space, name=name, notes=notes)


def _recomputed(cell: SearchCell, s0: torch.Tensor, s1: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``cell(s0, s1, w)`` keeping only its inputs for the backward, which runs the cell's forward again.

    The second forward must not move BatchNorm's running statistics a second time, nor write to them at
    all: a graph kept for a second backward (DSRNA's Jacobian objective) has saved them, and an in-place
    restore would invalidate it. So it runs under :class:`~arnas_zoo.attacks.batchnorm.ScratchRunningStats`.
    """
    from torch.utils.checkpoint import checkpoint

    from arnas_zoo.attacks.batchnorm import ScratchRunningStats

    def contexts() -> tuple[Any, Any]:
        return contextlib.nullcontext(), ScratchRunningStats(cell)

    return checkpoint(cell, s0, s1, w, use_reentrant=False, context_fn=contexts)


def arch_state(model: Supernet) -> Mapping[str, torch.Tensor]:
    """Detached copies of the architecture logits (for logging and comparison)."""
    return {name: a.detach().clone() for name, a in model.alphas.items()}
