"""PGD for the search (l_inf, uniform random start, clamped to [0, 1]) on top of ``arnas_zoo.attacks.pgd``.

The attack runs with the supernet's batch norm in ``eval`` mode (running statistics, as the
reference evaluation attack does) or ``batch`` mode (batch statistics, running statistics left
untouched). The authors' search code attacked in train mode, which also updates the running
statistics with adversarial batches; both modes here leave the statistics alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch import nn

from arnas_zoo.attacks import pgd


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


class _BatchStatistics(nn.Module):
    """Shows a model to an attack that switches to eval mode while it keeps using batch statistics.

    ``arnas_zoo.attacks.pgd`` calls ``eval()`` on what it is given; this wrapper does not pass that on,
    so the wrapped supernet stays in train mode (its running statistics are frozen by the caller).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def train(self, mode: bool = True) -> _BatchStatistics:
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


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
    """Untargeted l_inf PGD on cross-entropy (``arnas_zoo.attacks.pgd``); detached images in [0, 1].

    ``bn="eval"`` attacks with running statistics (the reference attack's eval mode); ``bn="batch"``
    with batch statistics and the running statistics left untouched. ``autocast`` wraps the attack's
    forward passes (bf16 on CUDA). No parameter's ``.grad`` is touched and the training flag is restored.
    """
    x = x.detach()
    if steps == 0 or eps == 0:
        return x.clone()
    with torch.enable_grad(), autocast(), bn_mode(model, bn):
        target = model if bn == "eval" else _BatchStatistics(model)
        return pgd(target, x, y, eps=eps, step_size=step_size, steps=steps, random_start=random_start).detach()
