"""The pretrained registry: spec validation, duplicates, close matches, spec lines, MODEL_CARD.md sync."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from arnas_zoo import create_model
from arnas_zoo.checkpoint import save_folder, sha256_file
from arnas_zoo.errors import ConfigError, DuplicateNameError, UnknownModelError
from arnas_zoo.pretrained import (
    PretrainedSpec,
    get_pretrained,
    list_pretrained,
    register,
    spec_line,
    unregister,
)

REPO = Path(__file__).resolve().parents[1]
SHA = "a" * 64


def _spec(**overrides: object) -> PretrainedSpec:
    fields: dict[str, object] = dict(
        name="arnas.test_linf",
        arch="arnas",
        sha256=SHA,
        dataset="mnist",
        threat_model="linf",
        eps=0.3,
        description="test entry",
        folder="arnas.test_linf",
    )
    fields.update(overrides)
    return PretrainedSpec(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "NoDot"}, "name"),
        ({"sha256": "abc"}, "sha256"),
        ({"threat_model": "linfinity"}, "threat_model"),
        ({"eps": -1.0}, "eps"),
        ({"repo_id": "org/name"}, "exactly one source"),
        ({"folder": None}, "exactly one source"),
        ({"folder": None, "repo_id": "org/name", "revision": "main"}, "40-hex commit"),
        ({"folder": None, "repo_id": "not a repo", "revision": "b" * 40}, "repo_id"),
        ({"revision": "b" * 40}, "revision only applies"),
    ],
)
def test_spec_validation(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _spec(**overrides)


def test_hub_spec_is_pinned() -> None:
    spec = _spec(folder=None, repo_id="org/name", revision="c" * 40)
    assert spec.source == f"org/name@{'c' * 40}"
    with pytest.raises(ConfigError, match="not a bundled folder"):
        spec.bundled_path()


def test_register_duplicate_raises_and_unknown_suggests() -> None:
    spec = register(_spec())
    try:
        assert get_pretrained("ARNAS.test_linf") is spec  # names are case-insensitive
        with pytest.raises(DuplicateNameError, match="already registered"):
            register(_spec(description="another"))
        with pytest.raises(UnknownModelError, match="did you mean arnas.test_linf"):
            get_pretrained("arnas.tset_linf")
        assert spec in list(list_pretrained())
    finally:
        unregister(spec.name)
    with pytest.raises(UnknownModelError):
        get_pretrained(spec.name)


def test_spec_line_round_trips(tmp_path: Path) -> None:
    model = create_model("arnas", in_channels=1, input_size=28, init_channels=4, layers=5, threat_model="linf", eps=0.3)
    folder = save_folder(model, tmp_path / "ck", metrics={"data": {"dataset": "mnist", "split": "test", "n": 10}})
    line = spec_line(folder, "arnas.mnist_linf", description="tiny")
    assert sha256_file(folder / "model.safetensors") in line
    # The printed line is valid Python that rebuilds the same spec.
    match = re.fullmatch(r"register\((PretrainedSpec\(.*\))\)", line)
    assert match is not None
    spec = eval(match.group(1), {"PretrainedSpec": PretrainedSpec})  # noqa: S307 - our own output
    assert (spec.name, spec.dataset, spec.threat_model, spec.eps, spec.folder) == (
        "arnas.mnist_linf",
        "mnist",
        "linf",
        0.3,
        "arnas.mnist_linf",
    )
    hub_line = spec_line(folder, "arnas.mnist_linf", repo_id="org/arnas-mnist", revision="d" * 40)
    assert "repo_id='org/arnas-mnist'" in hub_line and "folder=" not in hub_line


def test_register_cli_prints_line(tmp_path: Path) -> None:
    from export.__main__ import main

    folder = save_folder(create_model("resnet18", init_channels=8), tmp_path / "ck")
    result = CliRunner().invoke(main, ["register", str(folder), "--name", "resnet18.cifar10_linf"])
    assert result.exit_code == 0, result.output
    assert sha256_file(folder / "model.safetensors") in result.output
    bad = CliRunner().invoke(main, ["register", str(folder), "--name", "Bad Name"])
    assert bad.exit_code == 2 and "error: pretrained 'Bad Name'" in bad.output


def test_model_card_matches_registry() -> None:
    """MODEL_CARD.md is generated from the registry: regenerate it (python -m export zoo-card) on drift."""
    from export.card import render_zoo_card

    assert (REPO / "MODEL_CARD.md").read_text() == render_zoo_card(list(list_pretrained()))


def test_zoo_card_lists_entries_and_their_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from arnas_zoo import pretrained
    from export import card

    model = create_model("resnet18", init_channels=8, threat_model="linf", eps=8 / 255)
    folder = save_folder(
        model,
        tmp_path / "resnet18.cifar10_linf",
        metrics={"attacks": [{"name": "pgd-20", "eps": 0.0314, "norm": "linf", "steps": 20, "robust_accuracy": 0.4}]},
    )
    monkeypatch.setattr(pretrained, "bundled_root", lambda: tmp_path)
    digest = sha256_file(folder / "model.safetensors")
    spec = _spec(name="resnet18.cifar10_linf", arch="resnet18", folder=folder.name, sha256=digest)
    text = card.render_zoo_card([spec])
    assert "| `resnet18.cifar10_linf` | resnet18 | mnist | linf |" in text
    assert "pgd-20 40.00% (eps=0.0314, norm=linf, steps=20)" in text
    assert "No pretrained weights are registered yet" not in text
