"""Where data lives and how a split is loaded: :func:`load_dataset`, the validation rule, :func:`evaluation_data`."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import torch

from arnas_zoo.data.base import DATASETS, ImageData, canonical_name
from arnas_zoo.data.readers import _load_digits, _load_tinyimagenet, _load_torchvision, load_npz
from arnas_zoo.errors import ConfigError, DataNotFoundError


def shared_data_dir() -> Path | None:
    """``$ARNAS_ZOO_SHARED_DATA``, else ``shared/data`` beside the checkout, if it exists."""
    env = os.environ.get("ARNAS_ZOO_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[3] / "shared" / "data")
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


def data_files(name: str, split: str = "test", data_dir: str | Path | None = None) -> list[Path]:
    """The files :func:`load_dataset` would read for ``split`` of ``name`` (npz files, the CIFAR-10 mix's
    three), so that a result computed from them can be keyed by their content; ``[]`` for the embedded
    digits and for torchvision folders (many files, not digested)."""
    if name.lower().endswith(".npz"):
        return [Path(name)]
    key = canonical_name(name)
    if key == "digits":
        return []
    roots = [Path(data_dir)] if data_dir is not None else [default_data_dir()]
    if data_dir is None and (shared := shared_data_dir()) is not None:
        roots.append(shared)
    split = split.strip().lower()
    for root in roots:
        if key == "cifar10" and split == "train_mix":
            from arnas_zoo.data.mix import GENUINE_FILE, JPEG_FILE, VALIDATION_SOURCE

            files = [root / JPEG_FILE, root / GENUINE_FILE, root / VALIDATION_SOURCE]
            if files[0].is_file():
                return files
        elif (root / key / f"{split}.npz").is_file():
            return [root / key / f"{split}.npz"]
    return []


def load_dataset(
    name: str,
    split: str = "test",
    data_dir: str | Path | None = None,
    n: int | None = None,
    device: str | torch.device = "cpu",
    download: bool = False,
    selection_rows: int = 0,
) -> ImageData:
    """Load ``split`` of dataset ``name`` as an :class:`ImageData` on ``device``; ``n`` keeps the first n rows.

    ``selection_rows`` (CIFAR-10 ``train_mix`` only) puts that many genuine rows just before the
    validation rows (:func:`arnas_zoo.data.mix.load_cifar10_mix`); every other split is genuine
    throughout, so its selection rows are simply the rows before the validation rows.

    ``name`` is one of ``digits`` (embedded), ``mnist``, ``cifar10``, ``cifar100``, ``svhn``,
    ``tinyimagenet``. Beyond ``train``/``test``, MNIST has ``train_full`` (all 60,000 train images of
    ``../shared/data``) and CIFAR-10 ``train_extended`` (8,449 genuine images) and ``train_mix`` (all
    50,000, JPEG re-encodings where no genuine image exists; :mod:`arnas_zoo.data.mix`). ``data_dir``
    defaults to :func:`default_data_dir`; when it is not given, the shared npz folder
    (:func:`shared_data_dir`) is searched as well. Missing data raises :class:`DataNotFoundError`
    naming every place searched and how to fetch the data.
    """
    key = canonical_name(name)
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
    if key == "cifar10" and split == "train_mix":
        from arnas_zoo.data.mix import load_cifar10_mix

        for root in roots:
            if (root / "cifar10_jpeg").is_dir():
                return load_cifar10_mix(root, VALIDATION_ROWS, selection_rows).first(n).to(device)
        raise DataNotFoundError(
            f"cifar10 train_mix: no cifar10_jpeg/train_jpeg.npz under {', '.join(map(str, roots))} "
            "(the mix is built from ../shared/data's JPEG and genuine CIFAR-10 files)"
        )
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
