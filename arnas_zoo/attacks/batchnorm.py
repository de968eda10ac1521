"""Which function an attack differentiates: BatchNorm modes, frozen parameters, and BN folding.

- ``bn="eval"`` (:func:`attack_mode`): BatchNorm uses its running statistics, so every sample is
  attacked independently of its batch; the evaluation attacks and ARNAS' training attack use it.
- ``bn="batch"`` (:func:`batch_statistics`): BatchNorm normalizes with the batch's own statistics
  (train mode), as a search supernet does while it trains; the running statistics are restored
  afterwards, so attack batches never leak into them.

Either way the parameters are frozen for the duration (no weight gradients are computed or kept)
and the model's flags come back exactly as they were, also when the body raises.

:func:`folded_batchnorm` folds eval-mode ``Conv2d -> BatchNorm2d`` pairs into single convolutions:
the same function up to float rounding, about twice as fast per attack step on CPU.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Literal

import torch
from torch import nn

from arnas_zoo.errors import ConfigError
from arnas_zoo.ops import PointwiseConv2d

BNMode = Literal["eval", "batch"]
BN_MODES = ("eval", "batch")


@contextlib.contextmanager
def _frozen_parameters(model: nn.Module) -> Iterator[None]:
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextlib.contextmanager
def attack_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and frozen parameters for the duration of an attack; both restored on exit."""
    was_training = model.training
    try:
        model.eval()
        with _frozen_parameters(model):
            yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def frozen_running_stats(model: nn.Module) -> Iterator[None]:
    """Restore every buffer (BatchNorm running statistics, batch counters) on exit."""
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


class ScratchRunningStats:
    """While active, every training-mode BatchNorm of ``model`` updates scratch copies of its buffers;
    its own buffers come back on exit, never written.

    Unlike :func:`frozen_running_stats`, nothing is copied back in place, so a graph built inside (which
    saves the running statistics) stays valid for a later backward, also a second one. Re-enterable:
    activation checkpointing enters it once per recomputation.
    """

    _NAMES = ("running_mean", "running_var", "num_batches_tracked")

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._saved: list[tuple[nn.Module, dict[str, torch.Tensor | None]]] = []

    def __enter__(self) -> None:
        self._saved = [
            (m, {n: getattr(m, n) for n in self._NAMES})
            for m in self.model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
        ]
        for m, buffers in self._saved:
            for n, b in buffers.items():
                if b is not None:
                    setattr(m, n, b.detach().clone())

    def __exit__(self, *exc: object) -> None:
        for m, buffers in self._saved:
            for n, b in buffers.items():
                setattr(m, n, b)
        self._saved = []


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """Train-mode BatchNorm (batch statistics) on frozen running statistics and frozen parameters."""
    was_training = model.training
    try:
        model.train()
        with _frozen_parameters(model), frozen_running_stats(model):
            yield model
    finally:
        model.train(was_training)


def bn_mode(model: nn.Module, mode: str) -> contextlib.AbstractContextManager[nn.Module]:
    """:func:`attack_mode` for ``"eval"``, :func:`batch_statistics` for ``"batch"``."""
    if mode == "eval":
        return attack_mode(model)
    if mode == "batch":
        return batch_statistics(model)
    raise ConfigError(f"bn: expected one of {list(BN_MODES)}, got {mode!r}")


def _is_plain_sequential(module: nn.Module) -> bool:
    # a subclass that overrides forward may not apply its children in order: folding would change it
    # unless the class declares that its forward computes Sequential's function (ops.DilConv)
    if getattr(type(module), "sequential_function", False) is True:
        return isinstance(module, nn.Sequential)
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _foldable_pairs(model: nn.Module) -> list[tuple[nn.Module, str, str]]:
    """``(sequential, conv_name, bn_name)`` for each adjacent Conv2d -> eval-mode BatchNorm2d pair."""
    found = []
    for seq in model.modules():
        if not _is_plain_sequential(seq):
            continue
        names = list(seq._modules)
        for conv_name, bn_name in zip(names, names[1:]):
            if _foldable(seq._modules[conv_name], seq._modules[bn_name]):
                found.append((seq, conv_name, bn_name))
    return found


def _foldable(conv: nn.Module | None, bn: nn.Module | None) -> bool:
    # exactly a convolution (a subclass with its own forward could compute something else)
    plain_conv = type(conv) in (nn.Conv2d, PointwiseConv2d) and conv.padding_mode == "zeros"  # type: ignore[union-attr]
    eval_bn = isinstance(bn, nn.BatchNorm2d) and not bn.training and bn.running_var is not None
    return plain_conv and eval_bn


def _fused_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    assert bn.running_var is not None and bn.running_mean is not None  # checked by _foldable_pairs
    with torch.no_grad():
        scale = (bn.running_var + bn.eps).rsqrt()
        gamma = bn.weight if bn.affine else torch.ones_like(scale)
        beta = bn.bias if bn.affine else torch.zeros_like(scale)
        # a copy keeps the conv's class and hyper-parameters (a PointwiseConv2d stays one); its tensors are replaced
        fused = copy.deepcopy(conv)
        fused.weight = nn.Parameter(conv.weight * (gamma * scale).view(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
        fused.bias = nn.Parameter((bias - bn.running_mean) * gamma * scale + beta)
    fused.requires_grad_(False)
    return fused


@contextlib.contextmanager
def folded_batchnorm(model: nn.Module) -> Iterator[nn.Module]:
    """Fold ``model``'s eval-mode ``Conv2d -> BatchNorm2d`` pairs into single convs for the duration.

    In eval mode a BatchNorm is an affine map with its running statistics, so folding it into the
    convolution before it gives the same function (and the same input gradients, up to float
    rounding) with one op fewer per pair. Only pairs adjacent in a plain ``nn.Sequential`` (or a
    subclass that keeps Sequential's forward) are folded, and only when the BatchNorm is in eval mode
    with running statistics. The swap happens in place, so wrappers, counters and hooks on the model
    keep working; the original modules are put back on exit, also when the body raises.
    """
    swapped = []
    try:
        for seq, conv_name, bn_name in _foldable_pairs(model):
            conv, bn = seq._modules[conv_name], seq._modules[bn_name]
            seq._modules[conv_name] = _fused_conv(conv, bn)  # type: ignore[arg-type]
            seq._modules[bn_name] = nn.Identity()
            swapped.append((seq, conv_name, conv, bn_name, bn))
        yield model
    finally:
        for seq, conv_name, conv, bn_name, bn in reversed(swapped):
            seq._modules[conv_name] = conv
            seq._modules[bn_name] = bn
