"""Train-mode BatchNorm as a per-sample function: one batch's statistics, recorded, then held.

In training mode every BatchNorm normalises with the statistics of the batch it sees, so each logit
depends on every image of the batch. Two things measured on a search supernet need the function of
one image instead:

- DSRNA's Jacobian metric (Eq. 12-15): the derivative of a sample's logits with respect to its *own*
  input. Differentiating the batch sum of a logit through live batch statistics gives almost nothing
  (the sum of batch-normalised tensors barely depends on the input);
- DSRNA's certified bound (Eq. 2, 6-7): bounds of the network over a ball around each clean point, with
  BatchNorm normalising by the clean batch's statistics: a per-channel affine map.

:class:`HeldBatchStats` records the statistics of a clean batch (keeping the graph, so they stay
differentiable with respect to weights and architecture) and then normalises every later pass with
them. Running statistics and batch counters are never touched while it is active. Modules already
in eval mode keep their running statistics.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["HeldBatchStats", "batch_norm_modules", "holds"]

_MARK = "_arnas_zoo_held_stats"


def holds(module: nn.Module) -> bool:
    """Whether a :class:`HeldBatchStats` block is active on a BatchNorm inside ``module``.

    Activation recomputation (``torch.utils.checkpoint``) must be off for such passes: a recomputation
    that runs after the block has ended would normalise with live batch statistics, another function.
    """
    return any(getattr(m, _MARK, False) for m in module.modules())


def batch_norm_modules(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm modules that normalise with batch statistics in ``model``'s current mode."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or not m.track_running_stats)
    ]


class HeldBatchStats:
    """``with HeldBatchStats(model) as held: held.record(x_clean); out = model(x)``.

    :meth:`record` runs ``model`` on a batch and stores each batch-statistics BatchNorm's mean and
    (biased) variance, in call order; every later forward pass inside the block normalises with them, so
    the network is a fixed function of each sample. Works for plain tensors and for
    :class:`arnas_zoo.bounds.Bounded` values (the layer is then an affine op with constant coefficients).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._modules = batch_norm_modules(model)
        self._stats: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._calls: dict[int, int] = {}
        self._recording = False
        self._hook: Any = None
        self._previous: list[Any] = []

    def __enter__(self) -> HeldBatchStats:
        self._previous = [vars(m).get("forward") for m in self._modules]  # an enclosing block's, if nested
        for m in self._modules:
            m.forward = self._forward_of(m)  # type: ignore[method-assign]
            setattr(m, _MARK, True)
        self._hook = self.model.register_forward_pre_hook(lambda *_: self._calls.clear())
        return self

    def __exit__(self, *exc: object) -> None:
        for m, previous in zip(self._modules, self._previous):
            if previous is not None:
                m.forward = previous  # type: ignore[method-assign]
            else:
                if "forward" in vars(m):
                    del m.forward
                setattr(m, _MARK, False)
        if self._hook is not None:
            self._hook.remove()
        self._stats, self._calls = {}, {}

    @property
    def holds_any(self) -> bool:
        """Whether the model has a batch-statistics BatchNorm (else the block changes nothing)."""
        return bool(self._modules)

    def record(self, x: torch.Tensor) -> Any:
        """Run ``model(x)`` recording the statistics it normalises with; returns its output."""
        self._stats = {}
        self._recording = True
        try:
            return self.model(x)
        finally:
            self._recording = False

    def _forward_of(self, m: nn.modules.batchnorm._BatchNorm) -> Any:
        def forward(inp: Any) -> Any:
            key = id(m)
            index = self._calls.get(key, 0)
            self._calls[key] = index + 1
            if self._recording:
                dims = [0, *range(2, inp.ndim)]
                stats = (inp.mean(dims), inp.var(dims, unbiased=False))
                self._stats.setdefault(key, []).append(stats)
            else:
                recorded = self._stats.get(key, [])
                if not recorded:
                    raise RuntimeError("HeldBatchStats: call record(x) on a clean batch before the held passes")
                stats = recorded[index % len(recorded)]
            return _normalise(inp, m, *stats)

        return forward


def _normalise(inp: Any, m: nn.modules.batchnorm._BatchNorm, mean: torch.Tensor, var: torch.Tensor) -> Any:
    scale = torch.rsqrt(var + m.eps)
    if m.weight is not None:
        scale = scale * m.weight
    shift = -mean * scale
    if m.bias is not None:
        shift = shift + m.bias
    view = (1, -1, *([1] * (inp.ndim - 2)))
    return inp * scale.view(view) + shift.view(view)
