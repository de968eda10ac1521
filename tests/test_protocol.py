"""The reporting protocol: selection rows choose the checkpoint; reporting rows are read once, at the end."""

from __future__ import annotations

import numpy as np
import torch
from click.testing import CliRunner
from test_training_cli import TINY

from arnas_zoo.checkpoint import load_folder
from arnas_zoo.cli import main
from arnas_zoo.data import evaluation_data
from arnas_zoo.data.base import ImageData
from arnas_zoo.training.loop import protocol_record


def _rows(split: str, indices: list[int], name: str = "cifar10") -> ImageData:
    n = len(indices)
    return ImageData(
        x=torch.zeros(n, 3, 4, 4), y=torch.zeros(n, dtype=torch.long), name=name, split=split,
        indices=torch.tensor(indices), num_classes=10, class_names=tuple(str(i) for i in range(10)), source="t",
    )  # fmt: skip


def test_protocol_record_flags_a_reported_row_that_was_also_selected_on():
    selection = _rows("train[0:3]", [5, 6, 7])
    assert protocol_record(selection, None, _rows("train[3:6]", [8, 9, 10]))["disjoint"] is True
    assert protocol_record(selection, None, _rows("train[3:6]", [7, 9, 10]))["disjoint"] is False
    # only the rows the recipe reads count: val_n=2 reads indices 5 and 6, so 7 is not shared
    assert protocol_record(selection, 2, _rows("train[3:6]", [7, 9, 10]))["disjoint"] is True
    # a test image and a train image with the same official index are different images
    assert protocol_record(selection, None, _rows("test", [5, 6, 7]))["disjoint"] is True
    assert protocol_record(None, None, _rows("test", [5]))["disjoint"] is True


def test_selection_rows_come_before_the_reporting_rows_and_never_overlap(tmp_path, shared_data):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    args = ["train", "arnas", "--recipe", "cpu_cifar10", "--dataset", "cifar10", "--train-split", "train"]
    args += ["--selection-rows", "200", "--out", str(out), "--eval-attacks", "fgsm", "--eval-n", "16"]
    result = CliRunner().invoke(main, args + TINY)
    assert result.exit_code == 0, result.output
    metrics = load_folder(out / "best").metrics
    protocol = metrics["protocol"]
    assert protocol["disjoint"] is True
    reporting = evaluation_data("cifar10", n=16)  # what `arnas-zoo eval` reports on: the last 1000 train rows
    assert protocol["reporting"]["indices"] == metrics["data"]["indices"]
    assert metrics["data"]["split"].endswith("[4551:5551]") and reporting.split.endswith("[4551:5551]")
    assert protocol["selection"]["split"].endswith("[4351:4551]") and protocol["selection"]["n"] == 32  # val_n
    assert metrics["training"]["train_data"]["n"] == 4351


def test_selection_rows_of_the_mix_are_genuine_and_outside_the_reporting_rows(shared_data):
    from arnas_zoo.data.mix import GENUINE_FILE, load_cifar10_mix

    plain = load_cifar10_mix(shared_data, 1000)
    held = load_cifar10_mix(shared_data, 1000, selection_rows=500)
    assert torch.equal(plain.indices[-1000:], held.indices[-1000:])  # the same reporting rows
    selection = held.indices[-1500:-1000].numpy()
    with np.load(shared_data / GENUINE_FILE, allow_pickle=False) as f:
        genuine = f["idx"]
    assert np.isin(selection, genuine).all() and not np.isin(selection, plain.indices[-1000:].numpy()).any()
    assert sorted(held.indices.tolist()) == list(range(50_000))  # every image once
    assert "500 genuine selection rows" in held.source and held.split == "train_mix(selection=500)"


def test_selection_rows_that_leave_nothing_to_train_on_are_refused(tmp_path):
    args = ["train", "arnas", "--recipe", "cpu_digits", "--dataset", "digits", "--val-rows", "100"]
    result = CliRunner().invoke(main, args + ["--selection-rows", "100000", "--out", str(tmp_path / "r"), *TINY])
    assert result.exit_code == 2 and "selection_rows" in result.output and "Traceback" not in result.output


def _train_args(out) -> list[str]:
    args = ["train", "arnas", "--recipe", "cpu_digits", "--dataset", "digits", "--val-rows", "100", "--out", str(out)]
    sizes = {"train_n=64": "train_n=512", "batch_size=32": "batch_size=4"}  # 128 steps in the epoch
    return args + ["--eval-attacks", "none", *(sizes.get(a, a) for a in TINY)]


def test_a_run_killed_mid_epoch_resumes_from_its_mid_epoch_save_and_ends_where_an_unbroken_run_ends(tmp_path):
    """SIGKILL (no handler runs) after a mid-epoch save: the resumed run equals an uninterrupted one bit for bit."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from arnas_zoo.runs.state import read_state
    from arnas_zoo.training.loop import STATE_FILE

    env = {**os.environ, "ARNAS_ZOO_SAVE_EVERY_S": "0.001", "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "arnas_zoo.cli", *_train_args(killed)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    step, deadline = 0, time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (killed / STATE_FILE).is_file():
                try:
                    step = int(read_state(killed / STATE_FILE)[1]["step"])
                except Exception:  # mid-write: the atomic rename has not happened yet
                    step = 0
                if 2 <= step:
                    break
            time.sleep(0.01)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert 2 <= step < 128, f"no mid-epoch state seen before the kill (step {step}; 128 steps per epoch)"
    resumed = CliRunner().invoke(main, [*_train_args(killed), "--resume"], env={"ARNAS_ZOO_SAVE_EVERY_S": "0"})
    assert resumed.exit_code == 0, resumed.output
    whole = tmp_path / "whole"
    unbroken = CliRunner().invoke(main, _train_args(whole), env={"ARNAS_ZOO_SAVE_EVERY_S": "0"})
    assert unbroken.exit_code == 0, unbroken.output
    a, b = load_folder(killed / "last").state_dict(), load_folder(whole / "last").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
