"""Readers of the on-disk formats: the shared npz files, scikit-learn's digits, torchvision's files,
the Tiny-ImageNet folder. Each returns an :class:`~arnas_zoo.data.base.ImageData`."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from arnas_zoo.data.base import DATASETS, DIGITS_TRAIN_SIZE, DIGITS_UPSAMPLE, ImageData, dataset_info
from arnas_zoo.errors import ConfigError, DataError, DataNotFoundError


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
