"""Untrusted input: oversized configs fail before allocating, local folders are checked, data files that
would evaluate silently wrong are refused, and fuzzed documents and command lines meet only typed errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import arnas_zoo
from arnas_zoo.checkpoint import save_folder
from arnas_zoo.cli import main
from arnas_zoo.config import ModelConfig
from arnas_zoo.errors import ArnasZooError, CheckpointError, ConfigError, DataError, GenotypeError
from arnas_zoo.genotype import Genotype
from arnas_zoo.models import build_model
from arnas_zoo.registry import get_config


@pytest.fixture()
def no_building(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a network would be built: the checks must come first."""
    from arnas_zoo.models import base

    def refuse(config: ModelConfig) -> None:
        raise AssertionError("a network was built before the config was checked")

    for family in list(base._FAMILIES.values()):
        monkeypatch.setitem(
            base._FAMILIES, family.arch, base.Family(family.arch, refuse, family.check, family.estimate_params)
        )


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"init_channels": 10**9}, "init_channels: 1000000000 exceeds the limit"),
        ({"num_classes": 10**12}, "num_classes"),
        ({"layers": 10**6}, "layers"),
        ({"input_size": 10**5}, "input_size"),
        ({"init_channels": 4000, "layers": 900}, "parameters exceed the ceiling"),
        ({"eps": "big"}, "eps"),
        ({"mean": (float("nan"),) * 3, "std": (1.0,) * 3}, "finite"),
    ],
)
def test_oversized_or_malformed_configs_fail_before_anything_is_allocated(changes, fragment, no_building) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=fragment):
        build_model(get_config("arnas").replace(**changes))


def test_huge_genotypes_and_deep_or_huge_json_are_typed_errors() -> None:
    node = [["skip_connect", 0], ["skip_connect", 1]]
    huge = {"space": "arnas", "cells": {"a": {"nodes": [node] * 10_000, "concat": [2]}}}
    with pytest.raises(GenotypeError, match="exceed the limit"):
        Genotype.from_dict(huge)
    with pytest.raises(GenotypeError, match="nested too deeply"):
        Genotype.from_json("[" * 100_000 + "]" * 100_000)
    with pytest.raises(GenotypeError, match="malformed JSON"):
        Genotype.from_json('{"space": ' + "9" * 5000 + "}")  # Python's int-size guard
    with pytest.raises(ConfigError, match="malformed JSON"):
        ModelConfig.from_json(b"\xff\xfe binary")


def test_every_published_genotype_builds_at_tiny_input_sizes() -> None:
    for name in ("arnas", "darts_v2", "robnet_large", "pdarts"):
        for size in (1, 2, 3):
            model = arnas_zoo.create_model(name, init_channels=4, layers=5, input_size=size).eval()
            assert model(torch.rand(1, 3, size, size)).shape == (1, 10)


def _tiny_folder(tmp_path: Path) -> Path:
    model = arnas_zoo.create_model("arnas", init_channels=4, layers=5, input_size=16, threat_model="linf", eps=0.1)
    return save_folder(model, tmp_path / "ck")


def test_local_folders_with_broken_weights_or_config_are_refused(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = _tiny_folder(tmp_path)
    weights = load_file(str(folder / "model.safetensors"))
    key = next(k for k, v in weights.items() if v.is_floating_point())
    for label, tensors, fragment in (
        ("nan", {**weights, key: weights[key].clone().fill_(float("nan"))}, "NaN or infinite"),
        ("float64", {**weights, key: weights[key].double()}, "wrong dtype"),
    ):
        bad = tmp_path / label
        bad.mkdir()
        (bad / "config.json").write_text((folder / "config.json").read_text())
        save_file(tensors, str(bad / "model.safetensors"))
        with pytest.raises(CheckpointError, match=fragment):
            arnas_zoo.load(str(bad))
    config = json.loads((folder / "config.json").read_text())
    for edit, fragment in (({"eps": "big"}, "eps"), ({"colour": "red"}, "unknown key"), ({"layers": 10**7}, "layers")):
        (folder / "config.json").write_text(json.dumps({**config, **edit}))
        with pytest.raises(CheckpointError, match=fragment):
            arnas_zoo.load(str(folder))
    (folder / "config.json").write_bytes(b"\x00\x01\x02 not json")
    with pytest.raises(CheckpointError, match="malformed JSON"):
        arnas_zoo.load(str(folder))


def test_data_files_that_would_evaluate_silently_wrong_are_refused(tmp_path: Path) -> None:
    from arnas_zoo.data import load_npz

    x = np.random.default_rng(0).integers(0, 2, (8, 28, 28, 1), dtype=np.uint8)  # [0, 1] images cast to uint8
    np.savez(tmp_path / "binary.npz", x=x, y=np.arange(8) % 10)
    with pytest.raises(DataError, match="values only in 0..1"):
        load_npz(tmp_path / "binary.npz", name="mnist")
    np.savez(tmp_path / "labels.npz", x=x * 255, y=np.arange(8) + 20)
    with pytest.raises(DataError, match="labels reach 27"):
        load_npz(tmp_path / "labels.npz", name="mnist")
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="not a readable npz"):
        load_npz(tmp_path / "corrupt.npz", name="mnist")


