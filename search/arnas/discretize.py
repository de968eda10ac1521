"""The DARTS discretisation rule: per node, the two strongest incoming edges, each with its best op.

An edge's strength is its largest op weight other than ``none`` (DARTS, Liu et al. 2019, and ARNAS
Algorithm 1 step 6); the op on a kept edge is the argmax over the same ops. ``none`` is never chosen,
so the ARNAS space (no ``none``) and the DARTS space discretise with one rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from arnas_zoo.errors import ConfigError
from arnas_zoo.genotype import NUM_CELL_INPUTS, Genotype

from .space import SearchSpace

EDGES_PER_NODE = 2


def discretize_cell(weights: np.ndarray, primitives: Sequence[str], nodes: int) -> dict[str, list]:
    """One cell's ``(edges, ops)`` weights -> ``{"nodes": [[[op, input], ...], ...], "concat": [...]}``.

    Kept edges are listed by input index. Ties go to the lower input index / earlier op, so the result
    is a deterministic function of the weights.
    """
    weights = np.asarray(weights, dtype=np.float64)
    expected = (sum(NUM_CELL_INPUTS + k for k in range(nodes)), len(primitives))
    if weights.shape != expected:
        raise ConfigError(f"architecture weights: expected shape {expected} for {nodes} nodes, got {weights.shape}")
    usable = np.array([p != "none" for p in primitives])
    if not usable.any():
        raise ConfigError("primitives: expected at least one op other than 'none'")
    masked = np.where(usable[None, :], weights, -np.inf)
    out_nodes = []
    start = 0
    for k in range(nodes):
        n_in = NUM_CELL_INPUTS + k
        block = masked[start : start + n_in]
        strength = block.max(axis=1)
        # stable sort on -strength: equal strengths keep input order
        keep = sorted(np.argsort(-strength, kind="stable")[: min(EDGES_PER_NODE, n_in)].tolist())
        out_nodes.append([[primitives[int(np.argmax(block[src]))], int(src)] for src in keep])
        start += n_in
    return {"nodes": out_nodes, "concat": list(range(NUM_CELL_INPUTS, NUM_CELL_INPUTS + nodes))}


def discretize(
    weights: Mapping[str, np.ndarray],
    primitives: Sequence[str],
    space: SearchSpace,
    *,
    name: str | None = None,
    notes: str | None = None,
) -> Genotype:
    """Architecture weights per cell type -> a validated :class:`~arnas_zoo.genotype.Genotype`.

    ``space.space`` becomes the genotype's ``space`` ("arnas" or "darts"); cell names are the supernet's
    cell types (accurate/robust/reduce, or normal/reduce).
    """
    cells = {cell: discretize_cell(w, primitives, space.nodes) for cell, w in weights.items()}
    data: dict = {"space": space.space, "cells": cells}
    if name:
        data["name"] = name
    if notes:
        data["notes"] = notes
    return Genotype.from_dict(data)
