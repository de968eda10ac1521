"""Adversarial training: PGD-k (Madry), FGSM with random start ("fast") and TRADES.

A run is described by a :class:`Recipe` (a frozen dataclass; named presets in :data:`RECIPES`, every
field overridable) and executed by :func:`train`, which writes a run folder::

    <out>/recipe.json          the recipe, exactly as run
    <out>/train_state.safetensors   everything needed to resume (weights, optimizer, RNG, position)
    <out>/log.jsonl            one JSON object per epoch (and one per interruption)
    <out>/curves.png           clean / robust accuracy, loss and learning rate per epoch
    <out>/last/  <out>/best/   checkpoint folders (config.json + model.safetensors + metrics.json)

Design choices, and why:

- **Never lose work.** The resume state is written atomically after every epoch and, on SIGTERM or
  SIGINT, at the next batch boundary. All randomness of a batch (shuffle, crop, flip, cutout, attack
  start) comes from generators seeded by ``(seed, epoch, step)``, so a run resumed mid-epoch sees
  exactly the batches and noise an uninterrupted run would have seen; the global torch/numpy/python
  RNG states are saved as well (drop path uses the global torch RNG).
- **The state file is safetensors**, never pickle: tensors (weights, optimizer buffers, RNG states)
  as tensors, everything else as JSON in the header, plus a SHA-256 of the tensor bytes so that a
  corrupt file is detected instead of silently reused.
- **Data stays on the device**; augmentation (random crop with zero padding, horizontal flip, cutout)
  is batched tensor indexing, no per-sample Python loop and no host transfer per step.
- **The training attack is part of the recipe**, not the evaluation attack: ARNAS makes its PGD-7
  examples with the model in eval mode from ``x + 0.001 * N(0, 1)``; TRADES maximises a KL term.
  :func:`perturb` covers these; evaluation uses :mod:`arnas_zoo.attacks` / :mod:`arnas_zoo.evaluate`.
- **Data parallel**: under ``torchrun`` (``WORLD_SIZE > 1``) every process draws the same global
  batch and its randomness, keeps its contiguous shard, and BatchNorm statistics are synchronised
  across processes, so N processes compute what one process computes on the same global batch.
- **Model selection** by robust accuracy (PGD on a held-out validation split) because robust
  overfitting is real for these networks; the last and the best checkpoints are both kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import signal
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from arnas_zoo.attacks import folded_batchnorm
from arnas_zoo.checkpoint import atomic_write_json, save_folder
from arnas_zoo.distributed import Dist, init_distributed, resolve_device
from arnas_zoo.errors import ArnasZooError, CheckpointError, ConfigError
from arnas_zoo.network import ModelConfig, ZooModel, build_model

__all__ = [
    "RECIPES",
    "Recipe",
    "TrainResult",
    "TrainingInterrupted",
    "augment",
    "get_recipe",
    "list_recipes",
    "load_train_state",
    "lr_at",
    "perturb",
    "evaluate_folder",
    "read_log",
    "run_training",
    "train",
]

log = logging.getLogger(__name__)

STATE_FILE = "train_state.safetensors"
STATE_SCHEMA = "arnas-zoo/train-state@1"
RECIPE_SCHEMA = "arnas-zoo/recipe@1"
METHODS = ("pgd", "fgsm", "trades", "standard")
SCHEDULES = ("multistep", "cosine", "cyclic", "constant")
STARTS = ("gaussian", "uniform", "none")


class TrainingInterrupted(ArnasZooError, KeyboardInterrupt):
    """Training stopped on SIGTERM/SIGINT after saving its state; rerun with ``resume=True``."""


# ---- recipes ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recipe:
    """Every setting of an adversarial-training run (serialised as ``recipe.json``).

    Attack fields describe the *training* attack; ``val_*`` fields the PGD used for model selection.
    ``eps``/``step_size`` are in [0, 1] pixel units (8/255 = 0.0314).
    """

    name: str = "custom"
    method: str = "pgd"  # pgd | fgsm (random start, "fast" AT) | trades | standard (no attack)
    epochs: int = 200
    batch_size: int = 32
    train_n: int | None = None  # train on the first n training points only (None: all)
    # optimizer: SGD
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    grad_clip: float | None = 5.0
    # learning-rate schedule (epoch units; per-step granularity)
    schedule: str = "multistep"  # multistep | cosine | cyclic | constant
    milestones: tuple[float, ...] = (100.0, 150.0)
    gamma: float = 0.1
    lr_min: float = 0.0
    warmup_epochs: float = 0.0
    # training attack
    norm: str = "linf"
    eps: float = 8 / 255
    step_size: float = 0.01
    steps: int = 7
    start: str = "gaussian"  # gaussian (x + sigma * N(0,1)) | uniform (U(-eps, eps)) | none
    start_sigma: float = 0.001
    attack_eval_mode: bool = True  # make the examples with BatchNorm in eval mode (ARNAS, TRADES)
    eps_warmup_epochs: float = 0.0  # ramp eps (and step size) linearly from 0 over these epochs
    trades_beta: float = 6.0
    auxiliary_weight: float | None = None  # None: the model config's auxiliary_weight
    # augmentation (on tensors)
    crop_padding: int = 4
    flip: bool = True
    cutout: int = 16
    # validation / model selection
    val_every: int = 1
    val_n: int | None = None  # first n validation points (None: all)
    val_steps: int = 10
    val_step_size: float | None = None  # None: eps / 4
    select_by: str = "robust"  # robust | clean
    # speed
    channels_last: bool = True
    bf16: bool = True  # bf16 autocast, CUDA only
    compile: bool = False  # torch.compile, CUDA only (untested on this project's CPU machines)
    seed: int = 0
    notes: str = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def positive_int(key: str) -> None:
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"recipe.{key}: expected a positive integer, got {value!r}")

        if self.method not in METHODS:
            raise ConfigError(f"recipe.method: expected one of {list(METHODS)}, got {self.method!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"recipe.schedule: expected one of {list(SCHEDULES)}, got {self.schedule!r}")
        if self.start not in STARTS:
            raise ConfigError(f"recipe.start: expected one of {list(STARTS)}, got {self.start!r}")
        if self.norm != "linf":
            raise ConfigError(f"recipe.norm: only 'linf' training is implemented, got {self.norm!r}")
        if self.select_by not in ("robust", "clean"):
            raise ConfigError(f"recipe.select_by: expected 'robust' or 'clean', got {self.select_by!r}")
        for key in ("epochs", "batch_size", "steps", "val_every", "val_steps"):
            positive_int(key)
        for key in ("val_n", "train_n"):
            if getattr(self, key) is not None:
                positive_int(key)
        for key in ("lr", "eps", "step_size"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"recipe.{key}: expected a positive number, got {getattr(self, key)!r}")
        for key in (
            "momentum",
            "weight_decay",
            "lr_min",
            "warmup_epochs",
            "eps_warmup_epochs",
            "trades_beta",
            "start_sigma",
            "crop_padding",
            "cutout",
        ):
            if getattr(self, key) < 0:
                raise ConfigError(f"recipe.{key}: expected a non-negative value, got {getattr(self, key)!r}")
        if self.eps > 1:
            raise ConfigError(f"recipe.eps: expected a value in pixel units [0, 1] (8/255 = 0.0314), got {self.eps}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"recipe.grad_clip: expected a positive number or null, got {self.grad_clip}")
        if list(self.milestones) != sorted(self.milestones):
            raise ConfigError(f"recipe.milestones: expected increasing epochs, got {list(self.milestones)}")

    @property
    def validation_step_size(self) -> float:
        return self.val_step_size if self.val_step_size is not None else self.eps / 4

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema": RECIPE_SCHEMA}
        for key, value in asdict(self).items():
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        data = dict(data)
        schema = data.pop("schema", RECIPE_SCHEMA)
        if schema != RECIPE_SCHEMA:
            raise ConfigError(f"recipe.schema: expected {RECIPE_SCHEMA!r}, got {schema!r}")
        return cls().replace(**data)

    def replace(self, **changes: Any) -> Recipe:
        """A copy with ``changes`` applied (values are coerced from strings, as the CLI passes them)."""
        types = {f.name: f.type for f in fields(self)}
        unknown = sorted(set(changes) - set(types))
        if unknown:
            raise ConfigError(f"recipe.{unknown[0]}: unknown field; expected one of {sorted(types)}")
        coerced = {key: _coerce(key, value, getattr(self, key), types[key]) for key, value in changes.items()}
        return replace(self, **coerced)


def _coerce(key: str, value: Any, current: Any, annotation: Any) -> Any:
    """Coerce an override (often a CLI string) to the field's type, with a helpful error."""
    optional = "None" in str(annotation)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and optional):
        if not optional:
            raise ConfigError(f"recipe.{key}: may not be null")
        return None
    ann = str(annotation)
    try:
        if ann.startswith("tuple"):
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split() if v]
            return tuple(float(v) for v in value)
        if ann.startswith("bool"):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if ann.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if ann.startswith("float"):
            if isinstance(value, str) and "/" in value:  # "8/255"
                num, den = value.split("/", 1)
                return float(num) / float(den)
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"recipe.{key}: cannot read {value!r} as {ann}") from None


