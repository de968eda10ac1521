"""One optimizer step of adversarial training: craft the batch, form the recipe's loss, update.

The loss, by ``recipe.method``:

- ``pgd`` / ``fgsm``: CE on the adversarial batch (Madry et al.; Wong et al. for FGSM + random start);
- ``trades``: CE on the clean batch + beta * KL(f(x) || f(x')) (Zhang et al. 2019);
- ``standard``: CE on the clean batch;

plus ``aux_weight`` * CE of the auxiliary head (cell networks) on ``recipe.aux_input`` -- the clean
batch in the ARNAS recipe, as the authors' ``adv_train.py`` does (their auxiliary logits come from
the clean forward pass in train mode) -- plus, with ``recipe.jacobian_weight``, a DSRNA-style
penalty on the input-Jacobian's Frobenius norm (random projections, Hoffman et al. 2019).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from arnas_zoo.attacks import pgd
from arnas_zoo.fastconv import training_routes
from arnas_zoo.runs.distributed import Dist, all_reduce_mean
from arnas_zoo.runs.precision import Autocast, full_precision
from arnas_zoo.training.recipe import Recipe


@dataclass
class StepModels:
    """The views of one network a step needs.

    ``train_net`` is the network the optimizer trains (its gradients are averaged over the processes
    of a data-parallel run after the backward pass, so any number of forward passes per step is fine);
    ``attack_net`` is what the attack differentiates (the same module, or its compiled version);
    ``compiled_train`` (with ``torch.compile``) is the compiled ``forward_train`` of ``train_net``.
    """

    train_net: nn.Module
    attack_net: nn.Module
    use_aux: bool
    aux_weight: float
    dist: Dist
    compiled_train: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]] | None = None

    def forward(self, x: torch.Tensor, with_aux: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The training forward pass: ``(logits, aux_logits or None)``."""
        if self.compiled_train is None:
            return forward_train(self.train_net, x, with_aux)
        if with_aux:
            return self.compiled_train(x)
        return self.attack_net(x), None  # the compiled forward (its train-mode graph)


def forward_train(net: nn.Module, x: torch.Tensor, use_aux: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(logits, aux_logits)``: the auxiliary head's logits only when ``use_aux``."""
    if not use_aux:
        return net(x), None
    return net.forward_train(x)  # type: ignore[operator]


def jacobian_penalty(net: nn.Module, x: torch.Tensor, projections: int = 1) -> torch.Tensor:
    """Mean over the batch of an unbiased estimate of ``||d logits / d x||_F^2`` (random projections).

    For ``v`` uniform on the unit sphere of the logit space, ``C * ||v^T J||^2`` is unbiased for
    ``||J||_F^2`` (Hoffman et al. 2019, Eq. 8). Differentiable w.r.t. the weights (double backprop).
    """
    x = x.detach().requires_grad_(True)
    logits = full_precision(net(x))
    total = logits.new_zeros(())
    c = logits.shape[1]
    for _ in range(projections):
        v = torch.randn_like(logits)
        v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
        (jv,) = torch.autograd.grad((logits * v).sum(), x, create_graph=True)
        total = total + c * jv.flatten(1).pow(2).sum(1).mean()
    return total / projections


@training_routes()
def train_step(
    models: StepModels,
    optimizer: torch.optim.Optimizer,
    recipe: Recipe,
    x: torch.Tensor,
    y: torch.Tensor,
    noise: torch.Tensor | None,
    eps: float,
    autocast: Autocast,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a (shard of a) batch; returns (loss, number correct on the trained-on inputs).

    Its attack and backward take the training routes of :func:`arnas_zoo.fastconv.training_routes`."""
    inputs = x
    if recipe.method != "standard":
        step = recipe.step_size * eps / recipe.eps  # the eps warm-up scales the step with eps
        inputs = pgd(
            models.attack_net,
            x,
            y,
            eps=eps,
            step_size=step,
            steps=recipe.steps,
            start=recipe.start,
            sigma=recipe.start_sigma,
            loss="kl" if recipe.method == "trades" else "ce",
            noise=noise,
            bn=recipe.attack_bn,
            autocast=autocast,
            check_inputs=False,
        )
    optimizer.zero_grad(set_to_none=True)
    aux_on_clean = models.use_aux and recipe.aux_input == "clean"
    with autocast():
        clean_logits, aux = None, None
        if recipe.method == "trades" or aux_on_clean:
            clean_logits, aux = models.forward(x, models.use_aux and aux_on_clean)
        if recipe.method in ("standard", "trades") and clean_logits is None:
            clean_logits, aux = models.forward(x, models.use_aux)
        if recipe.method == "standard":
            assert clean_logits is not None
            logits = full_precision(clean_logits)
            loss = F.cross_entropy(logits, y)
        else:
            adv_logits, adv_aux = models.forward(inputs, models.use_aux and not aux_on_clean)
            aux = aux if aux_on_clean else adv_aux
            logits = full_precision(adv_logits)
            if recipe.method == "trades":
                assert clean_logits is not None
                clean = full_precision(clean_logits)
                kl = F.kl_div(F.log_softmax(logits, dim=1), F.softmax(clean, dim=1), reduction="batchmean")
                loss = F.cross_entropy(clean, y) + recipe.trades_beta * kl
            else:
                loss = F.cross_entropy(logits, y)
        if aux is not None:
            loss = loss + models.aux_weight * F.cross_entropy(full_precision(aux), y)
    if recipe.jacobian_weight > 0:
        loss = loss + recipe.jacobian_weight * jacobian_penalty(models.train_net, x)
    loss.backward()
    if models.dist.world > 1:
        params = [p for p in models.train_net.parameters() if p.grad is not None]
        for p, g in zip(params, all_reduce_mean([p.grad for p in params], models.dist)):  # type: ignore[misc]
            p.grad = g
    if recipe.grad_clip is not None:
        nn.utils.clip_grad_norm_(models.train_net.parameters(), recipe.grad_clip)
    optimizer.step()
    return loss.detach(), (logits.detach().argmax(1) == y).sum()
