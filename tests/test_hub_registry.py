"""The pretrained registry: entry validation, duplicates, close matches, index entries, MODEL_CARD.md sync."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from arnas_zoo import create_model
from arnas_zoo.checkpoint import save_folder, sha256_file
from arnas_zoo.errors import ConfigError, DuplicateNameError, UnknownModelError
from arnas_zoo.figures import wilson_interval
from arnas_zoo.pretrained import (
    PretrainedSpec,
    get_pretrained,
    index_entry,
    list_pretrained,
    read_index,
    register,
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
        ({"folder": None, "repo_id": "not a repo", "revision": "b" * 40}, "repo id"),
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


def test_index_entry_round_trips(tmp_path: Path) -> None:
    model = create_model("arnas", in_channels=1, input_size=28, init_channels=4, layers=5, threat_model="linf", eps=0.3)
    folder = save_folder(model, tmp_path / "ck", metrics={"data": {"dataset": "mnist", "split": "test", "n": 10}})
    entry = index_entry(folder, "arnas.mnist_linf", description="tiny")
    assert entry.sha256 == sha256_file(folder / "model.safetensors")
    assert entry.config_sha256 == sha256_file(folder / "config.json")
    assert entry.metrics_sha256 == sha256_file(folder / "metrics.json")
    assert (entry.name, entry.dataset, entry.threat_model, entry.eps, entry.folder) == (
        "arnas.mnist_linf",
        "mnist",
        "linf",
        0.3,
        "arnas.mnist_linf",
    )
    assert PretrainedSpec.from_dict(entry.to_dict()) == entry
    hub = index_entry(folder, "arnas.mnist_linf", repo_id="org/arnas-mnist", revision="d" * 40)
    assert hub.repo_id == "org/arnas-mnist" and hub.folder is None


def test_register_cli_prints_or_adds_the_entry(tmp_path: Path) -> None:
    from export.cli import main

    folder = save_folder(create_model("resnet18", init_channels=8), tmp_path / "ck")
    result = CliRunner().invoke(main, ["register", str(folder), "--name", "resnet18.cifar10_linf"])
    assert result.exit_code == 0, result.output
    assert sha256_file(folder / "model.safetensors") in result.output
    index = tmp_path / "index.json"
    added = CliRunner().invoke(
        main, ["register", str(folder), "--name", "resnet18.cifar10_linf", "--index", str(index)]
    )
    assert added.exit_code == 0, added.output
    assert [e.name for e in read_index(index)] == ["resnet18.cifar10_linf"]
    again = CliRunner().invoke(
        main, ["register", str(folder), "--name", "resnet18.cifar10_linf", "--index", str(index)]
    )
    assert again.exit_code == 2 and "already registered" in again.output
    bad = CliRunner().invoke(main, ["register", str(folder), "--name", "Bad Name"])
    assert bad.exit_code == 2 and "error: pretrained 'Bad Name'" in bad.output
    goals = ["register", str(folder), "--name", "resnet18.cifar10_linf_goals", "--index", str(index)]
    with_goals = CliRunner().invoke(main, [*goals, "--goals", "clean=0.75,autoattack=0.4"])
    assert with_goals.exit_code == 0, with_goals.output
    assert get_goals(index, "resnet18.cifar10_linf_goals") == {"autoattack": 0.4, "clean": 0.75}
    wrong = CliRunner().invoke(main, [*goals, "--goals", "robust=0.5"])
    assert wrong.exit_code == 2 and "FIGURE=LINE with FIGURE among" in wrong.output


def get_goals(index: Path, name: str) -> dict[str, float] | None:
    (entry,) = [e for e in read_index(index) if e.name == name]
    return None if entry.goals is None else dict(entry.goals)


def test_goal_lines_parse_from_the_command_line() -> None:
    from arnas_zoo.pretrained import parse_goals

    assert parse_goals("clean=0.75, autoattack=0.40") == {"clean": 0.75, "autoattack": 0.4}
    assert parse_goals("") == {}
    for bad in ("clean=75", "clean", "pgd20=0.4", "clean=high"):
        with pytest.raises(ConfigError, match="expected FIGURE=LINE"):
            parse_goals(bad)


def test_bundled_index_pins_every_file() -> None:
    for spec in list_pretrained():
        assert set(spec.pins()) == {"config.json", "model.safetensors", "metrics.json"}, spec.name


def test_model_card_matches_registry() -> None:
    """MODEL_CARD.md is generated from the registry: regenerate it (arnas-zoo export zoo-card) on drift."""
    from export.card import render_zoo_card

    assert (REPO / "MODEL_CARD.md").read_text() == render_zoo_card(list(list_pretrained()))


def test_zoo_card_lists_entries_and_their_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from arnas_zoo import pretrained
    from arnas_zoo.data import load_dataset
    from arnas_zoo.evaluate import evaluate
    from export import card

    data = load_dataset("digits", "test", n=8)
    model = create_model("resnet18", init_channels=4, in_channels=1, input_size=16, threat_model="linf", eps=0.1)
    report = evaluate(model, data, ["pgd2"], eps=0.1, device="cpu", progress=False, checks=False)
    folder = save_folder(model, tmp_path / "resnet18.cifar10_linf", metrics=report.to_metrics())
    monkeypatch.setattr(pretrained, "bundled_root", lambda: tmp_path)
    digest = sha256_file(folder / "model.safetensors")
    metrics_digest = sha256_file(folder / "metrics.json")
    spec = _spec(
        name="resnet18.cifar10_linf", arch="resnet18", folder=folder.name, sha256=digest, metrics_sha256=metrics_digest
    )
    text = card.render_zoo_card([spec])
    clean = 100 * report.clean_accuracy
    robust = 100 * report.result("pgd2").robust_accuracy
    # the overview row carries the figures; the model's section has them as a table with settings and interval
    assert f"| [`resnet18.cifar10_linf`](#resnet18cifar10_linf) | mnist | linf 0.3 | {clean:.1f} | - |" in text
    low, high = (100 * b for b in wilson_interval(report.result("pgd2").robust_accuracy, 8))
    assert f"| pgd2 | 8 | linf 0.1 | 2 | 1 | {robust:.1f}% | {low:.1f}-{high:.1f} |" in text
    assert "- Data: digits test, n = 8" in text and "### `resnet18.cifar10_linf`" in text
    assert "No pretrained weights are registered yet" not in text
    # a metrics.json that differs from its pin gives no figures at all, never unpinned ones
    tampered = _spec(
        name="resnet18.cifar10_linf", arch="resnet18", folder=folder.name, sha256=digest, metrics_sha256="0" * 64
    )
    assert tampered.figures() is None and "No evaluation recorded" in card.render_zoo_card([tampered])
