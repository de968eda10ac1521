"""Robustness evaluation: clean and per-attack robust accuracy, per-sample worst case, sanity checks.

:func:`evaluate` runs a list of attacks over an :class:`~arnas_zoo.data.ImageData` and returns an
:class:`EvaluationReport` (``format_table()`` for people, ``to_metrics()`` for ``metrics.json``). Every
report carries automatic sanity checks after Carlini et al. 2019, "On Evaluating Adversarial
Robustness"; a failed check marks the report "possible gradient masking" and names the check:

==================  ==========================================================================
check               what must hold (tolerance ``tol`` = max(2/n, 0.01) for paired comparisons)
==================  ==========================================================================
in_ball             every adversarial example lies in the eps-ball around its image and in [0, 1]
robust_le_clean     every robust accuracy <= clean accuracy (strictly: an ascent never helps)
eps_zero            PGD at eps = 0 gives the clean predictions (<= 1% of points may differ)
more_steps          PGD with 4x more steps (or more restarts) is not more accurate by more than tol
large_eps           PGD-20 at eps = 1 (l_inf: the whole [0, 1] box) leaves at most
                    min(5%, 0.5/num_classes) accuracy
black_box           black-box attacks (Square, transfer) are not more than tol below the best
                    white-box attack
monotone_eps        PGD-20 accuracy does not rise by more than tol from eps/2 to eps to 2*eps
==================  ==========================================================================

The probes (``eps_zero``, ``more_steps``, ``large_eps``, ``monotone_eps``) run PGD on the first
``check_n`` points; the others read the main results. Forward/backward passes and seconds are measured
per attack; accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import json
import math
import platform
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from arnas_zoo.attacks import (
    FGSM,
    AttackPreset,
    CountingModel,
    PassCounter,
    attack_mode,
    autoattack,
    pgd,
    square,
)
from arnas_zoo.data import ImageData
from arnas_zoo.errors import ConfigError, UnknownModelError

__all__ = [
    "AttackResult",
    "AttackSpec",
    "EvaluationReport",
    "ResolvedModel",
    "SanityCheck",
    "TransferReport",
    "evaluate",
    "make_attack",
    "parse_eps",
    "pick_device",
    "resolve_model",
    "transfer_matrix",
]

METRICS_SCHEMA = "arnas-zoo/metrics@1"
AttackFn = Callable[..., torch.Tensor]


# ---- attack specifications ---------------------------------------------------------------------
@dataclass(frozen=True)
class AttackSpec:
    """A named attack as the evaluator runs it.

    ``run(model, x, y, eps=, norm=, generator=, counter=, seed=)`` returns adversarial images.
    ``black_box`` attacks (Square, transfer) only query scores; the ``black_box`` sanity check
    compares them to the white-box ones.
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

    def describe(self, eps: float) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "restarts": self.restarts,
            "step_size": None if self.step_size_ratio is None else self.step_size_ratio * eps,
            "loss": self.loss,
            "random_start": self.random_start,
            "black_box": self.black_box,
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
            norm=norm,  # type: ignore[arg-type]
            loss=loss,
            random_start=True,
            generator=generator,
            counter=counter,
        )  # type: ignore[arg-type]

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
        return preset(model, x, y, eps=eps, norm=norm, generator=generator, counter=counter)  # type: ignore[arg-type]

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
            seed=seed,  # type: ignore[arg-type]
            counter=counter,
        )

    black_box = attacks == ["square"]
    return AttackSpec(
        name,
        run,
        steps=None if black_box else 100,
        version=version if attacks is None else "+".join(attacks),
        black_box=black_box,
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
        return square(model, x, y, eps=eps, norm=norm, n_queries=n_queries, seed=seed, counter=counter)  # type: ignore[arg-type]

    return AttackSpec(name, run, steps=n_queries, black_box=True, version="reference")


_PGD_NAME = re.compile(r"^pgd(\d+)(?:-(ce|cw))?(?:x(\d+))?$")
_SQUARE_NAME = re.compile(r"^square(\d+)?$")
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
        return _square_spec(key, int(match[1] or 5000))
    raise UnknownModelError(f"unknown attack {name!r}; expected one of {', '.join(ATTACK_NAMES)}")


def fraction(mask: torch.Tensor) -> float:
    """Share of true entries as an exact fraction of integer counts (``count / n``, 0.0 when empty).

    Never a float32 mean: 17/48 as a float32 mean is 0.35416666 < 17/48, which made a worst case
    (computed from counts) look larger than an attack's accuracy.
    """
    n = int(mask.numel())
    return int(mask.sum()) / n if n else 0.0


def parse_eps(text: str | float) -> float:
    """``"8/255"`` -> 0.0313..., ``"0.5"`` -> 0.5; rejects negative or malformed radii."""
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
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"eps: expected a number or a fraction like 8/255, got {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise ConfigError(f"eps: expected a non-negative finite radius, got {text!r}")
    return value


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is passed to :class:`torch.device`."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# ---- report ------------------------------------------------------------------------------------
@dataclass
class AttackResult:
    """One attack's outcome over the evaluated points."""

    attack: str
    norm: str
    eps: float
    steps: int | None
    restarts: int
    n: int
    robust_accuracy: float
    seconds: float
    forward_passes_per_image: float
    backward_passes_per_image: float
    step_size: float | None = None
    loss: str | None = None
    random_start: bool | None = None
    black_box: bool = False
    version: str | None = None
    source: str | None = None  # transfer attacks: the model that crafted the examples
    correct: torch.Tensor | None = field(default=None, repr=False)  # per-sample, on the CPU
    max_perturbation: float = 0.0
    out_of_box: float = 0.0  # largest distance outside [0, 1]

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("correct",)}
        return out


