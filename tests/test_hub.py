"""arnas_zoo.load without a server: local folders, bundled registry entries, typed one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import arnas_zoo
from arnas_zoo import create_model
from arnas_zoo.checkpoint import save_folder, sha256_file
from arnas_zoo.errors import CheckpointError, ConfigError, UnknownModelError
from arnas_zoo.pretrained import PretrainedSpec, register, unregister
from arnas_zoo.sources import parse_hub_id, resolve


def _tiny(**kw: object) -> torch.nn.Module:
    return create_model("arnas", init_channels=4, layers=5, input_size=16, **kw)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    return save_folder(_tiny(), tmp_path / "ck", metrics={"clean": {"accuracy": 0.5, "n": 10}})


def test_load_folder_eval_mode_with_config_and_metrics(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = arnas_zoo.checkpoint.load_folder(folder)
    model = arnas_zoo.load(str(folder))
    assert not model.training and model.config == reference.config
    assert model.metrics == {"clean": {"accuracy": 0.5, "n": 10}}
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(model(x), reference(x))
    monkeypatch.chdir(folder.parent)
    assert arnas_zoo.load("./ck").config == reference.config  # relative ./ form
    assert arnas_zoo.load(folder).config == reference.config  # PathLike


def test_load_folder_errors(tmp_path: Path, folder: Path) -> None:
    with pytest.raises(CheckpointError, match="no such folder"):
        arnas_zoo.load(str(tmp_path / "missing") + "/")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        arnas_zoo.load(str(empty))
    with pytest.raises(ConfigError, match="does not apply to the local path"):
        arnas_zoo.load(str(folder), revision="v1")
    # weights that do not fit: a config with more channels than the saved weights
    config = json.loads((folder / "config.json").read_text())
    config["init_channels"] = 8
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="weights do not fit the config"):
        arnas_zoo.load(str(folder))


def test_unknown_names_are_typed_with_close_matches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from arnas_zoo import pretrained

    monkeypatch.setattr(pretrained, "bundled_root", lambda: tmp_path)
    spec = register(
        PretrainedSpec(
            name="arnas.tiny_linf",
            arch="arnas",
            sha256="0" * 64,
            dataset="mnist",
            threat_model="linf",
            eps=0.3,
            description="t",
            folder="x",
        )
    )
    try:
        with pytest.raises(UnknownModelError, match="did you mean arnas.tiny_linf") as info:
            arnas_zoo.load("arnas.tiny_lnf")
        assert "\n" not in str(info.value)
        with pytest.raises(
            UnknownModelError, match=r"architecture, not a pretrained model \(pretrained: [^)]*\barnas\.tiny_linf\)"
        ):
            arnas_zoo.load("arnas")
        with pytest.raises(UnknownModelError, match="create_model"):
            arnas_zoo.load("darts_v2")
        with pytest.raises(CheckpointError, match="missing from this installation"):
            arnas_zoo.load("arnas.tiny_linf")
        with pytest.raises(ConfigError, match="pinned by the registry"):
            arnas_zoo.load("arnas.tiny_linf", revision="v2")
    finally:
        unregister(spec.name)
    assert isinstance(UnknownModelError("x"), KeyError)  # catchable without knowing this package


def test_bundled_entry_checks_sha256(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from arnas_zoo import pretrained

    folder = save_folder(_tiny(threat_model="linf", eps=8 / 255), tmp_path / "arnas.tiny_linf")
    monkeypatch.setattr(pretrained, "bundled_root", lambda: tmp_path)
    good = PretrainedSpec(
        name="arnas.tiny_linf",
        arch="arnas",
        sha256=sha256_file(folder / "model.safetensors"),
        dataset="cifar10",
        threat_model="linf",
        eps=8 / 255,
        description="t",
        folder=folder.name,
    )
    register(good)
    try:
        model = arnas_zoo.load("arnas.tiny_linf")
        assert not model.training and model.pretrained is good and model.config.eps == pytest.approx(8 / 255)
        assert resolve("arnas.tiny_linf").describe()["kind"] == "pretrained"
    finally:
        unregister(good.name)
    register(
        PretrainedSpec(
            name="arnas.tiny_linf",
            arch="arnas",
            sha256="f" * 64,
            dataset="cifar10",
            threat_model="linf",
            eps=8 / 255,
            description="t",
            folder=folder.name,
        )
    )
    try:
        with pytest.raises(CheckpointError, match="does not match the pinned"):
            arnas_zoo.load("arnas.tiny_linf")
    finally:
        unregister("arnas.tiny_linf")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("org/name", ("org/name", None)),
        ("org/name@v1.0", ("org/name", "v1.0")),
        ("my-org/arnas.mnist@" + "a" * 40, ("my-org/arnas.mnist", "a" * 40)),
        ("arnas.mnist_linf", None),
        ("./folder", None),
        ("org/name/extra", None),
    ],
)
def test_parse_hub_id(spec: str, expected: tuple[str, str | None] | None) -> None:
    assert parse_hub_id(spec) == expected


def test_revision_conflict_is_rejected_before_any_download() -> None:
    with pytest.raises(ConfigError, match="two revisions"):
        arnas_zoo.load("org/name@v1", revision="v2")


def test_eval_resolves_through_the_one_resolver(folder: Path) -> None:
    """`arnas-zoo eval` loads folders/Hub ids/pretrained names through sources.resolve, like load()."""
    from arnas_zoo.cli.evaluation import load_for_eval

    resolved = load_for_eval(str(folder), "cpu", None)
    assert resolved.trained and resolved.kind == "folder" and resolved.location == str(folder)
    assert resolved.model.metrics == arnas_zoo.load(str(folder)).metrics
    random = load_for_eval("resnet18", "cpu", "digits")
    assert not random.trained and random.kind == "arch"
    with pytest.raises(UnknownModelError, match="did you mean resnet18"):
        load_for_eval("resnet81", "cpu", None)


@pytest.mark.parametrize(
    "spec",
    [
        "org/..",
        "../../evil/x@main",
        "org/name@../../evilref",
        "org/name@refs/../../x",
        "org/name@" + "a" * 300,
        "org/na..me",
        "org/name@a\\b",
        "org//name",
    ],
)
def test_hub_ids_and_revisions_are_validated_before_any_cache_access(
    spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises((ConfigError, UnknownModelError, CheckpointError)):  # a "../" spec is a (missing) folder
        arnas_zoo.load(spec)
    assert not (tmp_path / "cache").exists()


def test_pins_cover_config_and_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry name means these exact files: an edited config.json or metrics.json is refused."""
    from arnas_zoo import pretrained

    folder = save_folder(_tiny(threat_model="linf", eps=0.3), tmp_path / "arnas.pinned_linf", metrics={"a": 1})
    monkeypatch.setattr(pretrained, "bundled_root", lambda: tmp_path)
    entry = pretrained.index_entry(folder, "arnas.pinned_linf", description="t")
    assert set(entry.pins()) == {"config.json", "model.safetensors", "metrics.json"}
    register(entry)
    try:
        assert arnas_zoo.load("arnas.pinned_linf").config.eps == 0.3
        config = json.loads((folder / "config.json").read_text())
        config["eps"] = 0.9
        (folder / "config.json").write_text(json.dumps(config))
        with pytest.raises(CheckpointError, match="config.json: sha256 .* does not match the pinned"):
            arnas_zoo.load("arnas.pinned_linf")
        assert arnas_zoo.load(str(folder)).config.eps == 0.9  # by path it is the user's own folder
    finally:
        unregister(entry.name)
