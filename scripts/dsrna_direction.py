"""DSRNA's direction check at reduced scale: does the certified-bound search find a cell with larger certified
radii than other cells of its space, trained the same way?

    python scripts/dsrna_direction.py [--out runs/dsrna_direction] [--workers 2] [--seeds 3] [--random 5]

1. Search: ``dsrna-cb-tiny`` (MNIST 14x14, 4 cells x 4 nodes, C=4), 8 epochs x 8 steps of 16 on 1,024 images.
2. The cells compared: the searched one, DARTS_V2 and ``--random`` cells drawn uniformly from the same
   space (the DARTS ops without ``none``, two distinct inputs per node; seeded, saved as genotype JSON).
3. Each trained with ``--seeds`` seeds by the same recipe (``cpu_digits``: PGD-3 at eps 0.2, 10 epochs, C=4,
   5 cells) and evaluated on the same 297 digits test points: clean, PGD-20 (eps 0.2), and the certified
   radius by CROWN and IBP (bisection up to 0.2; certified accuracy at eps 0.01).
4. ``summary.json``: every run, and per cell the mean and spread over seeds; ``front.png``: clean accuracy
   against mean CROWN radius, one point per run. Every step is skipped when its output exists (resumable).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the search package is not installed: the checkout's
PY = os.environ.get("PYTHON", sys.executable)
DATA = os.environ.get("ARNAS_ZOO_SHARED_DATA", str(ROOT.parent / "shared" / "data"))
FLOOR = 1e-7
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _run(args: list[str]) -> None:
    subprocess.run([PY, *args], check=True, cwd=ROOT, env=ENV)


def search(out: Path) -> Path:
    folder = out / "search"
    if not (folder / "summary.json").is_file():
        resume = ["--resume"] if folder.is_dir() else []
        sets = ["--set", f"data_dir={DATA}", "--set", "epochs=8", "--set", "steps_per_epoch=8"]
        _run(["-m", "search", "run", "dsrna-cb-tiny", "-o", str(folder), *sets, "--set", "n_images=1024", "--quiet",
              *resume])  # fmt: skip
    return folder / "genotype.json"


def random_cells(out: Path, count: int) -> dict[str, str]:
    from search.evolve.run import gene_bounds, repair, to_genotype

    low, high = gene_bounds("darts")
    rng = np.random.default_rng(20261206)
    cells = {}
    for i in range(count):
        genes = repair(rng.integers(low, high + 1)[None, :], "darts")[0]
        path = out / "cells" / f"random{i}.json"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            to_genotype(genes, "darts", name=f"random{i}").save(path)
        cells[f"random{i}"] = str(path)
    return cells


def train_and_certify(out: Path, cell: str, target: str, seed: int) -> dict[str, float]:
    folder = out / "train" / f"{cell}_seed{seed}"
    metrics = folder / "best" / "metrics.json"
    if not (metrics.is_file() and "results" in json.loads(metrics.read_text())):
        resume = ["--resume"] if folder.is_dir() else []
        _run(["-m", "arnas_zoo.cli", "train", target, "--recipe", "cpu_digits", "--dataset", "digits",
              "--model-set", "init_channels=4", "--model-set", "layers=5", "--set", f"seed={seed}",
              "--eval-attacks", "pgd20", "--eval-n", "297", "--quiet",
              "--name", f"{cell}-seed{seed}", "--out", str(folder), *resume])  # fmt: skip
    m = json.loads(metrics.read_text())
    row = {"clean": m["clean_accuracy"], **{r["attack"]: r["robust_accuracy"] for r in m["results"]}}
    for method in ("crown", "ibp"):
        path = out / "certify" / f"{cell}_seed{seed}_{method}.json"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            _run(["-m", "arnas_zoo.cli", "certify", str(folder / "best"), "--dataset", "digits", "--n", "297",
                  "--eps", "0.01", "--radius-max", "0.2", "--method", method, "--json", str(path), "-q"])  # fmt: skip
        c = json.loads(path.read_text())
        row[f"{method}_mean_radius"] = c["mean_certified_radius"]
        row[f"{method}_certified_at_0.01"] = c["certified_accuracy"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "dsrna_direction")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--random", type=int, default=5)
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cells = {"dsrna_cb": str(search(out)), "darts_v2": "darts_v2", **random_cells(out, args.random)}
    work = [(cell, target, seed) for cell, target in cells.items() for seed in range(args.seeds)]
    with ThreadPoolExecutor(args.workers) as pool:
        rows = list(pool.map(lambda w: train_and_certify(out, *w), work))
    runs = [{"cell": c, "seed": s, **r} for (c, _, s), r in zip(work, rows)]
    per_cell = {}
    for cell in cells:
        mine = [r for r in runs if r["cell"] == cell]
        per_cell[cell] = {
            key: {
                "mean": float(np.mean([r[key] for r in mine])),
                "min": min(r[key] for r in mine),
                "max": max(r[key] for r in mine),
            }  # fmt: skip
            for key in ("clean", "pgd20", "crown_mean_radius", "ibp_mean_radius")
        }
    summary = {
        "what": "DSRNA-CB-searched cell vs DARTS_V2 vs random cells of the DARTS space, same recipe, several seeds",
        "recipe": "cpu_digits (PGD-3 eps 0.2 step 0.1, 10 epochs, batch 64), C=4, 5 cells; the epoch chosen on "
        "the validation rows (not the test points)",
        "evaluation": "digits test split, first 297 points; PGD-20 eps 0.2 step 0.05; certified radius by "
        "bisection in (2e-7, 0.2], 16 steps; eval-mode network",
        "search": "dsrna-cb-tiny, 8 epochs x 8 steps of 16, 1,024 MNIST images at 14x14, seed 0",
        "cells": cells,
        "per_cell": per_cell,
        "runs": runs,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    _plot(runs, out / "front.png")
    print(json.dumps(per_cell, indent=1))


def _plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for cell in dict.fromkeys(r["cell"] for r in runs):
        mine = [r for r in runs if r["cell"] == cell]
        style = {"dsrna_cb": dict(c="C3", marker="*", s=120), "darts_v2": dict(c="C0", marker="s", s=50)}
        # a radius under the bisection's floor (2e-7) is 0: drawn at FLOOR so the log axis keeps it
        ax.scatter([r["clean"] for r in mine], [max(r["crown_mean_radius"], FLOOR) for r in mine], label=cell,
                   **style.get(cell, dict(c="0.6", s=20)))  # fmt: skip
    ax.axhline(FLOOR, color="0.8", lw=0.8)
    ax.set(xlabel="clean accuracy (297 digits test points)", yscale="log",
           ylabel=f"mean CROWN certified radius ({FLOOR:g}: below 2e-7)")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("one point per (cell, seed): same recipe, same points")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