@dataclass
class SanityCheck:
    """One automatic check; ``passed`` is None when it could not run (e.g. needs two attacks)."""

    name: str
    passed: bool | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvaluationReport:
    """Everything measured by :func:`evaluate`; ``to_metrics()`` is the ``metrics.json`` content."""

    model: dict[str, Any]
    data: dict[str, Any]
    norm: str
    eps: float
    clean_accuracy: float
    worst_case_accuracy: float
    results: list[AttackResult]
    checks: list[SanityCheck]
    seed: int
    device: str
    batch_size: int
    created: str
    seconds: float

    @property
    def failed_checks(self) -> list[str]:
        return [c.name for c in self.checks if c.passed is False]

    @property
    def possible_gradient_masking(self) -> bool:
        return bool(self.failed_checks)

    def result(self, attack: str) -> AttackResult:
        for r in self.results:
            if r.attack == attack:
                return r
        raise KeyError(attack)

    def to_metrics(self) -> dict[str, Any]:
        from arnas_zoo import __version__

        return {
            "schema": METRICS_SCHEMA,
            "model": self.model,
            "data": self.data,
            "threat_model": {"norm": self.norm, "eps": self.eps},
            "clean_accuracy": self.clean_accuracy,
            "worst_case_accuracy": self.worst_case_accuracy,
            "results": [r.to_dict() for r in self.results],
            "sanity_checks": [c.to_dict() for c in self.checks],
            "possible_gradient_masking": self.possible_gradient_masking,
            "failed_checks": self.failed_checks,
            "seed": self.seed,
            "device": self.device,
            "batch_size": self.batch_size,
            "package_version": __version__,
            "torch_version": torch.__version__,
            "host": platform.node(),
            "created": self.created,
            "seconds": self.seconds,
        }

    def save(self, path: str | Path) -> Path:
        from arnas_zoo.checkpoint import atomic_write_json

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, self.to_metrics())
        return path

    def format_table(self) -> str:
        d = self.data
        lines = [
            f"model: {self.model.get('name')} ({self.model.get('source')})",
            f"data: {d['dataset']} {d['split']}, n={d['n']} (indices {d['indices']}); "
            f"threat model {self.norm} eps={_fmt_eps(self.eps)}; seed {self.seed}; device {self.device}",
            "",
            f"{'attack':<14} {'robust acc':>10} {'steps':>6} {'restarts':>8} {'fwd/img':>8} {'bwd/img':>8} {'seconds':>8}",
            f"{'clean':<14} {100 * self.clean_accuracy:>9.2f}%",
        ]
        for r in self.results:
            name = r.attack + (f" <- {r.source}" if r.source else "")
            steps = "-" if r.steps is None else str(r.steps)
            lines.append(
                f"{name:<14} {100 * r.robust_accuracy:>9.2f}% {steps:>6} {r.restarts:>8} "
                f"{r.forward_passes_per_image:>8.1f} {r.backward_passes_per_image:>8.1f} {r.seconds:>8.2f}"
            )
        lines.append(f"{'worst case':<14} {100 * self.worst_case_accuracy:>9.2f}%")
        lines.append("")
        lines.append("sanity checks (Carlini et al. 2019):")
        for c in self.checks:
            mark = {True: "ok  ", False: "FAIL", None: "skip"}[c.passed]
            lines.append(f"  [{mark}] {c.name}: {c.detail}")
        if self.possible_gradient_masking:
            lines.append(
                f"WARNING: possible gradient masking (failed: {', '.join(self.failed_checks)}); "
                "these robust accuracies may overstate robustness"
            )
        return "\n".join(lines)


