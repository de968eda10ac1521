"""Datasets: embedded digits, the shared npz files, torchvision's on-disk MNIST format, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from arnas_zoo.data import (
    DIGITS_TRAIN_SIZE,
    ImageData,
    dataset_info,
    describe_indices,
    evaluation_data,
    load_dataset,
    load_npz,
    shared_data_dir,
    split_train_val,
)
from arnas_zoo.errors import ConfigError, DataError, DataNotFoundError


def test_digits_is_embedded_deterministic_and_split_disjoint() -> None:
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    assert train.x.shape == (DIGITS_TRAIN_SIZE, 1, 16, 16) and test.x.shape == (1797 - DIGITS_TRAIN_SIZE, 1, 16, 16)
    assert train.x.dtype == torch.float32 and float(train.x.min()) == 0.0 and float(train.x.max()) == 1.0
    assert set(train.indices.tolist()).isdisjoint(test.indices.tolist())
    assert test.indices[0] == DIGITS_TRAIN_SIZE
    # the 2x2 pixel repetition is exact: every 2x2 block is constant
    assert torch.equal(train.x[:, :, ::2, ::2], train.x[:, :, 1::2, 1::2])
    again = load_dataset("digits", "test", n=10)
    assert torch.equal(again.x, test.x[:10]) and torch.equal(again.y, test.y[:10])
    assert set(test.y.tolist()) == set(range(10))


def test_dataset_info_matches_loaded_data() -> None:
    for name in ("digits",):
        info = dataset_info(name)
        data = load_dataset(name)
        assert data.shape == (info.in_channels, info.input_size, info.input_size)
        assert data.num_classes == info.num_classes
        # the documented digits statistics are the train split's
        train = load_dataset(name, "train")
        assert abs(train.x.mean().item() - info.mean[0]) < 1e-3 and abs(train.x.std().item() - info.std[0]) < 1e-3
    assert dataset_info("CIFAR-10").num_classes == 10 and dataset_info("tiny-imagenet").input_size == 64
    with pytest.raises(ConfigError, match="unknown dataset"):
        dataset_info("imagenet21k")


def test_first_subset_and_describe() -> None:
    data = load_dataset("digits", "test")
    head = data.first(5)
    assert len(head) == 5 and head.describe()["indices"] == f"{DIGITS_TRAIN_SIZE}-{DIGITS_TRAIN_SIZE + 4}"
    assert data.first(None) is data and len(data.first(10**6)) == len(data)
    with pytest.raises(ConfigError):
        data.first(0)
    assert describe_indices(np.array([0, 1, 2, 10, 11, 20])) == "0-2, 10-11, 20"
    batches = list(data.first(10).batches(4))
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    assert data.to("cpu").x.device.type == "cpu"


def test_split_train_val_carves_last_rows() -> None:
    data = load_dataset("digits", "train")
    train, val = split_train_val(data, 300)
    assert len(train) == 1200 and len(val) == 300
    assert torch.equal(val.x, data.x[-300:]) and torch.equal(val.indices, data.indices[-300:])
    assert val.split == "train[1200:1500]" and train.split == "train[0:1200]"
    with pytest.raises(ConfigError):
        split_train_val(data, len(data))


def test_shared_npz_files(shared_data: Path) -> None:
    mnist = load_dataset("mnist", "test", data_dir=shared_data, n=64)
    assert mnist.x.shape == (64, 1, 28, 28) and mnist.indices.tolist() == list(range(64))
    raw = np.load(shared_data / "mnist" / "test.npz")
    assert torch.equal(mnist.x[3, 0], torch.from_numpy(raw["x"][3, :, :, 0]).float() / 255)
    assert torch.equal(mnist.y, torch.from_numpy(raw["y"][:64]))
    cifar = load_dataset("cifar10", "train", data_dir=shared_data)
    assert cifar.x.shape[1:] == (3, 32, 32) and cifar.class_names[0] == "airplane"
    # the file is the head of each official batch: its indices jump at the batch boundaries
    assert cifar.indices[0] == 0 and int(cifar.indices.max()) >= 40000
    _, val = split_train_val(cifar, 1000)
    assert val.describe()["n"] == 1000
    assert shared_data_dir() is not None


def test_load_npz_roundtrip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(7, 5, 5, 3), dtype=np.uint8)
    y = rng.integers(0, 4, size=7)
    (tmp_path / "mine").mkdir()
    np.savez(tmp_path / "mine" / "test.npz", x=x, y=y, idx=np.arange(100, 107))
    data = load_npz(tmp_path / "mine" / "test.npz")
    assert data.name == "mine" and data.split == "test" and data.num_classes == 4
    assert torch.allclose(data.x.permute(0, 2, 3, 1) * 255, torch.from_numpy(x).float())
    assert data.indices.tolist() == list(range(100, 107))


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Write the MNIST idx format (big-endian magic, dims, then uint8 data)."""
    magic = {1: 2049, 3: 2051}[array.ndim]
    header = np.array([magic, *array.shape], dtype=">i4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_torchvision_mnist_format(tmp_path: Path, shared_data: Path) -> None:
    raw = np.load(shared_data / "mnist" / "test.npz")
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    images, labels = raw["x"][:20, :, :, 0], raw["y"][:20]
    for prefix in ("train", "t10k"):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
    data = load_dataset("mnist", "test", data_dir=tmp_path, n=12)
    assert data.x.shape == (12, 1, 28, 28)
    assert torch.equal(data.x[:, 0] * 255, torch.from_numpy(images[:12]).float())
    assert data.y.tolist() == labels[:12].tolist()


def test_missing_data_error_says_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("cifar100", "test", data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "cifar100" / "test.npz") in message and "--download" in message
    assert "\n" not in message
    with pytest.raises(ConfigError, match="unknown split"):
        load_dataset("cifar10", "validation")


def test_imagedata_validates_shapes() -> None:
    with pytest.raises(ConfigError):
        ImageData(
            x=torch.zeros(3, 1, 4, 4),
            y=torch.zeros(2, dtype=torch.long),
            name="t",
            split="s",
            indices=torch.arange(3),
            num_classes=2,
        )


def _write_fake_cifar_shared(root: Path, total: int = 40, genuine: tuple[int, ...] = tuple(range(0, 40, 3))) -> None:
    """A ../shared/data-like folder: ``total`` JPEG images and genuine copies of ``genuine``."""
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (total, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, total).astype(np.int64)
    blobs = []
    for image in x:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=90)
        blobs.append(np.frombuffer(buffer.getvalue(), dtype=np.uint8))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    (root / "cifar10_jpeg").mkdir(parents=True)
    (root / "cifar10").mkdir()
    np.savez(root / "cifar10_jpeg" / "train_jpeg.npz", jpeg=np.concatenate(blobs), offsets=offsets, y=y,
             idx=np.arange(total))  # fmt: skip
    g = np.array(genuine)
    np.savez(root / "cifar10" / "train_extended.npz", x=x[g], y=y[g], idx=g)
    np.savez(root / "cifar10" / "train.npz", x=x[g], y=y[g], idx=g)


