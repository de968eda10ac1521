"""Datasets as tensors on the evaluation device: standard formats, the shared npz files, embedded digits.

Every loader returns an :class:`ImageData`: float32 NCHW images in [0, 1], int64 labels, and the
*official indices* of its rows, so that every reported figure can say exactly which points it used.
Subsets follow the RobustBench convention: ``n`` means "the first n points of the split" in the
dataset's official order.

Sources, in the order :func:`load_dataset` tries them for ``name``/``split`` under ``data_dir``:

1. ``<data_dir>/<name>/<split>.npz`` -- the npz format of ``../shared/data`` (uint8 NHWC ``x``,
   int64 ``y``, official index ``idx``);
2. the dataset's standard on-disk format, read through torchvision (CIFAR python batches, MNIST idx
   files, SVHN ``.mat``) or, for Tiny-ImageNet-200, the extracted ``tiny-imagenet-200`` folder;
   ``download=True`` fetches it first (needs a network).

``digits`` is scikit-learn's 8x8 handwritten digits (1,797 images shipped inside scikit-learn): it
needs neither network nor files, which makes it the default for quick checks and tests. Its images are
upsampled to 16x16 by repeating every pixel 2x2 (exact, no interpolation), 1 channel, values / 16.
Its split is fixed: the first 1,500 rows (official scikit-learn order) are ``train``, the last 297
are ``test``.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arnas_zoo.errors import ConfigError, DataError, DataNotFoundError

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "ImageData",
    "TensorDataset",
    "dataset_info",
    "default_data_dir",
    "describe_indices",
    "load_dataset",
    "load_npz",
    "shared_data_dir",
    "split_train_val",
]

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
    "mnist": DatasetInfo("mnist", 10, 1, 28, (0.1307,), (0.3081,), ("train", "test"), tuple(str(i) for i in range(10))),
    "cifar10": DatasetInfo(
        "cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), ("train", "test"), _CIFAR10_CLASSES
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


def _canonical(name: str) -> str:
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return key


def dataset_info(name: str) -> DatasetInfo:
    """Classes, input channels/size, splits and suggested mean/std of dataset ``name``."""
    return DATASETS[_canonical(name)]


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


TensorDataset = ImageData  # the name used in early design notes


# ---- where data lives ---------------------------------------------------------------------------
def shared_data_dir() -> Path | None:
    """``$ARNAS_ZOO_SHARED_DATA``, else ``shared/data`` beside the checkout, if it exists."""
    env = os.environ.get("ARNAS_ZOO_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    for path in candidates:
        if path.is_dir():
            return path
    return None


def default_data_dir() -> Path:
    """``$ARNAS_ZOO_DATA``, else ``~/.cache/arnas_zoo/data``: where downloads go by default."""
    env = os.environ.get("ARNAS_ZOO_DATA")
    return Path(env) if env else Path.home() / ".cache" / "arnas_zoo" / "data"


def _fetch_hint(name: str, split: str) -> str:
    return (
        f"fetch it with `arnas-zoo eval MODEL --dataset {name} --split {split} --download` or "
        f"`python -c \"from arnas_zoo.data import load_dataset; load_dataset('{name}', '{split}', download=True)\"` "
        "(needs a network), or pass --data-dir pointing at a folder that holds it"
    )


# ---- readers ------------------------------------------------------------------------------------
def _uint8_nhwc_to_float(x: np.ndarray) -> torch.Tensor:
    if x.ndim == 3:  # N,H,W greyscale
        x = x[..., None]
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).float().div_(255.0)


def load_npz(path: str | Path, name: str | None = None, split: str | None = None) -> ImageData:
    """Read an npz file of the ``../shared/data`` format (``x`` uint8 NHWC, ``y``, optional ``idx``).

    ``name`` and ``split`` default to the parent folder's name and the file stem (``cifar10/train.npz``).
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no such npz file; expected uint8 NHWC 'x' and int 'y' arrays")
    name = name or path.parent.name
    split = split or path.stem
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive or "y" not in archive:
                raise DataError(f"{path}: expected arrays 'x' and 'y', got {sorted(archive.files)[:10]}")
            x_np, y_np = archive["x"], archive["y"]
            idx = archive["idx"] if "idx" in archive else np.arange(len(y_np))
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: not a readable npz file ({type(exc).__name__})") from None
    _check_npz_arrays(path, x_np, y_np, idx)
    try:
        info = dataset_info(name)
        num_classes, class_names = info.num_classes, info.class_names
    except ConfigError:
        num_classes, class_names = (int(y_np.max()) + 1 if y_np.size else 1), None
    if y_np.size and int(y_np.max()) >= num_classes:
        raise DataError(f"{path}: labels reach {int(y_np.max())}, but {name} has {num_classes} classes")
    labels_full = path.parent / "labels_full.npz"
    if labels_full.is_file() and class_names is None:
        with np.load(labels_full, allow_pickle=False) as meta:
            if "names" in meta:
                class_names = tuple(str(s) for s in meta["names"])
    return ImageData(
        x=_uint8_nhwc_to_float(x_np),
        y=torch.from_numpy(y_np.astype(np.int64)),
        name=name,
        split=split,
        indices=torch.from_numpy(idx.astype(np.int64)),
        num_classes=num_classes,
        class_names=class_names,
        source=str(path),
    )


