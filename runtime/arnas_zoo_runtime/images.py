"""Images for inference as numpy: PNG/JPEG files or bytes, npz batches, folders and globs (pillow, no torch)."""

from __future__ import annotations

import glob
import io
import os
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from arnas_zoo_runtime.session import InputError, RuntimeFault

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
#: Largest image (pixels) a file or upload may decode to: a decompression bomb is refused, not decoded.
MAX_PIXELS = 4096 * 4096


class ImageFileError(RuntimeFault, OSError):
    """A file that is missing or cannot be read as an image or an npz batch."""


def to_nchw(x: np.ndarray, channels: int | None, where: str) -> np.ndarray:
    """(N, H, W), (N, H, W, C) or (N, C, H, W) arrays as NCHW, ``channels`` checked when given."""
    if x.ndim == 3:  # (N, H, W) grey images
        x = x[:, None]
    if x.ndim != 4:
        raise InputError(f"{where}: expected images (N, H, W, C) or (N, C, H, W), got shape {x.shape}")
    # NHWC when the last axis looks like channels and the second does not.
    if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if channels is not None and x.shape[1] != channels:
        raise InputError(f"{where}: expected {channels} channel(s), got {x.shape[1]} (shape {x.shape})")
    return x


def scale(x: np.ndarray, where: str) -> np.ndarray:
    """uint8 0..255 or float [0, 1] pixels as float32 [0, 1]; anything else is an :class:`InputError`."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    if np.issubdtype(x.dtype, np.floating):
        if x.size and not np.isfinite(x).all():
            raise InputError(f"{where}: images contain NaN or infinite values")
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if lo < 0.0 or hi > 1.0:
            raise InputError(f"{where}: float images must lie in [0, 1], got [{lo:.3g}, {hi:.3g}]")
        return x.astype(np.float32)
    raise InputError(f"{where}: expected uint8 (0..255) or float [0, 1] pixels, got dtype {x.dtype}")


def npz_arrays(source: str | os.PathLike[str] | bytes, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    """``x`` (and ``y`` when present) of an npz file or npz bytes, as stored."""
    try:
        handle = io.BytesIO(source) if isinstance(source, bytes) else source
        with np.load(handle, allow_pickle=False) as data:
            if "x" not in data.files:
                raise InputError(f"{where}: expected an array 'x' of images, found {data.files[:10]}")
            return data["x"], (data["y"] if "y" in data.files else None)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        if isinstance(exc, InputError):
            raise
        raise ImageFileError(
            f"{where}: not a readable npz file ({type(exc).__name__}); expected arrays x (and y)"
        ) from None


def decode_image(
    source: str | os.PathLike[str] | bytes, channels: int = 3, size: int | None = None, where: str = ""
) -> np.ndarray:
    """One PNG/JPEG (path or bytes) as a (1, C, H, W) float32 [0, 1] array, converted to ``channels``
    (1 = grey) and resized (bilinear) to ``size`` x ``size`` when it has another size."""
    from PIL import Image

    where = where or str(source if not isinstance(source, bytes) else "upload")
    try:
        handle = io.BytesIO(source) if isinstance(source, bytes) else source
        with Image.open(handle) as image:
            if image.width * image.height > MAX_PIXELS:
                raise InputError(f"{where}: {image.width}x{image.height} pixels is above the limit of {MAX_PIXELS:,}")
            image = image.convert("L" if channels == 1 else "RGB")
            if size is not None and image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:  # UnidentifiedImageError: OSError
        if isinstance(exc, InputError):
            raise
        raise ImageFileError(
            f"{where}: not a readable image ({type(exc).__name__}); expected a PNG or JPEG file"
        ) from None
    if array.ndim == 2:
        array = array[:, :, None]
    return array.transpose(2, 0, 1)[None].astype(np.float32) / 255.0


def read_file(
    path: str | os.PathLike[str], channels: int | None = 3, size: int | None = None
) -> tuple[np.ndarray, list[str]]:
    """The images of one file (a PNG/JPEG gives one, an npz batch its rows) and a label per row."""
    path = Path(path)
    if not path.is_file():
        raise ImageFileError(f"{path}: no such file")
    if path.suffix.lower() == ".npz":
        x, _ = npz_arrays(path, str(path))
        x = scale(to_nchw(x, channels, str(path)), str(path))
        if size is not None and x.shape[-1] != size:
            raise InputError(f"{path}: expected {size}x{size} images, got {tuple(x.shape[-2:])}")
        return np.ascontiguousarray(x), [f"{path.name}[{i}]" for i in range(len(x))]
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return decode_image(path, channels or 3, size, str(path)), [path.name]
    raise InputError(f"{path}: expected a PNG/JPEG image or an npz batch, got suffix {path.suffix!r}")


def expand(specs: Sequence[str | os.PathLike[str]]) -> Iterator[Path]:
    """Files named by ``specs``: files as given, folders walked (sorted, images and npz files), globs
    expanded (``'photos/**/*.png'``). A spec that names nothing (a glob that matches nothing included) is
    yielded as is, so that its row says so."""
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (*IMAGE_SUFFIXES, ".npz"))
            yield from found
        elif not path.exists() and glob.has_magic(str(spec)):
            matched = [Path(p) for p in sorted(glob.glob(str(spec), recursive=True)) if Path(p).is_file()]
            yield from matched or [path]  # a glob that matches nothing becomes a "no such file" row
        else:
            yield path
