"""Automatic checks against false robustness (after Carlini et al. 2019, "On Evaluating Adversarial Robustness").

==================  ==========================================================================
check               what must hold
==================  ==========================================================================
in_ball             every adversarial example lies in the eps-ball around its image and in [0, 1]
robust_le_clean     white-box attacks do not leave *more* points correctly classified than clean
                    (an ascent of the loss does not repair the model); transfer and black-box
                    results are exempt: being weaker than clean error is not masking
eps_zero            PGD at eps = 0 gives the clean predictions (<= 1% of points may differ)
more_steps          more PGD steps (or restarts) do not leave significantly more points robust
large_eps           PGD-20 at eps = 1 (l_inf: the whole [0, 1] box) leaves at most
                    min(5%, 0.5/num_classes) accuracy
black_box           black-box attacks (Square, transfer) are not significantly stronger than the
                    best white-box attack
autoattack_le_pgd   AutoAttack (or its parts) is not significantly weaker than PGD on the same points
monotone_eps        PGD-20 accuracy does not rise significantly from eps/2 to eps to 2*eps
probe_agrees        no reported PGD (>= 20 steps) or AutoAttack figure leaves significantly more of the
                    first points robust than the check's own PGD-20 probe on the same points: a
                    figure the checks cannot reproduce (forged, stale, or from another model) fails
==================  ==========================================================================

"Significantly" compares two attacks point by point on the same points (McNemar's test, one-sided
at about 97.5%): with ``b`` points robust only under the first and ``c`` only under the second, the
first is significantly more accurate when ``b - c > 2 * sqrt(b + c)``. Sampling noise of a small
evaluation therefore raises no false alarm, and a real regression on many points still does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from arnas_zoo.attacks import attack_mode, pgd
from arnas_zoo.data import ImageData
from arnas_zoo.evaluate.report import AttackResult, SanityCheck, fraction

PROBE_STEPS = 20


def significantly_more(first: torch.Tensor, second: torch.Tensor) -> bool:
    """Whether per-point mask ``first`` has significantly more true points than ``second`` (McNemar)."""
    b = int((first & ~second).sum())
    c = int((second & ~first).sum())
    return b - c > 2.0 * math.sqrt(b + c) if b + c else False


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


@dataclass(frozen=True)
class Probe:
    """What every probe attack shares."""

    norm: str
    batch_size: int
    seed: int


def _probe(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, common: Probe) -> torch.Tensor:
    """Per point: correct under PGD-``steps`` at ``eps`` (step eps/4, uniform start)."""
    generator = torch.Generator(device=x.device).manual_seed(common.seed)
    parts = []
    for i in range(0, len(x), common.batch_size):
        xb, yb = x[i : i + common.batch_size], y[i : i + common.batch_size]
        x_adv = pgd(model, xb, yb, eps=eps, step_size=eps / 4, steps=steps, norm=common.norm, generator=generator)
        with attack_mode(model), torch.no_grad():
            parts.append(model(x_adv).argmax(1) == yb)
    return torch.cat(parts).cpu() if parts else torch.zeros(0, dtype=torch.bool)


def _mask(r: AttackResult, which: str) -> torch.Tensor:
    mask = r.robust if which == "robust" else r.correct
    if mask is None:  # results read back from metrics.json carry no per-point outcomes
        raise ValueError(f"{r.attack}: the checks need per-point outcomes")
    return mask


def _in_ball(results: Sequence[AttackResult], eps: float, norm: str) -> SanityCheck:
    bad = [r.attack for r in results if r.max_perturbation > eps * (1 + 1e-4) + 1e-6 or r.out_of_box > 1e-6]
    worst = max((r.max_perturbation for r in results), default=0.0)
    if bad:
        return SanityCheck("in_ball", False, f"outside the {norm} ball or [0,1]: {', '.join(bad)}")
    return SanityCheck("in_ball", True, f"largest perturbation {worst:.4g} <= eps {eps:.4g}, all in [0,1]")


def _robust_le_clean(clean_correct: torch.Tensor, white: list[AttackResult]) -> SanityCheck:
    clean = _pct(fraction(clean_correct))
    if not white:
        return SanityCheck("robust_le_clean", None, "no white-box attack")
    above = [
        f"{r.attack} {_pct(fraction(_mask(r, 'correct')))}"
        for r in white
        if significantly_more(_mask(r, "correct"), clean_correct)
    ]
    if above:
        detail = f"white-box adversarial accuracy significantly above clean {clean}: {', '.join(above)}"
        return SanityCheck("robust_le_clean", False, detail)
    return SanityCheck(
        "robust_le_clean", True, f"white-box adversarial accuracies not above clean {clean} (transfer/black-box exempt)"
    )


def _black_box(white: list[AttackResult], black: list[AttackResult]) -> SanityCheck:
    if not (white and black):
        return SanityCheck("black_box", None, "needs a white-box and a black-box attack (e.g. pgd20 and square)")
    best = min(white, key=lambda r: r.robust_accuracy)
    below = [
        f"{r.attack} {_pct(r.robust_accuracy)}"
        for r in black
        if significantly_more(_mask(best, "robust"), _mask(r, "robust"))
    ]
    reference = f"{best.attack} ({_pct(best.robust_accuracy)})"
    if below:
        return SanityCheck(
            "black_box", False, f"black-box significantly stronger than white-box {reference}: {', '.join(below)}"
        )
    return SanityCheck(
        "black_box", True, f"black-box attacks not significantly stronger than the best white-box {reference}"
    )


def _autoattack_le_pgd(white: list[AttackResult]) -> SanityCheck:
    aa = [r for r in white if r.family == "autoattack"]
    ours = [r for r in white if r.family == "pgd" and r.steps is not None and r.random_start]
    if not (aa and ours):
        return SanityCheck("autoattack_le_pgd", None, "needs AutoAttack (aa, apgd-*) and a PGD attack")
    weak = [
        f"{a.attack} {_pct(a.robust_accuracy)} > {p.attack} {_pct(p.robust_accuracy)}"
        for a in aa
        for p in ours
        if significantly_more(_mask(a, "robust"), _mask(p, "robust"))
    ]
    return SanityCheck(
        "autoattack_le_pgd", not weak, "; ".join(weak) if weak else "AutoAttack not weaker than PGD on the same points"
    )


def result_checks(
    clean_correct: torch.Tensor, results: Sequence[AttackResult], eps: float, norm: str
) -> list[SanityCheck]:
    """The checks judged from the results alone (no model needed): in_ball, robust_le_clean, black_box,
    autoattack_le_pgd; also what :func:`arnas_zoo.evaluate.merge.merge_reports` judges again."""
    white = [r for r in results if not r.black_box and not r.transfer and r.correct is not None]
    black = [r for r in results if (r.black_box or r.transfer) and r.robust is not None]
    return [
        _in_ball(results, eps, norm),
        _robust_le_clean(clean_correct, white),
        _black_box(white, black),
        _autoattack_le_pgd(white),
    ]


def step_regressions(results: Sequence[AttackResult]) -> list[str]:
    """Pairs of our PGD results that differ only in steps/restarts where more is significantly weaker."""
    pgd_like = [
        r
        for r in results
        if r.family == "pgd" and not r.transfer and r.steps is not None and r.random_start and r.robust is not None
    ]
    return [
        f"{b.attack} {_pct(b.robust_accuracy)} > {a.attack} {_pct(a.robust_accuracy)}"
        for a in pgd_like
        for b in pgd_like
        if a is not b
        and a.loss == b.loss
        and (b.steps or 0) >= (a.steps or 0)
        and b.restarts >= a.restarts
        and ((b.steps or 0) > (a.steps or 0) or b.restarts > a.restarts)
        and significantly_more(_mask(b, "robust"), _mask(a, "robust"))
    ]


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
    """The checks of the module docstring; the probes run PGD on the first ``check_n`` points."""
    checks = result_checks(clean_correct, results, eps, norm)
    regressions = step_regressions(results)
    if not probes or len(data) == 0:
        for name in ("eps_zero", "large_eps", "monotone_eps"):
            checks.append(SanityCheck(name, None, "probes disabled"))
        checks.append(SanityCheck("probe_agrees", None, "probes disabled"))
        compared = [r for r in results if r.family == "pgd" and r.steps is not None and r.random_start]
        checks.append(
            SanityCheck(
                "more_steps",
                not regressions if len(compared) > 1 else None,
                "; ".join(regressions) or "compared the PGD results",
            )
        )
        return checks
    return checks + _probe_checks(
        model, data.first(check_n), clean_correct, regressions, eps, Probe(norm, batch_size, seed), results
    )


def _probe_agrees(probe_robust: torch.Tensor, results: Sequence[AttackResult], m: int) -> SanityCheck:
    """Reported white-box figures at least as strong as the probe must not beat it on the same points."""
    strong = [
        r
        for r in results
        if r.robust is not None
        and not r.transfer
        and (r.family == "autoattack" or (r.family == "pgd" and (r.steps or 0) >= PROBE_STEPS))
    ]
    if not strong:
        return SanityCheck("probe_agrees", None, f"no PGD (>= {PROBE_STEPS} steps) or AutoAttack figure to compare")
    above = [
        f"{r.attack} {_pct(fraction(r.robust[:m]))} on the first {m} points vs the probe's PGD-{PROBE_STEPS} "
        f"{_pct(fraction(probe_robust))}"
        for r in strong
        if r.robust is not None and significantly_more(r.robust[:m], probe_robust)
    ]
    detail = f"every reported figure within the noise of the probe's PGD-{PROBE_STEPS} {_pct(fraction(probe_robust))}"
    return SanityCheck("probe_agrees", not above, "not reproduced: " + "; ".join(above) if above else detail)


def _probe_checks(
    model: nn.Module,
    probe: ImageData,
    clean_correct: torch.Tensor,
    regressions: list[str],
    eps: float,
    common: Probe,
    results: Sequence[AttackResult] = (),
) -> list[SanityCheck]:
    """eps_zero, more_steps (with the regressions found among the main results), large_eps, monotone_eps."""
    m, x, y = len(probe), probe.x, probe.y
    checks = []
    disagree = fraction(_probe(model, x, y, eps=0.0, steps=2, common=common) != clean_correct[:m])
    note = " (randomized model?)" if disagree > 0.01 else ""
    checks.append(
        SanityCheck(
            "eps_zero", disagree <= 0.01, f"PGD at eps=0 changed {100 * disagree:.1f}% of {m} clean predictions{note}"
        )
    )
    few_steps = max(PROBE_STEPS // 4, 1)
    base = _probe(model, x, y, eps=eps, steps=PROBE_STEPS, common=common)
    few = _probe(model, x, y, eps=eps, steps=few_steps, common=common)
    if significantly_more(base, few):
        regressions.append(f"probe PGD-{PROBE_STEPS} {_pct(fraction(base))} > PGD-{few_steps} {_pct(fraction(few))}")
    detail = (
        f"PGD-{PROBE_STEPS} {_pct(fraction(base))} not significantly above PGD-{few_steps} "
        f"{_pct(fraction(few))} on {m} points"
    )
    checks.append(SanityCheck("more_steps", not regressions, "; ".join(regressions) or detail))
    checks.append(_probe_agrees(base & clean_correct[:m], results, m))
    large = 1.0 if common.norm == "linf" else float(math.sqrt(x[0].numel()))
    limit = min(0.05, 0.5 / max(probe.num_classes, 2))
    at_large = fraction(_probe(model, x, y, eps=large, steps=PROBE_STEPS, common=common))
    checks.append(
        SanityCheck(
            "large_eps",
            at_large <= limit,
            f"PGD-{PROBE_STEPS} at eps={large:.3g} leaves {_pct(at_large)} (limit {100 * limit:.1f}%)",
        )
    )
    ladder = [
        (eps / 2, _probe(model, x, y, eps=eps / 2, steps=PROBE_STEPS, common=common)),
        (eps, base),
        (2 * eps, _probe(model, x, y, eps=2 * eps, steps=PROBE_STEPS, common=common)),
    ]
    rising = [
        f"{_pct(fraction(a))} at {e:.4g} -> {_pct(fraction(b))} at {f:.4g}"
        for (e, a), (f, b) in zip(ladder, ladder[1:])
        if significantly_more(b, a)
    ]
    falling = " >= ".join(_pct(fraction(a)) for _, a in ladder)
    checks.append(
        SanityCheck(
            "monotone_eps",
            not rising,
            "accuracy rises with eps: " + "; ".join(rising)
            if rising
            else f"PGD-20 accuracy {falling} at eps/2, eps, 2eps",
        )
    )
    return checks
