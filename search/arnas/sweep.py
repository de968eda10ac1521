"""Several runs of one search: seeds (the op statistics of paper Fig. 4) or values of one setting.

The paper counts the ops of the top-10 architectures of each of 4 seeds; a run here yields one
discretised genotype (the final one), so the counts are over the final genotypes of the seeds.
``vary=("lam", [0.01, 0.1, 1.0])`` runs every seed at every value (the MGDA lambda sweep) and writes
``sweep.json`` with each run's last-epoch MGDA diagnostics and accuracies next to the op counts.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from arnas_zoo.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from arnas_zoo.errors import ConfigError  # noqa: E402
from arnas_zoo.genotype import Genotype  # noqa: E402

from .config import SearchConfig  # noqa: E402
from .run import STATE_FILE, run_search  # noqa: E402
from .space import SearchSpace  # noqa: E402

#: Cell types whose op choices Fig. 4 compares (the DARTS space's are shown when those are absent).
FIGURE_CELLS = ("accurate", "robust")


def seed_dir(out_root: Path, seed: int) -> Path:
    return Path(out_root) / f"seed{seed}"


def run_sweep(
    config: SearchConfig,
    seeds: list[int],
    out_root: str | Path,
    *,
    device: str = "auto",
    progress: Any = True,
    vary: tuple[str, list[Any]] | None = None,
) -> dict[str, Any]:
    """Run (or resume) one search per seed (and value of ``vary``) and summarise them.

    Runs go to ``out_root/seed<N>`` (or ``out_root/<key><value>/seed<N>`` with ``vary``); a finished run
    is not repeated, an interrupted one continues.
    """
    if not seeds:
        raise ConfigError("seeds: expected at least one seed")
    out_root = Path(out_root)
    groups = (
        [(out_root, config)]
        if vary is None
        else [(out_root / f"{vary[0]}{value}", config.replace(**{vary[0]: value})) for value in vary[1]]
    )
    rows = []
    for root, cfg in groups:
        for seed in seeds:
            folder = seed_dir(root, seed)
            summary = run_search(
                cfg.replace(seed=seed), folder, device=device, progress=progress, resume=(folder / STATE_FILE).exists()
            )
            last = _last_record(folder)
            rows.append(
                {
                    "folder": str(folder.relative_to(out_root)),
                    "seed": seed,
                    **summary.get("mgda", {}),
                    **({vary[0]: cfg.to_dict()[vary[0]]} if vary else {}),
                    **{k: last.get(k) for k in ("val_natural_acc", "train_adv_acc")},
                }
            )
    if vary is not None:
        atomic_write_json(out_root / "sweep.json", {"vary": vary[0], "values": list(vary[1]), "runs": rows})
        return {"runs": rows}
    return summarize_sweep(out_root, seeds)


def _last_record(folder: Path) -> dict[str, Any]:
    import json

    lines = (folder / "log.jsonl").read_text().splitlines()
    return json.loads(lines[-1]) if lines else {}


def op_counts(genotypes: list[Genotype]) -> dict[str, dict[str, int]]:
    """``{cell_type: {op: count}}`` over all edges of all genotypes."""
    counts: dict[str, Counter[str]] = {}
    for g in genotypes:
        for cell_name, cell in g.cells.items():
            counts.setdefault(cell_name, Counter()).update(cell.ops())
    return {cell: dict(sorted(c.items())) for cell, c in counts.items()}


def summarize_sweep(out_root: str | Path, seeds: list[int] | None = None) -> dict[str, Any]:
    """Read ``seed*/genotype.json`` under ``out_root``; write ``op_counts.{json,md,png}``."""
    out_root = Path(out_root)
    dirs = [seed_dir(out_root, s) for s in seeds] if seeds is not None else sorted(out_root.glob("seed*"))
    missing = [str(d) for d in dirs if not (d / "genotype.json").is_file()]
    if missing or not dirs:
        raise ConfigError(f"sweep {out_root}: no finished run (genotype.json) in {missing or 'any seed*/ folder'}")
    genotypes = [Genotype.load(d / "genotype.json") for d in dirs]
    counts = op_counts(genotypes)
    primitives = list(
        SearchSpace(
            space=genotypes[0].space, placement="A-A-R" if genotypes[0].space == "arnas" else "N-N-N"
        ).primitives
    )
    primitives = [p for p in primitives if p != "none"]
    summary = {"runs": [d.name for d in dirs], "primitives": primitives, "op_counts": counts}
    atomic_write_json(out_root / "op_counts.json", summary)
    atomic_write_text(out_root / "op_counts.md", op_table(counts, primitives, len(dirs)))
    plot_op_counts(counts, primitives, out_root / "op_counts.png", len(dirs))
    return summary


def _cell_order(counts: dict[str, dict[str, int]]) -> list[str]:
    preferred = ("accurate", "robust", "normal", "reduce")
    return [c for c in preferred if c in counts] + sorted(c for c in counts if c not in preferred)


def op_table(counts: dict[str, dict[str, int]], primitives: list[str], runs: int) -> str:
    cells = _cell_order(counts)
    lines = [
        f"Op choices over the final genotypes of {runs} run(s) (8 edges per cell)",
        "",
        "| op | " + " | ".join(cells) + " |",
        "|---|" + "---:|" * len(cells),
    ]
    for op in primitives:
        lines.append(f"| {op} | " + " | ".join(str(counts[c].get(op, 0)) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def plot_op_counts(counts: dict[str, dict[str, int]], primitives: list[str], path: Path, runs: int) -> Path:
    cells = [c for c in FIGURE_CELLS if c in counts] or [c for c in counts if c != "reduce"] or list(counts)
    x = np.arange(len(primitives))
    width = 0.8 / len(cells)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for i, cell in enumerate(cells):
        ax.bar(
            x + (i - (len(cells) - 1) / 2) * width, [counts[cell].get(op, 0) for op in primitives], width, label=cell
        )
    ax.set_xticks(x, primitives, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("times selected")
    ax.set_title(f"Ops selected per cell type ({runs} run(s))")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
