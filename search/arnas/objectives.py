"""Robustness objectives for the upper level (the ``lambda * L_adv`` of paper Eq. 1).

ARNAS notes that "the adversarial loss can be optionally replaced by other robustness metrics". An
objective has two halves: :meth:`RobustnessObjective.prepare` does the work that is *not*
differentiated (e.g. crafting PGD examples against the current supernet), and
:meth:`RobustnessObjective.loss` evaluates a loss that is differentiable w.r.t. weights and
architecture, so that the second-order step can re-evaluate it at the unrolled weights. Register
new ones with :func:`register_objective` (DSRNA's Jacobian and certified-bound objectives do).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from arnas_zoo.attacks import pgd
from arnas_zoo.batchstats import HeldBatchStats
from arnas_zoo.errors import ConfigError
from arnas_zoo.runs.precision import Autocast, full_precision


class RobustnessObjective(ABC):
    """A differentiable robustness loss of the supernet on a validation batch."""

    name: str = "objective"
    #: the mean of a number over the processes of a data-parallel run (set by the run; identity alone)
    mean_over_ranks: Callable[[float], float] = staticmethod(lambda value: value)

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

    def state(self) -> dict[str, Any]:
        """What must survive a resume (JSON-able); most objectives keep none."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:  # noqa: B027 -- a no-op default, not abstract
        """Restore :meth:`state` (resume)."""


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


# ---- DSRNA's robustness metrics (Hosseini, Yang & Xie, CVPR 2021, Sec. 3.1) ----------------------------
def jacobian_row_norms(
    model: nn.Module,
    x: torch.Tensor,
    *,
    q: float,
    estimator: str = "exact",
    projections: int = 1,
    create_graph: bool = True,
) -> torch.Tensor:
    """``(N,)`` per sample, a norm of the Jacobian of its logits with respect to its own input.

    The function differentiated is the network as it trains, one sample at a time: BatchNorm layers in
    training mode normalise with the statistics of the clean batch ``x``, recorded first and then held
    constant during the input differentiation (:class:`arnas_zoo.batchstats.HeldBatchStats`; the
    statistics stay differentiable in weights and architecture). Without that, the gradient of a
    logit's batch sum would go through the batch statistics and nearly vanish.

    ``estimator="exact"``: the mean over the K classes of ``||J_k(x)||_q``, the rows of the Jacobian,
    ``q`` the dual of the threat norm (1 for l_inf, 2 for l_2): DSRNA Eq. 12-15 bound the logit shift
    under a perturbation of size delta by ``delta * ||J_k||_q``. K backward passes with the graph kept,
    affordable for K = 10. ``"projection"``: Hoffman et al. (2019)'s random-projection estimate of the
    Frobenius norm ``||J||_F`` (whatever ``q``; what the paper uses for l_2), divided by sqrt(K) to be on
    the scale of a row norm; ``projections`` backward passes whatever K is.
    """
    if estimator not in ("exact", "projection"):
        raise ConfigError(f"jacobian_estimator: expected 'exact' or 'projection', got {estimator!r}")
    with HeldBatchStats(model) as held:
        held.record(x.detach())
        x = x.detach().requires_grad_(True)
        logits = full_precision(model(x))
        n, k = logits.shape
        if estimator == "projection":
            total = logits.new_zeros(n)
            for _ in range(projections):
                v = torch.randn_like(logits)
                v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
                (jv,) = torch.autograd.grad((logits * v).sum(), x, create_graph=create_graph, retain_graph=True)
                total = total + k * jv.flatten(1).pow(2).sum(1)
            return (total / projections).clamp_min(0).sqrt() / math.sqrt(k)
        rows = []
        for cls in range(k):
            (row,) = torch.autograd.grad(logits[:, cls].sum(), x, create_graph=create_graph, retain_graph=True)
            rows.append(row.flatten(1).norm(p=q, dim=1))
        return torch.stack(rows, dim=1).mean(1)


class JacobianNorm(RobustnessObjective):
    """DSRNA-Jacobian: minimise the mean ``||J_k(x)||_q`` (maximise the Jacobian norm bound R)."""

    name = "jacobian"

    def __init__(self, norm: str = "linf", estimator: str = "exact", projections: int = 1):
        self.q = 1.0 if norm == "linf" else 2.0
        self.norm, self.estimator, self.projections = norm, estimator, projections

    def prepare(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor | None) -> Any:
        return x, y

    def loss(self, model: nn.Module, prepared: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, None]:
        x, _ = prepared
        norms = jacobian_row_norms(model, x, q=self.q, estimator=self.estimator, projections=self.projections)
        return norms.mean(), None

    def describe(self) -> str:
        if self.estimator == "projection":
            what = f"Frobenius norm / sqrt(K) by {self.projections} random projection(s)"
        else:
            what = f"mean l{self.q:g} norm (dual of the {self.norm} threat) of its rows, exact"
        return f"per-sample input Jacobian, batch statistics held: {what}"


