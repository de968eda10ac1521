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


def _ranges(text: str) -> set[int] | None:
    """The official indices of a ``describe_indices`` text ("0-999, 1200"), None for its summary form."""
    if "indices in" in text:
        return None
    out: set[int] = set()
    for part in text.split(","):
        a, _, b = part.strip().partition("-")
        out.update(range(int(a), int(b or a) + 1))
    return out


def test_claim_says_meets_only_when_the_lower_bound_clears_the_line():
    from arnas_zoo.figures import claim, wilson_interval

    assert claim(0.80, 1000, 0.75, "clean").startswith("meets the 75.0% clean line: 80.0%")
    # 41.5% on 1000 points: interval 38.5-44.6 straddles 40%: reached, not met
    text = claim(0.415, 1000, 0.40, "AutoAttack")
    assert wilson_interval(0.415, 1000)[0] < 0.40 and "meets" not in text
    assert text.startswith("reached 41.5% AutoAttack (95% interval 38.5-44.6, n=1000)") and "not shown" in text
    assert claim(0.30, 200, 0.40, "clean").startswith("reached")


def test_tiers_group_rows_whose_intervals_overlap_the_tier_leader():
    from arnas_zoo.figures import tiers

    assert tiers([(0.9, 1000), (0.89, 1000), (0.5, 1000), (0.49, 1000), (0.1, 1000)]) == [1, 1, 2, 2, 3]
    assert tiers([(0.245, 200), (0.19, 200)]) == [1, 1]  # the CIFAR-10 board's spread on 200 points
    assert tiers([]) == []


def test_no_card_claims_meets_below_its_line_and_no_reported_row_was_selected_on():
    import dataclasses
    import re

    from arnas_zoo.pretrained import list_pretrained
    from arnas_zoo.safe_json import read_json
    from export.card import render_zoo_card

    specs = list_pretrained(include_superseded=True)
    best = max((s for s in specs if s.figures() is not None), key=lambda s: s.figures().clean)
    clean = best.figures().clean
    # one goal met by the pinned figures, one not: both wordings appear, each checked below
    specs = [dataclasses.replace(s, goals={"clean": clean / 2, "autoattack": 0.99}) if s is best else s for s in specs]
    card = render_zoo_card(specs)
    meets = re.findall(r"meets the ([\d.]+)% [\w -]+ line: ([\d.]+)% \(95% interval ([\d.]+)-([\d.]+), n=(\d+)\)", card)
    assert meets and "reached" in card and "not shown to be met" in card
    for line, _value, low, _high, _n in meets:
        assert float(low) >= float(line), f"'meets {line}%' with a lower bound of {low}%"
    for spec in specs:
        path = spec._metrics_path()
        metrics = read_json(path, what="metrics") if path is not None else {}
        protocol = metrics.get("protocol") if isinstance(metrics, dict) else None
        if not protocol or not protocol.get("selection"):
            continue
        assert protocol["disjoint"] is True, spec.name
        chosen, reported = _ranges(protocol["selection"]["indices"]), _ranges(protocol["reporting"]["indices"])
        if chosen is not None and reported is not None and protocol["reporting"]["split"].startswith("train"):
            assert not chosen & reported, f"{spec.name}: reported rows {sorted(chosen & reported)[:5]} were selected on"


def test_the_protocol_of_a_report_made_apart_checks_its_points_against_the_runs_selection_rows():
    from arnas_zoo.data.base import describe_indices, parse_indices
    from arnas_zoo.evaluate.merge import reporting_protocol

    assert parse_indices(describe_indices(torch.tensor([0, 1, 2, 7, 9, 10]))) == {0, 1, 2, 7, 9, 10}
    assert parse_indices("none") == set() and parse_indices("300 indices in 12 runs, from 0 to 999") is None
    chosen = {
        "dataset": "cifar10",
        "split": "train_mix(selection=1000)[0:49000][48000:49000]",
        "indices": "30415-30614",
    }
    reported = {"dataset": "cifar10", "split": "train[4551:5551]", "indices": "40017-41016", "n": 1000}
    assert reporting_protocol(chosen, reported)["disjoint"] is True
    assert reporting_protocol(chosen, dict(reported, indices="30600-31599"))["disjoint"] is False  # 15 shared
    assert reporting_protocol(chosen, dict(reported, split="test", indices="30415-30614"))["disjoint"] is True
    assert reporting_protocol(chosen, dict(reported, indices="900 indices in 9 runs, from 0 to 9"))["disjoint"] is None
    assert reporting_protocol(None, reported) == {"selection": None, "reporting": reported, "disjoint": True}
