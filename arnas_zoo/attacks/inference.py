"""Gradient-free forward passes through a frozen, compiled graph: the query-heavy attacks' fast path on CPU.

Square (inside AutoAttack and alone) asks a model for thousands of predictions per image without ever
needing a gradient, and AutoAttack's bookkeeping adds more. :class:`CompiledInference` answers every
forward that runs with gradients disabled from ``torch.compile`` (inductor) of a BatchNorm-folded copy of
the model, with inductor's *freezing* on: the weights become constants, oneDNN gets them pre-packed once,
and bias, ReLU and sums are fused into the convolutions. Forwards with gradients enabled (APGD's and FAB's
steps) go to the model itself, unchanged. On this project's CPU, one thread, the graph ran ARNAS (C=16,
20 cells) 2.12x as fast as the eager folded model at 128 images and 1.40-1.58x at 16-64, with the same
logits (``benchmarks/bench_query_attacks.py``, docs/performance.md).

The batch dimension is dynamic: one graph serves every batch size from :data:`MIN_BATCH` up, compiled once
per model in a process (about 40 s for the 20-cell ARNAS at C=16 on one thread with a cold inductor cache). Two
things would otherwise recompile it, a minute each at that size: dynamo's *duck sizing* (a first batch of
32 on 32x32 images ties the batch dimension to the image size) and the batch sizes at which convolution
backends are chosen differently (under 16). So duck sizing is off while tracing, the batch dimension is
marked dynamic from :data:`MIN_BATCH` up, and smaller batches, where the graph gains little, run eagerly.
(Static shapes were faster at a given size but compile once per size or pad: in AutoAttack Square queries
the shrinking set of not-yet-fooled points, and padding 2 points to 16 made a 16-point AutoAttack run
1.6x slower than eager.)

The weights are copied when the first batch is compiled. The wrapper is for the duration of one attack on
a model in eval mode (:func:`arnas_zoo.attacks.attack_mode`) and must not outlive a change to the weights.

One process reuses a graph for every wrapper of the same model: a sharded evaluation makes a wrapper per
shard, each on a freshly loaded model. With freezing, dynamo guards a graph on the identity of the copy's
weights, so each new copy compiled again, and after its recompile limit (8 per model class) dynamo ran the
class eagerly for the rest of the process: one process of a 16-shard AutoAttack run compiled for each of its
first eight shards and ran the later ones uncompiled. The frozen copy and its graph are therefore kept per
model *content* (class, structure, and a digest of every parameter and buffer; :data:`CACHED_MODELS` at
most), and a wrapper of an equal model takes them over.

Where it runs: ``ARNAS_ZOO_COMPILED_INFERENCE`` = ``auto`` (the default: on CPU, for models of at least
:data:`MIN_MACS` multiply-adds per image and attacks expected to do at least :data:`MIN_WORK` multiply-adds
of forward passes, where the compilation is repaid), ``1`` (always on CPU) or ``0`` (never). If compiling
fails (no C++ compiler, an op inductor cannot lower), a warning says so once and the eager model answers
instead.
"""

from __future__ import annotations

import copy
import hashlib
import os
import warnings
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from arnas_zoo.attacks.batchnorm import folded_batchnorm

#: ``auto`` compiles only models at least this costly per image (multiply-adds): below it, a short
#: evaluation would spend more time compiling than it saves.
MIN_MACS = 20_000_000
#: ``auto`` compiles the forward graph only when the attack's expected work (multiply-adds per image x
#: expected forward passes) reaches this: compiling ARNAS C=16 takes about a minute, which ~5e12
#: multiply-adds at the measured gain repay. (A 500-query Square on 64 CIFAR-10 points of it, 3.2e12 at most,
#: took 111 s compiled against 80 s eager; AutoAttack on 1,000 points, ~1e14, saves hours.)
MIN_WORK = 5e12
#: smaller batches run eagerly (the graph gains little under 16 images and is slower at 1-2); it is also the
#: lower bound of the graph's dynamic batch dimension: convolution backends are chosen differently below 16,
#: so a range that crossed it would recompile
MIN_BATCH = 16
MAX_BATCH = 1 << 16
MODES = ("auto", "0", "1")
#: frozen copies and graphs kept for reuse by later wrappers of an equal model (each holds the model's weights)
CACHED_MODELS = 2
_GRAPHS: OrderedDict[tuple[str, str], tuple[nn.Module, Any, Any]] = OrderedDict()


def _graphs_compiled() -> int:
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def model_digest(model: nn.Module) -> tuple[str, str]:
    """``(class, digest)`` of ``model``'s function: its structure (``repr``) and every parameter and buffer
    (names, dtypes, shapes, bytes). Equal for two loads of one checkpoint; different after any weight change."""
    h = hashlib.sha256(repr(model).encode())
    for name, tensor in model.state_dict(keep_vars=False).items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}", h.hexdigest()


def mode() -> str:
    value = os.environ.get("ARNAS_ZOO_COMPILED_INFERENCE", "auto").strip().lower()
    return value if value in MODES else "auto"


