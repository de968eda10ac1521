"""Evaluate a checkpoint folder in place: its ``metrics.json`` becomes the report (training record kept)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from arnas_zoo.atomic import atomic_write_json
from arnas_zoo.checkpoint import METRICS_FILE, load_folder, read_metrics
from arnas_zoo.data import ImageData
from arnas_zoo.evaluate.runner import evaluate
from arnas_zoo.progress import Progress


def evaluate_folder(
    folder: str | Path,
    data: ImageData,
    *,
    attacks: Sequence[str] = ("fgsm", "pgd20"),
    eps: float,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool | Progress = False,
    checks: bool = False,
) -> dict[str, Any]:
    """Evaluate the folder's model on ``data`` and write the report as its ``metrics.json``.

    Only ``metrics.json`` is rewritten (atomically); the weights and config.json are left untouched.
    """
    folder = Path(folder)
    model = load_folder(folder, device=device)
    report = evaluate(
        model,
        data,
        attacks=list(attacks),
        eps=eps,
        device=device,
        seed=seed,
        checks=checks,
        progress=progress,
        model_info={"name": model.config.name, "source": str(folder)},
    )
    metrics = report.to_metrics()
    previous = read_metrics(folder) or {}
    if "training" in previous:
        metrics["training"] = previous["training"]
    atomic_write_json(folder / METRICS_FILE, metrics)
    return metrics
