"""The CIFAR-10 "mix": all 50,000 train images, genuine pixels where we have them, JPEG re-encodings elsewhere.

``../shared/data`` holds 8,449 genuine CIFAR-10 train images (``cifar10/train_extended.npz``) and all
50,000 as JPEG re-encodings (``cifar10_jpeg/train_jpeg.npz``: lossy, about 5.8 grey levels off per
value). The mix takes the genuine image for every official index that has one and the decoded JPEG
otherwise, so it is for *training at scale* only. The validation rows -- the genuine rows that
:func:`arnas_zoo.data.evaluation_data` reports on (the last :data:`VALIDATION_ROWS` rows of
``cifar10/train.npz``) -- are put last, so the usual "hold out the last 1000 rows" rule of training keeps
exactly them out, and no JPEG copy of a validation image is trained on.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from arnas_zoo.data.base import ImageData, dataset_info, describe_indices
from arnas_zoo.errors import DataError, DataNotFoundError

JPEG_FILE = Path("cifar10_jpeg") / "train_jpeg.npz"
GENUINE_FILE = Path("cifar10") / "train_extended.npz"
VALIDATION_SOURCE = Path("cifar10") / "train.npz"


def decode_jpegs(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x uint8 NHWC, y, idx)`` of a ``train_jpeg.npz`` (``jpeg`` bytes cut at ``offsets``), decoded by Pillow."""
    from PIL import Image

    with np.load(path, allow_pickle=False) as f:
        blob, offsets, y, idx = f["jpeg"], f["offsets"], f["y"], f["idx"]
    if offsets.shape != (len(y) + 1,) or idx.shape != y.shape or int(offsets[-1]) != blob.size:
        raise DataError(f"{path}: expected offsets of N+1 entries ending at len(jpeg), and one y/idx per image")
    x = np.empty((len(y), 32, 32, 3), dtype=np.uint8)
    for i in range(len(y)):
        with Image.open(io.BytesIO(blob[offsets[i] : offsets[i + 1]].tobytes())) as image:
            pixels = np.asarray(image.convert("RGB"))
        if pixels.shape != (32, 32, 3):
            raise DataError(f"{path}: image {i} decodes to shape {pixels.shape}, expected (32, 32, 3)")
        x[i] = pixels
    return x, y.astype(np.int64), idx.astype(np.int64)


def _read_genuine(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return f["x"], f["y"].astype(np.int64), f["idx"].astype(np.int64)


def load_cifar10_mix(root: Path, validation_rows: int, selection_rows: int = 0) -> ImageData:
    """The mix under ``root`` (a ``../shared/data`` folder), validation rows last; see the module docstring.

    With ``selection_rows`` the last that many genuine rows of ``train_extended`` that are not
    validation rows come just before the validation rows (a *selection* split of genuine images for
    epoch choice and early stopping, disjoint from the reporting rows); 0 keeps the historical order.
    """
    needed = [root / JPEG_FILE, root / GENUINE_FILE, root / VALIDATION_SOURCE]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise DataNotFoundError(f"cifar10 train_mix: needs {', '.join(map(str, needed))}; missing {missing}")
    x, y, idx = decode_jpegs(root / JPEG_FILE)
    total = len(y)  # 50,000 in ../shared/data
    if not np.array_equal(idx, np.arange(total)):
        raise DataError(f"{root / JPEG_FILE}: expected row i to be official image i")
    gx, gy, gidx = _read_genuine(root / GENUINE_FILE)
    if not np.array_equal(y[gidx], gy):
        raise DataError(f"{root / GENUINE_FILE}: labels disagree with {root / JPEG_FILE} at the same official index")
    x[gidx] = gx
    with np.load(root / VALIDATION_SOURCE, allow_pickle=False) as f:
        val = f["idx"].astype(np.int64)[-validation_rows:]
    if not np.isin(val, gidx).all():
        raise DataError(f"{root / VALIDATION_SOURCE}: validation rows are not all genuine rows of {GENUINE_FILE}")
    outside = np.setdiff1d(gidx, val)  # sorted official indices of the genuine rows that are not validation rows
    selection = outside[len(outside) - selection_rows :] if 0 < selection_rows else outside[:0]
    if selection_rows < 0 or len(selection) != selection_rows:
        raise DataError(f"{root / GENUINE_FILE}: fewer than {selection_rows} genuine rows outside the validation rows")
    held = np.concatenate([selection, val])
    order = np.concatenate([np.setdiff1d(np.arange(total), held), held])
    genuine = np.isin(order[: -len(held)], gidx).sum()
    jpeg = total - len(held) - genuine
    source = (
        f"CIFAR-10 mix: {jpeg:,} JPEG re-encoded ({JPEG_FILE}) + {genuine:,} genuine ({GENUINE_FILE}) train images, "
        + (
            f"then {selection_rows:,} genuine selection rows (official indices {describe_indices(selection)}), "
            if selection_rows
            else ""
        )
        + f"then {validation_rows:,} genuine validation rows last (official indices {describe_indices(val)}, "
        f"from {VALIDATION_SOURCE}); JPEG copies of held-out images excluded"
    )
    info = dataset_info("cifar10")
    return ImageData(
        x=torch.from_numpy(x[order]).permute(0, 3, 1, 2).float().div_(255.0).contiguous(),
        y=torch.from_numpy(y[order]),
        name="cifar10",
        split="train_mix" if not selection_rows else f"train_mix(selection={selection_rows})",
        indices=torch.from_numpy(order),
        num_classes=info.num_classes,
        class_names=info.class_names,
        source=source,
    )
