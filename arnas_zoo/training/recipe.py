"""Training recipes: every setting of an adversarial-training run, as data (``recipe.json``).

A :class:`Recipe` is a frozen dataclass; named presets live in :data:`RECIPES` (the papers' recipes
and small CPU budgets), every field can be overridden (``--set eps=8/255``). The recipe describes the
*training* attack; ``val_*`` fields describe the PGD used for model selection.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

from arnas_zoo.errors import ConfigError
from arnas_zoo.runs.schedules import SCHEDULES
from arnas_zoo.settings import Settings

RECIPE_SCHEMA = "arnas-zoo/recipe@1"
METHODS = ("pgd", "fgsm", "trades", "standard")
STARTS = ("normal", "uniform", "none")
AUX_INPUTS = ("clean", "adversarial")
_START_ALIASES = {"gaussian": "normal"}  # the name earlier recipes used
_WRITTEN_WHEN_SET = ("early_stop_patience", "co_guard")


def stop_reason(recipe: Recipe, record: Mapping[str, Any], best_epoch: int, best_robust: float) -> str | None:
    """Why training should stop after the epoch of ``record`` (a validation epoch), or None.

    ``best_epoch``: the epoch of the best selection metric so far (this one included); ``best_robust``:
    the best validation robust accuracy so far. The catastrophic-overfitting guard (fast FGSM training
    can lose its robustness within an epoch, Wong et al. 2020) fires when the robust accuracy falls
    below ``co_guard`` times its best; patience counts validation epochs since the best one.
    """
    robust = record.get("val_robust_acc")
    if robust is None:
        return None
    if recipe.co_guard is not None and best_robust > 0 and robust < recipe.co_guard * best_robust:
        return (
            f"catastrophic-overfitting guard: val robust acc {robust:.4f} < {recipe.co_guard} x best "
            f"{best_robust:.4f} at epoch {record['epoch']}"
        )
    patience = recipe.early_stop_patience
    if patience is not None and (record["epoch"] - best_epoch) >= patience * recipe.val_every:
        return f"early stop: no better {recipe.select_by} validation accuracy since epoch {best_epoch}"
    return None


@dataclass(frozen=True)
class Recipe(Settings):
    """Every setting of an adversarial-training run (serialised as ``recipe.json``).

    ``eps``/``step_size`` are in [0, 1] pixel units (8/255 = 0.0314).
    """

    what = "recipe"
    schema = RECIPE_SCHEMA
    item = "field"

    name: str = "custom"
    method: str = "pgd"  # pgd | fgsm (random start, "fast" AT) | trades | standard (no attack)
    epochs: int = 200
    batch_size: int = 32
    train_n: int | None = None  # train on the first n training points only (None: all)
    # optimizer: SGD (every parameter decayed, BN and biases included, as the authors' recipes do)
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    grad_clip: float | None = 5.0
    # learning-rate schedule (epoch units; per-step granularity; multistep: x gamma once t >= milestone)
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
    start: str = "normal"  # normal (x + start_sigma * N(0,1)) | uniform (U(-eps, eps)) | none
    start_sigma: float = 0.001
    attack_bn: str = "eval"  # BatchNorm while crafting: eval (running statistics) | batch (batch statistics)
    eps_warmup_epochs: float = 0.0  # ramp eps (and step size) linearly from 0 over these epochs
    trades_beta: float = 6.0
    auxiliary_weight: float | None = None  # None: the model config's auxiliary_weight
    aux_input: str = "adversarial"  # the auxiliary head's input: adversarial batch | clean batch (authors' ARNAS)
    jacobian_weight: float = 0.0  # DSRNA-style input-Jacobian regulariser (Frobenius, random projections)
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
    # stopping early (both act on validation epochs; the best checkpoint is kept either way)
    early_stop_patience: int | None = None  # stop after this many validations without a better selection metric
    co_guard: float | None = None  # stop when val robust acc < co_guard x its best so far (catastrophic overfitting)
    # speed
    channels_last: bool = True
    bf16: bool = True  # bf16 autocast on CUDA
    bf16_cpu: bool = False  # bf16 autocast on CPU too (opt-in: pays only on CPUs with native bf16)
    compile: bool = False  # torch.compile the forward passes (training/compiled.py; eager where it fails)
    seed: int = 0
    notes: str = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        choices = {
            "method": METHODS,
            "schedule": SCHEDULES,
            "start": STARTS,
            "select_by": ("robust", "clean"),
            "attack_bn": ("eval", "batch"),
            "aux_input": AUX_INPUTS,
            "norm": ("linf",),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"recipe.{key}: expected one of {list(allowed)}, got {getattr(self, key)!r:.60}")
        optional = ("val_n", "train_n", "early_stop_patience")
        for key in ("epochs", "batch_size", "steps", "val_every", "val_steps", *optional):
            value = getattr(self, key)
            if value is None and key in optional:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1 or value > 10**9:
                raise ConfigError(f"recipe.{key}: expected a positive integer, got {value!r:.60}")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"recipe.{f.name}: expected a finite number, got {value}")
        for key in ("lr", "eps", "step_size"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"recipe.{key}: expected a positive number, got {getattr(self, key)!r}")
        non_negative = (
            "momentum",
            "weight_decay",
            "lr_min",
            "warmup_epochs",
            "eps_warmup_epochs",
            "trades_beta",
            "start_sigma",
            "crop_padding",
            "cutout",
            "jacobian_weight",
        )
        for key in non_negative:
            if getattr(self, key) < 0:
                raise ConfigError(f"recipe.{key}: expected a non-negative value, got {getattr(self, key)!r}")
        if self.eps > 1:
            raise ConfigError(f"recipe.eps: expected a value in pixel units [0, 1] (8/255 = 0.0314), got {self.eps}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"recipe.grad_clip: expected a positive number or null, got {self.grad_clip}")
        if self.co_guard is not None and not 0 < self.co_guard < 1:
            raise ConfigError(f"recipe.co_guard: expected a fraction in (0, 1) or null, got {self.co_guard}")
        if self.val_step_size is not None and not self.val_step_size > 0:
            raise ConfigError(f"recipe.val_step_size: expected a positive number or null, got {self.val_step_size}")
        if list(self.milestones) != sorted(self.milestones):
            raise ConfigError(f"recipe.milestones: expected increasing epochs, got {list(self.milestones)}")

    @property
    def validation_step_size(self) -> float:
        return self.val_step_size if self.val_step_size is not None else self.eps / 4

    def eps_at(self, epoch_progress: float) -> float:
        """The training eps after ``epoch_progress`` epochs (the linear warm-up, if any)."""
        if self.eps_warmup_epochs > 0 and epoch_progress < self.eps_warmup_epochs:
            return self.eps * max(epoch_progress / self.eps_warmup_epochs, 1e-3)
        return self.eps

    # ---- (de)serialisation (arnas_zoo.settings.Settings; values coerced, as the CLI passes strings) ------
    def to_dict(self) -> dict[str, Any]:
        # fields added later are left out when unused, so that older runs still resume
        return {k: v for k, v in super().to_dict().items() if not (k in _WRITTEN_WHEN_SET and v is None)}

    @classmethod
    def decode(cls, key: str, value: Any) -> Any:
        return _coerce(key, value, _hints(typing.cast(type, cls))[key])


def _number(text: str) -> float:
    if "/" in text:  # "8/255"
        num, den = text.split("/", 1)
        return float(num) / float(den)
    return float(text)


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Coerce an override (often a CLI string) to the field's type, with a helpful error."""
    args = typing.get_args(annotation)
    optional = isinstance(annotation, types.UnionType) and type(None) in args
    base = next((a for a in args if a is not type(None)), annotation) if optional else annotation
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
        if not optional:
            raise ConfigError(f"recipe.{key}: may not be null")
        return None
    try:
        if typing.get_origin(base) is tuple:
            items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
            return tuple(_number(v) if isinstance(v, str) else float(v) for v in items)
        if base is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            if not isinstance(value, (bool, int)):
                raise ValueError(value)
            return bool(value)
        if base is int:
            number = _number(value) if isinstance(value, str) else value
            if isinstance(number, bool) or not float(number).is_integer():
                raise ValueError(value)
            return int(number)
        if base is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return _number(value) if isinstance(value, str) else float(value)
        text = str(value)
        return _START_ALIASES.get(text, text) if key == "start" else text
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        raise ConfigError(f"recipe.{key}: cannot read {str(value)[:60]!r} as {base}") from None


