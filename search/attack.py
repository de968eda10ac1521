"""PGD for the search (l_inf, uniform random start, clamped to [0, 1]).

The attack runs with the supernet's batch norm in ``eval`` mode (running statistics, as the
reference evaluation attack does) or ``batch`` mode (batch statistics, running statistics left
untouched). The authors' search code attacked in train mode, which also updates the running
statistics with adversarial batches; both modes here leave the statistics alone.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn


def full_precision(logits: torch.Tensor) -> torch.Tensor:
    """Logits for the loss: float32 under bf16/fp16 autocast, float64 left alone (tests in float64)."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


@contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """Run with batch-norm buffers restored afterwards (forward passes in train mode update them)."""
    saved = {name: b.detach().clone() for name, b in model.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(saved[name])


@contextmanager
def bn_mode(model: nn.Module, mode: str) -> Iterator[None]:
    """``eval``: model.eval(); ``batch``: train-mode BN on frozen running statistics. Restores the mode."""
    was_training = model.training
    try:
        if mode == "eval":
            model.eval()
            yield
        else:
            model.train()
            with frozen_bn_stats(model):
                yield
    finally:
        model.train(was_training)


def pgd_linf(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    random_start: bool = True,
    bn: str = "eval",
    autocast: Callable[[], AbstractContextManager[None]] = nullcontext,
) -> torch.Tensor:
    """Untargeted l_inf PGD on cross-entropy; returns detached adversarial images in [0, 1].

    Gradients are taken w.r.t. the input only (``torch.autograd.grad``), so no parameter's ``.grad``
    is touched.
    """
    x = x.detach()
    if steps == 0 or eps == 0:
        return x.clone()
    with bn_mode(model, bn), torch.enable_grad():
        x_adv = x.clone()
        if random_start:
            x_adv = (x_adv + torch.empty_like(x).uniform_(-eps, eps)).clamp_(0.0, 1.0)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            with autocast():
                loss = F.cross_entropy(full_precision(model(x_adv)), y)
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = x_adv.detach() + step_size * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)
    return x_adv.detach()
