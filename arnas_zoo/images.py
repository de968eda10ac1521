"""Reading images for inference: PNG/JPEG files and npz batches, as [0, 1] float NCHW tensors.

npz batches use the project's data format (``x`` uint8 NHWC, optional ``y`` labels, see
``../shared/data/README.md``); float ``x`` in [0, 1] and NCHW layouts are accepted too.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from arnas_zoo.errors import DataError, DataNotFoundError, InputRangeError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _to_nchw(x: np.ndarray, channels: int | None, where: str) -> np.ndarray:
    if x.ndim == 3:  # (N, H, W) grey images
        x = x[:, None]
    if x.ndim != 4:
        raise InputRangeError(f"{where}: expected images (N, H, W, C) or (N, C, H, W), got shape {x.shape}")
    # NHWC when the last axis looks like channels and the second does not.
    if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if channels is not None and x.shape[1] != channels:
        raise InputRangeError(f"{where}: expected {channels} channel(s), got {x.shape[1]} (shape {x.shape})")
    return x


def _scale(x: np.ndarray, where: str) -> np.ndarray:
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    if np.issubdtype(x.dtype, np.floating):
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if lo < 0.0 or hi > 1.0:
            raise InputRangeError(f"{where}: float images must lie in [0, 1], got [{lo:.3g}, {hi:.3g}]")
        return x.astype(np.float32)
    raise InputRangeError(f"{where}: expected uint8 (0..255) or float [0, 1] pixels, got dtype {x.dtype}")


def read_npz_batch(
    path: str | os.PathLike[str], channels: int | None = None, n: int | None = None, offset: int = 0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images ``x`` (and labels ``y`` when present) of an npz file, rows ``offset:offset+n``."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no such npz file")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "x" not in data.files:
                raise InputRangeError(f"{path}: expected an array 'x' of images, found {data.files[:10]}")
            stop = None if n is None else offset + n
            x = data["x"][offset:stop]
            y = data["y"][offset:stop] if "y" in data.files else None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        if isinstance(exc, InputRangeError):
            raise
        raise DataError(f"{path}: not a readable npz file ({type(exc).__name__}); expected arrays x (and y)") from None
    x = _scale(_to_nchw(x, channels, str(path)), str(path))
    labels = torch.from_numpy(np.asarray(y, dtype=np.int64)) if y is not None else None
    return torch.from_numpy(np.ascontiguousarray(x)), labels


def read_image_file(path: str | os.PathLike[str], channels: int = 3, size: int | None = None) -> torch.Tensor:
    """One PNG/JPEG file as a (1, C, H, W) [0, 1] tensor, converted to ``channels`` (1 = grey).

    ``size`` resizes (bilinear) to ``size`` x ``size`` when the file has another size.
    """
    from PIL import Image  # pillow comes with torchvision

    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no such image file")
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            if size is not None and image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # UnidentifiedImageError is an OSError
        raise DataError(f"{path}: not a readable image ({type(exc).__name__}); expected a PNG or JPEG file") from None
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)


def read_images(
    paths: Sequence[str | os.PathLike[str]], channels: int = 3, size: int | None = None
) -> tuple[torch.Tensor, list[str]]:
    """Images of several files (PNG/JPEG one each, npz a batch) stacked; with one label per row.

    The labels name where each row came from (``file.png`` or ``batch.npz[3]``).
    """
    tensors: list[torch.Tensor] = []
    names: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.suffix.lower() == ".npz":
            x, _ = read_npz_batch(path, channels=channels)
            if size is not None and x.shape[-1] != size:
                raise InputRangeError(f"{path}: expected {size}x{size} images, got {tuple(x.shape[-2:])}")
            tensors.append(x)
            names.extend(f"{path.name}[{i}]" for i in range(len(x)))
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            tensors.append(read_image_file(path, channels=channels, size=size))
            names.append(path.name)
        else:
            raise InputRangeError(f"{path}: expected a PNG/JPEG image or an npz batch, got suffix {path.suffix!r}")
    if not tensors:
        raise InputRangeError("no images given")
    return torch.cat(tensors), names
