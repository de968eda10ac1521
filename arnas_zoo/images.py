"""Reading images for inference: PNG/JPEG files and npz batches, as [0, 1] float NCHW tensors.

npz batches use the project's data format (``x`` uint8 NHWC, optional ``y`` labels, see
``../shared/data/README.md``); float ``x`` in [0, 1] and NCHW layouts are accepted too. The decoding
is the torch-free runtime's (:mod:`arnas_zoo_runtime.images`); this module returns torch tensors and
the package's error classes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from arnas_zoo.errors import DataError, DataNotFoundError, InputRangeError
from arnas_zoo_runtime import images as _images
from arnas_zoo_runtime.images import IMAGE_SUFFIXES  # noqa: F401  (re-exported)
from arnas_zoo_runtime.session import InputError


@contextlib.contextmanager
def _our_errors() -> Iterator[None]:
    try:
        yield
    except InputError as exc:
        raise InputRangeError(str(exc)) from None
    except _images.ImageFileError as exc:
        raise DataError(str(exc)) from None


def read_npz_batch(
    path: str | os.PathLike[str], channels: int | None = None, n: int | None = None, offset: int = 0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images ``x`` (and labels ``y`` when present) of an npz file, rows ``offset:offset+n``."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no such npz file")
    with _our_errors():
        x, y = _images.npz_arrays(path, str(path))
        stop = None if n is None else offset + n
        x, y = x[offset:stop], (None if y is None else y[offset:stop])
        x = _images.scale(_images.to_nchw(x, channels, str(path)), str(path))
    labels = torch.from_numpy(np.asarray(y, dtype=np.int64)) if y is not None else None
    return torch.from_numpy(np.ascontiguousarray(x)), labels


def read_image_file(path: str | os.PathLike[str], channels: int = 3, size: int | None = None) -> torch.Tensor:
    """One PNG/JPEG file as a (1, C, H, W) [0, 1] tensor, converted to ``channels`` (1 = grey).

    ``size`` resizes (bilinear) to ``size`` x ``size`` when the file has another size.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no such image file")
    with _our_errors():
        return torch.from_numpy(_images.decode_image(path, channels, size, str(path)))


def read_images(
    paths: Sequence[str | os.PathLike[str]], channels: int = 3, size: int | None = None
) -> tuple[torch.Tensor, list[str]]:
    """Images of several files (PNG/JPEG one each, npz a batch) stacked; with one label per row.

    The labels name where each row came from (``file.png`` or ``batch.npz[3]``).
    """
    arrays: list[np.ndarray] = []
    names: list[str] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise DataNotFoundError(f"{path}: no such file")
        with _our_errors():
            x, labels = _images.read_file(path, channels=channels, size=size)
        arrays.append(x)
        names.extend(labels)
    if not arrays:
        raise InputRangeError("no images given")
    return torch.from_numpy(np.concatenate(arrays)), names