def test_evaluate_refuses_normalized_or_uint8_images_and_bad_labels() -> None:
    from arnas_zoo.data import ImageData
    from arnas_zoo.errors import InputRangeError
    from arnas_zoo.evaluate import evaluate

    model = arnas_zoo.create_model("resnet18", init_channels=4, in_channels=1, input_size=8).eval()
    good = ImageData(
        x=torch.rand(4, 1, 8, 8),
        y=torch.tensor([0, 1, 2, 3]),
        name="t",
        split="s",
        indices=torch.arange(4),
        num_classes=10,
    )
    with pytest.raises(InputRangeError, match="values in"):
        evaluate(model, good.__class__(**{**good.__dict__, "x": good.x * 255}), ["fgsm"], progress=False)
    with pytest.raises(InputRangeError, match="values in"):
        evaluate(model, good.__class__(**{**good.__dict__, "x": (good.x - 0.5) / 0.25}), ["fgsm"], progress=False)
    with pytest.raises(ConfigError, match="labels must lie in"):
        evaluate(model, good.__class__(**{**good.__dict__, "y": torch.tensor([0, 1, 2, 10])}), ["fgsm"], progress=False)


# ---- property-based fuzzing: only the project's typed errors --------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
#: ARNAS_ZOO_FUZZ_SCALE=N multiplies the number of fuzzed cases (the default run: 330 cases, a few seconds).
FUZZ_SCALE = max(1, int(os.environ.get("ARNAS_ZOO_FUZZ_SCALE", "1")))
VALID = get_config("arnas").to_dict()
GENOTYPE = VALID["genotype"]


def _mutate(document: dict, path: list[str], value: object) -> dict:
    out = json.loads(json.dumps(document))
    node = out
    for key in path[:-1]:
        node = node[key] if isinstance(node, dict) else node[int(key) % len(node)]
    if isinstance(node, dict):
        node[path[-1]] = value
    elif isinstance(node, list) and node:
        node[int(path[-1]) % len(node)] = value
    return out


genotype_paths = st.sampled_from(
    [
        ["space"],
        ["cells"],
        ["cells", "accurate"],
        ["cells", "accurate", "nodes"],
        ["cells", "accurate", "nodes", "0"],
        ["cells", "accurate", "concat"],
        ["name"],
        ["cells", "robust", "nodes", "1", "0"],
        ["extra"],
    ]
)
config_keys = st.sampled_from(sorted(VALID) + ["unknown"])


@settings(max_examples=150 * FUZZ_SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=genotype_paths, value=json_values)
def test_fuzzed_genotypes_raise_only_genotype_errors(path: list[str], value: object) -> None:
    try:
        Genotype.from_dict(_mutate(GENOTYPE, path, value))
    except GenotypeError:
        pass


@settings(max_examples=150 * FUZZ_SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=config_keys, value=json_values)
def test_fuzzed_configs_raise_only_config_errors_and_never_build_big(key: str, value: object) -> None:
    try:
        config = ModelConfig.from_dict(_mutate(VALID, [key], value))
        from arnas_zoo.models import check_config

        check_config(config)
    except ConfigError:
        pass


@settings(
    max_examples=30 * FUZZ_SCALE,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    args=st.lists(
        st.sampled_from(
            [
                "--device",
                "tpu",
                "cpu",
                "--eps",
                "1/0",
                "8/255",
                "-1",
                "--n",
                "0",
                "3",
                "--attacks",
                "pgd0",
                "fgsm",
                "deepfool",
                "--dataset",
                "nope",
                "digits",
                "--norm",
                "l3",
                "org/..",
                "org/name@../x",
                "resnet18",
                "--batch-size",
                "0",
                "--json",
                "/dev/full/x",
                "--set",
                "eps=1/0",
                "--model-set",
                "num_classes=10",
                "x" * 300,
            ]
        ),
        max_size=6,
    ),
    command=st.sampled_from(["eval", "info", "predict", "train", "check", "transfer", "draw"]),
)
def test_fuzzed_command_lines_print_one_line_not_a_traceback(command: str, args: list[str]) -> None:
    result = CliRunner().invoke(main, [command, *args])
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.output)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"escaped: {type(result.exception).__name__}: {result.exception}")


def test_typed_errors_subclass_builtins() -> None:
    for error in (ConfigError, GenotypeError, DataError, CheckpointError):
        assert issubclass(error, ArnasZooError)
    assert issubclass(ConfigError, ValueError) and issubclass(CheckpointError, RuntimeError)
