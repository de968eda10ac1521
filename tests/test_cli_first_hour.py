"""The first hour of a new user (issue 10): export from the installed command line, model-aware defaults,
one-line errors for unreadable inputs, progress that stays readable in a log file."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from arnas_zoo import create_model
from arnas_zoo.checkpoint import save_folder
from arnas_zoo.cli import main
from arnas_zoo.progress import Progress


def _digits_folder(tmp_path: Path, eps: float = 0.25) -> Path:
    model = create_model(
        "resnet18",
        init_channels=4,
        in_channels=1,
        input_size=16,
        threat_model="linf",
        eps=eps,
        extra={"dataset": "digits"},
    )
    return save_folder(model, tmp_path / "ck")


def test_export_is_a_subcommand_of_the_installed_command_line() -> None:
    result = CliRunner().invoke(main, ["export", "--help"])
    assert result.exit_code == 0, result.output
    for sub in ("onnx", "hub", "register", "card", "zoo-card"):
        assert sub in result.output
    assert "export" in CliRunner().invoke(main, ["--help"]).output


def test_eval_takes_dataset_eps_and_norm_from_the_model_and_says_so(tmp_path: Path) -> None:
    folder = _digits_folder(tmp_path, eps=0.25)
    out = tmp_path / "m.json"
    result = CliRunner().invoke(
        main,
        [
            "eval",
            str(folder),
            "--n",
            "8",
            "--attacks",
            "fgsm",
            "--no-checks",
            "--quiet",
            "--device",
            "cpu",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "dataset digits (from the model's config.json)" in result.stderr
    assert "eps 0.25 (from the model's config.json)" in result.stderr
    metrics = json.loads(out.read_text())
    assert metrics["threat_model"] == {"norm": "linf", "eps": 0.25} and metrics["data"]["dataset"] == "digits"
    explicit = CliRunner().invoke(
        main,
        [
            "eval",
            str(folder),
            "--n",
            "8",
            "--attacks",
            "fgsm",
            "--no-checks",
            "--quiet",
            "--device",
            "cpu",
            "--eps",
            "0.1",
            "--dataset",
            "digits",
        ],
    )
    assert explicit.exit_code == 0 and "eps 0.1" not in explicit.stderr  # given options are not "chosen"


def test_unreadable_images_and_npz_files_are_one_line_errors(tmp_path: Path) -> None:
    folder = _digits_folder(tmp_path)
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("this is text, not a PNG")
    corrupt = tmp_path / "batch.npz"
    corrupt.write_bytes(b"PK\x03\x04 definitely not a zip")
    no_x = tmp_path / "nox.npz"
    np.savez(no_x, images=np.zeros((2, 16, 16, 1), dtype=np.uint8))
    for path, fragment in (
        (not_an_image, "not a readable image"),
        (corrupt, "not a readable npz"),
        (no_x, "expected an array 'x'"),
    ):
        # a bad file is a row of its own (the others would go on), one line, and the exit code says it (1)
        result = CliRunner().invoke(main, ["predict", str(folder), str(path)])
        assert result.exit_code == 1, result.output
        rows = result.stdout.strip().splitlines()
        assert len(rows) == 1 and rows[0].startswith(f"{path}\terror: ") and fragment in rows[0], result.output
        assert "1 file(s) could not be predicted" in result.stderr and "Traceback" not in result.output


def test_progress_writes_timestamped_lines_off_a_terminal_and_nothing_when_quiet() -> None:
    stream = io.StringIO()
    progress = Progress(stream=stream, every=0.0)
    with progress.task("eval pgd20", total=3, unit="batches") as task:
        for _ in range(3):
            task.update()
    progress.write("epoch 1/1: loss 0.5")
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("eval pgd20: started 3 batches") and "\r" not in stream.getvalue()
    assert any("at 1/3 batches (33%)" in line for line in lines) and "done 3/3 batches (100%)" in lines[-2]
    assert lines[-1].endswith("epoch 1/1: loss 0.5") and all(line.startswith("[") for line in lines)
    quiet = io.StringIO()
    with Progress(enabled=False, stream=quiet).task("x", total=2) as task:
        task.update(2)
    assert quiet.getvalue() == ""


def test_train_prints_one_line_per_epoch_into_a_log(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "train",
            "arnas",
            "--recipe",
            "cpu_digits",
            "--val-rows",
            "100",
            "--out",
            str(tmp_path / "run"),
            "--eval-attacks",
            "none",
            "--set",
            "epochs=2",
            "--set",
            "train_n=64",
            "--set",
            "val_n=16",
            "--model-set",
            "init_channels=4",
            "--model-set",
            "layers=5",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    epoch_lines = [line for line in result.stderr.splitlines() if "epoch" in line and "train_loss" in line]
    assert len(epoch_lines) == 2 and "epoch 2/2" in epoch_lines[-1]