def _fmt_eps(eps: float) -> str:
    k = eps * 255
    return f"{eps:.4g} ({k:.3g}/255)" if abs(k - round(k)) < 1e-6 and eps < 1 else f"{eps:.4g}"


# ---- core loop ---------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    parts = [model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size] for i in range(0, len(x), batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool, device=x.device)


def _perturbation_size(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> tuple[float, float]:
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    outside = torch.clamp(-x_adv, min=0).amax() if x_adv.numel() else torch.tensor(0.0)
    outside = torch.maximum(outside, torch.clamp(x_adv - 1, min=0).amax()) if x_adv.numel() else outside
    return (float(size.max()) if size.numel() else 0.0), float(outside)


def run_attack(
    model: nn.Module,
    data: ImageData,
    spec: AttackSpec,
    *,
    eps: float,
    norm: str,
    batch_size: int,
    seed: int,
    progress: bool = True,
    source: nn.Module | None = None,
    source_name: str | None = None,
) -> AttackResult:
    """Run one attack batch by batch over ``data`` (examples crafted on ``source`` when given)."""
    crafting = source if source is not None else model
    counter = PassCounter()
    counted = CountingModel(crafting, counter)
    generator = torch.Generator(device=data.device).manual_seed(seed)
    correct_parts = []
    max_size, max_out = 0.0, 0.0
    _sync(data.device)
    start = time.perf_counter()
    batches = tqdm(
        list(data.batches(batch_size)),
        desc=spec.name if source is None else f"{spec.name} <- {source_name}",
        unit="batch",
        disable=None if progress else True,
        leave=False,
    )
    for x, y in batches:
        x_adv = spec.run(counted, x, y, eps=eps, norm=norm, generator=generator, counter=None, seed=seed)
        size, out = _perturbation_size(x_adv, x, norm)
        max_size, max_out = max(max_size, size), max(max_out, out)
        with attack_mode(model):
            correct_parts.append(_correct(model, x_adv, y, batch_size))
    _sync(data.device)
    seconds = time.perf_counter() - start
    correct = torch.cat(correct_parts).cpu() if correct_parts else torch.zeros(0, dtype=torch.bool)
    n = max(len(data), 1)
    return AttackResult(
        attack=spec.name if source is None else f"transfer-{spec.name}",
        norm=norm,
        eps=eps,
        n=len(data),
        robust_accuracy=fraction(correct),
        seconds=seconds,
        forward_passes_per_image=counter.forward / n,
        backward_passes_per_image=counter.backward / n,
        correct=correct,
        max_perturbation=max_size,
        out_of_box=max_out,
        source=source_name,
        **{
            k: v
            for k, v in spec.describe(eps).items()
            if k in ("steps", "restarts", "step_size", "loss", "random_start", "version")
        },
        black_box=spec.black_box or source is not None,
    )


def _tolerance(n: int) -> float:
    return max(2.0 / max(n, 1), 0.01)


def _probe_accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str, steps: int, batch_size: int, seed: int
) -> torch.Tensor:
    generator = torch.Generator(device=x.device).manual_seed(seed)
    parts = []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        x_adv = pgd(
            model,
            xb,
            yb,
            eps=eps,
            step_size=eps / 4,
            steps=steps,
            norm=norm,  # type: ignore[arg-type]
            generator=generator,
        )
        with attack_mode(model):
            parts.append(_correct(model, x_adv, yb, batch_size))
    return torch.cat(parts).cpu()


