"""Models compared on the same points (``arnas-zoo compare``): intervals per model, a paired test per pair.

Two models attacked on the same 1,000 points differ point by point, and that pairing is worth far more
than two separate intervals: models whose 95% intervals overlap widely can still differ clearly when one
keeps robust nearly every point the other does and some more. For each pair of models and each figure
(clean, each attack all reports ran, and the worst case over those attacks), :func:`compare_reports`
counts the points only the first gets right (``b``) and only the second (``c``) and applies McNemar's
exact test: under "no difference" each discordant point is a fair coin, so the two-sided p-value is the binomial tail of
``min(b, c)`` in ``b + c`` tosses. The p-values of all pairs of a figure are adjusted with Holm's method,
so "differs" stays at the 5% level however many models are compared.

Every report must carry per-point outcomes (reports written by this version of ``arnas-zoo eval``; a
sharded run re-merges with them when its command is run again), and all must be on the same points under
the same threat model; anything else is refused with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from arnas_zoo.errors import ConfigError
from arnas_zoo.evaluate.report import EvaluationReport, fraction
from arnas_zoo.figures import wilson_interval

LEVEL = 0.05


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: ``b`` and ``c`` points right only under one side or the other."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


@dataclass
class Pair:
    figure: str
    first: str
    second: str
    only_first: int  # b: points right under the first model only
    only_second: int  # c
    p_value: float
    p_adjusted: float = 1.0

    @property
    def verdict(self) -> str:
        if self.p_adjusted >= LEVEL:
            return "no detectable difference"
        higher = self.first if self.only_first > self.only_second else self.second
        return f"{higher} higher"


@dataclass
class Comparison:
    names: list[str]
    n: int
    data: dict[str, Any]
    threat: str
    figures: list[str]
    accuracy: dict[str, dict[str, float]]  # name -> figure -> accuracy
    pairs: list[Pair] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": self.names,
            "n": self.n,
            "data": self.data,
            "threat_model": self.threat,
            "level": LEVEL,
            "test": "McNemar exact (two-sided), Holm-adjusted over the pairs of each figure",
            "accuracy": {
                name: {f: {"value": v, "interval95": list(wilson_interval(v, self.n))} for f, v in row.items()}
                for name, row in self.accuracy.items()
            },
            "pairs": [{**vars(p), "verdict": p.verdict} for p in self.pairs],
        }

    def format_table(self) -> str:
        d = self.data
        width = max(12, *(len(n) + 2 for n in self.names))
        lines = [
            f"data: {d.get('dataset')} {d.get('split')}, n={self.n} (indices {d.get('indices')}); {self.threat}",
            "accuracy (95% Wilson interval):",
            "model".ljust(width) + "".join(f.rjust(24) for f in self.figures),
        ]
        for name in self.names:
            cells = []
            for f in self.figures:
                value = self.accuracy[name][f]
                low, high = wilson_interval(value, self.n)
                cells.append(f"{100 * value:.1f}% [{100 * low:.1f}, {100 * high:.1f}]".rjust(24))
            lines.append(name.ljust(width) + "".join(cells))
        lines += ["", f"paired on the same points (McNemar exact, Holm-adjusted per figure, level {LEVEL}):"]
        for p in self.pairs:
            lines.append(
                f"  {p.figure:<12} {p.first} vs {p.second}: {p.only_first} points right only under the first, "
                f"{p.only_second} only under the second; p = {p.p_adjusted:.3g} -> {p.verdict}"
            )
        return "\n".join(lines)


def _masks(report: EvaluationReport, name: str) -> dict[str, torch.Tensor]:
    if report.clean is None or any(r.robust is None for r in report.results):
        raise ConfigError(
            f"{name}: the report has no per-point outcomes (written before they were kept); run its "
            "`arnas-zoo eval` again (a sharded run re-merges its finished shards)"
        )
    masks = {"clean": report.clean}
    for r in report.results:
        assert r.robust is not None
        if not r.transfer:  # a transfer row depends on its source model, not comparable across reports
            masks[r.attack] = r.robust
    return masks


def compare_reports(reports: dict[str, EvaluationReport]) -> Comparison:
    """Compare the models of ``reports`` (name -> report), which must be on the same points; see the module."""
    if len(reports) < 2:
        raise ConfigError("compare: expected at least two reports")
    names = list(reports)
    first = reports[names[0]]
    same = ("dataset", "split", "indices", "n")
    for name in names[1:]:
        other = reports[name]
        if any(other.data.get(k) != first.data.get(k) for k in same):
            raise ConfigError(
                f"{name} was evaluated on other points ({other.data.get('dataset')} {other.data.get('split')}, "
                f"indices {other.data.get('indices')}) than {names[0]} ({first.data.get('dataset')} "
                f"{first.data.get('split')}, indices {first.data.get('indices')}): a paired comparison needs the same"
            )
        if other.norm != first.norm or abs(other.eps - first.eps) > 1e-12:
            raise ConfigError(f"{name}: threat model {other.norm} eps {other.eps:.6g}, {names[0]}: {first.eps:.6g}")
    masks = {name: _masks(reports[name], name) for name in names}
    figures = [f for f in masks[names[0]] if all(f in m for m in masks.values())]
    # the worst case over the attacks every report ran: a report with an extra attack would otherwise be
    # judged on a harder figure than the others
    for m in masks.values():
        worst = m["clean"].clone()
        for f in figures[1:]:
            worst &= m[f]
        m["worst case"] = worst
    figures.append("worst case")
    accuracy = {name: {f: fraction(masks[name][f]) for f in figures} for name in names}
    pairs = []
    for f in figures:
        group = []
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                only_a = int((masks[a][f] & ~masks[b][f]).sum())
                only_b = int((masks[b][f] & ~masks[a][f]).sum())
                group.append(Pair(f, a, b, only_a, only_b, mcnemar_exact(only_a, only_b)))
        for pair, adjusted in zip(group, holm([p.p_value for p in group])):
            pair.p_adjusted = adjusted
        pairs += group
    threat = f"{first.norm} eps {first.eps:.4g}"
    return Comparison(names, int(first.data.get("n", 0)), dict(first.data), threat, figures, accuracy, pairs)
