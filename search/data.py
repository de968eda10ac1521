"""Search data: the weight/architecture split, on-device augmentation and batch streams.

DARTS (and ARNAS, PROTOCOLS.md) split the CIFAR-10 *train* set in two halves: the first trains the
weights, the second the architecture. Here the first ``train_fraction`` of the first ``n_images``
rows (in file order) train the weights and the rest the architecture. Batches are drawn from a
per-epoch permutation of a seeded generator and augmented on the device (4-pixel zero-padded random
crop + horizontal flip, DARTS' CIFAR transform), so an epoch is a pure function of (seed, epoch).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from arnas_zoo.data import load_dataset
from arnas_zoo.errors import DataNotFoundError


@dataclass(frozen=True)
class SearchData:
    """Images float NCHW in [0, 1] and int64 labels, split into weight and architecture parts."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int
    description: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]


def load_images(
    dataset: str, data_dir: str | Path | None, n: int | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The train split of ``dataset`` via ``arnas_zoo.data.load_dataset``: ``(x, y, num_classes)``."""
    data = load_dataset(dataset, "train", data_dir=data_dir, n=n, device=device)
    return data.x, data.y, data.num_classes


def load_search_data(
    dataset: str,
    data_dir: str | Path | None,
    n_images: int | None,
    train_fraction: float,
    device: torch.device,
    resize: int | None = None,
) -> SearchData:
    """Load and split; ``resize`` area-downsamples the images (CPU smoke runs only: not the paper's data)."""
    x, y, num_classes = load_images(dataset, data_dir, n_images, device)
    if resize is not None and resize != x.shape[-1]:
        x = torch.nn.functional.interpolate(x, size=(resize, resize), mode="area").clamp_(0.0, 1.0)
    n_train = int(round(len(x) * train_fraction))
    if n_train < 1 or n_train >= len(x):
        raise DataNotFoundError(f"{dataset}: {len(x)} images cannot be split at train_fraction={train_fraction}")
    description = (
        f"{dataset} train split, first {len(x)} rows: rows 0-{n_train - 1} train the weights, "
        f"rows {n_train}-{len(x) - 1} the architecture"
        + (f"; resized to {resize}x{resize}" if resize is not None else "")
    )
    return SearchData(x[:n_train], y[:n_train], x[n_train:], y[n_train:], num_classes, description)


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random ``pad``-pixel zero-padded crop and horizontal flip, batched, drawn from ``generator``."""
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=generator.device).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=generator.device).to(x.device)
    flip = torch.rand(n, generator=generator, device=generator.device).to(x.device) < 0.5
    rows = dy[:, None] + torch.arange(h, device=x.device)[None, :]  # (n, h)
    cols = dx[:, None] + torch.arange(w, device=x.device)[None, :]  # (n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch_idx = torch.arange(n, device=x.device)[:, None, None, None]
    chan_idx = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch_idx, chan_idx, rows[:, None, :, None], cols[:, None, None, :]]


def batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    *,
    do_augment: bool,
    shard: tuple[int, int] = (0, 1),
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless stream of ``batch_size`` batches over reshuffled passes; yields this rank's shard.

    ``shard=(rank, world)`` gives each rank a contiguous ``batch_size // world`` slice of the same
    global batch, so a data-parallel run sees the same images per step as a single process.
    """
    rank, world = shard
    per_rank = batch_size // world
    n = len(x)
    while True:
        order = torch.randperm(n, generator=generator, device=generator.device).to(x.device)
        for start in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            idx = order[start : start + batch_size][rank * per_rank : (rank + 1) * per_rank]
            xb = x[idx]
            if do_augment:
                xb = augment(xb, generator)
            yield xb, y[idx]
