"""One step of the bi-level search: the architecture step (Eq. 1-5) and the weight step.

Architecture step. ``t`` is the gradient w.r.t. all architecture tensors of the natural cross-entropy
on a clean validation batch, ``t_hat`` that of ``lambda *`` the robustness objective (PGD
cross-entropy by default) on the same batch; both are taken at the weights ``w`` (first order) or at
the one-step-unrolled weights ``w' = w - eta * (momentum * buf + grad_w L_train + wd * w)`` with the
implicit term ``- eta * H v`` from a central finite difference with ``r = 0.01 / ||v||`` (second
order, DARTS). ``L_train`` is the cross-entropy on the PGD training batch (the lower level trains on
adversarial examples only). ``t`` and ``t_hat`` are combined by MGDA (or the Eq. 2 sum) and Adam steps.

Data parallel: every gradient that enters the step (training gradient of the unroll, ``v``, the
finite-difference gradients, ``t`` and ``t_hat``) is averaged across ranks *before* it is used, so
every rank computes the same gamma and the same update.

Forward passes in the architecture step run in train mode (batch statistics, as in DARTS) with the
batch-norm running statistics restored afterwards, so that they only ever average weight-training
batches. bf16 autocast (CUDA; CPU with ``amp_cpu``) covers the forward passes except the
finite-difference ones, which run in float32 and without TF32: a difference of two gradients at
``w +- r v`` would drown in that rounding.

Guards: a non-finite ``t`` or ``t_hat`` raises :class:`~arnas_zoo.errors.NonFiniteError` before the
architecture moves, and the weights are restored (in a ``finally``) whenever a second-order step
fails half-way, so an error never leaves unrolled or perturbed weights behind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from arnas_zoo.attacks.batchnorm import frozen_running_stats
from arnas_zoo.errors import NonFiniteError
from arnas_zoo.runs.precision import full_precision, no_tf32

from .mgda import combine, flat
from .objectives import RobustnessObjective
from .supernet import Supernet

GradSync = Callable[[list[torch.Tensor]], list[torch.Tensor]]
Autocast = Callable[[], AbstractContextManager[None]]


def no_sync(grads: list[torch.Tensor]) -> list[torch.Tensor]:
    return grads


def _grads(loss: torch.Tensor, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    grads = torch.autograd.grad(loss, list(params), allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


@dataclass
class ArchStepInfo:
    """What one architecture step saw (natural/robust losses are at the weights the step used)."""

    gamma: float
    natural_loss: float
    natural_correct: int
    robust_loss: float
    robust_correct: int
    t_norm: float
    t_hat_norm: float
    cosine: float

    @property
    def norm_ratio(self) -> float:
        return self.t_hat_norm / self.t_norm if self.t_norm > 0 else float("inf")


class Architect:
    """Updates the architecture tensors of a :class:`~search.supernet.Supernet` with Adam."""

    def __init__(
        self,
        model: Supernet,
        weight_optimizer: torch.optim.SGD,
        objective: RobustnessObjective,
        *,
        lr: float = 3e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        weight_decay: float = 1e-3,
        lam: float = 0.1,
        order: str = "second",
        strategy: str = "mgda",
        hvp_r: float = 0.01,
        sync: GradSync = no_sync,
        autocast: Autocast = nullcontext,
    ):
        self.model = model
        self.weight_optimizer = weight_optimizer
        self.objective = objective
        self.lam, self.order, self.strategy, self.hvp_r = lam, order, strategy, hvp_r
        self.sync, self.autocast = sync, autocast
        self.optimizer = torch.optim.Adam(model.arch_parameters(), lr=lr, betas=betas, weight_decay=weight_decay)

    # ---- gradients -------------------------------------------------------------------------------
    def _objective_grads(
        self,
        loss_fn: Callable[[], tuple[torch.Tensor, torch.Tensor | None]],
        y: torch.Tensor,
        scale: float,
        *,
        weights: bool = True,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], float, int]:
        """Gradients of ``scale * loss`` w.r.t. (architecture, weights), the loss and #correct.

        ``weights=False`` (first order: only ``t`` and ``t_hat`` are needed) skips the weight
        gradients, and with them every convolution's weight-gradient pass; the second list is empty.
        """
        alphas = self.model.arch_parameters()
        params = [*alphas, *self.model.weight_parameters()] if weights else alphas
        with self.autocast():
            loss, logits = loss_fn()
        grads = self.sync(_grads(scale * loss, params))
        correct = int((logits.argmax(1) == y).sum()) if logits is not None else -1
        return grads[: len(alphas)], grads[len(alphas) :], float(loss.detach()), correct

    def _train_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(full_precision(self.model(x)), y)

    def _set_weights(self, base: list[torch.Tensor], direction: list[torch.Tensor] | None, scale: float) -> None:
        with torch.no_grad():
            directions: list[torch.Tensor | None] = list(direction) if direction else [None] * len(base)
            for p, b, d in zip(self.model.weight_parameters(), base, directions):
                p.copy_(b if d is None else b + scale * d)

    def _hessian_vector(
        self, v: list[torch.Tensor], base: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor
    ) -> list[torch.Tensor]:
        """``(grad_a L_train(w + r v) - grad_a L_train(w - r v)) / 2r`` with ``r = hvp_r / ||v||``."""
        alphas = self.model.arch_parameters()
        norm = float(flat(v).norm())
        if norm == 0.0:
            return [torch.zeros_like(a) for a in alphas]
        r = self.hvp_r / norm
        with no_tf32():
            self._set_weights(base, v, r)
            g_plus = _grads(self._train_loss(x, y), alphas)
            self._set_weights(base, v, -r)
            g_minus = _grads(self._train_loss(x, y), alphas)
        self._set_weights(base, None, 0.0)
        return self.sync([(a - b) / (2.0 * r) for a, b in zip(g_plus, g_minus)])

    def gradients(
        self,
        train_batch: tuple[torch.Tensor, torch.Tensor],
        val_batch: tuple[torch.Tensor, torch.Tensor],
        robust_prepared: Any,
        eta: float,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], dict[str, Any]]:
        """``(t, t_hat, info)``: per-tensor gradients of the natural and the lambda-weighted robust loss."""
        model = self.model
        x_val, y_val = val_batch

        def natural() -> tuple[torch.Tensor, torch.Tensor]:
            logits = full_precision(model(x_val))
            return F.cross_entropy(logits, y_val), logits

        def robust() -> tuple[torch.Tensor, torch.Tensor | None]:
            return self.objective.loss(model, robust_prepared)

        if self.order == "first":
            t, _, nat_loss, nat_correct = self._objective_grads(natural, y_val, 1.0, weights=False)
            t_hat, _, rob_loss, rob_correct = self._objective_grads(robust, y_val, self.lam, weights=False)
        else:
            weights = model.weight_parameters()
            base = [p.detach().clone() for p in weights]
            try:
                t, t_hat, nat_loss, nat_correct, rob_loss, rob_correct = self._second_order(
                    base, train_batch, natural, robust, y_val, eta
                )
            finally:  # an error half-way must not leave unrolled or perturbed weights behind
                self._set_weights(base, None, 0.0)
        info = {
            "natural_loss": nat_loss,
            "natural_correct": nat_correct,
            "robust_loss": rob_loss,
            "robust_correct": rob_correct,
        }
        return t, t_hat, info

    def _second_order(
        self,
        base: list[torch.Tensor],
        train_batch: tuple[torch.Tensor, torch.Tensor],
        natural: Any,
        robust: Any,
        y_val: torch.Tensor,
        eta: float,
    ) -> tuple[Any, ...]:
        """``t`` and ``t_hat`` at the one-step-unrolled weights, with the implicit term (DARTS Eq. 7-8)."""
        weights = self.model.weight_parameters()
        x_tr, y_tr = train_batch
        with self.autocast():
            train_loss = self._train_loss(x_tr, y_tr)
        g_train = self.sync(_grads(train_loss, weights))
        opt = self.weight_optimizer
        group = opt.param_groups[0]
        momentum, wd = group["momentum"], group["weight_decay"]
        unrolled = []
        for p, b, g in zip(weights, base, g_train):
            step = g + wd * b
            buf = opt.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                step = step + momentum * buf
            unrolled.append(b - eta * step)
        self._set_weights(unrolled, None, 0.0)
        dt, v_nat, nat_loss, nat_correct = self._objective_grads(natural, y_val, 1.0)
        dt_hat, v_rob, rob_loss, rob_correct = self._objective_grads(robust, y_val, self.lam)
        h_nat = self._hessian_vector(v_nat, base, x_tr, y_tr)
        h_rob = self._hessian_vector(v_rob, base, x_tr, y_tr)
        t = [g - eta * h for g, h in zip(dt, h_nat)]
        t_hat = [g - eta * h for g, h in zip(dt_hat, h_rob)]
        return t, t_hat, nat_loss, nat_correct, rob_loss, rob_correct

    # ---- the step --------------------------------------------------------------------------------
    def step(
        self,
        train_batch: tuple[torch.Tensor, torch.Tensor],
        val_batch: tuple[torch.Tensor, torch.Tensor],
        robust_prepared: Any,
        eta: float,
    ) -> ArchStepInfo:
        """One Adam step on the architecture; weights and BN statistics are left as they were."""
        self.model.train()
        with frozen_running_stats(self.model):
            t, t_hat, info = self.gradients(train_batch, val_batch, robust_prepared, eta)
        combined = combine(t, t_hat, self.strategy)  # raises NonFiniteError before anything moves
        self.optimizer.zero_grad(set_to_none=True)
        for a, d in zip(self.model.arch_parameters(), combined.direction):
            a.grad = d.detach().to(a.dtype)
        self.optimizer.step()
        return ArchStepInfo(
            gamma=combined.gamma, t_norm=combined.t_norm, t_hat_norm=combined.t_hat_norm, cosine=combined.cosine, **info
        )


def weight_step(
    model: Supernet,
    optimizer: torch.optim.SGD,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    grad_clip: float | None = 5.0,
    sync: GradSync = no_sync,
    autocast: Autocast = nullcontext,
) -> tuple[float, int]:
    """One SGD step of the weights on (adversarial) batch ``(x, y)``; returns (loss, #correct)."""
    model.train()
    weights = model.weight_parameters()
    with autocast():
        logits = full_precision(model(x))
    loss = F.cross_entropy(logits, y)
    if not bool(torch.isfinite(loss)):
        raise NonFiniteError(f"weight step: the training loss is {float(loss)}; lower w_lr or check the data")
    grads = sync(_grads(loss, weights))
    for p, g in zip(weights, grads):
        p.grad = g
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(weights, grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach()), int((logits.argmax(1) == y).sum())
