"""Finding and comparing models: the listing with figures, one name everywhere, suggestions, create_model.

Every new option and name form through click's CliRunner, errors included (one line, close matches,
exit 2). Figures are checked against the bundled metrics.json files themselves, never against
numbers typed into the test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import arnas_zoo
from arnas_zoo.checkpoint import read_config, sha256_file
from arnas_zoo.cli import main
from arnas_zoo.errors import ConfigError, UnknownModelError
from arnas_zoo.pretrained import get_pretrained, list_pretrained

CIFAR_ENTRY = "darts_v2.cifar10_linf_cpu_c4l5_mix"  # small (12k parameters), current, evaluated


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def _metrics(name: str) -> dict:
    return json.loads((get_pretrained(name).bundled_path() / "metrics.json").read_text())


def _aa(metrics: dict) -> float:
    return next(r["robust_accuracy"] for r in metrics["results"] if r["attack"] == "aa")


# ---- the listing ------------------------------------------------------------------------------------
def test_pretrained_sorts_cifar10_by_autoattack_with_figures(runner: CliRunner) -> None:
    result = runner.invoke(main, ["pretrained", "--dataset", "cifar10", "--sort", "aa", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    current = [s.name for s in list_pretrained(dataset="cifar10") if not s.superseded_by]
    assert sorted(r["name"] for r in rows) == sorted(current) and len(rows) >= 2
    aa = [r["figures"]["autoattack"] for r in rows]
    assert aa == sorted(aa, reverse=True)  # best first
    for row in rows:  # the figures are the pinned metrics.json's, with n and eps
        metrics = _metrics(row["name"])
        assert row["figures"]["autoattack"] == _aa(metrics)
        assert row["figures"]["clean"] == metrics["clean_accuracy"]
        assert row["figures"]["worst_case"] == metrics["worst_case_accuracy"]
        assert row["figures"]["n"] == metrics["data"]["n"] and row["figures"]["eps"] == metrics["threat_model"]["eps"]
        low, high = row["figures"]["worst_interval"]
        assert low < row["figures"]["worst_case"] < high
    table = runner.invoke(main, ["pretrained", "--dataset", "cifar10", "--sort", "aa"])
    assert table.exit_code == 0
    lines = [line for line in table.stdout.splitlines() if ".cifar10_" in line]
    assert [line.split()[0] for line in lines] == [r["name"] for r in rows]
    best = rows[0]["figures"]
    assert f"{100 * best['clean']:.1f}" in lines[0] and f"{100 * best['autoattack']:.1f}" in lines[0]


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["*resnet*", "--all"], lambda s: "resnet" in s.name),
        (["cifar10", "--all"], lambda s: "cifar10" in s.name),  # no wildcard: matches anywhere
        (["--arch", "darts_v2", "--all"], lambda s: s.arch == "darts_v2"),
        (["--threat", "LINF", "--all"], lambda s: s.threat_model == "linf"),
        (["--dataset", "mnist"], lambda s: s.dataset == "mnist" and not s.superseded_by),
    ],
)
def test_pretrained_filters(runner: CliRunner, args: list[str], expect: object) -> None:
    result = runner.invoke(main, ["pretrained", *args, "--json"])
    assert result.exit_code == 0, result.output
    listed = {row["name"] for row in json.loads(result.stdout)}
    wanted = {s.name for s in list_pretrained() if expect(s)}  # type: ignore[operator]
    assert listed == wanted and listed


@pytest.mark.parametrize("key", ["params", "macs", "clean", "worst", "name"])
def test_pretrained_sort_keys(runner: CliRunner, key: str) -> None:
    rows = json.loads(runner.invoke(main, ["pretrained", "--all", "--sort", key, "--json"]).stdout)
    if key in ("params", "macs"):
        values = [r[key] for r in rows]
        assert values == sorted(values)  # sizes: smallest first
    elif key == "name":
        assert [r["name"] for r in rows] == sorted(r["name"] for r in rows)
    else:
        values = [r["figures"]["clean" if key == "clean" else "worst_case"] for r in rows]
        assert values == sorted(values, reverse=True)


def test_pretrained_errors(runner: CliRunner) -> None:
    typo = runner.invoke(main, ["pretrained", "--dataset", "cifr10"])
    assert typo.exit_code == 2 and "did you mean cifar10?" in typo.output
    bad_sort = runner.invoke(main, ["pretrained", "--sort", "speed"])
    assert bad_sort.exit_code == 2 and "speed" in bad_sort.output
    nothing = runner.invoke(main, ["pretrained", "*no-such-model*"])
    assert nothing.exit_code == 1 and "no pretrained model matches" in nothing.output
    with pytest.raises(ConfigError, match="sort: expected one of"):
        list_pretrained(sort="speed")


def test_list_pretrained_returns_typed_entries_with_figures() -> None:
    entries = list_pretrained("*cifar10*", dataset="cifar10", threat_model="linf", sort="aa", include_superseded=False)
    assert entries and all(e.dataset == "cifar10" and not e.superseded_by for e in entries)
    figures = [e.figures() for e in entries]
    assert all(f is not None for f in figures)
    assert [f.autoattack for f in figures] == sorted((f.autoattack for f in figures), reverse=True)  # type: ignore[union-attr]
    first = figures[0]
    assert first is not None and first.selection_may_overlap  # CIFAR-10 figures are on validation rows
    mnist = get_pretrained("arnas.mnist_linf_cpu_c4l5_60k").figures()
    assert mnist is not None and not mnist.selection_may_overlap and mnist.split == "test"


def test_registry_sizes_match_the_pinned_configs() -> None:
    """The stored params/MACs of every entry equal a fresh count of the network its pinned config builds."""
    from arnas_zoo.introspect import compute_stats

    for spec in list_pretrained():
        stats = compute_stats(read_config(spec.bundled_path()))
        assert (spec.params, spec.macs) == (stats["params"], stats["macs"]), spec.name


def test_no_card_or_description_speaks_of_internal_issues() -> None:
    """Cards are for users: no 'issue 17', no goals of our own tracker."""
    from export.card import render_card, render_zoo_card

    texts = [render_zoo_card(list_pretrained())]
    texts += [render_card(s.bundled_path(), load_name=s.name) for s in list_pretrained()[:3]]
    for text in texts:
        assert "issue" not in text.lower() and "session" not in text.lower()


# ---- one name everywhere ------------------------------------------------------------------------------
def test_info_draw_genotype_take_a_zoo_name(runner: CliRunner, tmp_path: Path) -> None:
    spec = get_pretrained(CIFAR_ENTRY)
    info = runner.invoke(main, ["info", CIFAR_ENTRY, "--json"])
    assert info.exit_code == 0, info.output
    summary = json.loads(info.stdout)
    assert summary["params"] == spec.params and summary["init_channels"] == 4 and summary["layers"] == 5
    shown = runner.invoke(main, ["genotype", "show", CIFAR_ENTRY])
    config = read_config(spec.bundled_path())
    assert shown.exit_code == 0 and shown.stdout.strip() == config.genotype.pretty().strip()  # type: ignore[union-attr]
    exported = runner.invoke(main, ["genotype", "export", CIFAR_ENTRY])
    assert json.loads(exported.stdout) == config.genotype.to_dict()  # type: ignore[union-attr]
    drawn = runner.invoke(main, ["draw", CIFAR_ENTRY, "-o", str(tmp_path / "cells.png")])
    assert drawn.exit_code == 0, drawn.output
    assert sorted(p.name for p in tmp_path.glob("cells-*.png")) == ["cells-normal.png", "cells-reduce.png"]


@pytest.mark.parametrize("command", [["info"], ["draw", "-o", "x.png"], ["genotype", "show"]])
def test_unknown_name_is_one_line_with_close_matches(runner: CliRunner, command: list[str]) -> None:
    typo = CIFAR_ENTRY.replace("_mix", "_mx")
    result = runner.invoke(main, [*command[:1], typo, *command[1:]] if command[0] != "genotype" else [*command, typo])
    assert result.exit_code == 2
    assert result.output.startswith("error: unknown model") and result.output.count("\n") == 1
    assert f"did you mean {CIFAR_ENTRY}" in result.output


def test_export_card_takes_a_zoo_name(runner: CliRunner) -> None:
    from export.cli import main as export_main

    result = runner.invoke(export_main, ["card", CIFAR_ENTRY])
    assert result.exit_code == 0, result.output
    spec = get_pretrained(CIFAR_ENTRY)
    assert f'arnas_zoo.load("{CIFAR_ENTRY}")' in result.stdout and spec.description in result.stdout
    clean = _metrics(CIFAR_ENTRY)["clean_accuracy"]
    assert f"| clean | 200 | - | - | - | {100 * clean:.1f}% |" in result.stdout
    missing = runner.invoke(export_main, ["card", "nope.cifar10_linf"])
    assert missing.exit_code == 2 and "unknown model" in missing.output


def test_export_onnx_takes_a_zoo_name(runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    from export.cli import main as export_main

    monkeypatch.chdir(tmp_path)
    result = runner.invoke(export_main, ["onnx", CIFAR_ENTRY, "-n", "4"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / CIFAR_ENTRY  # a deployable folder: the pinned checkpoint plus the ONNX file and its record
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors", "metrics.json", "model.onnx"}
    pins = get_pretrained(CIFAR_ENTRY).pins()
    assert all(sha256_file(folder / name) == digest for name, digest in pins.items())
    bundled = get_pretrained(CIFAR_ENTRY).bundled_path()
    assert not (bundled / "model.onnx").exists() and not (bundled / "onnx.json").exists()  # the zoo stays pinned
    other = runner.invoke(export_main, ["onnx", "arnas.cifar10_linf_cpu_c4l5_mix", "-o", str(folder / "model.onnx")])
    assert other.exit_code == 2 and "already holds a different" in other.output


def test_create_model_pretrained_is_load() -> None:
    model = arnas_zoo.create_model(CIFAR_ENTRY, pretrained=True)
    loaded = arnas_zoo.load(CIFAR_ENTRY)
    assert not model.training and model.pretrained.name == CIFAR_ENTRY  # type: ignore[union-attr]
    assert model.state_dict().keys() == loaded.state_dict().keys()
    assert all(torch.equal(model.state_dict()[k], loaded.state_dict()[k]) for k in loaded.state_dict())
    random = arnas_zoo.create_model(CIFAR_ENTRY)  # timm: a zoo name without pretrained is its architecture
    assert (
        random.config.init_channels == loaded.config.init_channels and random.config.genotype == loaded.config.genotype
    )
    assert not torch.equal(next(iter(random.parameters())), next(iter(loaded.parameters())))
    with pytest.raises(UnknownModelError, match=r"'arnas' has 2 pretrained models \(.*\); name one"):
        arnas_zoo.create_model("arnas", pretrained=True)
    with pytest.raises(ConfigError, match="pretrained weights fix the architecture"):
        arnas_zoo.create_model(CIFAR_ENTRY, pretrained=True, init_channels=8)
    assert arnas_zoo.create_model("resnet18", init_channels=4).config.init_channels == 4  # architectures as before


# ---- suggestions for commands -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "suggestion"),
    [(["lst"], "'list'"), (["pretraind"], "'pretrained'"), (["genotype", "shw", "x"], "'show'")],
)
def test_mistyped_commands_get_close_matches(runner: CliRunner, args: list[str], suggestion: str) -> None:
    result = runner.invoke(main, args)
    assert result.exit_code == 2 and f"no such command {args[-2] if len(args) > 1 else args[0]!r}" in result.output
    assert f"did you mean {suggestion}" in result.output


def test_export_group_suggests_too(runner: CliRunner) -> None:
    from export.cli import main as export_main

    result = runner.invoke(export_main, ["crd"])
    assert result.exit_code == 2 and "did you mean 'card'" in result.output