_ARNAS = Recipe(
    name="arnas",
    notes="ARNAS evaluation training (Ou et al. 2024, Sec. 4.1 and authors' code): SGD 0.1, momentum 0.9, "
    "wd 1e-4, clip 5, x0.1 at epochs 100 and 150, 200 epochs, batch 32, cutout 16, aux 0.4; PGD-7 eps 8/255 "
    "step 0.01 from x + 0.001*N(0,1), model in eval mode while attacking",
)

RECIPES: dict[str, Recipe] = {
    "arnas": _ARNAS,
    # The ARNAS paper trains "following conventions [AdvRush]": same optimizer and schedule; AdvRush's
    # DARTS-space recipe has no auxiliary head, no cutout, batch 64, eps 0.031 and a uniform start.
    "advrush": _ARNAS.replace(
        name="advrush",
        batch_size=64,
        cutout=0,
        auxiliary_weight=0.0,
        eps=0.031,
        start="uniform",
        notes="AdvRush recipe for DARTS-space networks: as ARNAS but batch 64, no aux, no cutout, "
        "PGD-7 eps 0.031 step 0.01, uniform random start",
    ),
    # TRADES (Zhang et al., 2019) with its CIFAR-10 settings.
    "trades": _ARNAS.replace(
        name="trades",
        method="trades",
        batch_size=128,
        weight_decay=2e-4,
        epochs=76,
        milestones=(75.0,),
        eps=0.031,
        step_size=0.007,
        steps=10,
        trades_beta=6.0,
        cutout=0,
        grad_clip=None,
        notes="TRADES (Zhang et al. 2019) CIFAR-10: beta 6, 10 steps of 0.007, eps 0.031, lr 0.1 x0.1 at 75",
    ),
    # "Fast is better than free" (Wong et al., 2020): FGSM from a uniform start, step 1.25 eps, cyclic lr.
    "fast": Recipe(
        name="fast",
        method="fgsm",
        epochs=15,
        batch_size=128,
        lr=0.2,
        weight_decay=5e-4,
        grad_clip=None,
        schedule="cyclic",
        eps=8 / 255,
        step_size=10 / 255,
        steps=1,
        start="uniform",
        attack_eval_mode=False,
        cutout=0,
        notes="FGSM with random start (Wong et al. 2020): step 1.25*eps, cyclic lr to 0.2",
    ),
    # Madry et al. (2018) MNIST: PGD-40 of 0.01 at eps 0.3 (the DSRNA MNIST setting for eps).
    "madry_mnist": Recipe(
        name="madry_mnist",
        epochs=100,
        batch_size=50,
        lr=0.01,
        schedule="constant",
        eps=0.3,
        step_size=0.01,
        steps=40,
        start="uniform",
        crop_padding=0,
        flip=False,
        cutout=0,
        grad_clip=None,
        notes="Madry et al. 2018 MNIST: PGD-40 step 0.01 eps 0.3, uniform start",
    ),
    # ---- small CPU presets (reduced budgets for machines without a GPU) ----
    "cpu_digits": Recipe(
        name="cpu_digits",
        epochs=10,
        batch_size=64,
        lr=0.05,
        schedule="cosine",
        weight_decay=5e-4,
        eps=0.2,
        step_size=0.1,
        steps=3,
        start="uniform",
        eps_warmup_epochs=2,
        crop_padding=1,
        flip=False,
        cutout=0,
        val_steps=5,
        val_step_size=0.05,
        notes="quick start: scikit-learn digits (16x16), PGD-3 step 0.1 eps 0.2, eps ramp over 2 epochs, 10 epochs",
    ),
    "cpu_mnist": Recipe(
        name="cpu_mnist",
        epochs=2,
        batch_size=64,
        train_n=6000,
        lr=0.05,
        schedule="cosine",
        weight_decay=5e-4,
        eps=0.3,
        step_size=0.12,
        steps=3,
        start="uniform",
        eps_warmup_epochs=1,
        crop_padding=0,
        flip=False,
        cutout=0,
        val_n=200,
        val_steps=5,
        val_step_size=0.1,
        notes="CPU budget: first 6000 MNIST training images, eps 0.3, PGD-3 step 0.12, eps ramp over epoch 1, "
        "cosine lr, 2 epochs",
    ),
    "cpu_cifar10": Recipe(
        name="cpu_cifar10",
        epochs=3,
        batch_size=64,
        lr=0.05,
        schedule="cosine",
        weight_decay=5e-4,
        eps=8 / 255,
        step_size=3 / 255,
        steps=3,
        start="uniform",
        eps_warmup_epochs=1,
        cutout=0,
        val_n=200,
        val_steps=5,
        notes="CPU budget: CIFAR-10 eps 8/255, PGD-3 step 3/255, cosine lr, 3 epochs",
    ),
}