def _check_npz_arrays(path: Path, x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> None:
    """The shared npz format, and contents that look like images: refuse what would evaluate silently wrong."""
    if x.dtype != np.uint8 or x.ndim not in (3, 4):
        raise DataError(f"{path}: 'x' must be uint8 NHWC (values 0..255), got {x.dtype} of shape {x.shape}")
    if y.ndim != 1 or y.shape[0] != x.shape[0] or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: 'y' must hold one integer label per image, got {y.dtype} of shape {y.shape}")
    if idx.shape != y.shape:
        raise DataError(f"{path}: 'idx' must hold one index per image, got shape {idx.shape}")
    if y.size and (int(y.min()) < 0 or int(y.max()) > 100_000):
        raise DataError(f"{path}: labels must be class indices >= 0, got {int(y.min())}..{int(y.max())}")
    if x.size and int(x.max()) <= 1:
        raise DataError(
            f"{path}: 'x' is uint8 with values only in 0..1; these look like [0, 1] images cast to uint8 "
            "(they would evaluate as almost black). Store pixels as 0..255"
        )


def _load_digits(split: str) -> ImageData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / 16.0  # sklearn's pixel values are 0..16
    images = images.repeat(DIGITS_UPSAMPLE, axis=1).repeat(DIGITS_UPSAMPLE, axis=2)
    rows = np.arange(len(images))
    rows = rows[:DIGITS_TRAIN_SIZE] if split == "train" else rows[DIGITS_TRAIN_SIZE:]
    return ImageData(
        x=torch.from_numpy(images[rows][:, None].copy()),
        y=torch.from_numpy(bunch.target[rows].astype(np.int64)),
        name="digits",
        split=split,
        indices=torch.from_numpy(rows.astype(np.int64)),
        num_classes=10,
        class_names=DATASETS["digits"].class_names,
        source="sklearn.datasets.load_digits (embedded)",
    )


def _load_torchvision(name: str, split: str, root: Path, download: bool) -> ImageData:
    import torchvision.datasets as tvd

    if name == "svhn":
        ds = tvd.SVHN(str(root), split=split, download=download)
        x = torch.from_numpy(ds.data).float().div_(255.0)  # already N,C,H,W
        y = torch.from_numpy(np.asarray(ds.labels, dtype=np.int64))
        class_names = DATASETS["svhn"].class_names
    else:
        cls = {"mnist": tvd.MNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[name]
        ds = cls(str(root), train=(split == "train"), download=download)
        data = ds.data.numpy() if isinstance(ds.data, torch.Tensor) else np.asarray(ds.data)
        x = _uint8_nhwc_to_float(data)
        targets = ds.targets.numpy() if isinstance(ds.targets, torch.Tensor) else np.asarray(ds.targets)
        y = torch.from_numpy(targets.astype(np.int64))
        class_names = tuple(getattr(ds, "classes", ()) or ()) or None
        if name == "mnist":
            class_names = DATASETS["mnist"].class_names
    return ImageData(
        x=x,
        y=y,
        name=name,
        split=split,
        indices=torch.arange(len(y)),
        num_classes=DATASETS[name].num_classes,
        class_names=class_names,
        source=str(root),
    )


TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


def _load_tinyimagenet(split: str, root: Path, download: bool) -> ImageData:
    """Tiny-ImageNet-200 from its extracted zip; ``test`` means the labelled ``val`` folder (10,000 images)."""
    from PIL import Image

    folder = root / "tiny-imagenet-200"
    if not folder.is_dir() and download:
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(TINY_IMAGENET_URL, str(root))
    if not (folder / "wnids.txt").is_file():
        raise FileNotFoundError(folder)
    wnids = [line.strip() for line in (folder / "wnids.txt").read_text().splitlines() if line.strip()]
    label_of = {w: i for i, w in enumerate(wnids)}
    files: list[Path] = []
    labels: list[int] = []
    if split == "train":
        for wnid in wnids:
            for image in sorted((folder / "train" / wnid / "images").glob("*.JPEG")):
                files.append(image)
                labels.append(label_of[wnid])
    else:  # official order of val_annotations.txt
        for line in (folder / "val" / "val_annotations.txt").read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                files.append(folder / "val" / "images" / parts[0])
                labels.append(label_of[parts[1]])
    x = np.stack([np.asarray(Image.open(f).convert("RGB"), dtype=np.uint8) for f in files])
    return ImageData(
        x=_uint8_nhwc_to_float(x),
        y=torch.tensor(labels, dtype=torch.int64),
        name="tinyimagenet",
        split=split,
        indices=torch.arange(len(labels)),
        num_classes=200,
        class_names=tuple(wnids),
        source=str(folder),
    )


def load_dataset(
    name: str,
    split: str = "test",
    data_dir: str | Path | None = None,
    n: int | None = None,
    device: str | torch.device = "cpu",
    download: bool = False,
) -> ImageData:
    """Load ``split`` of dataset ``name`` as an :class:`ImageData` on ``device``; ``n`` keeps the first n rows.

    ``name`` is one of ``digits`` (embedded), ``mnist``, ``cifar10``, ``cifar100``, ``svhn``,
    ``tinyimagenet``. ``data_dir`` defaults to :func:`default_data_dir`; when it is not given, the
    shared npz folder (:func:`shared_data_dir`) is searched as well. Missing data raises
    :class:`DataNotFoundError` naming every place searched and how to fetch the data.
    """
    key = _canonical(name)
    info = DATASETS[key]
    split = split.strip().lower()
    if key == "tinyimagenet" and split == "val":
        split = "test"
    if split not in info.splits:
        raise ConfigError(f"dataset {key}: unknown split {split!r}; expected one of {list(info.splits)}")
    if key == "digits":
        return _load_digits(split).first(n).to(device)

    roots = [Path(data_dir)] if data_dir is not None else [default_data_dir()]
    if data_dir is None and (shared := shared_data_dir()) is not None:
        roots.append(shared)
    looked: list[str] = []
    for root in roots:
        npz = root / key / f"{split}.npz"
        looked.append(str(npz))
        if npz.is_file():
            return load_npz(npz, name=key, split=split).first(n).to(device)
    root = roots[0]
    looked.append(f"{root} ({'tiny-imagenet-200 folder' if key == 'tinyimagenet' else 'torchvision format'})")
    try:
        if key == "tinyimagenet":
            data = _load_tinyimagenet(split, root, download)
        else:
            data = _load_torchvision(key, split, root, download)
    except (RuntimeError, FileNotFoundError, OSError) as exc:
        if download:
            raise DataNotFoundError(f"{key} {split}: download into {root} failed ({exc})") from None
        raise DataNotFoundError(
            f"{key} {split}: not found; looked in {'; '.join(looked)}. {_fetch_hint(key, split)}"
            + (
                ". Note: ../shared/data has no CIFAR-10 test split; use --split train and carve a validation set"
                if key == "cifar10" and split == "test"
                else ""
            )
        ) from None
    return data.first(n).to(device)


def split_train_val(data: ImageData, val_size: int) -> tuple[ImageData, ImageData]:
    """Split off the LAST ``val_size`` rows as validation (deterministic; no shuffling).

    The split names record the row ranges (``"train[0:4551]"``, ``"train[4551:5551]"``) and the
    official indices stay attached, so reports can state exactly which points were held out.
    """
    if not 0 < val_size < len(data):
        raise ConfigError(f"val_size: expected 0 < val_size < {len(data)} (the number of rows), got {val_size}")
    cut = len(data) - val_size
    train = replace(data.subset(0, cut), split=f"{data.split}[0:{cut}]")
    val = replace(data.subset(cut, len(data)), split=f"{data.split}[{cut}:{len(data)}]")
    return train, val


#: Rows held out as validation when a dataset has no test split on disk (CIFAR-10 offline): the last ones.
VALIDATION_ROWS = 1000


def evaluation_data(
    dataset: str,
    *,
    split: str = "test",
    data_dir: str | Path | None = None,
    n: int | None = None,
    val_size: int | None = None,
    device: str | torch.device = "cpu",
    download: bool = False,
) -> ImageData:
    """The points figures are reported on: the first ``n`` of ``split`` (or of its last ``val_size`` rows).

    The one place of the validation rule: when the test split is not on disk (CIFAR-10 from
    ``../shared/data``, whose test images are held out) the reported points are the last
    :data:`VALIDATION_ROWS` rows of the train split -- the rows training keeps out -- and the split
    name says so (``train[4551:5551]``). A ``dataset`` ending in ``.npz`` is read as one file.
    """
    if dataset.lower().endswith(".npz"):
        data = load_npz(dataset)
    else:
        try:
            data = load_dataset(dataset, split, data_dir=data_dir, download=download)
        except DataNotFoundError:
            if split != "test" or val_size is not None:
                raise
            data, val_size = load_dataset(dataset, "train", data_dir=data_dir, download=download), VALIDATION_ROWS
    if val_size is not None:
        _, data = split_train_val(data, val_size)
    return data.first(n).to(device)