_ARNAS = Recipe(
    name="arnas",
    milestones=(99.0, 149.0),
    aux_input="clean",
    notes="ARNAS evaluation training (Ou et al. 2024, Sec. 4.1, and the authors' adv_train.py): SGD 0.1, "
    "momentum 0.9, wd 1e-4, clip 5, lr x0.1 from epoch index 99 and x0.01 from 149 (0-based, as the authors' "
    "adjust_learning_rate), 200 epochs, batch 32, cutout 16; PGD-7 eps 8/255 step 0.01 from x + 0.001*N(0,1) "
    "with BatchNorm in eval mode while crafting; loss CE(adversarial) + 0.4 * CE(auxiliary head on the CLEAN "
    "batch, train mode)",
)

RECIPES: dict[str, Recipe] = {
    "arnas": _ARNAS,
    # The ARNAS paper trains "following conventions [AdvRush]": same optimizer and schedule; AdvRush's
    # DARTS-space recipe has no auxiliary head, no cutout, batch 64, eps 0.031.
    "advrush": _ARNAS.replace(
        name="advrush",
        batch_size=64,
        cutout=0,
        auxiliary_weight=0.0,
        eps=0.031,
        aux_input="adversarial",
        notes="AdvRush recipe for DARTS-space networks: as ARNAS but batch 64, no aux, no cutout, PGD-7 eps 0.031 "
        "step 0.01 from x + 0.001*N(0,1) (AdvRush's madry_loss)",
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
        attack_bn="batch",
        cutout=0,
        notes="FGSM with random start (Wong et al. 2020): step 1.25*eps, cyclic lr to 0.2, attack in train mode",
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
    "cpu_mnist_full": Recipe(
        name="cpu_mnist_full",
        epochs=2,
        batch_size=128,
        lr=0.1,
        schedule="cosine",
        weight_decay=5e-4,
        eps=0.3,
        step_size=0.12,
        steps=3,
        start="uniform",
        eps_warmup_epochs=0.5,
        crop_padding=0,
        flip=False,
        cutout=0,
        val_n=500,
        val_steps=10,
        val_step_size=0.1,
        notes="CPU budget on the full MNIST train set (train_full, 59,000 rows after 1,000 validation rows): eps 0.3, "
        "PGD-3 step 0.12, eps ramp over the first half epoch, cosine lr 0.1, batch 128, 2 epochs; the leaderboard's",
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
        from arnas_zoo.safe_json import read_json_object

        try:
            base = Recipe.from_dict(read_json_object(name, max_bytes=1024 * 1024, what="recipe"))
        except ValueError as exc:  # UntrustedFileError is a ConfigError (a ValueError): one line either way
            raise ConfigError(f"{name}: malformed recipe JSON ({str(exc)[:160]})") from None
    else:
        raise ConfigError(f"unknown recipe {str(name)[:60]!r}; expected one of {list_recipes()} or a recipe .json file")
    return base.replace(**overrides) if overrides else base