def test_cifar10_mix_prefers_genuine_and_puts_validation_last(tmp_path: Path, monkeypatch: Any) -> None:
    from arnas_zoo.data import load
    from arnas_zoo.data.mix import load_cifar10_mix

    _write_fake_cifar_shared(tmp_path)
    mix = load_cifar10_mix(tmp_path, validation_rows=5)
    genuine = np.load(tmp_path / "cifar10" / "train_extended.npz")
    assert len(mix) == 40 and sorted(mix.indices.tolist()) == list(range(40))
    train, val = split_train_val(mix, 5)
    assert val.indices.tolist() == genuine["idx"][-5:].tolist()  # the genuine validation rows, last
    assert not set(train.indices.tolist()) & set(val.indices.tolist())  # no JPEG copy of a validation image
    for row in range(len(mix)):  # genuine pixels wherever a genuine image exists, bit for bit
        official = int(mix.indices[row])
        if official in genuine["idx"]:
            where = int(np.nonzero(genuine["idx"] == official)[0][0])
            assert torch.equal(mix.x[row], torch.from_numpy(genuine["x"][where]).permute(2, 0, 1).float() / 255)
    assert "26 JPEG re-encoded (" in mix.source and "+ 9 genuine (" in mix.source and mix.split == "train_mix"
    # through load_dataset, with the validation rule's 1000 rows scaled down
    monkeypatch.setattr(load, "VALIDATION_ROWS", 5)
    via_name = load_dataset("cifar10", "train_mix", data_dir=tmp_path)
    assert torch.equal(via_name.x, mix.x) and torch.equal(via_name.indices, mix.indices)


def test_cifar10_mix_refuses_inconsistent_files(tmp_path: Path) -> None:
    from arnas_zoo.data.mix import load_cifar10_mix

    _write_fake_cifar_shared(tmp_path)
    with np.load(tmp_path / "cifar10" / "train_extended.npz") as f:
        x, y, idx = f["x"], f["y"], f["idx"]
    np.savez(tmp_path / "cifar10" / "train_extended.npz", x=x, y=(y + 1) % 10, idx=idx)
    with pytest.raises(DataError, match="labels disagree"):
        load_cifar10_mix(tmp_path, validation_rows=5)
    with pytest.raises(DataNotFoundError, match="train_mix"):
        load_dataset("cifar10", "train_mix", data_dir=tmp_path / "nowhere")


def test_mnist_train_full(shared_data: Path) -> None:
    full = load_dataset("mnist", "train_full", data_dir=shared_data)
    head = load_dataset("mnist", "train", data_dir=shared_data)
    assert len(full) == 60_000 and full.indices.tolist() == list(range(60_000))
    assert torch.equal(full.x[: len(head)], head.x)  # the earlier file is the head of the full one


@pytest.mark.slow
def test_cifar10_mix_of_the_shared_files(shared_data: Path) -> None:
    mix = load_dataset("cifar10", "train_mix", data_dir=shared_data)
    _, val = split_train_val(mix, 1000)
    genuine_val = evaluation_data("cifar10", data_dir=shared_data)  # the rows every CIFAR-10 figure uses
    assert torch.equal(val.x, genuine_val.x) and torch.equal(val.indices, genuine_val.indices)
    assert "41,551 JPEG re-encoded (" in mix.source and "+ 7,449 genuine (" in mix.source
