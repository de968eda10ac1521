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

from arnas_zoo.data.base import DATASETS, DIGITS_TRAIN_SIZE, DatasetInfo, ImageData, dataset_info, describe_indices
from arnas_zoo.data.load import (
    VALIDATION_ROWS,
    default_data_dir,
    evaluation_data,
    load_dataset,
    shared_data_dir,
    split_train_val,
)
from arnas_zoo.data.readers import load_npz

__all__ = [
    "DATASETS",
    "DIGITS_TRAIN_SIZE",
    "VALIDATION_ROWS",
    "DatasetInfo",
    "ImageData",
    "dataset_info",
    "default_data_dir",
    "describe_indices",
    "evaluation_data",
    "load_dataset",
    "load_npz",
    "shared_data_dir",
    "split_train_val",
]
