"""What a dataset is: static facts (classes, shapes, splits) and :class:`ImageData`, the points of a split."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from arnas_zoo.errors import ConfigError

DIGITS_TRAIN_SIZE = 1500
DIGITS_UPSAMPLE = 2

_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset: shapes, classes, splits and the usual normalization."""

    name: str
    num_classes: int
    in_channels: int
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    splits: tuple[str, ...]
    class_names: tuple[str, ...] | None = None


# Mean/std are the per-channel statistics of each training set (digits: computed here from its
# 1,500 train rows at 16x16); ARNAS and its peers
# train without normalization, so these are only suggestions for ModelConfig.mean/std.
DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(
        "digits", 10, 1, 8 * DIGITS_UPSAMPLE, (0.3051,), (0.3750,), ("train", "test"), tuple(str(i) for i in range(10))
    ),
    "mnist": DatasetInfo(
        "mnist", 10, 1, 28, (0.1307,), (0.3081,), ("train", "test", "train_full"), tuple(str(i) for i in range(10))
    ),
    "cifar10": DatasetInfo(
        "cifar10",
        10,
        3,
        32,
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        ("train", "test", "train_extended", "train_mix"),
        _CIFAR10_CLASSES,
    ),
    "cifar100": DatasetInfo(
        "cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), ("train", "test")
    ),
    "svhn": DatasetInfo(
        "svhn",
        10,
        3,
        32,
        (0.4377, 0.4438, 0.4728),
        (0.1980, 0.2010, 0.1970),
        ("train", "test", "extra"),
        tuple(str(i) for i in range(10)),
    ),
    "tinyimagenet": DatasetInfo(
        "tinyimagenet", 200, 3, 64, (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262), ("train", "val", "test")
    ),
}

_ALIASES = {
    "cifar-10": "cifar10",
    "cifar-100": "cifar100",
    "tiny-imagenet": "tinyimagenet",
    "tinyimagenet200": "tinyimagenet",
    "tiny-imagenet-200": "tinyimagenet",
    "tiny_imagenet": "tinyimagenet",
}


def canonical_name(name: str) -> str:
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return key


def dataset_info(name: str) -> DatasetInfo:
    """Classes, input channels/size, splits and suggested mean/std of dataset ``name``."""
    return DATASETS[canonical_name(name)]


def describe_indices(indices: torch.Tensor | np.ndarray) -> str:
    """Compact text of a list of official indices: ``"0-999"``, ``"0-1101, 10000-11016"``."""
    values = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices, dtype=np.int64).ravel()
    if values.size == 0:
        return "none"
    breaks = np.nonzero(np.diff(values) != 1)[0]
    starts = np.concatenate([[0], breaks + 1])
    stops = np.concatenate([breaks, [values.size - 1]])
    if starts.size > 8:
        return f"{values.size} indices in {starts.size} runs, from {values[0]} to {values[-1]}"
    return ", ".join(f"{values[a]}" if a == b else f"{values[a]}-{values[b]}" for a, b in zip(starts, stops))


def parse_indices(text: str) -> set[int] | None:
    """The official indices that :func:`describe_indices` wrote as ``"0-999, 1500"`` (None for its summary
    form of many runs, which does not list them)."""
    if text == "none":
        return set()
    indices: set[int] = set()
    try:
        for part in text.split(","):
            first, _, last = part.strip().partition("-")
            indices.update(range(int(first), int(last or first) + 1))
    except ValueError:
        return None
    return indices


@dataclass(frozen=True, eq=False)
class ImageData:
    """Images and labels of one dataset split (or a subset of it), ready to feed a model.

    ``x`` is float32 NCHW in [0, 1]; ``y`` int64; ``indices`` (int64, on the CPU) holds each row's index
    in the official split, so a report can name the exact points it used. ``source`` says which file
    or folder the rows came from.
    """

    x: torch.Tensor
    y: torch.Tensor
    name: str
    split: str
    indices: torch.Tensor
    num_classes: int
    class_names: tuple[str, ...] | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or self.x.dtype != torch.float32:
            raise ConfigError(f"ImageData.x: expected float32 NCHW, got {self.x.dtype} of shape {tuple(self.x.shape)}")
        if self.y.shape != (self.x.shape[0],) or self.indices.shape != (self.x.shape[0],):
            raise ConfigError(
                f"ImageData: expected one label and one index per image ({self.x.shape[0]}), got "
                f"y {tuple(self.y.shape)} and indices {tuple(self.indices.shape)}"
            )

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def device(self) -> torch.device:
        return self.x.device

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.x.shape[1:])  # type: ignore[return-value]

    def to(self, device: str | torch.device) -> ImageData:
        """The same data on ``device`` (indices stay on the CPU)."""
        return replace(self, x=self.x.to(device), y=self.y.to(device))

    def subset(self, start: int, stop: int | None = None) -> ImageData:
        """Rows ``start:stop`` (a view; the split name records the row range)."""
        stop = len(self) if stop is None else min(stop, len(self))
        if not 0 <= start <= stop:
            raise ConfigError(f"subset: expected 0 <= start <= stop, got start={start}, stop={stop}")
        return replace(self, x=self.x[start:stop], y=self.y[start:stop], indices=self.indices[start:stop])

    def first(self, n: int | None) -> ImageData:
        """The first ``n`` rows (all rows when ``n`` is None or larger than the data): RobustBench's subsets."""
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise ConfigError(f"n: expected a positive number of points, got {n}")
        return self.subset(0, n)

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Consecutive ``(x, y)`` batches in order (the last one may be smaller)."""
        for start in range(0, len(self), batch_size):
            yield self.x[start : start + batch_size], self.y[start : start + batch_size]

    def describe(self) -> dict[str, Any]:
        """JSON-able identity of the points: dataset, split, n, which official indices, source."""
        return {
            "dataset": self.name,
            "split": self.split,
            "n": len(self),
            "indices": describe_indices(self.indices),
            "source": self.source,
        }
