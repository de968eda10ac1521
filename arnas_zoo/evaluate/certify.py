"""Certified accuracy and certified radius of a model on a dataset (``arnas-zoo certify``).

For each point: is the label the prediction at every input within ``eps`` (certified accuracy, a
lower bound of the accuracy under ANY attack of that strength), and the largest radius at which the
method certifies it (bisection; 0 for misclassified points). The bounds are
:mod:`arnas_zoo.bounds`' IBP or CROWN(-IBP); they hold for the model exactly as evaluated (eval
mode, normalization inside). A certified figure below the PGD figure is expected: the gap is what
the bound cannot prove, not an attack being weak.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from arnas_zoo.bounds import METHODS, certified, certified_radius
from arnas_zoo.data import ImageData
from arnas_zoo.errors import ConfigError
from arnas_zoo.progress import Progress
from arnas_zoo.provenance import environment, now_utc

SCHEMA = "arnas-zoo/certify@1"


@dataclass
class CertifyReport:
    """What ``certify`` measured, with everything needed to reproduce it."""

    model: dict[str, Any]
    data: dict[str, Any]
    norm: str
    eps: float
    method: str
    n: int
    clean_accuracy: float
    certified_accuracy: float
    mean_certified_radius: float
    median_certified_radius: float
    radius_search: dict[str, Any]
    seconds: float
    seconds_per_image: float
    device: str
    created: str = field(default_factory=now_utc)
    schema: str = SCHEMA
    environment: dict[str, Any] = field(default_factory=environment)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        from arnas_zoo.atomic import atomic_write_json

        atomic_write_json(Path(path), self.to_dict())

    def format_table(self) -> str:
        eps = f"{self.eps:.4g}"
        rows = [
            f"{'clean':<36}{100 * self.clean_accuracy:6.2f}%",
            f"{f'certified ({self.method}, {self.norm} eps {eps})':<36}{100 * self.certified_accuracy:6.2f}%",
            f"{'mean certified radius':<36}{self.mean_certified_radius:.5g}",
            f"{'median certified radius':<36}{self.median_certified_radius:.5g}",
        ]
        search = self.radius_search
        note = (
            f"({self.data['dataset']} {self.data['split']}, official indices {self.data['indices']}, n={self.n}; "
            f"radius by log-scale bisection on [{search['eps_min']:.2g}, {search['eps_max']:.4g}] in "
            f"{search['steps']} steps (within {100 * search['relative_resolution']:.2g}% below); radius 0: "
            f"misclassified or not certified at {search['eps_min']:.2g}; {self.seconds_per_image:.3g} s/image)"
        )
        return "\n".join([*rows, note])


def certify(
    model: nn.Module,
    data: ImageData,
    *,
    eps: float,
    norm: str = "linf",
    method: str = "crown",
    batch_size: int = 32,
    radius_max: float | None = None,
    radius_steps: int = 16,
    progress: bool | Progress = True,
    model_info: dict[str, Any] | None = None,
) -> CertifyReport:
    """Certified accuracy at ``eps`` and the certified radius of every point of ``data``.

    ``radius_max`` bounds the bisection (default ``4 * eps``, at least 1/255); the report states its
    resolution ``radius_max / 2**radius_steps``.
    """
    if method not in METHODS:
        raise ConfigError(f"method: expected one of {list(METHODS)}, got {method!r}")
    if not eps >= 0:
        raise ConfigError(f"eps: expected a radius >= 0, got {eps}")
    radius_max = float(radius_max if radius_max is not None else max(4 * eps, 1 / 255))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    clean = cert = 0
    radii: list[torch.Tensor] = []
    start = time.perf_counter()
    task_progress = Progress.of(progress)
    try:
        with task_progress.task(f"certify {method}", total=len(data), unit="images") as task:
            for xb, yb in data.batches(batch_size):
                xb, yb = xb.to(device), yb.to(device)
                with torch.no_grad():
                    correct = model(xb).argmax(1) == yb
                ok = certified(model, xb, yb, eps, norm=norm, method=method) & correct
                radius = certified_radius(
                    model, xb, yb, norm=norm, method=method, eps_max=radius_max, steps=radius_steps
                )
                radius = torch.where(correct, radius, torch.zeros_like(radius))
                clean += int(correct.sum())
                cert += int(ok.sum())
                radii.append(radius.cpu())
                task.update(len(yb), certified=f"{cert}/{clean}")
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start
    all_radii = torch.cat(radii) if radii else torch.zeros(0, dtype=torch.float64)
    n = len(data)
    return CertifyReport(
        model=dict(model_info or {"name": type(model).__name__}),
        data=data.describe(),
        norm=norm,
        eps=float(eps),
        method=method,
        n=n,
        clean_accuracy=clean / n if n else 0.0,  # exact fractions of integer counts
        certified_accuracy=cert / n if n else 0.0,
        mean_certified_radius=float(all_radii.mean()) if n else 0.0,
        median_certified_radius=float(all_radii.median()) if n else 0.0,
        radius_search={
            "eps_max": radius_max,
            "eps_min": radius_max * 1e-6,
            "steps": radius_steps,
            "scale": "log",
            "relative_resolution": (1e6) ** (1 / 2**radius_steps) - 1,
        },
        seconds=round(seconds, 3),
        seconds_per_image=seconds / max(n, 1),
        device=str(device),
    )
