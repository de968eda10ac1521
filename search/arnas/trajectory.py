"""How a search's discretised genotype moved from epoch to epoch: has it settled, and is it nearing a reference?

Reads ``log.jsonl`` of a run folder (one record per finished epoch, each with the genotype discretised at its
end) and, per epoch and cell type, gives the share of edges kept from the epoch before (the same op from the
same input into the same node) and, against a reference genotype (e.g. the published ARNAS cells), the share
of edges and of ops in common (:func:`arnas_zoo.genotype.compare`). Read-only: works on a run in progress.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from arnas_zoo.errors import ConfigError
from arnas_zoo.genotype import Genotype, compare


def _robust_acc(evaluation: dict[str, Any]) -> tuple[str, float] | None:
    for key, value in evaluation.items():
        if key.endswith("_acc") and not key.startswith("natural"):
            return key[: -len("_acc")], float(value)
    return None


def genotype_trajectory(run_dir: str | Path, reference: Genotype | None = None) -> list[dict[str, Any]]:
    """One row per logged epoch: accuracies of the search's own evaluation, MGDA's mean gamma, and per cell type
    ``kept`` (edge overlap with the previous epoch's genotype; None at the first epoch) and, with a
    reference, ``ref_edges`` / ``ref_ops``."""
    log = Path(run_dir) / "log.jsonl"
    if not log.is_file():
        raise ConfigError(f"{run_dir}: no log.jsonl (not an ARNAS search folder, or no epoch finished yet)")
    rows: list[dict[str, Any]] = []
    previous: Genotype | None = None
    for number, line in enumerate(log.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            genotype = Genotype.from_dict(record["genotype"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{log}:{number}: not a search epoch record with a genotype ({exc})") from None
        evaluation = record.get("eval") or {}
        row: dict[str, Any] = {
            "epoch": record.get("epoch", number),
            "natural_acc": evaluation.get("natural_acc"),
            "robust": _robust_acc(evaluation),
            "n": evaluation.get("n"),
            "attack": evaluation.get("attack"),
            "gamma_mean": record.get("gamma_mean"),
            "cells": {},
        }
        moved = compare(genotype, previous)["cells"] if previous is not None else {}
        against = compare(genotype, reference)["cells"] if reference is not None else {}
        for name in genotype.cells:
            cell: dict[str, Any] = {"kept": moved[name]["edge_overlap"] if name in moved else None}
            if name in against:
                cell["ref_edges"] = against[name]["edge_overlap"]
                cell["ref_ops"] = against[name]["op_overlap"]
            row["cells"][name] = cell
        rows.append(row)
        previous = genotype
    return rows


def format_trajectory(rows: list[dict[str, Any]], reference_name: str | None = None) -> str:
    """The rows as a text table: one line per epoch, one column group per cell type."""
    if not rows:
        return "no epochs logged yet"
    cells = list(rows[0]["cells"])
    robust = rows[0]["robust"]
    robust_label = robust[0] if robust else "robust"
    head = f"{'epoch':>5} {'natural':>8} {robust_label:>8} {'gamma':>6}"
    for name in cells:
        head += f" | {name}: kept" + (" ref edges/ops" if reference_name else "")
    lines = []
    if reference_name:
        lines.append(f"reference: {reference_name}")
    lines.append(head)
    for row in rows:
        natural = f"{row['natural_acc']:.1%}" if row["natural_acc"] is not None else "-"
        rob = f"{row['robust'][1]:.1%}" if row["robust"] else "-"
        gamma = f"{row['gamma_mean']:.2f}" if row["gamma_mean"] is not None else "-"
        line = f"{row['epoch']:>5} {natural:>8} {rob:>8} {gamma:>6}"
        for name in cells:
            cell = row["cells"].get(name, {})
            kept = "-" if cell.get("kept") is None else f"{cell['kept']:.0%}"
            width = len(name) + 6
            line += f" | {kept:>{width}}"
            if reference_name:
                line += f" {cell.get('ref_edges', 0):>8.0%}/{cell.get('ref_ops', 0):.0%}"
        lines.append(line)
    lines.append("kept: edges (op, input, node) unchanged since the epoch before")
    n, attack = rows[-1].get("n"), rows[-1].get("attack")
    if n:
        lines.append(
            f"accuracies: the supernet on the first {n} architecture-split images (natural with BatchNorm running "
            f"statistics; {robust_label}: {attack})"
        )
    return "\n".join(lines)
