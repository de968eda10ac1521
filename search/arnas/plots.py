"""Pictures of a search run: architecture weights over epochs, the MGDA gamma trace, the objectives, the cells."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from arnas_zoo.genotype import NUM_CELL_INPUTS, Genotype  # noqa: E402


def _edge_labels(num_edges: int) -> list[str]:
    labels: list[str] = []
    k = 0
    while len(labels) < num_edges:
        for src in range(NUM_CELL_INPUTS + k):
            name = ("c_{k-2}", "c_{k-1}")[src] if src < NUM_CELL_INPUTS else f"n{src - NUM_CELL_INPUTS}"
            labels.append(f"{name} -> n{k}")
        k += 1
    return labels[:num_edges]


def plot_alphas(weights: np.ndarray, primitives: list[str], cell: str, path: Path) -> Path:
    """One panel per edge: each op's softmax weight over epochs (epoch 0 = initialisation)."""
    epochs, edges, _ = weights.shape
    cols = 4 if edges > 6 else edges
    rows = math.ceil(edges / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.3 * rows), sharex=True, sharey=True, squeeze=False)
    x = np.arange(epochs)
    for e, label in enumerate(_edge_labels(edges)):
        ax = axes[e // cols][e % cols]
        for k, op in enumerate(primitives):
            ax.plot(x, weights[:, e, k], label=op, lw=1.2)
        ax.set_title(label, fontsize=8)
        ax.tick_params(labelsize=7)
    for e in range(edges, rows * cols):
        axes[e // cols][e % cols].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(primitives), 8), fontsize=8)
    fig.suptitle(f"{cell} cell: op weights (softmax of alpha) per edge over epochs")
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_gamma(gamma: np.ndarray, path: Path) -> Path:
    """Every step's MGDA gamma (weight of the natural gradient) with per-epoch means."""
    fig, ax = plt.subplots(figsize=(7, 3))
    flat = gamma.reshape(-1)
    steps = gamma.shape[1] if gamma.ndim == 2 and gamma.size else 1
    ax.plot(np.arange(len(flat)) / max(steps, 1), flat, lw=0.8, marker=".", ms=3, label="step")
    if gamma.size:
        ax.plot(np.arange(1, len(gamma) + 1), np.nanmean(gamma, axis=1), "o-", label="epoch mean")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("epoch")
    ax.set_ylabel("gamma (natural weight)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_objectives(history: list[dict], path: Path) -> Path | None:
    """The architecture step's natural and robust objectives at every step, and the MGDA cosine / norm ratio."""
    keys = sorted({k for r in history for k in r if k.startswith("step_val_") and k.endswith("_loss")})
    if not keys:
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    for key in keys:
        values = [v for r in history for v in r.get(key, [])]
        steps = [
            r["epoch"] - 1 + (i + 1) / max(len(r.get(key, [])), 1) for r in history for i in range(len(r.get(key, [])))
        ]
        top.plot(steps, values, lw=1.0, marker=".", ms=3, label=key[len("step_val_") :].replace("_", " "))
    top.set_ylabel("validation loss")
    top.set_title("architecture-step objectives per step")
    top.legend(fontsize=8)
    epochs = [r["epoch"] for r in history]
    for key, label in (("cosine_mean", "cosine(t, t_hat)"), ("norm_ratio_mean", "||t_hat|| / ||t||")):
        if any(key in r for r in history):
            bottom.plot(epochs, [r.get(key, float("nan")) for r in history], "o-", label=label)
    bottom.set_xlabel("epoch")
    bottom.set_ylabel("epoch mean")
    bottom.legend(fontsize=8, title="gamma = 0 where cosine >= ratio", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_run(out_dir: Path, genotype: Genotype | None = None) -> list[Path]:
    """Write ``plots/`` for a run folder from its ``alphas.npz``, ``gamma.npy`` and genotype."""
    out_dir = Path(out_dir)
    plot_dir = out_dir / "plots"
    plot_dir.mkdir(exist_ok=True)
    written = []
    with np.load(out_dir / "alphas.npz") as npz:
        primitives = [str(p) for p in npz["primitives"]]
        for name in npz.files:
            if name == "primitives" or name.endswith("_logits"):
                continue
            written.append(plot_alphas(npz[name], primitives, name, plot_dir / f"alphas_{name}.png"))
    gamma = np.load(out_dir / "gamma.npy")
    if gamma.size and not np.isnan(gamma).all():
        written.append(plot_gamma(gamma, plot_dir / "gamma.png"))
    log_path = out_dir / "log.jsonl"
    if log_path.is_file():
        history = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
        objectives = plot_objectives(history, plot_dir / "objectives.png")
        if objectives is not None:
            written.append(objectives)
    if genotype is None and (out_dir / "genotype.json").is_file():
        genotype = Genotype.load(out_dir / "genotype.json")
    if genotype is not None:
        from arnas_zoo.draw import draw_cell

        for cell in genotype.cells:
            written.append(draw_cell(genotype, cell, plot_dir / f"cell_{cell}.png"))
    return written
