"""The training curves: accuracy (with the selected epoch marked), loss and learning rate per epoch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from arnas_zoo.atomic import replacing


def plot_curves(
    history: Sequence[Mapping[str, Any]], path: Path, *, title: str = "", best: Mapping[str, Any] | None = None
) -> Path:
    """PNG of clean/robust validation accuracy, training loss and learning rate per epoch.

    ``best`` (``{"epoch": ..., "metric": ..., "value": ...}``) marks the epoch model selection kept.
    Written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    ax = axes[0]
    for key, label in (
        ("val_clean_acc", "validation, clean"),
        ("val_robust_acc", "validation, PGD"),
        ("train_acc", "training (on its inputs)"),
    ):
        pts = [(h["epoch"], h[key]) for h in history if key in h]
        if pts:
            ax.plot(*zip(*pts), marker="o", markersize=3, label=label)
    if best and best.get("epoch") is not None:
        ax.axvline(best["epoch"], color="k", linestyle="--", linewidth=0.8)
        value = best.get("value")
        note = f"selected: epoch {best['epoch']}" + (
            f" ({best.get('metric')} {value:.3f})" if value is not None else ""
        )
        ax.annotate(
            note,
            xy=(best["epoch"], 0.02),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            rotation=90,
            ha="right",
            va="bottom",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_title("accuracy", fontsize=9)
    ax.legend(fontsize=7)
    axes[1].plot(epochs, [h["train_loss"] for h in history], marker="o", markersize=3)
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("training loss")
    axes[1].set_title("training loss", fontsize=9)
    axes[2].plot(epochs, [h["lr"] for h in history], marker="o", markersize=3)
    axes[2].set_xlabel("epoch")
    axes[2].set_ylabel("learning rate (end of epoch)")
    axes[2].set_title("learning rate", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    return path
