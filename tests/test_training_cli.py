"""``arnas-zoo train`` and ``arnas-zoo quickstart`` through click's CliRunner (offline, tiny)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from click.testing import CliRunner

from arnas_zoo.checkpoint import load_folder
from arnas_zoo.cli import main

TINY = [
    "--set",
    "epochs=1",
    "--set",
    "train_n=64",
    "--set",
    "batch_size=32",
    "--set",
    "steps=1",
    "--set",
    "val_n=32",
    "--set",
    "val_steps=1",
    "--model-set",
    "init_channels=4",
    "--model-set",
    "layers=5",
    "--no-progress",
]


def test_train_command_writes_run_folder_and_resumes(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "train",
            "arnas",
            "--recipe",
            "cpu_digits",
            "--dataset",
            "digits",
            "--val-rows",
            "100",
            "--out",
            str(out),
            "--eval-attacks",
            "fgsm",
            "--eval-n",
            "16",
            *TINY,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "finished" in result.output and "best" in result.output
    model = load_folder(out / "best")
    assert model.config.in_channels == 1 and model.config.input_size == 16 and model.config.init_channels == 4
    assert model.metrics["training"]["train_points_used"] == "first 64"
    assert model.metrics["data"]["split"] == "test" and model.metrics["data"]["n"] == 16  # --eval-n 16
    assert [r["attack"] for r in model.metrics["results"]] == ["fgsm"]
    assert json.loads((out / "recipe.json").read_text())["train_n"] == 64
    again = runner.invoke(
        main,
        [
            "train",
            "arnas",
            "--recipe",
            "cpu_digits",
            "--val-rows",
            "100",
            "--out",
            str(out),
            "--eval-attacks",
            "none",
            *TINY,
        ],
    )
    assert again.exit_code == 2 and "--resume" in again.output  # never overwrite a run silently
    resumed = runner.invoke(
        main,
        [
            "train",
            "arnas",
            "--recipe",
            "cpu_digits",
            "--val-rows",
            "100",
            "--out",
            str(out),
            "--resume",
            "--eval-attacks",
            "none",
            *TINY,
        ],
    )
    assert resumed.exit_code == 0, resumed.output


def test_train_command_errors_are_one_line(tmp_path):
    runner = CliRunner()
    for args, expected in (
        (["--recipe", "nope"], "unknown recipe"),
        (["--set", "lr=fast"], "cannot read"),
        (["--set", "epochs"], "KEY=VALUE"),
        (["--model-set", "widht=3"], "widht"),
    ):
        result = runner.invoke(main, ["train", "arnas", "--out", str(tmp_path / "x"), "--eval-attacks", "none", *args])
        assert result.exit_code == 2, result.output
        assert expected in result.output


def test_quickstart_command_prints_both_models(tmp_path):
    torch.set_num_threads(1)
    result = CliRunner().invoke(
        main,
        [
            "quickstart",
            "--out",
            str(tmp_path / "qs"),
            "--epochs",
            "1",
            "--train-n",
            "64",
            "--test-n",
            "32",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "adversarial" in result.output and "standard" in result.output and "PGD" in result.output
    report = json.loads((tmp_path / "qs" / "report.json").read_text())
    assert set(report["rows"]) == {"adversarial", "standard"}
    for row in report["rows"].values():
        assert 0 <= row["pgd"] <= row["clean"] <= 1
    assert (
        "next:" in result.output and "arnas-zoo export onnx" in result.output and "expected at seed 0" in result.output
    )
    assert "sanity checks" in result.output and "time:" in result.output
    metrics = load_folder(tmp_path / "qs" / "adversarial" / "best").metrics
    assert metrics["data"]["n"] == 32 and metrics["data"]["dataset"] == "digits"
    ran = [c for c in metrics["sanity_checks"] if c["passed"] is not None]
    assert len(ran) >= 5 and metrics["possible_gradient_masking"] in (True, False)  # the checks it claims ran
    assert set(report["phases"]) == {"train adversarial", "evaluate adversarial", "train standard", "evaluate standard"}
    assert {r["attack"]: r["steps"] for r in metrics["results"]} == {"fgsm": 1, "pgd20": 20}
    assert metrics["training"]["recipe"] == "cpu_digits"
    standard = json.loads((tmp_path / "qs" / "standard" / "recipe.json").read_text())
    assert standard["method"] == "standard" and standard["select_by"] == "clean"
    assert (tmp_path / "qs" / "report.md").read_text().startswith("# arnas-zoo quick start")


def test_train_split_of_another_dataset_is_one_line_error(tmp_path):
    from click.testing import CliRunner

    from arnas_zoo.cli import main

    result = CliRunner().invoke(
        main, ["train", "arnas", "--dataset", "digits", "--train-split", "train_mix", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code != 0 and "unknown split 'train_mix'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()  # nothing written for a refused run


def test_init_from_starts_from_a_checkpoint_with_a_fresh_schedule(tmp_path):
    """--init-from: the run starts at the given weights, records them, and refuses another architecture."""
    torch.set_num_threads(1)
    runner = CliRunner()
    base = ["--recipe", "cpu_digits", "--val-rows", "100", "--eval-attacks", "none", *TINY]
    first = runner.invoke(main, ["train", "arnas", "--out", str(tmp_path / "a"), *base])
    assert first.exit_code == 0, first.output
    source = str(tmp_path / "a" / "last")
    start = load_folder(source).state_dict()
    # a vanishing learning rate: the weights barely move, so a warm start ends where the first run ended
    frozen = [*base, "--set", "lr=1e-12", "--set", "weight_decay=0"]
    warm = runner.invoke(main, ["train", "arnas", "--out", str(tmp_path / "b"), "--init-from", source, *frozen])
    assert warm.exit_code == 0, warm.output
    warm_model = load_folder(tmp_path / "b" / "last")
    weights = [k for k, v in start.items() if v.is_floating_point() and "running" not in k]  # BN statistics move
    for key in weights:
        assert torch.allclose(start[key], warm_model.state_dict()[key], atol=1e-6), key
    origin = warm_model.config.extra["init_from"]
    assert origin["spec"] == source and len(origin["weights_digest"]) == 64
    # registered in the zoo, its training record (the card's table) names the weights it started from
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from zoo_from_leaderboard import copy_run

    record = copy_run(tmp_path / "b" / "best", tmp_path / "zoo", "arnas", "digits", False, "1 thread")
    assert record["init_from"] == origin and record["recipe_settings"]["lr"] == 1e-12
    # the same schedule from random weights ends elsewhere: the comparison above can fail
    cold = runner.invoke(main, ["train", "arnas", "--out", str(tmp_path / "c"), *frozen])
    assert cold.exit_code == 0, cold.output
    cold_weights = load_folder(tmp_path / "c" / "last").state_dict()
    assert any(not torch.allclose(start[k], cold_weights[k], atol=1e-6) for k in weights)
    # another width is another network: one line, exit 2, no run folder
    wider = [*base, "--model-set", "init_channels=8"]
    refused = runner.invoke(main, ["train", "arnas", "--out", str(tmp_path / "d"), "--init-from", source, *wider])
    assert refused.exit_code == 2 and "init_channels" in refused.output
    assert not (tmp_path / "d").exists()