class CertifiedMargin(RobustnessObjective):
    """DSRNA-CB: maximise the certified lower bounds of the margins ``z_y - z_j`` at an adaptive eps.

    The loss is the cross-entropy of the worst-case logits the lower bounds imply (``-lb_j`` for
    ``j != y``, 0 for ``y``; Gowal et al. 2018's certified-training loss): a smooth function that
    decreases as every lower bound grows. The raw mean of the bounds would be dominated by points
    whose bounds are vacuous (-1e6 and below on an untrained supernet).

    The bounds are of the function the supernet computes while it trains, on a ball around each clean
    point: BatchNorm normalises with the clean batch's statistics, held constant (DSRNA Eq. 2;
    :func:`arnas_zoo.bounds.margin_bounds` in train mode), so every layer is affine or monotone in the
    input and the gap closes at eps 0.

    eps (our rule for the paper's "increased or decreased based on the gap between the certified
    upper and lower bounds"): before each step, the mean gap ``g`` between the margins' upper and
    lower bounds at the current eps is measured (averaged over the processes of a data-parallel run),
    and eps is multiplied by ``gap_target / g`` clipped to ``[1/8, factor]``, within
    ``[1e-6, eps_max]``. The rule rests on a measurement: with the statistics held, the gap grows
    linearly with eps (about 10x a decade from 1e-6 to 1e-2 on every supernet shape of
    ``benchmarks/bench_supernet_bounds.py``), so ``gap_target / g`` is the factor that puts the next
    gap on the target, and eps tracks the radius at which the bounds stay informative as the supernet
    trains. eps is part of the run's state (exact resume) and of every epoch's log.
    """

    name = "certified"

    def __init__(
        self,
        eps_init: float,
        eps_max: float,
        norm: str = "linf",
        method: str = "ibp",
        gap_target: float = 1.0,
        factor: float = 1.1,
    ):
        self.eps, self.eps_max = float(eps_init), float(max(eps_max, eps_init))
        self.norm, self.method, self.gap_target, self.factor = norm, method, gap_target, factor
        self.last_gap = float("nan")

    def prepare(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor | None) -> Any:
        from arnas_zoo.bounds import margin_bounds

        used = self.eps
        with torch.no_grad():
            lower, upper = margin_bounds(model, x, y, used, norm=self.norm, method=self.method, upper=True)
        gap = self.mean_over_ranks(float((upper - lower).mean()))  # every rank moves eps alike
        self.last_gap = gap
        if math.isfinite(gap) and gap > 0:
            # the gap grows about linearly with eps: move eps toward the target gap, shrinking by up to 8x a
            # step (an untrained supernet's bounds are vacuous at the paper's 0.03) and growing by `factor`
            scale = min(max(self.gap_target / gap, 1.0 / 8.0), self.factor)
            self.eps = min(max(self.eps * scale, 1e-6), self.eps_max)
        return x, y, used

    def loss(self, model: nn.Module, prepared: tuple[torch.Tensor, torch.Tensor, float]) -> tuple[torch.Tensor, None]:
        from arnas_zoo.bounds import margin_bounds

        x, y, eps = prepared
        lower = margin_bounds(model, x, y, eps, norm=self.norm, method=self.method)
        assert isinstance(lower, torch.Tensor)
        worst = torch.cat([torch.zeros_like(lower[:, :1]), -lower], dim=1)  # class 0 stands for y
        return F.cross_entropy(worst, torch.zeros_like(y)), None

    def state(self) -> dict[str, Any]:
        return {"eps": self.eps, "last_gap": self.last_gap}

    def load_state(self, state: dict[str, Any]) -> None:
        self.eps, self.last_gap = float(state["eps"]), float(state["last_gap"])

    def describe(self) -> str:
        return (
            f"certified margin ({self.method}, {self.norm}, adaptive eps {self.eps:.3g}, gap target {self.gap_target})"
        )


class Combined(RobustnessObjective):
    """DSRNA-Combined: the sum of the Jacobian and the certified objectives (paper Sec. 3.2)."""

    name = "combined"

    def __init__(self, jacobian: JacobianNorm, certified: CertifiedMargin):
        self.jacobian, self.certified = jacobian, certified

    def prepare(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor | None) -> Any:
        return self.jacobian.prepare(model, x, y, noise), self.certified.prepare(model, x, y, noise)

    def loss(self, model: nn.Module, prepared: tuple[Any, Any]) -> tuple[torch.Tensor, None]:
        return self.jacobian.loss(model, prepared[0])[0] + self.certified.loss(model, prepared[1])[0], None

    def state(self) -> dict[str, Any]:
        return self.certified.state()

    def load_state(self, state: dict[str, Any]) -> None:
        self.certified.load_state(state)

    def describe(self) -> str:
        return f"{self.jacobian.describe()} + {self.certified.describe()}"


def _jacobian_factory(config: Any, autocast: Autocast | None = None) -> JacobianNorm:
    return JacobianNorm(config.threat_norm, config.jacobian_estimator, config.jacobian_projections)


def _certified_factory(config: Any, autocast: Autocast | None = None) -> CertifiedMargin:
    return CertifiedMargin(
        config.cert_eps_init,
        config.eps,
        config.threat_norm,
        config.cert_method,
        config.cert_gap_target,
        config.cert_eps_factor,
    )


register_objective("jacobian", _jacobian_factory)
register_objective("certified", _certified_factory)
register_objective(
    "combined", lambda config, autocast=None: Combined(_jacobian_factory(config), _certified_factory(config))
)