def list_recipes() -> list[str]:
    return sorted(RECIPES)


def get_recipe(name: str | Recipe, **overrides: Any) -> Recipe:
    """Preset ``name`` (or a :class:`Recipe`, or a path to a recipe JSON) with ``overrides`` applied."""
    if isinstance(name, Recipe):
        base = name
    elif name in RECIPES:
        base = RECIPES[name]
    elif str(name).endswith(".json") and Path(name).is_file():
        try:
            base = Recipe.from_dict(json.loads(Path(name).read_text()))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{name}: malformed recipe JSON ({exc})") from None
    else:
        raise ConfigError(f"unknown recipe {name!r}; expected one of {list_recipes()} or a recipe .json file")
    return base.replace(**overrides) if overrides else base


# ---- learning rate ------------------------------------------------------------------------------
def lr_at(recipe: Recipe, epoch_progress: float) -> float:
    """Learning rate after ``epoch_progress`` epochs (fractional; the schedule is applied per step)."""
    t = epoch_progress
    if recipe.schedule == "multistep":
        lr = recipe.lr * recipe.gamma ** sum(1 for m in recipe.milestones if t >= m)
    elif recipe.schedule == "cosine":
        lr = recipe.lr_min + 0.5 * (recipe.lr - recipe.lr_min) * (1 + math.cos(math.pi * min(t / recipe.epochs, 1.0)))
    elif recipe.schedule == "cyclic":  # triangle: 0 -> lr at 2/5 of training -> 0 (Wong et al.)
        peak = 0.4 * recipe.epochs
        lr = recipe.lr * (t / peak if t < peak else max(0.0, (recipe.epochs - t) / (recipe.epochs - peak)))
    else:
        lr = recipe.lr
    if recipe.warmup_epochs > 0 and t < recipe.warmup_epochs:
        lr *= t / recipe.warmup_epochs
    return lr


def eps_at(recipe: Recipe, epoch_progress: float) -> float:
    if recipe.eps_warmup_epochs > 0 and epoch_progress < recipe.eps_warmup_epochs:
        return recipe.eps * max(epoch_progress / recipe.eps_warmup_epochs, 1e-3)
    return recipe.eps


# ---- augmentation -------------------------------------------------------------------------------
def augment(
    x: torch.Tensor, generator: torch.Generator, *, crop_padding: int = 4, flip: bool = True, cutout: int = 0
) -> torch.Tensor:
    """Random crop with zero padding, horizontal flip and cutout of a batch, on the batch's device.

    Every sample draws its own offsets/flip/cutout centre from ``generator``; the cutout square
    (side ``cutout``) may extend past the border, as in DeVries & Taylor's reference.
    """
    n, _, h, w = x.shape
    device = x.device
    if crop_padding > 0:
        p = crop_padding
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=device)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=device)
        rows = (dy[:, None] + torch.arange(h, device=device))[:, None, :, None]  # n,1,h,1
        cols = (dx[:, None] + torch.arange(w, device=device))[:, None, None, :]  # n,1,1,w
        batch = torch.arange(n, device=device)[:, None, None, None]
        chans = torch.arange(x.shape[1], device=device)[None, :, None, None]
        x = padded[batch, chans, rows, cols]
    if flip:
        flips = torch.rand(n, generator=generator, device=device) < 0.5
        x = torch.where(flips[:, None, None, None], x.flip(3), x)
    if cutout > 0:
        cy = torch.randint(0, h, (n,), generator=generator, device=device)
        cx = torch.randint(0, w, (n,), generator=generator, device=device)
        half = cutout // 2
        ys = torch.arange(h, device=device)[None, :]
        xs = torch.arange(w, device=device)[None, :]
        in_rows = (ys >= (cy[:, None] - half)) & (ys < (cy[:, None] - half + cutout))
        in_cols = (xs >= (cx[:, None] - half)) & (xs < (cx[:, None] - half + cutout))
        hole = in_rows[:, :, None] & in_cols[:, None, :]
        x = x * (~hole)[:, None, :, :].to(x.dtype)
    return x


