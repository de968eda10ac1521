"""Checks of image batches at the boundaries: float NCHW in [0, 1], integer labels in range.

Every entry point that takes images from a user (attacks, evaluation, data loaders, ONNX models)
calls these, so that a normalized batch, a uint8 batch or a batch of 0/1 images scaled as uint8 is
refused (or flagged) with a message that says what to do, instead of producing a wrong figure.
"""

from __future__ import annotations

import torch

from arnas_zoo.errors import ConfigError, InputRangeError

# Images decoded from uint8 are exact, but some pipelines leave float noise of one ulp around 0 and 1.
RANGE_TOLERANCE = 1e-6


def check_images(x: torch.Tensor, what: str = "x") -> None:
    """Raise :class:`InputRangeError` unless ``x`` is a float NCHW batch with values in [0, 1]."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = f"{x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputRangeError(
            f"{what}: expected a float tensor of images in [0, 1], got {got}; divide uint8 images by 255"
        )
    if x.ndim != 4:
        raise InputRangeError(f"{what}: expected an NCHW batch (4 dimensions), got shape {tuple(x.shape)}")
    if x.numel() == 0:
        return
    low, high = torch.aminmax(x.detach())
    low_f, high_f = float(low), float(high)  # one host sync per call, never per attack step
    if not (low_f >= -RANGE_TOLERANCE and high_f <= 1 + RANGE_TOLERANCE):
        raise InputRangeError(
            f"{what}: expected values in [0, 1], got min {low_f:.4g} and max {high_f:.4g}; pass unnormalized "
            "images (arnas-zoo models normalize inside)"
        )


def check_labels(y: torch.Tensor, n: int, num_classes: int | None = None, what: str = "y") -> None:
    """Raise :class:`ConfigError` unless ``y`` holds ``n`` integer labels in ``0..num_classes-1``."""
    if not isinstance(y, torch.Tensor) or y.shape != (n,) or y.dtype not in (torch.int64, torch.int32):
        got = f"{y.dtype} of shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise ConfigError(f"{what}: expected {n} integer labels, got {got}")
    if num_classes is not None and n:
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= num_classes:
            raise ConfigError(
                f"{what}: labels must lie in 0..{num_classes - 1} (the model's classes), got {low}..{high}"
            )
