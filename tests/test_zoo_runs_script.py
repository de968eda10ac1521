"""scripts/zoo_runs.sh: the long runs' exact commands; a queue that skips finished steps, stops on a failed one."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "zoo_runs.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(cli: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ARNAS_ZOO_CLI": cli}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60)


def test_the_queue_runs_each_step_once_in_order_with_the_documented_commands(tmp_path) -> None:
    root = tmp_path / "zoo"
    first = _run("/bin/echo", "queue", str(root), "darts_v2_c15", "aa:darts_v2_c15")
    assert first.returncode == 0, first.stderr
    lines = [line for line in first.stdout.splitlines() if not line[:4].isdigit()]
    train, aa = lines
    assert train.startswith("train darts_v2 --dataset cifar10 --train-split train_mix --val-rows 1000")
    assert "--recipe cpu_cifar10 --set epochs=10 --model-set init_channels=15 --model-set layers=20" in train
    assert f"--out {root}/darts_v2_c15" in train and "--resume" not in train
    assert aa.startswith(f"eval {root}/darts_v2_c15/best --dataset cifar10 --split test --n 1000 --attacks aa")
    assert (root / "darts_v2_c15.done").is_file() and (root / "darts_v2_c15.aa.done").is_file()
    again = _run("/bin/echo", "queue", str(root), "darts_v2_c15", "aa:darts_v2_c15")
    assert again.returncode == 0 and again.stdout == ""  # both done: nothing runs twice


def test_a_failed_step_stops_the_queue_and_leaves_no_marker(tmp_path) -> None:
    root = tmp_path / "zoo"
    stopped = _run("/bin/false", "queue", str(root), "arnas_c16", "aa:arnas_c16")
    assert stopped.returncode == 1 and "arnas_c16 stopped (exit 1)" in stopped.stdout
    assert "aa:arnas_c16" not in stopped.stdout and not list(root.glob("*.done"))
    (root / "arnas_c16").mkdir()
    (root / "arnas_c16" / "train_state.safetensors").write_bytes(b"")
    resumed = _run("/bin/echo", "train", "arnas_c16", str(root))
    assert resumed.stdout.rstrip().endswith("--resume")  # a state there: the training continues it
    early = _run("/bin/echo", "aa", "resnet18_w27", str(root))
    assert early.returncode != 0 and "training not finished" in early.stderr
    assert _run("/bin/echo", "train", "bogus").returncode == 2