# ---- the training attack ------------------------------------------------------------------------
def perturb(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    start: str = "uniform",
    start_sigma: float = 0.001,
    loss: str = "ce",
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    eval_mode: bool = True,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
) -> torch.Tensor:
    """l_inf sign-gradient ascent for training: PGD-k (``steps`` > 1) or FGSM (``steps`` = 1).

    ``loss="ce"`` maximises cross-entropy with ``y``; ``loss="kl"`` maximises TRADES'
    KL(f(x) || f(x')) with ``f(x)`` fixed. ``start``: ``uniform`` U(-eps, eps), ``gaussian``
    ``x + start_sigma * N(0, 1)`` (ARNAS/TRADES), or ``none``. ``noise`` (standard normal or
    U(-1, 1) draws of x's shape) may be given so that data-parallel shards reuse the global batch's
    draws. The model's training flag is restored; ``eval_mode`` makes the examples with BatchNorm
    in eval mode. Returns detached adversarial images in [0, 1].
    """
    was_training = model.training
    model.train(not eval_mode and was_training)
    ctx = autocast or contextlib.nullcontext
    # eval-mode BatchNorms are affine maps: folding them into their convs for the attack steps gives the
    # same examples up to float rounding, about twice as fast (attacks.folded_batchnorm); a compiled
    # model is left alone, since swapping its modules would force recompilation
    fold = folded_batchnorm(model) if eval_mode and not hasattr(model, "_orig_mod") else contextlib.nullcontext()
    try:
        with fold:
            x = x.detach().contiguous(memory_format=torch.channels_last)
            if start == "none":
                x_adv = x.clone()
            else:
                if noise is None:
                    noise = (torch.randn if start == "gaussian" else _uniform_pm1)(
                        x.shape, generator=generator, device=x.device, dtype=x.dtype
                    )
                scale = start_sigma if start == "gaussian" else eps
                x_adv = (x + scale * noise).clamp(0.0, 1.0)
            clean_probs = None
            if loss == "kl":
                with torch.no_grad(), ctx():
                    clean_probs = F.softmax(model(x).float(), dim=1)
            for _ in range(steps):
                x_adv.requires_grad_(True)
                with ctx():
                    logits = model(x_adv).float()
                if clean_probs is not None:
                    objective = F.kl_div(F.log_softmax(logits, dim=1), clean_probs, reduction="sum")
                else:
                    objective = F.cross_entropy(logits, y, reduction="sum")
                (grad,) = torch.autograd.grad(objective, x_adv)
                x_adv = x_adv.detach() + step_size * grad.sign()
                x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)
            return x_adv.detach().contiguous()
    finally:
        model.train(was_training)


def _uniform_pm1(shape: Sequence[int], *, generator: torch.Generator | None, device: Any, dtype: Any) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device, dtype=dtype).mul_(2).sub_(1)


