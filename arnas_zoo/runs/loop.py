"""The epoch loop shared by training and every search: resumable, signal-safe, write-ordered.

A run is a :class:`RunTask` (what to do per step and per epoch, what its state is, which files are
derived from it) driven by :func:`run_task`. The loop owns what no task should repeat:

- **Save order without windows.** After every epoch the state is written first (atomically, with
  the previous one kept), and only then the derived outputs (logs, checkpoint folders, plots), which
  the task regenerates from the state, whole. A kill at any instant loses at most the steps since
  the last save; a resumed run rewrites the derived files, so no log line is duplicated or skipped.
- **Exact resume**, also mid-epoch: the state holds the position, the epoch's partial sums and the
  history, and every step draws its randomness from ``(seed, epoch, step)``
  (:mod:`arnas_zoo.runs.seeding`), so a resumed run computes what an uninterrupted run computes. An
  epoch's ``seconds`` add up its running time in every process it spanned (the time stopped excluded).
- **Saves inside long epochs.** Every ``save_every_s`` seconds (``ARNAS_ZOO_SAVE_EVERY_S``, default
  900; 0 turns it off) the state is also saved at a step boundary, so a SIGKILL, an OOM kill or a lost
  machine costs at most that much of an hour-long CPU epoch.
- **Signals.** SIGTERM/SIGINT stop the run at the next step boundary after saving its state
  (:class:`RunInterrupted`; continue with ``resume=True``). Under ``torchrun`` the ranks vote, so all
  stop at the same step.
- **Progress**: a bar (or plain lines in a log file) per epoch and one summary line per epoch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from arnas_zoo.errors import ArnasZooError, CheckpointError
from arnas_zoo.progress import Progress
from arnas_zoo.runs.distributed import Dist, vote
from arnas_zoo.runs.faults import write_point
from arnas_zoo.runs.folder import changed_keys
from arnas_zoo.runs.signals import StopFlag
from arnas_zoo.runs.state import load_state, save_state

SAVE_EVERY_ENV = "ARNAS_ZOO_SAVE_EVERY_S"
#: the epoch's running seconds before this process, kept with its partial sums in a mid-epoch state: an epoch
#: that spans a stop and a resume reports the seconds of all its segments (the time while stopped excluded)
ELAPSED_KEY = "_elapsed_s"


class RunInterrupted(ArnasZooError, KeyboardInterrupt):
    """The run stopped on SIGTERM/SIGINT (or a test's request) after saving its state; resume it."""


class RunTask(Protocol):
    """What :func:`run_task` needs from a run (training, an ARNAS search, a DSRNA search, ...)."""

    schema: str  # the state file's schema, e.g. "arnas-zoo/train-state@2"
    epochs: int
    steps_per_epoch: int

    @property
    def stopped(self) -> str | None:
        """Why the run ended before its last epoch (restored with the state), or None: keep going."""
        ...

    def settings(self) -> dict[str, Any]:
        """JSON identity of the run (recipe, config): a resume with other settings is refused."""
        ...

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything to resume besides the position: tensors and JSON."""
        ...

    def load(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        ...

    def step(self, epoch: int, step: int) -> Mapping[str, Any]:
        """One optimisation step; returns sums to accumulate over the epoch (floats or 0-d tensors)."""
        ...

    def end_epoch(self, epoch: int, sums: dict[str, float], seconds: float) -> dict[str, Any]:
        """The epoch's record (validation included); called on every rank."""
        ...

    def write_outputs(self, history: list[dict[str, Any]]) -> None:
        """Regenerate every derived file from the current state and ``history`` (rank 0 only)."""
        ...


def _as_floats(sums: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in sums.items()}


@dataclass
class _Position:
    """Where a run stands: the next epoch and step, the finished epochs' records, the epoch's partial sums."""

    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    partial: dict[str, Any] = field(default_factory=dict)


def _start(task: RunTask, state_path: Path, resume: bool, previous: bool, info: Dist) -> _Position:
    """A fresh position, or the saved one (its settings checked, the task restored, outputs regenerated)."""
    if not (resume or previous):
        if state_path.exists():
            raise CheckpointError(
                f"{state_path}: a run already exists here; resume it (--resume) or choose another output folder"
            )
        return _Position()
    tensors, header = load_state(state_path, schema=task.schema, previous=previous)
    diff = changed_keys(header.get("settings", {}), task.settings())
    if diff:
        raise CheckpointError(
            f"{state_path}: saved with different settings ({', '.join(diff[:8])}); resume with the same "
            "settings or start a new run in another folder"
        )
    task.load(tensors, header["task"])
    position = _Position(int(header["epoch"]), int(header["step"]), list(header["history"]), dict(header["sums"]))
    if info.main:  # a kill may have come between the state and its derived files
        task.write_outputs(position.history)
    return position


def _save(task: RunTask, state_path: Path, info: Dist, position: _Position, sums: Mapping[str, Any]) -> None:
    if not info.main:
        return
    tensors, meta = task.state()
    header = {
        "schema": task.schema,
        "settings": task.settings(),
        "epoch": position.epoch,
        "step": position.step,
        "sums": _as_floats(sums),
        "history": position.history,
        "task": meta,
        "world_size": info.world,
    }
    save_state(state_path, tensors, header)
    write_point("state")


def run_task(
    task: RunTask,
    state_path: str | Path,
    *,
    resume: bool = False,
    previous: bool = False,
    dist_info: Dist | None = None,
    progress: bool | Progress = True,
    label: str = "run",
    stop_after_steps: int | None = None,
    save_every_s: float | None = None,
) -> list[dict[str, Any]]:
    """Run ``task`` to its last epoch (or resume it) with its state at ``state_path``; returns the history.

    ``resume=True`` continues from the saved state (``previous=True``: from the state kept before the
    latest one). Without ``resume`` an existing state is an error: nothing is overwritten silently.
    ``stop_after_steps`` (a testing aid) behaves like a SIGTERM after that many steps of this call.
    ``save_every_s`` (None: ``$ARNAS_ZOO_SAVE_EVERY_S`` or 900; 0: never) saves the state mid-epoch.
    """
    info = dist_info or Dist()
    if save_every_s is None:
        save_every_s = float(os.environ.get(SAVE_EVERY_ENV, "900") or 0)
    last_save = time.monotonic()
    report = Progress.of(progress) if info.main else Progress(enabled=False)
    state_path = Path(state_path)
    at = _start(task, state_path, resume, previous, info)
    steps_this_call = 0
    with StopFlag() as stop:
        while at.epoch < task.epochs and not task.stopped:
            sums: dict[str, Any] = dict(at.partial) if at.step else {}
            before = float(sums.pop(ELAPSED_KEY, 0.0))  # the epoch's seconds in earlier processes
            started = time.perf_counter()

            def timed(sums: dict[str, Any] = sums, before: float = before, started: float = started) -> dict[str, Any]:
                return {**sums, ELAPSED_KEY: before + time.perf_counter() - started}

            with report.task(f"{label} epoch {at.epoch + 1}/{task.epochs}", task.steps_per_epoch - at.step) as bar:
                while at.step < task.steps_per_epoch:
                    limit = stop_after_steps is not None and steps_this_call >= stop_after_steps
                    if vote(info, stop.requested or limit):
                        _save(task, state_path, info, at, timed())
                        raise RunInterrupted(
                            f"{label} stopped by {stop.signal_name or 'request'} at epoch {at.epoch + 1}, step "
                            f"{at.step}; state saved to {state_path}; continue with --resume"
                        )
                    for key, value in task.step(at.epoch, at.step).items():
                        sums[key] = sums[key] + value if key in sums else value
                    at.step, steps_this_call = at.step + 1, steps_this_call + 1
                    bar.update()
                    if (
                        save_every_s > 0
                        and time.monotonic() - last_save >= save_every_s
                        and at.step < task.steps_per_epoch
                    ):
                        _save(task, state_path, info, at, timed())  # mid-epoch: resumable from this step
                        last_save = time.monotonic()
            record = task.end_epoch(at.epoch, _as_floats(sums), before + time.perf_counter() - started)
            at.history.append(record)
            at.epoch, at.step, at.partial = at.epoch + 1, 0, {}
            _save(task, state_path, info, at, {})  # the state first ...
            last_save = time.monotonic()
            if info.main:
                task.write_outputs(at.history)  # ... then everything derived from it
                write_point("outputs")
                report.write(f"{label} epoch {at.epoch}/{task.epochs}: {summarize(record)}")
                if record.get("stopped"):
                    report.write(f"{label} stopped before epoch {task.epochs}: {record['stopped']}")
        if stop.requested:  # the signal came after the last step check: the state is saved, still stop
            raise RunInterrupted(f"{label} stopped by {stop.signal_name} after its last epoch; state saved")
    return at.history


def summarize(record: Mapping[str, Any], keys: tuple[str, ...] = ()) -> str:
    """``train_loss 0.512, val_robust_acc 0.431, 12.3s`` for an epoch line."""
    shown = keys or tuple(k for k, v in record.items() if isinstance(v, (int, float)) and k != "epoch")
    parts = []
    for key in shown:
        value = record.get(key)
        if isinstance(value, float):
            parts.append(f"{key} {value:.4g}")
        elif isinstance(value, int):
            parts.append(f"{key} {value}")
    return ", ".join(parts)


def resave_state(task: RunTask, state_path: str | Path) -> None:
    """Save ``task``'s current state at the position already saved (e.g. after a finished run's final
    evaluation, so that the evaluation is part of the state its derived files are made from)."""
    state_path = Path(state_path)
    _, header = load_state(state_path, schema=task.schema)
    tensors, meta = task.state()
    header["task"] = meta
    save_state(state_path, tensors, header)
    write_point("state")
