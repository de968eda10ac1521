"""Counting forward and backward passes per image, for any attack implementation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class PassCounter:
    """Counts images sent forward and backward through a model (a batch of B adds B)."""

    forward: int = 0
    backward: int = 0

    def reset(self) -> None:
        self.forward = 0
        self.backward = 0

    def snapshot(self) -> tuple[int, int]:
        return self.forward, self.backward


class CountingModel(nn.Module):
    """Wraps a model and counts, per image, its forward passes and the backward passes through it.

    A backward pass is counted when a gradient reaches the model's output (a hook on the logits), so it
    counts what any attack implementation does -- ours, torchattacks' or AutoAttack's -- without
    changing it.
    """

    def __init__(self, model: nn.Module, counter: PassCounter):
        super().__init__()
        self.model = model
        self.counter = counter
        # mirror the wrapped model's mode, or restoring the wrapper's flag would flip the model's
        self.training = model.training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        n = int(x.shape[0])
        self.counter.forward += n
        if out.requires_grad:
            out.register_hook(lambda grad: self._count_backward(n, grad))
        return out

    def _count_backward(self, n: int, grad: torch.Tensor) -> torch.Tensor:
        self.counter.backward += n
        return grad
