"""Gradient-free forward passes through a frozen, compiled graph: the query-heavy attacks' fast path on CPU.

Square (inside AutoAttack and alone) asks a model for thousands of predictions per image without ever
needing a gradient, and AutoAttack's bookkeeping adds more. :class:`CompiledInference` answers every
forward that runs with gradients disabled from ``torch.compile`` (inductor) of a BatchNorm-folded copy of
the model, with inductor's *freezing* on: the weights become constants, oneDNN gets them pre-packed once,
and bias, ReLU and sums are fused into the convolutions. Forwards with gradients enabled (APGD's and FAB's
steps) go to the model itself, unchanged. On this project's CPU, one thread, batch 128, the frozen graph
ran ARNAS (C=16, 20 cells) 2.06x, DARTS_V2 (C=15) 1.54x and ResNet-18 (width 27) 1.38x as fast as the
eager folded model, logits equal to 2e-8 (docs/performance.md).

Shapes are static: a batch is padded with zeros to the next power of two (at least 16; larger batches go
in chunks of ``max_batch``), so one evaluation compiles a handful of graphs, each once (3-25 s each for the
zoo's CIFAR-10 networks). Padding rows are computed and dropped: every image's logits depend only on that
image in eval mode.

The weights are read when the wrapper is made. It is for the duration of one attack on a model in eval
mode (:func:`arnas_zoo.attacks.attack_mode`) and must not outlive a change to the weights.

Where it runs: ``ARNAS_ZOO_COMPILED_INFERENCE`` = ``auto`` (the default: on CPU, for models of at least
:data:`MIN_MACS` multiply-adds per image, where the compilation is repaid), ``1`` (always on CPU) or ``0``
(never). If compiling fails (no C++ compiler, an op inductor cannot lower), a warning says so once and the
eager model answers instead.
"""

from __future__ import annotations

import copy
import os
import warnings
from typing import Any

import torch
from torch import nn

from arnas_zoo.attacks.batchnorm import folded_batchnorm

#: ``auto`` compiles only models at least this costly per image (multiply-adds): below it, a short
#: evaluation would spend more time compiling than it saves.
MIN_MACS = 20_000_000
MIN_BUCKET = 16
MODES = ("auto", "0", "1")


def mode() -> str:
    value = os.environ.get("ARNAS_ZOO_COMPILED_INFERENCE", "auto").strip().lower()
    return value if value in MODES else "auto"


def _macs_per_image(model: nn.Module, example: torch.Tensor) -> int:
    from arnas_zoo.stats import count_ops

    macs, _ = count_ops(model, tuple(example.shape[1:]))  # type: ignore[arg-type]
    return macs


def wanted(model: nn.Module, example: torch.Tensor) -> bool:
    """Whether the environment and the model call for the compiled path (``example``: a batch of inputs)."""
    chosen = mode()
    if chosen == "0" or example.device.type != "cpu" or example.dtype != torch.float32 or example.dim() != 4:
        return False
    if chosen == "1":
        return True
    try:
        return _macs_per_image(model, example[:1]) >= MIN_MACS
    except Exception:  # a model count_ops cannot walk: stay eager
        return False


def _bucket(n: int, max_batch: int) -> int:
    size = MIN_BUCKET
    while size < n:
        size *= 2
    return min(size, max_batch)


class CompiledInference(nn.Module):
    """``model``'s function; forwards without gradients run a frozen inductor graph of a BN-folded copy."""

    _frozen: nn.Module | None
    _compiled: Any

    def __init__(self, model: nn.Module, max_batch: int = 256):
        super().__init__()
        self.model = model
        self.training = model.training
        self.max_batch = max(_bucket(max_batch, 1 << 30), MIN_BUCKET)
        # the frozen copy and its graph are kept out of the module tree (object.__setattr__): mode switches and
        # parameter walks on the wrapper (attack_mode) reach the model itself only
        object.__setattr__(self, "_frozen", None)
        object.__setattr__(self, "_compiled", None)
        self._failed = False
        self.compiled_calls = 0  # forwards answered by the compiled graph (tests, benchmarks)

    def _build(self) -> Any:
        frozen = copy.deepcopy(self.model).eval()
        for p in frozen.parameters():
            p.requires_grad_(False)
        # the copy is private: its BatchNorms stay folded for its lifetime (the context is never left)
        object.__setattr__(self, "_frozen", folded_batchnorm(frozen).__enter__())
        return torch.compile(self._frozen, dynamic=False)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        import torch._dynamo
        import torch._inductor.config as inductor_config

        if self._compiled is None:
            object.__setattr__(self, "_compiled", self._build())
        n = x.shape[0]
        size = _bucket(n, self.max_batch)
        x = x.contiguous(memory_format=torch.channels_last)
        if n < size:
            x = torch.cat([x, x.new_zeros((size - n, *x.shape[1:]))]).contiguous(memory_format=torch.channels_last)
        # freezing is read when a graph compiles; one graph per bucket must not hit dynamo's limit on graphs
        limit = max(torch._dynamo.config.cache_size_limit, 16)
        with inductor_config.patch(freezing=True), torch._dynamo.config.patch(cache_size_limit=limit):
            out = self._compiled(x)
        return out[:n]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or self._failed or x.dim() != 4 or x.shape[0] == 0:
            return self.model(x)
        try:
            if x.shape[0] > self.max_batch:
                out = torch.cat([self._run(part) for part in x.split(self.max_batch)])
            else:
                out = self._run(x)
        except Exception as exc:  # compilation or lowering failed: answer eagerly from now on
            self._failed = True
            first_line = (str(exc).splitlines() or [""])[0][:200]
            warnings.warn(
                f"compiled inference unavailable ({type(exc).__name__}: {first_line}); "
                "running the model eagerly (ARNAS_ZOO_COMPILED_INFERENCE=0 skips the attempt)",
                RuntimeWarning,
                stacklevel=2,
            )
            return self.model(x)
        self.compiled_calls += 1
        return out


def maybe_compiled(model: nn.Module, example: torch.Tensor, max_batch: int = 256) -> nn.Module:
    """``CompiledInference(model)`` where :func:`wanted` says so, else ``model`` itself."""
    return CompiledInference(model, max_batch=max_batch) if wanted(model, example) else model
