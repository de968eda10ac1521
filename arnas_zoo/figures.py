"""A checkpoint's headline figures, read from its ``metrics.json``: what listings, cards and the site show.

Torch-free and cheap (one small JSON file per model), so ``arnas-zoo pretrained --sort aa`` can read
every bundled model's figures in well under a second. Every figure keeps what produced it: the data
subset and its size, the attack with eps, steps and restarts, the seed, and a 95% Wilson interval, so
a table built from these records never shows a number without its protocol.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

#: The headline columns a listing can sort by (accuracies best first, sizes smallest first).
ACCURACY_KEYS = ("clean", "aa", "worst")
SIZE_KEYS = ("params", "macs")


#: How an attack's short name reads in a card or on the site.
ATTACK_LABELS = {
    "aa": "AutoAttack (standard, reference implementation)",
    "pgd20": "PGD-20 (cross-entropy, random start)",
    "pgd100": "PGD-100 (cross-entropy, random start)",
    "pgd100-cw": "PGD-100 (CW margin loss, random start)",
    "fgsm": "FGSM",
    "square": "Square (black-box)",
}


def attack_label(attack: str) -> str:
    """A reader's name for an attack's short name (``pgd100-cw`` -> ``PGD-100 (CW margin loss, ...)``)."""
    return ATTACK_LABELS.get(attack, attack)


def percent(value: float | None) -> str:
    """An accuracy as a percentage with one decimal (``-`` when missing): how listings and cards show it."""
    return "-" if value is None else f"{100 * value:.1f}"


def count(value: int | None) -> str:
    """A parameter or MAC count, short (``10.5k``, ``35.05M``; ``-`` when missing)."""
    if value is None:
        return "-"
    return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.1f}k"


def eps_text(eps: float | None) -> str:
    """A perturbation budget as people write it: ``8/255`` where it is one, else ``0.3``."""
    if eps is None:
        return "-"
    k = eps * 255
    return f"{round(k)}/255" if eps < 0.2 and round(k) > 0 and abs(k - round(k)) < 1e-6 else f"{eps:.4g}"


def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of an accuracy ``p`` measured on ``n`` points."""
    if n <= 0:
        return 0.0, 1.0
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def claim(accuracy: float, n: int, line: float, what: str) -> str:
    """How a card or board states ``accuracy`` (on ``n`` points) against a goal ``line``.

    "meets" only when the 95% Wilson interval's lower bound clears the line; otherwise the figure is
    "reached", with its interval, and the line is said not to be shown met -- a point estimate above a
    line whose interval straddles it is not evidence of meeting it.
    """
    low, high = wilson_interval(accuracy, n)
    interval = f"95% interval {percent(low)}-{percent(high)}, n={n}"
    if low >= line:
        return f"meets the {percent(line)}% {what} line: {percent(accuracy)}% ({interval})"
    return f"reached {percent(accuracy)}% {what} ({interval}); the {percent(line)}% line is not shown to be met"


def tiers(values: list[tuple[float, int]]) -> list[int]:
    """Tier numbers (1, 1, 2, ...) of accuracies ``(p, n)`` sorted best first: a row joins the current tier
    while its 95% interval overlaps the interval of the tier's first row; the first row that does not
    opens the next tier. Rows of one tier are not told apart by the evaluation."""
    out: list[int] = []
    tier, leader_low = 0, None
    for p, n in values:
        low, high = wilson_interval(p, n)
        if leader_low is None or high < leader_low:
            tier, leader_low = tier + 1, low
        out.append(tier)
    return out


@dataclass(frozen=True)
class AttackFigure:
    """One evaluation row: an attack's robust accuracy on ``n`` points, with its settings."""

    attack: str
    accuracy: float
    n: int
    eps: float | None = None
    norm: str | None = None
    steps: int | None = None
    restarts: int | None = None
    loss: str | None = None
    version: str | None = None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.accuracy, self.n)