def _macs_per_image(model: nn.Module, example: torch.Tensor) -> int:
    from arnas_zoo.stats import count_ops

    macs, _ = count_ops(model, tuple(example.shape[1:]))  # type: ignore[arg-type]
    return macs


def wanted(model: nn.Module, example: torch.Tensor, forwards: float | None = None) -> bool:
    """Whether the environment, the model and the work call for the compiled path (``example``: a batch of
    inputs; ``forwards``: how many image-forwards the attack is expected to make, None if unknown)."""
    chosen = mode()
    if chosen == "0" or example.device.type != "cpu" or example.dtype != torch.float32 or example.dim() != 4:
        return False
    if chosen == "1":
        return True
    try:
        macs = _macs_per_image(model, example[:1])
    except Exception:  # a model count_ops cannot walk: stay eager
        return False
    return macs >= MIN_MACS and (forwards is None or macs * forwards >= MIN_WORK)


class CompiledInference(nn.Module):
    """``model``'s function; forwards without gradients run a frozen inductor graph of a BN-folded copy."""

    _frozen: nn.Module | None
    _fold: Any
    _compiled: Any

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.training = model.training
        # the frozen copy and its graph are kept out of the module tree (object.__setattr__): mode switches and
        # parameter walks on the wrapper (attack_mode) reach the model itself only
        object.__setattr__(self, "_frozen", None)
        object.__setattr__(self, "_fold", None)
        object.__setattr__(self, "_compiled", None)
        self._failed = False
        self._new_graph_of: tuple[str, str] | None = None
        self.compiled_calls = 0  # forwards answered by the compiled graph (tests, benchmarks)

    def _build(self) -> Any:
        key = model_digest(self.model)
        if key in _GRAPHS:  # an equal model's copy and graph: dynamo's guards on its weights still hold
            _GRAPHS.move_to_end(key)
            frozen, fold, compiled = _GRAPHS[key]
        else:
            self._new_graph_of = key  # its first call must compile a graph (checked in _run)
            frozen = copy.deepcopy(self.model).eval()
            for p in frozen.parameters():
                p.requires_grad_(False)
            # the copy is private: its BatchNorms stay folded for its lifetime. The context is entered, never
            # left, and kept: a context manager dropped after __enter__ is closed when it is collected, which would
            # put the BatchNorms back at once
            fold = folded_batchnorm(frozen)
            frozen = fold.__enter__()
            compiled = torch.compile(frozen, dynamic=None)  # the batch dimension is marked dynamic per call
            _GRAPHS[key] = (frozen, fold, compiled)
            while len(_GRAPHS) > CACHED_MODELS:
                _GRAPHS.popitem(last=False)
        object.__setattr__(self, "_frozen", frozen)
        object.__setattr__(self, "_fold", fold)
        return compiled

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        import torch._inductor.config as inductor_config
        import torch.fx.experimental._config as fx_config

        if self._compiled is None:
            object.__setattr__(self, "_compiled", self._build())
        x = x.contiguous(memory_format=torch.channels_last)
        if x.shape[1] == 1:
            # one channel (MNIST): NCHW and NHWC are the same bytes, and either stride of the channel dimension
            # counts as contiguous. oneDNN picks a fused convolution's output layout from that stride, while
            # inductor's shape function assumes NCHW: with the NHWC stride (as attacks hand it over) every call
            # failed its layout assertion, and the model ran eagerly. NCHW strides for the same bytes:
            h, w = x.shape[2], x.shape[3]
            x = x.as_strided(x.shape, (h * w, h * w, w, 1), x.storage_offset())
        torch._dynamo.mark_dynamic(x, 0, min=MIN_BATCH, max=MAX_BATCH)
        # both read when the graph compiles (at its first call): the weights as constants, and no duck sizing
        graphs = _graphs_compiled()
        with inductor_config.patch(freezing=True), fx_config.patch(use_duck_shape=False):  # type: ignore[attr-defined]
            out = self._compiled(x)
        if self._new_graph_of is not None:
            key, self._new_graph_of = self._new_graph_of, None
            if _graphs_compiled() == graphs:
                # dynamo ran the model without a graph: its recompile limit for this model class is spent in
                # this process (each distinct model of a class compiles one graph of the class's forward), or it
                # swallowed a compile error (``suppress_errors``, which compiled training turns on)
                _GRAPHS.pop(key, None)
                raise RuntimeError(
                    f"torch.compile made no graph for {key[0]} (dynamo's recompile limit is spent in this process, "
                    "or it suppressed a compile error)"
                )
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or self._failed or x.dim() != 4 or not MIN_BATCH <= x.shape[0] <= MAX_BATCH:
            return self.model(x)
        try:
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


def maybe_compiled(model: nn.Module, example: torch.Tensor, forwards: float | None = None) -> nn.Module:
    """``CompiledInference(model)`` where :func:`wanted` says so, else ``model`` itself."""
    return CompiledInference(model) if wanted(model, example, forwards) else model
