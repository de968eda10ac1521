"""The shared epoch loop (arnas_zoo.runs.loop): what it records about time across a stop and a resume."""

from __future__ import annotations

import time
from typing import Any

import pytest

from arnas_zoo.runs.loop import ELAPSED_KEY, RunInterrupted, run_task
from arnas_zoo.runs.state import read_state


class SlowCount:
    """A run whose steps take ``pause`` seconds each and count themselves; its state is the count."""

    schema = "arnas-zoo/test-slow-count@1"

    def __init__(self, epochs: int = 1, steps: int = 6, pause: float = 0.05):
        self.epochs, self.steps_per_epoch, self.pause = epochs, steps, pause
        self.count = 0
        self.epoch_sums: list[dict[str, float]] = []

    @property
    def stopped(self) -> str | None:
        return None

    def settings(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "steps": self.steps_per_epoch}

    def state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return {}, {"count": self.count}

    def load(self, tensors: dict[str, Any], meta: dict[str, Any]) -> None:
        self.count = int(meta["count"])

    def step(self, epoch: int, step: int) -> dict[str, float]:
        time.sleep(self.pause)
        self.count += 1
        return {"steps": 1.0}

    def end_epoch(self, epoch: int, sums: dict[str, float], seconds: float) -> dict[str, Any]:
        self.epoch_sums.append(dict(sums))
        return {"epoch": epoch + 1, "seconds": seconds, "steps": sums["steps"]}

    def write_outputs(self, history: list[dict[str, Any]]) -> None:
        pass


def test_an_epoch_across_a_stop_reports_the_seconds_of_both_segments(tmp_path) -> None:
    path = tmp_path / "state.safetensors"
    first = SlowCount()
    with pytest.raises(RunInterrupted):
        run_task(first, path, progress=False, stop_after_steps=4, save_every_s=0)
    _, header = read_state(path)
    assert header["step"] == 4 and header["sums"][ELAPSED_KEY] >= 4 * 0.05  # the first segment's seconds, saved
    time.sleep(0.3)  # time while stopped does not count
    second = SlowCount()
    (record,) = run_task(second, path, resume=True, progress=False, save_every_s=0)
    assert second.count == 6 and record["steps"] == 6.0
    # all six steps' time (the old loop reported only the two steps after the resume: ~0.1 s)
    assert 6 * 0.05 <= record["seconds"] < 6 * 0.05 + 0.3
    assert second.epoch_sums == [{"steps": 6.0}]  # the bookkeeping key never reaches the task
