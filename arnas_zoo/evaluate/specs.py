"""Named attacks as the evaluator runs them: ``fgsm``, ``pgd20``, ``pgd50-cwx5``, ``aa``, ``square1000``, ..."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from arnas_zoo.attacks import FGSM, AttackPreset, PassCounter, autoattack, pgd, square
from arnas_zoo.errors import ConfigError, UnknownModelError

AttackFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class AttackSpec:
    """A named attack as the evaluator runs it.

    ``run(model, x, y, eps=, norm=, generator=, counter=, seed=)`` returns adversarial images.
    ``black_box`` attacks (Square, transfer) only query scores; the ``black_box`` sanity check
    compares them to the white-box ones. ``family`` groups attacks for the checks: ``pgd`` (our PGD
    and FGSM), ``autoattack`` (the reference AutoAttack and its parts), ``square``.
    """

    name: str
    run: AttackFn
    steps: int | None = None
    restarts: int = 1
    step_size_ratio: float | None = None  # step size / eps
    loss: str | None = None
    random_start: bool | None = None
    black_box: bool = False
    version: str | None = None
    family: str = "pgd"

    def describe(self, eps: float) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "restarts": self.restarts,
            "step_size": None if self.step_size_ratio is None else self.step_size_ratio * eps,
            "loss": self.loss,
            "random_start": self.random_start,
            "version": self.version,
        }


def _pgd_spec(name: str, steps: int, restarts: int, loss: str, ratio: float = 0.25) -> AttackSpec:
    def run(
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        eps: float,
        norm: str,
        generator: torch.Generator | None,
        counter: PassCounter | None,
        seed: int,
    ) -> torch.Tensor:
        return pgd(
            model,
            x,
            y,
            eps=eps,
            step_size=ratio * eps,
            steps=steps,
            restarts=restarts,
            norm=norm,
            loss=loss,
            start="uniform",
            generator=generator,
            counter=counter,
        )

    return AttackSpec(name, run, steps=steps, restarts=restarts, step_size_ratio=ratio, loss=loss, random_start=True)


def _preset_spec(preset: AttackPreset) -> AttackSpec:
    def run(
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        eps: float,
        norm: str,
        generator: torch.Generator | None,
        counter: PassCounter | None,
        seed: int,
    ) -> torch.Tensor:
        return preset(model, x, y, eps=eps, norm=norm, generator=generator, counter=counter)

    return AttackSpec(
        preset.name,
        run,
        steps=preset.steps,
        restarts=preset.restarts,
        step_size_ratio=preset.step_size / preset.eps,
        loss=preset.loss,
        random_start=preset.random_start,
    )


def _autoattack_spec(name: str, version: str, attacks: list[str] | None) -> AttackSpec:
    def run(
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        eps: float,
        norm: str,
        generator: torch.Generator | None,
        counter: PassCounter | None,
        seed: int,
    ) -> torch.Tensor:
        return autoattack(
            model,
            x,
            y,
            eps=eps,
            norm=norm,
            version=version,
            attacks=attacks,
            seed=seed,
            counter=counter,
        )

    black_box = attacks == ["square"]
    return AttackSpec(
        name,
        run,
        steps=None if black_box else 100,
        black_box=black_box,
        version=version if attacks is None else "+".join(attacks),
        family="autoattack",
    )


def _square_spec(name: str, n_queries: int) -> AttackSpec:
    def run(
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        eps: float,
        norm: str,
        generator: torch.Generator | None,
        counter: PassCounter | None,
        seed: int,
    ) -> torch.Tensor:
        return square(model, x, y, eps=eps, norm=norm, n_queries=n_queries, seed=seed, counter=counter)

    return AttackSpec(name, run, steps=n_queries, black_box=True, version="reference", family="square")


_PGD_NAME = re.compile(r"^pgd(\d{1,6})(?:-(ce|cw))?(?:x(\d{1,4}))?$")
_SQUARE_NAME = re.compile(r"^square(\d{1,7})?$")
ATTACK_NAMES = (
    "fgsm",
    "pgd<K>[-cw][x<R>]",
    "apgd-ce",
    "apgd-dlr",
    "apgd-t",
    "fab-t",
    "square[<Q>]",
    "aa",
    "aa-plus",
    "aa-rand",
)


def make_attack(name: str) -> AttackSpec:
    """The attack called ``name``: ``fgsm``; ``pgd20``/``pgd100`` (the ARNAS paper's presets), any
    ``pgd<K>`` with optional ``-cw`` loss and ``x<R>`` restarts (step eps/4, random start), e.g.
    ``pgd50-cwx5``; AutoAttack ``aa`` (standard), ``aa-plus``, ``aa-rand``; single reference attacks
    ``apgd-ce``, ``apgd-dlr``, ``apgd-t``, ``fab-t``; ``square`` (5000 queries) or ``square<Q>``.
    """
    key = name.strip().lower()
    if key == "fgsm":
        return _preset_spec(FGSM)
    if match := _PGD_NAME.match(key):
        steps, loss, restarts = int(match[1]), match[2] or "ce", int(match[3] or 1)
        if steps < 1 or restarts < 1:
            raise ConfigError(f"attack {name!r}: expected at least 1 step and 1 restart")
        return _pgd_spec(key, steps, restarts, loss)
    if key in ("aa", "autoattack", "aa-standard"):
        return _autoattack_spec("aa", "standard", None)
    if key in ("aa-plus", "aa-rand"):
        return _autoattack_spec(key, key[3:], None)
    if key in ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "fab"):
        return _autoattack_spec(key, "custom", [key])
    if match := _SQUARE_NAME.match(key):
        queries = int(match[1] or 5000)
        if queries < 1:
            raise ConfigError(f"attack {name!r}: expected at least 1 query")
        return _square_spec(key, queries)
    raise UnknownModelError(f"unknown attack {name[:60]!r}; expected one of {', '.join(ATTACK_NAMES)}")


def parse_attacks(text: str) -> list[str]:
    """``"fgsm, pgd20"`` -> ``["fgsm", "pgd20"]``, each checked by :func:`make_attack`."""
    names = [a.strip() for a in text.split(",") if a.strip()]
    for name in names:
        make_attack(name)
    return names


def parse_eps(text: str | float) -> float:
    """``"8/255"`` -> 0.0313..., ``"0.5"`` -> 0.5; rejects negative, infinite or malformed radii."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        parts = text.strip().split("/")
        try:
            if len(parts) == 1:
                value = float(parts[0])
            elif len(parts) == 2:
                value = float(parts[0]) / float(parts[1])
            else:
                raise ValueError(text)
        except (ValueError, ZeroDivisionError, OverflowError):
            raise ConfigError(f"eps: expected a number or a fraction like 8/255, got {text[:40]!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise ConfigError(f"eps: expected a non-negative finite radius, got {str(text)[:40]!r}")
    return value