def sanity_checks(
    model: nn.Module,
    data: ImageData,
    clean_correct: torch.Tensor,
    results: Sequence[AttackResult],
    *,
    eps: float,
    norm: str,
    batch_size: int,
    seed: int,
    check_n: int = 128,
    probes: bool = True,
) -> list[SanityCheck]:
    """The automatic checks of Carlini et al. 2019 (see the module docstring for the exact rules)."""
    n = len(data)
    tol = _tolerance(n)
    clean = fraction(clean_correct)
    checks: list[SanityCheck] = []

    bad = [r.attack for r in results if r.max_perturbation > eps * (1 + 1e-4) + 1e-6 or r.out_of_box > 1e-6]
    worst = max((r.max_perturbation for r in results), default=0.0)
    checks.append(
        SanityCheck(
            "in_ball",
            not bad,
            f"outside the {norm} ball or [0,1]: {', '.join(bad)}"
            if bad
            else f"largest perturbation {worst:.4g} <= eps {eps:.4g}, all in [0,1]",
        )
    )

    # strict: an attack that ascends the loss cannot end above clean accuracy, not even by one point
    above = [f"{r.attack} {100 * r.robust_accuracy:.2f}%" for r in results if r.robust_accuracy > clean + 1e-9]
    checks.append(
        SanityCheck(
            "robust_le_clean",
            not above,
            f"above clean {100 * clean:.2f}%: {', '.join(above)}"
            if above
            else f"all robust accuracies <= clean {100 * clean:.2f}%",
        )
    )

    white = [r for r in results if not r.black_box]
    black = [r for r in results if r.black_box]
    if white and black:
        best_white = min(white, key=lambda r: r.robust_accuracy)
        below = [
            f"{r.attack} {100 * r.robust_accuracy:.2f}%"
            for r in black
            if r.robust_accuracy < best_white.robust_accuracy - tol
        ]
        checks.append(
            SanityCheck(
                "black_box",
                not below,
                f"black-box below white-box {best_white.attack} {100 * best_white.robust_accuracy:.2f}%: {', '.join(below)}"
                if below
                else f"black-box attacks >= best white-box {best_white.attack} ({100 * best_white.robust_accuracy:.2f}%)",
            )
        )
    else:
        checks.append(
            SanityCheck("black_box", None, "needs a white-box and a black-box attack (e.g. pgd20 and square)")
        )

    # more steps/restarts among the main results: same loss and norm, compare every pair that differs only there
    pgd_like = [r for r in white if r.steps is not None and r.version is None and r.random_start]
    regressions = [
        f"{b.attack} {100 * b.robust_accuracy:.2f}% > {a.attack} {100 * a.robust_accuracy:.2f}%"
        for a in pgd_like
        for b in pgd_like
        if a is not b
        and a.loss == b.loss
        and (b.steps or 0) >= (a.steps or 0)
        and b.restarts >= a.restarts
        and ((b.steps or 0) > (a.steps or 0) or b.restarts > a.restarts)
        and b.robust_accuracy > a.robust_accuracy + tol
    ]

    if not probes or n == 0:
        for name in ("eps_zero", "large_eps", "monotone_eps"):
            checks.append(SanityCheck(name, None, "probes disabled"))
        checks.append(
            SanityCheck(
                "more_steps",
                not regressions if len(pgd_like) > 1 else None,
                "; ".join(regressions) or "compared the PGD results",
            )
        )
        return checks

    probe = data.first(check_n)
    m = len(probe)
    ptol = _tolerance(m)
    x, y = probe.x, probe.y
    kw = dict(norm=norm, batch_size=batch_size, seed=seed)
    at_zero = _probe_accuracy(model, x, y, eps=0.0, steps=2, **kw)
    disagree = fraction(at_zero != clean_correct[:m])
    checks.append(
        SanityCheck(
            "eps_zero",
            disagree <= 0.01,
            f"PGD at eps=0 changed {100 * disagree:.1f}% of {m} clean predictions"
            + (" (randomized model?)" if disagree > 0.01 else ""),
        )
    )

    steps = 20
    base = fraction(_probe_accuracy(model, x, y, eps=eps, steps=steps, **kw))
    few = fraction(_probe_accuracy(model, x, y, eps=eps, steps=max(steps // 4, 1), **kw))
    if base > few + ptol:
        regressions.append(f"probe PGD-{steps} {100 * base:.2f}% > PGD-{max(steps // 4, 1)} {100 * few:.2f}%")
    checks.append(
        SanityCheck(
            "more_steps",
            not regressions,
            "; ".join(regressions)
            if regressions
            else f"PGD-{steps} {100 * base:.2f}% <= PGD-{steps // 4} {100 * few:.2f}% on {m} points"
            + (f"; {len(pgd_like)} PGD results consistent" if len(pgd_like) > 1 else ""),
        )
    )

    large = 1.0 if norm == "linf" else float(math.sqrt(x[0].numel()))
    limit = min(0.05, 0.5 / max(data.num_classes, 2))
    at_large = fraction(_probe_accuracy(model, x, y, eps=large, steps=steps, **kw))
    checks.append(
        SanityCheck(
            "large_eps",
            at_large <= limit,
            f"PGD-{steps} at eps={large:.3g} leaves {100 * at_large:.2f}% (limit {100 * limit:.1f}%)",
        )
    )

    ladder = [(eps / 2, None), (eps, base), (2 * eps, None)]
    accs = [
        acc if acc is not None else fraction(_probe_accuracy(model, x, y, eps=e, steps=steps, **kw))
        for e, acc in ladder
    ]
    rising = [
        f"{100 * a:.2f}% at {e:.4g} -> {100 * b:.2f}% at {f:.4g}"
        for (e, _), (f, _), a, b in zip(ladder, ladder[1:], accs, accs[1:])
        if b > a + ptol
    ]
    checks.append(
        SanityCheck(
            "monotone_eps",
            not rising,
            "accuracy rises with eps: " + "; ".join(rising)
            if rising
            else "PGD-20 accuracy " + " >= ".join(f"{100 * a:.2f}%" for a in accs) + " at eps/2, eps, 2eps",
        )
    )
    return checks


def evaluate(
    model: nn.Module,
    data: ImageData,
    attacks: Iterable[str | AttackSpec] = ("fgsm", "pgd20"),
    *,
    eps: float = 8 / 255,
    norm: str = "linf",
    batch_size: int = 128,
    device: str | torch.device = "auto",
    seed: int = 0,
    checks: bool = True,
    check_n: int = 128,
    progress: bool = True,
    transfer_sources: Mapping[str, nn.Module] | None = None,
    model_info: Mapping[str, Any] | None = None,
) -> EvaluationReport:
    """Evaluate ``model`` on ``data``: clean accuracy, every attack in ``attacks``, worst case, checks.

    Args:
        model: maps [0, 1] images to logits (moved to ``device``; its training flag is restored).
        data: the points (use ``data.first(n)`` for RobustBench-style subsets).
        attacks: names for :func:`make_attack` (``"fgsm"``, ``"pgd20"``, ``"pgd100"``, ``"apgd-ce"``,
            ``"aa"``, ``"square"``, ...) or :class:`AttackSpec` objects.
        eps, norm: the threat model (``"linf"`` or ``"l2"``).
        seed: seeds each attack's random starts (and AutoAttack's), so a report is reproducible.
        checks: run the sanity checks (probes on the first ``check_n`` points).
        transfer_sources: name -> model; PGD-20 examples crafted on each are scored on ``model``
            (black-box transfer results).
        model_info: what to record about the model (name, source) in the report.
    """
    if norm not in ("linf", "l2"):
        raise ConfigError(f"norm: expected 'linf' or 'l2', got {norm!r}")
    if batch_size < 1:
        raise ConfigError(f"batch_size: expected a positive integer, got {batch_size}")
    dev = pick_device(device)
    specs = [make_attack(a) if isinstance(a, str) else a for a in attacks]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"attacks: each attack once, got {names}")
    data = data.to(dev)
    model.to(dev)
    _check_model_fits(model, data)
    start = time.perf_counter()
    with attack_mode(model):
        clean_correct = _correct(model, data.x, data.y, batch_size).cpu()
    results = [
        run_attack(model, data, spec, eps=eps, norm=norm, batch_size=batch_size, seed=seed, progress=progress)
        for spec in specs
    ]
    for source_name, source in (transfer_sources or {}).items():
        source.to(dev)
        results.append(
            run_attack(
                model,
                data,
                make_attack("pgd20"),
                eps=eps,
                norm=norm,
                batch_size=batch_size,
                seed=seed,
                progress=progress,
                source=source,
                source_name=source_name,
            )
        )
    worst = clean_correct.clone()
    for r in results:
        worst &= r.correct  # type: ignore[arg-type]
    report_checks = (
        sanity_checks(
            model,
            data,
            clean_correct,
            results,
            eps=eps,
            norm=norm,
            batch_size=batch_size,
            seed=seed,
            check_n=check_n,
            probes=checks,
        )
        if checks
        else []
    )
    return EvaluationReport(
        model=dict(model_info or {"name": type(model).__name__, "source": "object"}),
        data=data.describe(),
        norm=norm,
        eps=eps,
        clean_accuracy=fraction(clean_correct),
        worst_case_accuracy=fraction(worst),
        results=results,
        checks=report_checks,
        seed=seed,
        device=str(dev)
        + (
            f" ({torch.cuda.get_device_name(dev)})"
            if dev.type == "cuda"
            else f" ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
        ),
        batch_size=batch_size,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        seconds=time.perf_counter() - start,
    )


def _check_model_fits(model: nn.Module, data: ImageData) -> None:
    config = getattr(model, "config", None)
    if config is None:
        return
    want = (config.in_channels, config.input_size, config.input_size)
    if tuple(data.shape) != want or config.num_classes < data.num_classes:
        raise ConfigError(
            f"model {config.name!r} expects {want[0]}x{want[1]}x{want[2]} images and {config.num_classes} classes; "
            f"the data {data.name} has {'x'.join(map(str, data.shape))} images and {data.num_classes} classes"
        )


# ---- transfer matrix ---------------------------------------------------------------------------
@dataclass
class TransferReport:
    """Accuracy of each target model on examples crafted on each source model (paper Table 2)."""

    names: list[str]
    accuracy: list[list[float]]  # accuracy[source][target]
    clean_accuracy: list[float]
    attack: str
    eps: float
    norm: str
    data: dict[str, Any]
    seed: int
    device: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format_table(self) -> str:
        width = max(12, *(len(n) + 2 for n in self.names))
        lines = [
            f"transfer {self.attack} ({self.norm} eps={_fmt_eps(self.eps)}), data {self.data['dataset']} "
            f"{self.data['split']} n={self.data['n']} (indices {self.data['indices']}), seed {self.seed}, "
            f"device {self.device}",
            "rows: source (crafts the examples); columns: target (classifies them); diagonal = white-box",
            "source \\ target".ljust(width) + "".join(n.rjust(width) for n in self.names),
        ]
        lines.append("clean".ljust(width) + "".join(f"{100 * a:.2f}%".rjust(width) for a in self.clean_accuracy))
        for name, row in zip(self.names, self.accuracy):
            lines.append(name.ljust(width) + "".join(f"{100 * a:.2f}%".rjust(width) for a in row))
        return "\n".join(lines)


def transfer_matrix(
    models: Mapping[str, nn.Module],
    data: ImageData,
    *,
    attack: str = "pgd20",
    eps: float = 8 / 255,
    norm: str = "linf",
    batch_size: int = 128,
    device: str | torch.device = "auto",
    seed: int = 0,
    progress: bool = True,
) -> TransferReport:
    """Craft ``attack`` examples on every model and classify them with every model (source x target)."""
    if len(models) < 1:
        raise ConfigError("transfer: expected at least one model")
    dev = pick_device(device)
    data = data.to(dev)
    spec = make_attack(attack)
    names = list(models)
    for m in models.values():
        m.to(dev)
        _check_model_fits(m, data)
    clean = []
    for m in models.values():
        with attack_mode(m):
            clean.append(fraction(_correct(m, data.x, data.y, batch_size)))
    matrix: list[list[float]] = []
    for source_name in tqdm(names, desc="sources", disable=None if progress else True, leave=False):
        source = models[source_name]
        generator = torch.Generator(device=dev).manual_seed(seed)
        correct = {t: [] for t in names}
        for x, y in data.batches(batch_size):
            x_adv = spec.run(source, x, y, eps=eps, norm=norm, generator=generator, counter=None, seed=seed)
            for target_name in names:
                with attack_mode(models[target_name]):
                    correct[target_name].append(_correct(models[target_name], x_adv, y, batch_size))
        matrix.append([fraction(torch.cat(correct[t])) for t in names])
    return TransferReport(
        names=names,
        accuracy=matrix,
        clean_accuracy=clean,
        attack=attack,
        eps=eps,
        norm=norm,
        data=data.describe(),
        seed=seed,
        device=str(dev),
    )


# ---- model resolution --------------------------------------------------------------------------
@dataclass
class ResolvedModel:
    """A model ready to evaluate, and what it is (for reports and warnings)."""

    model: nn.Module
    name: str
    source: str  # "checkpoint" | "hub" | "pretrained" | "registry" (random weights)
    trained: bool
    path: str | None = None

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "trained": self.trained, "path": self.path}


def resolve_model(
    spec: str, device: str | torch.device = "cpu", *, dataset: str | None = None, **overrides: Any
) -> ResolvedModel:
    """Turn a command-line model spec into a model in eval mode on ``device``.

    ``spec`` is a checkpoint folder (``config.json`` + ``model.safetensors``, loaded strictly), a
    Hub id (``org/name[@rev]``) or a pretrained name (``arnas.mnist_linf``), all three loaded by
    :func:`arnas_zoo.hub.load`; or a registry architecture name (built with RANDOM weights:
    ``trained`` is False and callers must say so loudly;
    with ``dataset`` its channels, input size and classes follow the data; ``overrides`` change
    any other config field). This is the one place that knows the kinds of specs.
    """
    from arnas_zoo.hub import describe_source, load
    from arnas_zoo.registry import create_model, is_registered

    dev = pick_device(device)
    path = Path(spec).expanduser()
    if not path.is_dir() and is_registered(spec):
        if dataset is not None:
            from arnas_zoo.data import dataset_info

            info = dataset_info(dataset)
            overrides = {
                "in_channels": info.in_channels,
                "input_size": info.input_size,
                "num_classes": info.num_classes,
                **overrides,
            }
        model = create_model(spec, **overrides).to(dev).eval()
        return ResolvedModel(model=model, name=spec, source="registry", trained=False)
    # Everything else (checkpoint folders, Hub ids 'org/name[@rev]', pretrained names) goes through the one
    # loader, arnas_zoo.load; its errors (unknown names with close matches, offline...) are typed one-liners.
    where = describe_source(spec)
    model = load(spec, device=dev)
    name = getattr(getattr(model, "config", None), "name", None) or (path.name if where["kind"] == "folder" else spec)
    source = {"folder": "checkpoint", "hub": "hub", "pretrained": "pretrained"}[where["kind"]]
    location = (
        where.get("path")
        or where.get("source")
        or (f"{where['repo_id']}@{where['revision'] or 'main'}" if where["kind"] == "hub" else None)
    )
    return ResolvedModel(model=model, name=str(name), source=source, trained=True, path=location)


def write_json(path: str | Path, payload: Mapping[str, Any]) -> None:
    from arnas_zoo.checkpoint import atomic_write_json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, dict(payload))


def dumps(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, indent=1)
