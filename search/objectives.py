"""Robustness objectives for the upper level (the ``lambda * L_adv`` of paper Eq. 1).

ARNAS notes that "the adversarial loss can be optionally replaced by other robustness metrics". An
objective has two halves: :meth:`RobustnessObjective.prepare` does the work that is *not*
differentiated (e.g. crafting PGD examples against the current supernet), and
:meth:`RobustnessObjective.loss` evaluates a loss that is differentiable w.r.t. weights and
architecture, so that the second-order step can re-evaluate it at the unrolled weights. Register
new ones with :func:`register_objective` (DSRNA's Jacobian and certified-bound objectives do).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from arnas_zoo.attacks import pgd
from arnas_zoo.errors import ConfigError
from arnas_zoo.runs.precision import Autocast, full_precision


class RobustnessObjective(ABC):
    """A differentiable robustness loss of the supernet on a validation batch."""

    name: str = "objective"

    @abstractmethod
    def prepare(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor | None) -> Any:
        """Non-differentiated preparation (called once per step with the current weights).

        ``noise`` holds U(-1, 1) draws of ``x``'s shape for objectives that need a random start.
        """

    @abstractmethod
    def loss(self, model: nn.Module, prepared: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(scalar loss, logits or None)``; differentiable w.r.t. the model's parameters."""

    def describe(self) -> str:
        return self.name


class PgdCrossEntropy(RobustnessObjective):
    """ARNAS' objective: cross-entropy on PGD examples crafted against the current supernet.

    ``bn="batch"`` crafts with batch statistics (the function both levels train, and what the authors'
    code attacks); ``"eval"`` with the running statistics.
    """

    name = "pgd_ce"

    def __init__(self, eps: float, step_size: float, steps: int, bn: str = "batch", autocast: Autocast | None = None):
        self.eps, self.step_size, self.steps, self.bn, self.autocast = eps, step_size, steps, bn, autocast

    def prepare(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor | None) -> Any:
        x_adv = pgd(
            model,
            x,
            y,
            eps=self.eps,
            step_size=self.step_size,
            steps=self.steps,
            start="uniform",
            noise=noise,
            bn=self.bn,
            autocast=self.autocast,
            check_inputs=False,
        )
        return x_adv, y

    def loss(self, model: nn.Module, prepared: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv, y = prepared
        logits = full_precision(model(x_adv))
        return F.cross_entropy(logits, y), logits

    def describe(self) -> str:
        return f"CE on PGD-{self.steps} examples (eps {self.eps:.4g}, step {self.step_size:.4g}, BN {self.bn})"


ObjectiveFactory = Callable[..., RobustnessObjective]
_OBJECTIVES: dict[str, ObjectiveFactory] = {}


def register_objective(name: str, factory: ObjectiveFactory, *, replace: bool = False) -> None:
    """Make ``factory(config=SearchConfig, autocast=ctx)`` available as ``robust_objective=name``."""
    if name in _OBJECTIVES and not replace:
        raise ConfigError(f"robust objective {name!r} is already registered; pass replace=True to override it")
    _OBJECTIVES[name] = factory


def available_objectives() -> list[str]:
    return sorted(_OBJECTIVES)


def make_objective(name: str, **kwargs: Any) -> RobustnessObjective:
    try:
        factory = _OBJECTIVES[name]
    except KeyError:
        raise ConfigError(f"robust_objective: unknown {name!r}; expected one of {available_objectives()}") from None
    return factory(**kwargs)


def _pgd_ce_factory(config: Any, autocast: Autocast | None = None) -> PgdCrossEntropy:
    return PgdCrossEntropy(config.eps, config.step_size, config.pgd_steps, config.attack_bn, autocast)


register_objective("pgd_ce", _pgd_ce_factory)