# ---- distributed --------------------------------------------------------------------------------
class DistBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics are those of the global batch across all processes.

    ``nn.SyncBatchNorm`` runs on CUDA only; this one all-reduces per-channel sums with
    ``torch.distributed.nn.functional.all_reduce`` (differentiable), so it works on gloo/CPU too.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        xf = x.float()
        count = torch.tensor([x.numel() / c], device=x.device, dtype=torch.float32)
        packed = torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), count])
        with warnings.catch_warnings():  # its replacement in torch is private API; this one is differentiable
            warnings.filterwarnings("ignore", message=".*all_reduce is deprecated", category=FutureWarning)
            packed = all_reduce(packed)
        n = packed[-1]
        mean = packed[:c] / n
        var = (packed[c : 2 * c] / n - mean * mean).clamp_min(0.0)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1).clamp_min(1))
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked.add_(1)
        out = (xf - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out.to(x.dtype)


def convert_dist_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` of ``module`` (in place) by :class:`DistBatchNorm2d`, keeping its state."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, DistBatchNorm2d):
            new = DistBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            new.load_state_dict(child.state_dict())
            new.to(next(iter(child.state_dict().values())).device)
            setattr(module, name, new)
        else:
            convert_dist_batchnorm(child)
    return module


# ---- state file ---------------------------------------------------------------------------------
def _tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(key.encode())
        flat = tensors[key].contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


def _save_state(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    tensors = {k: v.detach().to("cpu").clone(memory_format=torch.contiguous_format) for k, v in tensors.items()}
    meta = dict(meta, schema=STATE_SCHEMA, tensor_sha256=_tensor_digest(tensors))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"state": json.dumps(meta)})
    os.replace(tmp, path)


def load_train_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify a resume state file; a corrupt or foreign file raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no training state to resume from; start without --resume")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
        meta = json.loads(header["state"])
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path}: corrupt or unreadable training state ({type(exc).__name__}: {exc}); delete it to restart "
            "from scratch, or resume from a copy"
        ) from None
    if meta.get("schema") != STATE_SCHEMA:
        raise CheckpointError(f"{path}: expected schema {STATE_SCHEMA!r}, got {meta.get('schema')!r}")
    got = _tensor_digest(tensors)
    if got != meta.get("tensor_sha256"):
        raise CheckpointError(
            f"{path}: tensor checksum mismatch (expected {str(meta.get('tensor_sha256'))[:12]}..., got {got[:12]}...); "
            "the file is corrupt; delete it to restart from scratch"
        )
    return tensors, meta


def _rng_snapshot() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = state
    np_state = np.random.get_state()
    tensors["rng/numpy_keys"] = torch.from_numpy(np.asarray(np_state[1], dtype=np.int64))
    py_state = random.getstate()
    meta = {
        "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    return tensors, meta


def _rng_restore(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    torch.set_rng_state(tensors["rng/torch"])
    cuda = sorted(k for k in tensors if k.startswith("rng/cuda/"))
    if cuda and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):  # fewer GPUs now than when saved: keep the fresh states
            torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["rng/numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))


def _optimizer_to_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    state_meta: dict[str, dict[str, Any]] = {}
    for index, entries in sd["state"].items():
        state_meta[str(index)] = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{index}/{key}"] = value
                state_meta[str(index)][key] = {"__tensor__": f"optim/{index}/{key}"}
            else:
                state_meta[str(index)][key] = value
    return tensors, {"state": state_meta, "param_groups": sd["param_groups"]}


def _optimizer_from_state(
    optimizer: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]
) -> None:
    state = {}
    for index, entries in meta["state"].items():
        state[int(index)] = {
            key: tensors[value["__tensor__"]] if isinstance(value, dict) and "__tensor__" in value else value
            for key, value in entries.items()
        }
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# ---- data protocol ------------------------------------------------------------------------------
class _Data(Protocol):
    x: torch.Tensor
    y: torch.Tensor


def _describe(data: Any) -> dict[str, Any]:
    if hasattr(data, "describe"):
        return data.describe()
    return {"n": int(data.x.shape[0])}


# ---- the run ------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """Where a run's outputs are, and its per-epoch history."""

    out_dir: Path
    best_dir: Path
    last_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)


def _seed_for(seed: int, epoch: int, step: int) -> int:
    # distinct, reproducible streams per (seed, epoch, step); step -1 = the epoch's shuffle
    return (((seed + 1) * 1_000_003 + epoch) * 1_000_033 + step + 1) % (2**62)


def _generator(device: torch.device, seed: int) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


class _StopFlag:
    """Set by SIGTERM/SIGINT; training checks it at batch boundaries and saves before stopping."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, _frame: Any) -> None:
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> _StopFlag:
        if _is_main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


@torch.no_grad()
def _accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, autocast: Callable[[], Any]
) -> float:
    correct = 0
    for start in range(0, x.shape[0], batch_size):
        with autocast():
            correct += (model(x[start : start + batch_size]).argmax(1) == y[start : start + batch_size]).sum()
    return float(correct) / max(1, x.shape[0])


def _robust_accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, batch_size: int, autocast: Callable[[], Any]
) -> float:
    gen = _generator(x.device, _seed_for(recipe.seed, -2, 0))
    correct = 0
    for start in range(0, x.shape[0], batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        x_adv = perturb(
            model,
            xb,
            yb,
            eps=recipe.eps,
            step_size=recipe.validation_step_size,
            steps=recipe.val_steps,
            start="uniform",
            generator=gen,
            eval_mode=True,
            autocast=autocast,
        )
        with torch.no_grad(), autocast():
            correct += (model(x_adv).argmax(1) == yb).sum()
    return float(correct) / max(1, x.shape[0])


def train(
    model: ZooModel | ModelConfig,
    recipe: Recipe,
    train_data: _Data,
    val_data: _Data | None,
    out_dir: str | Path,
    *,
    resume: bool = False,
    device: str | torch.device = "auto",
    progress: bool = True,
    run_name: str | None = None,
    stop_after_steps: int | None = None,
    test_data: Any | None = None,
    eval_attacks: Sequence[str] = ("fgsm", "pgd20"),
) -> TrainResult:
    """Train ``model`` adversarially with ``recipe`` and write the run folder ``out_dir``.

    ``train_data``/``val_data`` have ``.x`` (float NCHW in [0, 1]) and ``.y`` (int64); they are moved to
    the device once. ``val_data`` (None: no selection, ``best`` = ``last``) picks the best epoch by
    ``recipe.select_by``. With ``resume=True`` the run continues from ``out_dir/train_state.safetensors``
    exactly where it stopped; a recipe or model that differs from the saved one raises
    :class:`CheckpointError`. With ``test_data`` (an :class:`~arnas_zoo.data.ImageData`), the best
    checkpoint is evaluated at the end with :func:`arnas_zoo.evaluate.evaluate` (``eval_attacks`` at the
    recipe's eps) and its report becomes the folder's ``metrics.json`` (with the training record). ``stop_after_steps`` (testing aid) behaves like a SIGTERM after that many
    optimizer steps of this call. Under ``torchrun`` the same call trains data-parallel.
    Raises :class:`TrainingInterrupted` after saving when SIGTERM/SIGINT arrive.
    """
    from tqdm.auto import tqdm

    dist_info, device = init_distributed(resolve_device(device))
    if recipe.batch_size % dist_info.world:
        raise ConfigError(
            f"recipe.batch_size: the global batch ({recipe.batch_size}) must divide evenly over "
            f"{dist_info.world} processes"
        )
    out_dir = Path(out_dir)
    state_path = out_dir / STATE_FILE
    if not resume and state_path.exists():
        raise CheckpointError(
            f"{state_path}: a run already exists here; pass resume=True (--resume) to continue it "
            "or choose another output folder"
        )
    config = model if isinstance(model, ModelConfig) else model.config
    net: ZooModel = build_model(config) if isinstance(model, ModelConfig) else model
    config = config.replace(threat_model="linf", eps=recipe.eps, name=run_name or config.name)
    net.config = config
    net.to(device)
    if dist_info.world > 1:
        convert_dist_batchnorm(net)
    use_cuda = device.type == "cuda"
    if recipe.channels_last:
        net.to(memory_format=torch.channels_last)

    def autocast() -> contextlib.AbstractContextManager[Any]:
        if use_cuda and recipe.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # the authors' recipes decay every parameter (BN and biases included), so one parameter group
    optimizer = torch.optim.SGD(
        net.parameters(),
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
        weight_decay=recipe.weight_decay,
    )

    aux_weight = config.auxiliary_weight if recipe.auxiliary_weight is None else recipe.auxiliary_weight
    has_aux = getattr(net, "auxiliary_head", None) is not None
    use_aux = has_aux and aux_weight > 0
    train_net: nn.Module = net
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_net = DDP(
            net,
            device_ids=[device.index] if use_cuda else None,
            find_unused_parameters=has_aux and not use_aux,
            broadcast_buffers=False,
        )
    forward_net: nn.Module = net
    if recipe.compile and use_cuda:  # guarded: compile only where it pays off and is supported
        forward_net = torch.compile(net)  # type: ignore[assignment]

    memory_format = torch.channels_last if recipe.channels_last else torch.contiguous_format
    x_train = train_data.x[: recipe.train_n].to(device).contiguous(memory_format=memory_format)
    y_train = train_data.y[: recipe.train_n].to(device)
    n_train = x_train.shape[0]
    steps_per_epoch = n_train // recipe.batch_size
    if steps_per_epoch < 1:
        raise ConfigError(f"recipe.batch_size: {recipe.batch_size} is larger than the training set ({n_train})")
    if val_data is not None:
        n_val = val_data.x.shape[0] if recipe.val_n is None else min(recipe.val_n, val_data.x.shape[0])
        x_val = val_data.x[:n_val].to(device).contiguous(memory_format=memory_format)
        y_val = val_data.y[:n_val].to(device)

    start_epoch, start_step, global_step = 0, 0, 0
    best: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    recipe_dict = recipe.to_dict()
    if resume:
        tensors, meta = load_train_state(state_path)
        if meta["recipe"] != recipe_dict:
            diff = sorted(
                k for k in set(recipe_dict) | set(meta["recipe"]) if recipe_dict.get(k) != meta["recipe"].get(k)
            )
            raise CheckpointError(
                f"{state_path}: saved with a different recipe (fields {diff}); resume with the same "
                "recipe or start a new run in another folder"
            )
        if meta["config"] != config.to_dict():
            raise CheckpointError(f"{state_path}: saved for a different model config; resume with the same model")
        weights = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
        try:
            net.load_state_dict(weights, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{state_path}: weights do not fit the model ({str(exc).splitlines()[0]})") from None
        _optimizer_from_state(optimizer, tensors, meta["optimizer"])
        _rng_restore(tensors, meta["rng"])
        start_epoch, start_step, global_step = meta["epoch"], meta["step"], meta["global_step"]
        best, history = meta["best"], meta["history"]
        if meta.get("finished"):
            log.info("%s: the run had already finished", state_path)
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        if dist_info.main:
            atomic_write_json(out_dir / "recipe.json", recipe_dict)

    def save_state(epoch: int, step: int, finished: bool = False) -> None:
        if not dist_info.main:
            return
        tensors = {f"model/{k}": v for k, v in net.state_dict().items()}
        opt_tensors, opt_meta = _optimizer_to_state(optimizer)
        rng_tensors, rng_meta = _rng_snapshot()
        tensors.update(opt_tensors)
        tensors.update(rng_tensors)
        meta = {
            "epoch": epoch,
            "step": step,
            "global_step": global_step,
            "best": best,
            "history": history,
            "recipe": recipe_dict,
            "config": config.to_dict(),
            "optimizer": opt_meta,
            "rng": rng_meta,
            "finished": finished,
            "world_size": dist_info.world,
        }
        _save_state(state_path, tensors, meta)

    def write_folder(folder: Path, metrics: dict[str, Any]) -> None:
        save_folder(net, folder, metrics=metrics, config=config)

    def log_line(record: dict[str, Any]) -> None:
        if dist_info.main:
            with open(out_dir / "log.jsonl", "a") as fh:
                fh.write(json.dumps(record) + "\n")

    steps_done_this_call = 0
    finished = start_epoch >= recipe.epochs
    with _StopFlag() as stop:
        for epoch in range(start_epoch, recipe.epochs):
            net.train()
            perm = torch.randperm(
                n_train, generator=_generator(device, _seed_for(recipe.seed, epoch, -1)), device=device
            )
            first_step = start_step if epoch == start_epoch else 0
            sums = torch.zeros(3, device=device)  # loss, correct on training examples, count
            t0 = time.perf_counter()
            bar = tqdm(
                range(first_step, steps_per_epoch),
                desc=f"epoch {epoch + 1}/{recipe.epochs}",
                disable=None if progress and dist_info.main else True,
                leave=False,
            )
            for step in bar:
                if _should_stop(
                    stop, dist_info, stop_after_steps is not None and steps_done_this_call >= stop_after_steps
                ):
                    save_state(epoch, step)
                    log_line(
                        {
                            "event": "interrupted",
                            "epoch": epoch,
                            "step": step,
                            "global_step": global_step,
                            "signal": stop.signal_name or "stop_after_steps",
                        }
                    )
                    raise TrainingInterrupted(
                        f"training stopped by {stop.signal_name or 'request'} at epoch {epoch + 1}, step {step}; state "
                        f"saved to {state_path}; continue with resume=True (--resume)"
                    )
                progress_epochs = epoch + step / steps_per_epoch
                lr = lr_at(recipe, progress_epochs)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                gen = _generator(device, _seed_for(recipe.seed, epoch, step))
                idx = perm[step * recipe.batch_size : (step + 1) * recipe.batch_size]
                xb = augment(
                    x_train[idx], gen, crop_padding=recipe.crop_padding, flip=recipe.flip, cutout=recipe.cutout
                )
                yb = y_train[idx]
                noise = None
                if recipe.method != "standard" and recipe.start != "none":
                    draw = torch.randn if recipe.start == "gaussian" else _uniform_pm1
                    noise = draw(xb.shape, generator=gen, device=device, dtype=xb.dtype)
                shard = slice(
                    dist_info.rank * (recipe.batch_size // dist_info.world),
                    (dist_info.rank + 1) * (recipe.batch_size // dist_info.world),
                )
                xb, yb = xb[shard].contiguous(memory_format=memory_format), yb[shard]
                noise = None if noise is None else noise[shard]
                loss, correct = _train_step(
                    train_net,
                    forward_net,
                    optimizer,
                    recipe,
                    xb,
                    yb,
                    noise,
                    eps_at(recipe, progress_epochs),
                    use_aux,
                    aux_weight,
                    autocast,
                )
                sums += torch.stack([loss.detach() * yb.shape[0], correct, torch.tensor(yb.shape[0], device=device)])
                global_step += 1
                steps_done_this_call += 1
            if dist_info.world > 1:
                import torch.distributed as dist

                dist.all_reduce(sums)
            seconds = time.perf_counter() - t0
            loss_sum, correct_sum, count = (float(v) for v in sums.cpu())
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "global_step": global_step,
                "lr": lr_at(recipe, epoch + 1 - 1e-9),
                "train_loss": loss_sum / max(count, 1),
                "train_acc": correct_sum / max(count, 1),
                "train_acc_on": "clean" if recipe.method == "standard" else "training adversarial examples",
                "eps": eps_at(recipe, epoch + 1 - 1e-9),
                "seconds": seconds,
                "images_per_s": count / max(seconds, 1e-9),
            }
            validate = val_data is not None and ((epoch + 1) % recipe.val_every == 0 or epoch + 1 == recipe.epochs)
            if validate and dist_info.main:
                net.eval()
                record["val_clean_acc"] = _accuracy(forward_net, x_val, y_val, 2 * recipe.batch_size, autocast)
                record["val_robust_acc"] = _robust_accuracy(
                    forward_net, x_val, y_val, recipe, 2 * recipe.batch_size, autocast
                )
                record["val_n"] = int(x_val.shape[0])
                record["val_attack"] = (
                    f"PGD-{recipe.val_steps} linf eps {recipe.eps:.4g} step "
                    f"{recipe.validation_step_size:.4g} uniform start"
                )
                net.train()
            history.append(record)
            log_line(record)
            if dist_info.main:
                key = "val_robust_acc" if recipe.select_by == "robust" else "val_clean_acc"
                selection = {k: v for k, v in record.items() if k.startswith("val_")}
                epoch_metrics = {
                    "training": {
                        "run": run_name or config.name,
                        "recipe": recipe.name,
                        "epoch": epoch + 1,
                        "selection": selection,
                        "train_data": _describe(train_data),
                        "train_points_used": f"first {n_train}",
                    }
                }
                write_folder(out_dir / "last", epoch_metrics)
                if key not in record or not best or record[key] > best.get("value", -1.0):
                    if key in record or not best:
                        best = {"epoch": epoch + 1, "metric": key, "value": record.get(key, -1.0)}
                        write_folder(out_dir / "best", epoch_metrics)
                _plot_curves(history, out_dir / "curves.png")
            save_state(epoch + 1, 0, finished=epoch + 1 == recipe.epochs)
            if progress and dist_info.main:
                log.info("epoch %d: %s", epoch + 1, json.dumps(record))
            finished = epoch + 1 == recipe.epochs
        if stop.requested:  # the signal came after the last step check: the state is saved, still stop
            raise TrainingInterrupted(
                f"training stopped by {stop.signal_name} after its last epoch; state saved to {state_path}"
            )
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()
    if finished and dist_info.main and not (out_dir / "best").exists():
        write_folder(out_dir / "best", {})
    if finished and dist_info.main and test_data is not None:
        evaluate_folder(
            out_dir / "best",
            test_data,
            attacks=eval_attacks,
            eps=recipe.eps,
            device=device,
            seed=recipe.seed,
            progress=progress,
        )
    return TrainResult(out_dir, out_dir / "best", out_dir / "last", history, best)


def evaluate_folder(
    folder: str | Path,
    data: Any,
    *,
    attacks: Sequence[str] = ("fgsm", "pgd20"),
    eps: float,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = False,
    checks: bool = False,
) -> dict[str, Any]:
    """Evaluate the checkpoint folder's model with :func:`arnas_zoo.evaluate.evaluate` on ``data``
    and write the report (plus the training record already there) as its ``metrics.json``."""
    from arnas_zoo.checkpoint import load_folder, read_metrics
    from arnas_zoo.evaluate import evaluate

    folder = Path(folder)
    model = load_folder(folder, device=device)
    report = evaluate(
        model,
        data,
        attacks=list(attacks),
        eps=eps,
        device=device,
        seed=seed,
        checks=checks,
        progress=progress,
        model_info={"name": model.config.name, "source": str(folder)},
    )
    metrics = report.to_metrics()
    previous = read_metrics(folder) or {}
    if "training" in previous:
        metrics["training"] = previous["training"]
    save_folder(model, folder, metrics=metrics)
    return metrics


def run_training(
    arch: str,
    recipe: str | Recipe = "arnas",
    dataset: str = "digits",
    *,
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    val_rows: int = 1000,
    recipe_overrides: Mapping[str, Any] | None = None,
    model_overrides: Mapping[str, Any] | None = None,
    resume: bool = False,
    device: str | torch.device = "auto",
    progress: bool = True,
    name: str | None = None,
    eval_attacks: Sequence[str] | None = ("fgsm", "pgd20"),
    eval_n: int | None = 1000,
) -> TrainResult:
    """Train registry architecture ``arch`` on ``dataset``'s train split (what ``arnas-zoo train`` runs).

    The model's input channels/size and classes follow the dataset; ``model_overrides`` values may be
    JSON text (``"8"``, ``"[1, 2, 2]"``). The last ``val_rows`` training rows are held out for model
    selection (0: none). At the end the best checkpoint is evaluated with ``eval_attacks`` on the first
    ``eval_n`` points of the test split (the validation rows when the test split is not on disk).
    """
    from arnas_zoo.data import dataset_info, load_dataset, split_train_val
    from arnas_zoo.errors import DataNotFoundError
    from arnas_zoo.registry import get_config

    info = dataset_info(dataset)
    parsed: dict[str, Any] = {}
    for key, value in (model_overrides or {}).items():
        try:
            parsed[key] = json.loads(value) if isinstance(value, str) else value
        except json.JSONDecodeError:
            parsed[key] = value
    config = get_config(
        arch, in_channels=info.in_channels, input_size=info.input_size, num_classes=info.num_classes, **parsed
    )
    the_recipe = get_recipe(recipe, **dict(recipe_overrides or {}))
    data = load_dataset(dataset, "train", data_dir=data_dir)
    if val_rows < 0 or val_rows >= len(data):
        raise ConfigError(f"val_rows: expected 0 <= val_rows < {len(data)} (the training rows), got {val_rows}")
    train_split, val_split = split_train_val(data, val_rows) if val_rows else (data, None)
    test_data = None
    if eval_attacks:
        # the dataset's test split when it exists here; else the validation rows (said in metrics.json)
        try:
            test_data = load_dataset(dataset, "test", data_dir=data_dir, n=eval_n)
        except DataNotFoundError:
            test_data = val_split.first(eval_n) if val_split is not None else None
    torch.manual_seed(the_recipe.seed)  # the initial weights depend on the recipe's seed only
    return train(
        config,
        the_recipe,
        train_split,
        val_split,
        out_dir,
        resume=resume,
        device=device,
        progress=progress,
        run_name=name or config.name,
        test_data=test_data,
        eval_attacks=eval_attacks or (),
    )


def _should_stop(stop: _StopFlag, dist_info: Dist, local_request: bool) -> bool:
    flag = stop.requested or local_request
    if dist_info.world > 1:  # every process must stop at the same step
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        flag = bool(t.item() > 0)
    return flag


def _train_step(
    train_net: nn.Module,
    forward_net: nn.Module,
    optimizer: torch.optim.Optimizer,
    recipe: Recipe,
    xb: torch.Tensor,
    yb: torch.Tensor,
    noise: torch.Tensor | None,
    eps: float,
    use_aux: bool,
    aux_weight: float,
    autocast: Callable[[], Any],
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a (shard of a) batch; returns (loss, number correct on the trained-on inputs)."""
    step = recipe.step_size * eps / recipe.eps  # eps warm-up scales the step with eps
    if recipe.method == "standard":
        inputs = xb
    else:
        inputs = perturb(
            forward_net,
            xb,
            yb,
            eps=eps,
            step_size=step,
            steps=recipe.steps,
            start=recipe.start,
            start_sigma=recipe.start_sigma,
            loss="kl" if recipe.method == "trades" else "ce",
            noise=noise,
            eval_mode=recipe.attack_eval_mode,
            autocast=autocast,
        )
    optimizer.zero_grad(set_to_none=True)
    with autocast():
        if recipe.method == "trades":
            clean_logits, aux = _forward_train(train_net, xb, use_aux)
            adv_logits, _ = _forward_train(train_net, inputs, False)
            clean_logits, adv_logits = clean_logits.float(), adv_logits.float()
            loss = F.cross_entropy(clean_logits, yb) + recipe.trades_beta * F.kl_div(
                F.log_softmax(adv_logits, dim=1), F.softmax(clean_logits, dim=1), reduction="batchmean"
            )
            logits = adv_logits
        else:
            logits, aux = _forward_train(train_net, inputs, use_aux)
            logits = logits.float()
            loss = F.cross_entropy(logits, yb)
        if aux is not None:
            loss = loss + aux_weight * F.cross_entropy(aux.float(), yb)
    loss.backward()
    if recipe.grad_clip is not None:
        nn.utils.clip_grad_norm_(train_net.parameters(), recipe.grad_clip)
    optimizer.step()
    return loss.detach(), (logits.detach().argmax(1) == yb).sum().float()


def _forward_train(net: nn.Module, x: torch.Tensor, use_aux: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    if use_aux:
        if hasattr(net, "module"):  # DDP: go through the wrapper so gradients are synchronised
            return _ddp_forward_train(net, x)
        return net.forward_train(x)  # type: ignore[operator]
    return net(x), None


def _ddp_forward_train(ddp: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    # DDP only hooks its own forward; temporarily route forward to forward_train.
    module = ddp.module
    original = module.forward
    module.forward = module.forward_train  # type: ignore[method-assign]
    try:
        return ddp(x)
    finally:
        module.forward = original  # type: ignore[method-assign]


# ---- curves -------------------------------------------------------------------------------------
def _plot_curves(history: Sequence[Mapping[str, Any]], path: Path) -> None:
    """PNG of clean/robust validation accuracy, training loss and learning rate per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    ax = axes[0]
    for key, label in (
        ("val_clean_acc", "val clean"),
        ("val_robust_acc", "val robust (PGD)"),
        ("train_acc", "train (on trained inputs)"),
    ):
        pts = [(h["epoch"], h[key]) for h in history if key in h]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7)
    axes[1].plot(epochs, [h["train_loss"] for h in history], marker="o")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("training loss")
    axes[2].plot(epochs, [h["lr"] for h in history], marker="o")
    axes[2].set_xlabel("epoch")
    axes[2].set_ylabel("learning rate (end of epoch)")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)


def read_log(out_dir: str | Path) -> Iterator[dict[str, Any]]:
    """The JSON-lines log of a run folder, one record per line."""
    with open(Path(out_dir) / "log.jsonl") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)
