"""The foundation CLI commands through click's CliRunner, including their error paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from arnas_zoo.cli import main
from arnas_zoo.registry import bundled_genotype


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def test_info_json_reports_the_paper_figures(runner: CliRunner) -> None:
    result = runner.invoke(main, ["info", "arnas", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert abs(info["params"] / 1e6 - 4.5204) / 4.5204 < 1e-3
    assert abs(info["flops_paper"] / 1e6 - 1269.67) / 1269.67 < 1e-3
    assert info["params_with_aux"] > info["params"] and info["macs"] < info["flops_paper"]
    assert info["layers"] == 20 and info["init_channels"] == 64
    assert info["cell_types"][6] == "reduce" and info["cell_types"][19] == "robust"


def test_info_text_and_overrides(runner: CliRunner) -> None:
    result = runner.invoke(
        main, ["info", "arnas", "-C", "16", "--layers", "8", "--placement", "R-A-A", "--filters", "1-2-4"]
    )
    assert result.exit_code == 0, result.output
    assert "placement robust-accurate-accurate" in result.stdout and "filters 1-2-4" in result.stdout
    assert "reductions at [2, 5]" in result.stdout


def test_info_accepts_genotype_files(runner: CliRunner, tmp_path: Path) -> None:
    path = bundled_genotype("pdarts").save(tmp_path / "pdarts.json")
    result = runner.invoke(main, ["info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert abs(json.loads(result.stdout)["flops_paper"] / 1e6 - 550.75) < 0.55


def test_list_shows_every_architecture(runner: CliRunner) -> None:
    result = runner.invoke(main, ["list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert {"arnas", "darts_v2", "robnet_free", "resnet18", "wrn34_10"} <= set(rows)
    assert rows["arnas"]["params"] == 4520394


def test_draw_writes_pictures(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["draw", "arnas", "-o", str(tmp_path / "arnas.png")])
    assert result.exit_code == 0, result.output
    for cell in ("accurate", "reduce", "robust"):
        assert (tmp_path / f"arnas-{cell}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = runner.invoke(main, ["draw", "darts_v2", "--cell", "normal", "-o", str(tmp_path / "n.svg")])
    assert result.exit_code == 0 and "<svg" in (tmp_path / "n.svg").read_text()
    result = runner.invoke(main, ["draw", "arnas", "--layout", "-o", str(tmp_path / "layout.png")])
    assert result.exit_code == 0 and (tmp_path / "layout.png").stat().st_size > 1000


def test_draw_macro_genotype_shows_every_phase(runner: CliRunner, tmp_path: Path) -> None:
    from arnas_zoo.macro import MacroGenotype

    path = MacroGenotype(("0101001", "1001111", "0000000"), nodes=4, name="m").save(tmp_path / "m.json")
    result = runner.invoke(main, ["draw", str(path), "-o", str(tmp_path / "m.svg")])
    assert result.exit_code == 0, result.output
    svg = (tmp_path / "m.svg").read_text()
    for title in ("phase 1: 0101001 (3 active nodes, residual on)", "phase 3: 0000000 (0 active nodes, residual off)"):
        assert title in svg  # svg keeps text as text
    bad = runner.invoke(main, ["draw", str(path), "-o", str(tmp_path / "m.txt")])
    assert bad.exit_code != 0 and "expected a file ending in" in bad.output and "Traceback" not in bad.output


def test_genotype_validate_and_export(runner: CliRunner, tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    result = runner.invoke(main, ["genotype", "export", "arnas", "-o", str(good)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["genotype", "validate", str(good)])
    assert result.exit_code == 0 and result.stdout.startswith("OK")
    bad = tmp_path / "bad.json"
    data = json.loads(good.read_text())
    data["cells"]["robust"]["nodes"][3][0][0] = "sep_conv_9x9"
    bad.write_text(json.dumps(data))
    result = runner.invoke(main, ["genotype", "validate", str(bad)])
    assert result.exit_code == 1
    assert "$.cells.robust.nodes[3][0][0]: unknown op 'sep_conv_9x9'" in result.stderr


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["info", "darts_v3"], "did you mean darts_v2"),
        (["info", "arnas", "--placement", "A-A"], "placement: expected three stages"),
        (["info", "arnas", "--filters", "1-x-2"], "filters: expected three positive integers"),
        (["info", "missing.json"], "no such file"),
        (["draw", "resnet18", "-o", "x.png"], "hand-crafted network has no cells"),
        (["draw", "arnas", "-o", "x.gif"], "expected a file ending in"),
        (["genotype", "show", "wrn34_10"], "has no genotype"),
    ],
)
def test_errors_are_one_line_without_traceback(runner: CliRunner, args, fragment, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(main, args)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert fragment in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_every_command_has_help(runner: CliRunner) -> None:
    for args in (
        ["--help"],
        ["info", "--help"],
        ["list", "--help"],
        ["draw", "--help"],
        ["genotype", "validate", "--help"],
    ):
        result = runner.invoke(main, args)
        assert result.exit_code == 0 and "Usage" in result.stdout
    # every built-in command (and group member) says what it does: a docstring click can read, not
    # an expression that leaves __doc__ empty
    import click

    from arnas_zoo.cli import COMMANDS

    context = click.Context(main)
    for name in COMMANDS:
        command = main.get_command(context, name)
        assert command is not None and (command.help or "").strip(), f"`arnas-zoo {name} --help` has no description"
        for sub_name, sub in getattr(command, "commands", {}).items():
            assert (sub.help or "").strip(), f"`arnas-zoo {name} {sub_name} --help` has no description"


def test_pretrained_lists_every_registered_checkpoint(runner: CliRunner) -> None:
    from arnas_zoo.pretrained import list_pretrained

    result = runner.invoke(main, ["pretrained", "--json", "--all"])
    assert result.exit_code == 0, result.output
    listed = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(listed) == {spec.name for spec in list_pretrained()}
    assert all(len(row["sha256"]) == 64 for row in listed.values())
    current = runner.invoke(main, ["pretrained", "--json"])  # without --all: superseded entries hidden
    assert {row["name"] for row in json.loads(current.stdout)} == {
        spec.name for spec in list_pretrained() if not spec.superseded_by
    }


def test_a_closed_pipe_ends_a_command_quietly(capsys) -> None:
    from arnas_zoo.cli.common import friendly_errors

    @friendly_errors
    def listing() -> None:
        raise BrokenPipeError(32, "Broken pipe")  # what print() raises once `| head` has gone

    with pytest.raises(SystemExit) as stopped:
        listing()
    assert stopped.value.code == 1
    assert "error" not in capsys.readouterr().err  # no "error: [Errno 32] Broken pipe" after the reader left
