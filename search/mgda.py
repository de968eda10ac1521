"""The two-objective MGDA weight of ARNAS (paper Eq. 3-5) and the fixed-lambda baseline (Eq. 2).

For gradients ``t`` (natural loss) and ``t_hat`` (lambda-weighted robustness loss), the min-norm
point of their convex hull is ``gamma * t + (1 - gamma) * t_hat`` with

    gamma = clip(((t_hat - t) . t_hat) / ||t_hat - t||^2, 0, 1)        (Eq. 4)

which minimises ``||gamma t + (1 - gamma) t_hat||^2`` over ``gamma in [0, 1]`` (Eq. 3). When
``t == t_hat`` every gamma gives the same direction and Eq. 4 divides 0 by 0 (the authors' code
does not guard this): we return 0.5, the weight that treats both objectives alike. The combined
direction has a non-negative inner product with both gradients, positive unless the point is
Pareto-stationary (the min-norm point is 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from arnas_zoo.errors import ConfigError

STRATEGIES = ("mgda", "weighted_sum")
#: ||t_hat - t||^2 at or below this (relative to ||t||^2 + ||t_hat||^2) counts as t == t_hat.
_TIE = 1e-12


def mgda_weight(t: torch.Tensor, t_hat: torch.Tensor) -> float:
    """The closed-form gamma of Eq. (4) for flat gradients ``t`` and ``t_hat`` (0.5 when they coincide)."""
    if t.shape != t_hat.shape:
        raise ConfigError(
            f"mgda_weight: expected gradients of equal shape, got {tuple(t.shape)} and {tuple(t_hat.shape)}"
        )
    t = t.detach().double().flatten()
    t_hat = t_hat.detach().double().flatten()
    diff = t_hat - t
    denom = float(diff.dot(diff))
    scale = float(t.dot(t) + t_hat.dot(t_hat))
    if denom <= _TIE * scale or denom == 0.0:
        return 0.5
    gamma = float(diff.dot(t_hat)) / denom
    return min(max(gamma, 0.0), 1.0)


@dataclass(frozen=True)
class Combined:
    """The architecture direction and how it was made."""

    direction: list[torch.Tensor]
    gamma: float  # weight on the natural gradient t (1.0 and 1.0 for the weighted sum: d = t + t_hat)
    strategy: str


def flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([x.reshape(-1) for x in tensors])


def combine(t: Sequence[torch.Tensor], t_hat: Sequence[torch.Tensor], strategy: str = "mgda") -> Combined:
    """Combine per-tensor gradients into one architecture direction.

    ``mgda``: one gamma for all tensors together (the gradients are concatenated, PROTOCOLS.md), then
    ``gamma * t + (1 - gamma) * t_hat`` (Eq. 5). ``weighted_sum``: ``t + t_hat`` (Eq. 2; ``t_hat``
    already carries lambda), reported with ``gamma = nan``.
    """
    if len(t) != len(t_hat):
        raise ConfigError(f"combine: expected as many t as t_hat tensors, got {len(t)} and {len(t_hat)}")
    if strategy == "mgda":
        gamma = mgda_weight(flat(t), flat(t_hat))
        return Combined([gamma * a + (1.0 - gamma) * b for a, b in zip(t, t_hat)], gamma, strategy)
    if strategy == "weighted_sum":
        return Combined([a + b for a, b in zip(t, t_hat)], float("nan"), strategy)
    raise ConfigError(f"strategy: expected one of {list(STRATEGIES)}, got {strategy!r}")
