"""Search data: the weight/architecture split and per-step batches drawn from ``(seed, epoch, step)``.

DARTS (and ARNAS, PROTOCOLS.md) split the CIFAR-10 *train* set in two halves: the first trains the
weights, the second the architecture. Here the first ``train_fraction`` of the first ``n_images``
rows (in file order) train the weights and the rest the architecture. Each epoch has its own
permutation of each half and each step its own augmentation draws (4-pixel zero-padded random crop
+ horizontal flip, DARTS' CIFAR transform, :func:`arnas_zoo.runs.augment`), all from generators
seeded by ``(seed, epoch, step, stream)``, so a run resumed at any step sees exactly the batches an
uninterrupted run sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from arnas_zoo.attacks import draw_noise
from arnas_zoo.data import load_dataset
from arnas_zoo.errors import ConfigError
from arnas_zoo.runs import augment, generator, seed_for

TRAIN_STREAM, VAL_STREAM = 1, 2


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


def load_search_data(
    dataset: str,
    data_dir: str | Path | None,
    n_images: int | None,
    train_fraction: float,
    device: torch.device,
    resize: int | None = None,
) -> SearchData:
    """Load and split; ``resize`` area-downsamples the images (CPU smoke runs only: not the paper's data)."""
    data = load_dataset(dataset, "train", data_dir=data_dir, n=n_images, device=device)
    x = data.x
    if resize is not None and resize != x.shape[-1]:
        x = torch.nn.functional.interpolate(x, size=(resize, resize), mode="area").clamp_(0.0, 1.0)
    n_train = int(round(len(x) * train_fraction))
    if n_train < 1 or n_train >= len(x):
        raise ConfigError(f"{dataset}: {len(x)} images cannot be split at train_fraction={train_fraction}")
    description = (
        f"{dataset} train split, first {len(x)} rows: rows 0-{n_train - 1} train the weights, "
        f"rows {n_train}-{len(x) - 1} the architecture"
        + (f"; resized to {resize}x{resize}" if resize is not None else "")
    )
    return SearchData(x[:n_train], data.y[:n_train], x[n_train:], data.y[n_train:], data.num_classes, description)


class StepBatches:
    """The batches of step ``(epoch, step)`` of one half of the data; ``shard=(rank, world)`` keeps a slice.

    Every rank draws the same global batch (same permutation, same augmentation) and keeps its
    contiguous ``batch_size // world`` slice, so a data-parallel search sees what one process sees.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        seed: int,
        stream: int,
        *,
        do_augment: bool,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        self.x, self.y, self.batch_size, self.seed, self.stream = x, y, batch_size, seed, stream
        self.do_augment, self.shard = do_augment, shard
        self._perm: tuple[int, torch.Tensor] | None = None

    @property
    def steps_per_epoch(self) -> int:
        return len(self.x) // self.batch_size

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            gen = generator(self.x.device, seed_for(self.seed, epoch, -1, self.stream))
            self._perm = (epoch, torch.randperm(len(self.x), generator=gen, device=self.x.device))
        return self._perm[1]

    def batch(self, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x, y, noise)``: this rank's shard, and U(-1, 1) draws for the attack's start (drawn for the
        global batch, then sharded, so the start does not depend on the number of processes)."""
        gen = generator(self.x.device, seed_for(self.seed, epoch, step, self.stream))
        rank, world = self.shard
        per_rank = self.batch_size // world
        idx = self._permutation(epoch)[step * self.batch_size : (step + 1) * self.batch_size]
        xb = augment(self.x[idx], gen, crop_padding=4, flip=True) if self.do_augment else self.x[idx]
        noise = draw_noise(xb.shape, "uniform", gen, xb.device, xb.dtype)
        part = slice(rank * per_rank, (rank + 1) * per_rank)
        return xb[part], self.y[idx][part], noise[part]
