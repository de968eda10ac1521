"""Reports of one model on the same points, merged into one report.

Attacks on a large model are often run apart: the PGD rows in minutes, a sharded AutoAttack over hours.
Each run writes its own report. Their per-point outcomes pair them exactly, so :func:`merge_reports`
makes the one report a model card needs:

- the worst case is recomputed per point over every attack of every report;
- the checks that compare attacks with each other (``in_ball``, ``robust_le_clean``, ``black_box``,
  ``autoattack_le_pgd`` and the step comparisons of ``more_steps``) are judged again on all the results
  together, so "AutoAttack is not weaker than PGD" gets judged when the two came from different runs;
- the probe checks (``eps_zero``, ``large_eps``, ``monotone_eps``, ``probe_agrees`` and the probe half of
  ``more_steps``) need the model and are carried from the reports that ran them: a check that failed in
  any report stays failed;
- ``merged_from`` records, per source report, its attacks, date, batch size, device, seconds and compute.

Refused, with the reason: a report without per-point outcomes, reports on other points, another threat
model or seed, an attack in two reports, and clean outcomes that differ point by point (another model,
or a changed one). :func:`verify_clean` goes one step further and recomputes the clean outcomes from a
checkpoint, so a merged report is tied to the weights it describes and not only to its sources.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from arnas_zoo.errors import ConfigError
from arnas_zoo.evaluate.checks import result_checks, step_regressions
from arnas_zoo.evaluate.report import EvaluationReport, SanityCheck, fraction
from arnas_zoo.provenance import now_utc

#: checks that need the model (a PGD probe); a merge carries them from its sources
PROBE_CHECKS = ("eps_zero", "large_eps", "monotone_eps", "probe_agrees")
_POINTS = ("dataset", "split", "n", "indices")


def _same_points(first: EvaluationReport, other: EvaluationReport, label: str) -> None:
    a = {k: first.data.get(k) for k in _POINTS}
    b = {k: other.data.get(k) for k in _POINTS}
    if a != b:
        raise ConfigError(f"{label}: other points ({b}) than the first report ({a})")
    if (other.norm, other.eps) != (first.norm, first.eps):
        theirs, ours = f"{other.norm} eps={other.eps}", f"{first.norm} eps={first.eps}"
        raise ConfigError(f"{label}: threat model {theirs}, the first report's {ours}")
    if other.seed != first.seed:
        raise ConfigError(f"{label}: seed {other.seed}, the first report's {first.seed}")


def _carried(name: str, reports: Sequence[EvaluationReport], labels: Sequence[str]) -> SanityCheck:
    ran = [(label, c) for r, label in zip(reports, labels) for c in r.checks if c.name == name and c.passed is not None]
    if not ran:
        return SanityCheck(name, None, "not run in any merged report")
    failed = [(label, c) for label, c in ran if c.passed is False]
    shown = failed or ran
    return SanityCheck(name, not failed, "; ".join(f"{label}: {c.detail}" for label, c in shown))


def merge_reports(reports: Sequence[EvaluationReport], labels: Sequence[str] | None = None) -> EvaluationReport:
    """One report from ``reports`` of one model on the same points (see the module docstring)."""
    if not reports:
        raise ConfigError("nothing to merge: no reports")
    labels = list(labels) if labels is not None else [f"report {i + 1}" for i in range(len(reports))]
    if len(labels) != len(reports):
        raise ConfigError(f"expected {len(reports)} labels, got {len(labels)}")
    first = reports[0]
    seen: dict[str, str] = {}
    for report, label in zip(reports, labels):
        if report.clean is None or any(r.correct is None or r.robust is None for r in report.results):
            raise ConfigError(f"{label}: no per-point outcomes (written before they were recorded); rerun it")
        _same_points(first, report, label)
        assert first.clean is not None
        if not torch.equal(report.clean, first.clean):
            differ = int((report.clean != first.clean).sum())
            raise ConfigError(
                f"{label}: clean outcomes differ from the first report's on {differ} of {len(first.clean)} points: "
                "another model (or changed weights)"
            )
        for r in report.results:
            if r.attack in seen:
                raise ConfigError(f"{r.attack} is in {seen[r.attack]} and in {label}: keep one of them")
            seen[r.attack] = label
    assert first.clean is not None
    results = [r for report in reports for r in report.results]
    worst = first.clean.clone()
    for r in results:
        assert r.robust is not None
        worst &= r.robust
    checks = result_checks(first.clean, results, first.eps, first.norm)
    regressions = step_regressions(results)
    steps = _carried("more_steps", reports, labels)
    if regressions:
        steps = SanityCheck("more_steps", False, "; ".join(regressions))
    elif steps.passed is None and sum(r.family == "pgd" and r.random_start is True for r in results) > 1:
        steps = SanityCheck("more_steps", True, "compared the PGD results of the merged reports")
    checks += [steps] + [_carried(name, reports, labels) for name in PROBE_CHECKS]
    devices = list(dict.fromkeys(r.device for r in reports))
    merged_from = [
        {
            "report": label,
            "attacks": [r.attack for r in report.results],
            "created": report.created,
            "batch_size": report.batch_size,
            "device": report.device,
            "seconds": report.seconds,
            "model": report.model,
            **({"compute": report.environment["compute"]} if "compute" in report.environment else {}),
        }
        for report, label in zip(reports, labels)
    ]
    environment: dict[str, Any] = {k: v for k, v in first.environment.items() if k != "merged_from"}
    environment["merged_from"] = merged_from
    merged = EvaluationReport(
        model=dict(first.model),
        data=dict(first.data),
        norm=first.norm,
        eps=first.eps,
        clean_accuracy=fraction(first.clean),
        worst_case_accuracy=fraction(worst),
        results=results,
        checks=checks,
        seed=first.seed,
        device="; ".join(devices),
        batch_size=first.batch_size,
        created=now_utc(),
        seconds=sum(r.seconds for r in reports),
        environment=environment,
        clean=first.clean.clone(),
    )
    merged.check_points("merged report")
    return merged


def verify_clean(report: EvaluationReport, model: nn.Module, data: Any) -> None:
    """Recompute the clean outcomes of ``model`` on ``data`` (an ImageData) as an evaluation does (same
    mode, the report's batch size), and require the report's points and per-point clean outcomes; raises
    ConfigError on any difference."""
    from arnas_zoo.attacks import attack_mode
    from arnas_zoo.evaluate.runner import correct_mask

    described = {k: data.describe().get(k) for k in _POINTS}
    expected = {k: report.data.get(k) for k in _POINTS}
    if described != expected:
        raise ConfigError(f"the data given ({described}) are not the report's points ({expected})")
    if report.clean is None:
        raise ConfigError("the report has no per-point clean outcomes to verify")
    with attack_mode(model):
        fresh = correct_mask(model, data.x, data.y, report.batch_size or 128).cpu()
    if not torch.equal(fresh, report.clean):
        differ = int((fresh != report.clean).sum())
        raise ConfigError(
            f"the model's clean outcomes differ from the report's on {differ} of {len(fresh)} points: "
            "the report is not of these weights"
        )


def merge_files(
    paths: Sequence[str | Path],
    model: nn.Module | None = None,
    *,
    split: str = "test",
    data_dir: str | Path | None = None,
    val_size: int | None = None,
    device: str | torch.device = "cpu",
) -> EvaluationReport:
    """:func:`merge_reports` of the report files ``paths`` (labelled by file name); with ``model``, also
    :func:`verify_clean` on the reports' points, read as an evaluation of ``split`` reads them."""
    from arnas_zoo.data import evaluation_data
    from arnas_zoo.evaluate.report import read_report

    names = [Path(p).name for p in paths]
    labels = names if len(set(names)) == len(names) else [str(p) for p in paths]  # two metrics.json: whole paths
    merged = merge_reports([read_report(p) for p in paths], labels)
    if model is not None:
        n = int(merged.data["n"])
        data = evaluation_data(
            merged.data["dataset"], split=split, data_dir=data_dir, n=n, val_size=val_size, device=device
        )
        verify_clean(merged, model, data)
    return merged


def reporting_protocol(selection: dict[str, Any] | None, reporting: dict[str, Any]) -> dict[str, Any]:
    """The ``protocol`` record of a report made apart from its training: the training's selection rows (its
    metrics.json ``protocol.selection``), the report's points, and whether they share an official index
    (``disjoint``; None when an index list cannot be read back, as for the summary form of many runs).

    Cards read it to say "the reported rows were not used for selection" only when that was checked.
    """
    from arnas_zoo.data.base import parse_indices

    record: dict[str, Any] = {"selection": selection, "reporting": reporting, "disjoint": None}
    if not selection:
        record["disjoint"] = True  # nothing was selected on
        return record
    split = {key: "test" if str(rows.get("split", "")).startswith("test") else "train"
             for key, rows in (("selection", selection), ("reporting", reporting))}  # fmt: skip
    chosen, reported = parse_indices(str(selection.get("indices"))), parse_indices(str(reporting.get("indices")))
    if selection.get("dataset") != reporting.get("dataset") or split["selection"] != split["reporting"]:
        record["disjoint"] = True  # official indices of different splits never name one image
    elif chosen is not None and reported is not None:
        record["disjoint"] = not chosen & reported
    return record