@dataclass(frozen=True)
class Figures:
    """The figures of one evaluated checkpoint.

    Attributes:
        clean: clean accuracy on the evaluation points.
        autoattack: robust accuracy under AutoAttack (None when it was not run).
        worst_case: points that survive every attack listed, over ``n``.
        n, dataset, split, indices: the evaluation points (``indices``: official row indices).
        eps, norm: the threat model the attacks used.
        attacks: every attack row, in the order they were run.
        seed: the evaluation seed.
        checks_run / checks_failed: the sanity checks against gradient masking.
        selection: how the checkpoint (its epoch) was chosen, in one line; None when not recorded.
        selection_may_overlap: True when the reported rows are validation rows of the training file,
            the pool the selection rows came from (so selection bias is possible).
    """

    clean: float
    autoattack: float | None
    worst_case: float
    n: int
    dataset: str
    split: str
    indices: str | None
    eps: float | None
    norm: str | None
    attacks: tuple[AttackFigure, ...]
    seed: int | None
    checks_run: int
    checks_failed: tuple[str, ...]
    selection: str | None
    selection_may_overlap: bool

    def interval(self, key: str) -> tuple[float, float] | None:
        """95% Wilson interval of ``clean``, ``aa`` or ``worst`` (None when that figure is missing)."""
        value = self.value(key)
        return None if value is None else wilson_interval(value, self.n)

    def value(self, key: str) -> float | None:
        return {"clean": self.clean, "aa": self.autoattack, "worst": self.worst_case}[key]

    @property
    def data_line(self) -> str:
        """The evaluation points in one line."""
        rows = f", official indices {self.indices}" if self.indices else ""
        return f"{self.dataset} {self.split}, n = {self.n}{rows}"

    @property
    def selection_line(self) -> str:
        """How the checkpoint was chosen and whether that could touch the reported rows, in one line."""
        base = self.selection or "not recorded (the last epoch or a hand-picked checkpoint)"
        if self.selection_may_overlap:
            return f"{base}; the reported rows are validation rows from the same pool (selection bias possible)"
        return f"{base}; the reported rows were not used for selection"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["attacks"] = [asdict(a) for a in self.attacks]
        out["checks_failed"] = list(self.checks_failed)
        for key in ACCURACY_KEYS:
            out[f"{key}_interval"] = self.interval(key)
        return out


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _selection(training: Mapping[str, Any], protocol: Mapping[str, Any]) -> str | None:
    chosen = training.get("selection")
    if not isinstance(chosen, Mapping):
        return None
    epoch = training.get("epoch")
    what = f"epoch {epoch}" if epoch is not None else "the checkpoint"
    attack = chosen.get("val_attack") or "a validation attack"
    n = chosen.get("val_n")
    rows = protocol.get("selection")
    if isinstance(rows, Mapping) and rows.get("split"):  # the selection split, named
        return f"{what} chosen by {attack} on the selection split: {rows.get('n')} rows of {rows['split']} " + (
            f"(official indices {rows['indices']})" if rows.get("indices") else ""
        )
    return f"{what} chosen by {attack} on {n if n is not None else 'some'} held-out training rows"


def figures_from_metrics(metrics: Mapping[str, Any] | None) -> Figures | None:
    """The figures of a ``metrics.json`` (None when it records no evaluation or is not one)."""
    if not isinstance(metrics, Mapping) or not isinstance(metrics.get("results"), list):
        return None
    try:
        data = metrics.get("data") or {}
        n = int(data["n"])
        threat = metrics.get("threat_model") or {}
        attacks = []
        for row in metrics["results"]:
            attacks.append(
                AttackFigure(
                    attack=str(row["attack"]),
                    accuracy=float(row["robust_accuracy"]),
                    n=int(row.get("n") or n),
                    eps=None if row.get("eps") is None else float(row["eps"]),
                    norm=row.get("norm"),
                    steps=_int_or_none(row.get("steps")),
                    restarts=_int_or_none(row.get("restarts")),
                    loss=row.get("loss"),
                    version=row.get("version"),
                )
            )
        autoattack = next((a.accuracy for a in attacks if a.attack in ("aa", "autoattack")), None)
        checks = [c for c in metrics.get("sanity_checks") or [] if isinstance(c, Mapping)]
        split = str(data.get("split") or "unknown split")
        training = metrics.get("training") if isinstance(metrics.get("training"), Mapping) else {}
        protocol = metrics.get("protocol") if isinstance(metrics.get("protocol"), Mapping) else {}
        disjoint = protocol.get("disjoint") if protocol else None
        return Figures(
            clean=float(metrics["clean_accuracy"]),
            autoattack=autoattack,
            worst_case=float(metrics["worst_case_accuracy"]),
            n=n,
            dataset=str(data.get("dataset") or "unknown"),
            split=split,
            indices=None if data.get("indices") is None else str(data["indices"]),
            eps=None if threat.get("eps") is None else float(threat["eps"]),
            norm=threat.get("norm"),
            attacks=tuple(attacks),
            seed=_int_or_none(metrics.get("seed")),
            checks_run=sum(1 for c in checks if c.get("passed") is not None),
            checks_failed=tuple(str(name) for name in metrics.get("failed_checks") or []),
            selection=_selection(training or {}, protocol or {}),
            # without a recorded protocol: reported on rows carved from the training file (CIFAR-10 offline)
            # are the selection pool; with one, its computed disjointness decides
            selection_may_overlap=not split.startswith("test") if not isinstance(disjoint, bool) else not disjoint,
        )
    except (KeyError, TypeError, ValueError):
        return None
