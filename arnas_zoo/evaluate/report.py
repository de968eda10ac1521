"""The evaluation report: per-attack results, the worst case, sanity checks, and ``metrics.json``.

**Headline robust accuracy** of an attack is the share of points classified correctly on the clean
input *and* on the attack's adversarial input (``robust_accuracy``). The share correct on the
adversarial input alone is kept as ``adversarial_accuracy``: a one-step attack such as FGSM can move
a misclassified point onto the right class, which would otherwise count it as robust. The per-point
worst case over all attacks is ANDed with clean correctness in the same way.

:meth:`EvaluationReport.from_metrics` reads ``metrics.json`` back into the typed report (model cards
and the zoo's consistency tests read figures through it, never through ad-hoc dict walks).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arnas_zoo.errors import CheckpointError

METRICS_SCHEMA = "arnas-zoo/metrics@2"
OLD_METRICS_SCHEMA = "arnas-zoo/metrics@1"  # robust_accuracy was the adversarial accuracy alone
HEADLINE = (
    "correct on the clean input AND on the adversarial input (per point); "
    "adversarial_accuracy: correct on the adversarial input alone"
)


def pack_mask(mask: torch.Tensor) -> str:
    """A per-point boolean mask as base64 of its packed bits (``metrics.json`` and shard results keep them)."""
    return base64.b64encode(np.packbits(mask.cpu().numpy().astype(np.uint8)).tobytes()).decode()


def unpack_mask(text: Any, n: int, where: str = "per-point outcomes") -> torch.Tensor:
    """The ``n``-point mask :func:`pack_mask` wrote; anything else (wrong length, not base64) is refused."""
    try:
        raw = base64.b64decode(str(text), validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError(f"{where}: not base64-packed bits") from None
    if not isinstance(n, int) or n < 0 or len(raw) != (n + 7) // 8:
        raise CheckpointError(f"{where}: {len(raw)} bytes of bits for {n} points")
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[:n]
    return torch.from_numpy(bits.astype(bool))


def fraction(mask: torch.Tensor) -> float:
    """Share of true entries as an exact fraction of integer counts (``count / n``, 0.0 when empty).

    Never a float32 mean: 17/48 as a float32 mean is 0.35416666 < 17/48, which made a worst case
    (computed from counts) look larger than an attack's accuracy.
    """
    n = int(mask.numel())
    return int(mask.sum()) / n if n else 0.0


@dataclass
class AttackResult:
    """One attack's outcome over the evaluated points (accuracies are fractions in [0, 1])."""

    attack: str
    norm: str
    eps: float
    steps: int | None
    restarts: int
    n: int
    robust_accuracy: float  # headline: clean AND adversarial correct
    seconds: float
    forward_passes_per_image: float
    backward_passes_per_image: float
    adversarial_accuracy: float | None = None  # adversarial correct alone
    step_size: float | None = None
    loss: str | None = None
    random_start: bool | None = None
    black_box: bool = False
    version: str | None = None
    family: str = "pgd"
    source: str | None = None  # transfer attacks: the model that crafted the examples
    max_perturbation: float = 0.0
    out_of_box: float = 0.0  # largest distance outside [0, 1]
    correct: torch.Tensor | None = field(default=None, repr=False)  # per point: adversarial correct (CPU bool)
    robust: torch.Tensor | None = field(default=None, repr=False)  # per point: clean AND adversarial correct

    @property
    def transfer(self) -> bool:
        return self.source is not None

    def to_dict(self) -> dict[str, Any]:
        row = {k: v for k, v in asdict(self).items() if k not in ("correct", "robust")}
        if self.correct is not None:  # per point, so that two reports on the same points can be paired
            row["correct_bits"] = pack_mask(self.correct)  # (robust = correct AND the report's clean_bits)
        return row


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
    """Everything measured by :func:`~arnas_zoo.evaluate.evaluate`; ``to_metrics()`` is ``metrics.json``."""

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
    environment: dict[str, Any] = field(default_factory=dict)
    clean: torch.Tensor | None = field(default=None, repr=False)  # per point: correct on the clean input

    @property
    def failed_checks(self) -> list[str]:
        return [c.name for c in self.checks if c.passed is False]

    @property
    def possible_gradient_masking(self) -> bool | None:
        """True when a check failed; None when no check ran (nothing is claimed either way)."""
        if not any(c.passed is not None for c in self.checks):
            return None
        return bool(self.failed_checks)

    def result(self, attack: str) -> AttackResult:
        for r in self.results:
            if r.attack == attack:
                return r
        raise KeyError(attack)

    def to_metrics(self) -> dict[str, Any]:
        return {
            "schema": METRICS_SCHEMA,
            "robust_accuracy_definition": HEADLINE,
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
            "created": self.created,
            "seconds": self.seconds,
            **({"clean_bits": pack_mask(self.clean)} if self.clean is not None else {}),
            **self.environment,
        }

    @classmethod
    def from_metrics(cls, metrics: dict[str, Any], where: str = "metrics.json") -> EvaluationReport:
        """The typed report of a ``metrics.json`` written by :meth:`to_metrics` (this or the previous schema)."""
        schema = metrics.get("schema")
        if schema not in (METRICS_SCHEMA, OLD_METRICS_SCHEMA):
            raise CheckpointError(f"{where}: expected schema {METRICS_SCHEMA!r}, got {str(schema)[:60]!r}")
        try:
            known = {f.name for f in fields(AttackResult)}
            results = []
            for raw in metrics["results"]:
                item = {k: v for k, v in raw.items() if k in known and k not in ("correct", "robust")}
                if schema == OLD_METRICS_SCHEMA:  # the old figure was the adversarial accuracy alone
                    item.setdefault("adversarial_accuracy", item["robust_accuracy"])
                if "correct_bits" in raw:
                    what = f"{where}: {raw['attack']} correct_bits"
                    item["correct"] = unpack_mask(raw["correct_bits"], raw["n"], what)
                results.append(AttackResult(**item))
            checks = [SanityCheck(**c) for c in metrics.get("sanity_checks", [])]
            env_keys = ("versions", "host", "platform", "compute", "merged_from")
            report = cls(
                model=dict(metrics.get("model", {})),
                data=dict(metrics["data"]),
                norm=metrics["threat_model"]["norm"],
                eps=float(metrics["threat_model"]["eps"]),
                clean_accuracy=float(metrics["clean_accuracy"]),
                worst_case_accuracy=float(metrics["worst_case_accuracy"]),
                results=results,
                checks=checks,
                seed=int(metrics.get("seed", 0)),
                device=str(metrics.get("device", "")),
                batch_size=int(metrics.get("batch_size", 0)),
                created=str(metrics.get("created", "")),
                seconds=float(metrics.get("seconds", 0.0)),
                environment={k: metrics[k] for k in env_keys if k in metrics},
                clean=(
                    unpack_mask(metrics["clean_bits"], int(metrics["data"]["n"]), f"{where}: clean_bits")
                    if "clean_bits" in metrics
                    else None
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: not an evaluation report ({type(exc).__name__}: {exc})"[:300]) from None
        if report.clean is not None:  # robust per point is derived, never stored: correct AND clean
            for r in report.results:
                if r.correct is not None and len(r.correct) == len(report.clean):
                    r.robust = r.correct & report.clean
        report.check_points(where)
        return report

    def check_points(self, where: str = "report") -> None:
        """The per-point outcomes a report carries must give its figures exactly (and cover its points)."""
        n = int(self.data.get("n", -1))
        pairs: list[tuple[torch.Tensor | None, float | None, str]] = [(self.clean, self.clean_accuracy, "clean")]
        for r in self.results:
            pairs += [(r.robust, r.robust_accuracy, f"{r.attack} robust")]
            pairs += [(r.correct, r.adversarial_accuracy, r.attack)]
        for mask, figure, what in pairs:
            if mask is not None and (len(mask) != n or figure is None or abs(fraction(mask) - figure) > 1e-9):
                raise CheckpointError(f"{where}: the per-point outcomes of {what} do not give its figure")
        if self.clean is not None and self.results and all(r.robust is not None for r in self.results):
            worst = self.clean.clone()
            for r in self.results:
                worst &= r.robust  # type: ignore[arg-type]
            if abs(fraction(worst) - self.worst_case_accuracy) > 1e-9:
                raise CheckpointError(f"{where}: the per-point outcomes do not give the worst case")

    def save(self, path: str | Path) -> Path:
        from arnas_zoo.atomic import atomic_write_json

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, self.to_metrics())
        return path

    def format_table(self) -> str:
        d = self.data
        lines = [
            f"model: {self.model.get('name')} ({self.model.get('source')})",
            f"data: {d['dataset']} {d['split']}, n={d['n']} (indices {d['indices']}); "
            f"threat model {self.norm} eps={fmt_eps(self.eps)}; seed {self.seed}; device {self.device}",
            "robust acc = correct on clean AND adversarial input; adv acc = correct on the adversarial input",
            "",
            f"{'attack':<14} {'robust acc':>10} {'adv acc':>8} {'steps':>6} {'restarts':>8} {'fwd/img':>8} "
            f"{'bwd/img':>8} {'seconds':>8}",
            f"{'clean':<14} {100 * self.clean_accuracy:>9.2f}%",
        ]
        for r in self.results:
            name = r.attack + (f" <- {r.source}" if r.source else "")
            steps = "-" if r.steps is None else str(r.steps)
            adv = "-" if r.adversarial_accuracy is None else f"{100 * r.adversarial_accuracy:.2f}%"
            lines.append(
                f"{name:<14} {100 * r.robust_accuracy:>9.2f}% {adv:>8} {steps:>6} {r.restarts:>8} "
                f"{r.forward_passes_per_image:>8.1f} {r.backward_passes_per_image:>8.1f} {r.seconds:>8.2f}"
            )
        lines.append(f"{'worst case':<14} {100 * self.worst_case_accuracy:>9.2f}%")
        lines.append("")
        if self.checks:
            lines.append("sanity checks (Carlini et al. 2019):")
            for c in self.checks:
                mark = {True: "ok  ", False: "FAIL", None: "skip"}[c.passed]
                lines.append(f"  [{mark}] {c.name}: {c.detail}")
        else:
            lines.append("sanity checks: not run (--no-checks); gradient masking neither ruled out nor flagged")
        if self.possible_gradient_masking:
            lines.append(
                f"WARNING: possible gradient masking (failed: {', '.join(self.failed_checks)}); "
                "these robust accuracies may overstate robustness"
            )
        return "\n".join(lines)


def fmt_eps(eps: float) -> str:
    k = eps * 255
    return f"{eps:.4g} ({k:.3g}/255)" if abs(k - round(k)) < 1e-6 and eps < 1 else f"{eps:.4g}"


def read_report(path: str | Path) -> EvaluationReport:
    """A ``metrics.json`` file as an :class:`EvaluationReport`."""
    path = Path(path)
    from arnas_zoo.safe_json import read_json

    try:
        return EvaluationReport.from_metrics(read_json(path, what="metrics"), str(path))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable metrics ({type(exc).__name__})") from None
