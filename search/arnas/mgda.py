"""The two-objective MGDA weight of ARNAS (paper Eq. 3-5), a normalised variant, and the fixed sum (Eq. 2).

For gradients ``t`` (natural loss) and ``t_hat`` (lambda-weighted robustness loss), the min-norm
point of their convex hull is ``gamma * t + (1 - gamma) * t_hat`` with

    gamma = clip(((t_hat - t) . t_hat) / ||t_hat - t||^2, 0, 1)        (Eq. 4)

which minimises ``||gamma t + (1 - gamma) t_hat||^2`` over ``gamma in [0, 1]`` (Eq. 3). When
``t == t_hat`` every gamma gives the same direction and Eq. 4 divides 0 by 0 (the authors' code does
not guard this): we return 0.5. The combined direction has a non-negative inner product with both
gradients, positive unless the point is Pareto-stationary.

**When gamma is 0.** gamma = 0 exactly when ``t_hat . (t - t_hat) >= 0``, i.e. when the projection of
``t`` on ``t_hat`` is at least ``||t_hat||``: with lambda = 0.1 the robust gradient ``t_hat`` is about
ten times shorter than ``t``, so the min-norm point is ``t_hat`` itself as soon as the cosine between
them exceeds about ``||t_hat|| / ||t||`` (~0.1). The paper's own setting therefore steps along the
(scaled) robust gradient alone most of the time; :class:`Combined` records the norms and the cosine
so that a run shows it. ``mgda_normalized`` (Sener & Koltun 2018's "l2" normalisation) applies Eq. 4
to the unit vectors ``t/||t||`` and ``t_hat/||t_hat||``, which weighs the directions, not their scales.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from arnas_zoo.errors import ConfigError, NonFiniteError

STRATEGIES = ("mgda", "mgda_normalized", "weighted_sum")
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
    if not (math.isfinite(denom) and math.isfinite(scale)):
        raise NonFiniteError("MGDA: the natural or robust architecture gradient is not finite")
    if denom <= _TIE * scale or denom == 0.0:
        return 0.5
    gamma = float(diff.dot(t_hat)) / denom
    return min(max(gamma, 0.0), 1.0)


@dataclass(frozen=True)
class Combined:
    """The architecture direction, how it was made, and the diagnostics of the two gradients."""

    direction: list[torch.Tensor]
    gamma: float  # weight on the natural gradient t (nan for the weighted sum: d = t + t_hat)
    strategy: str
    t_norm: float
    t_hat_norm: float
    cosine: float

    @property
    def norm_ratio(self) -> float:
        """``||t_hat|| / ||t||``: below about the cosine, the min-norm point is ``t_hat`` (gamma = 0)."""
        return self.t_hat_norm / self.t_norm if self.t_norm > 0 else float("inf")


def flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([x.reshape(-1) for x in tensors])


def combine(t: Sequence[torch.Tensor], t_hat: Sequence[torch.Tensor], strategy: str = "mgda") -> Combined:
    """Combine per-tensor gradients into one architecture direction (one gamma for all tensors).

    ``mgda``: the gradients of all cell types are concatenated (PROTOCOLS.md), then
    ``gamma * t + (1 - gamma) * t_hat`` (Eq. 5). ``mgda_normalized``: the same on unit vectors.
    ``weighted_sum``: ``t + t_hat`` (Eq. 2; ``t_hat`` already carries lambda). A non-finite gradient
    raises :class:`~arnas_zoo.errors.NonFiniteError`.
    """
    if len(t) != len(t_hat):
        raise ConfigError(f"combine: expected as many t as t_hat tensors, got {len(t)} and {len(t_hat)}")
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy: expected one of {list(STRATEGIES)}, got {strategy!r}")
    ft, fh = flat(t).detach().double(), flat(t_hat).detach().double()
    tn, hn = float(ft.norm()), float(fh.norm())
    if not (math.isfinite(tn) and math.isfinite(hn)):
        raise NonFiniteError(f"architecture gradients are not finite (||t|| = {tn}, ||t_hat|| = {hn})")
    cosine = float(ft.dot(fh)) / (tn * hn) if tn > 0 and hn > 0 else 0.0
    if strategy == "weighted_sum":
        return Combined([a + b for a, b in zip(t, t_hat)], float("nan"), strategy, tn, hn, cosine)
    if strategy == "mgda_normalized":
        su, sv = (1.0 / tn if tn > 0 else 0.0), (1.0 / hn if hn > 0 else 0.0)
        gamma = mgda_weight(ft * su, fh * sv)
        direction = [gamma * su * a + (1.0 - gamma) * sv * b for a, b in zip(t, t_hat)]
        return Combined(direction, gamma, strategy, tn, hn, cosine)
    gamma = mgda_weight(ft, fh)
    return Combined([gamma * a + (1.0 - gamma) * b for a, b in zip(t, t_hat)], gamma, strategy, tn, hn, cosine)
