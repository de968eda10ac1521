"""Where a training or search run folder stands (``arnas-zoo status RUN_DIR``): its epochs, position and hours.

A long CPU run lives for days across many processes. Its state file's header says how far it got (finished
epochs, the step inside the next one, every finished epoch's record), its ``.lock`` says whether a process
is working on it now, and each epoch's record says how long it ran. This module reads those (the state
verified against its digest, as a resume would) and answers: which epoch and step at the last save, the
validation figures so far, the running hours, and an estimate of the hours left at the pace of the
finished epochs.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from arnas_zoo.errors import ConfigError, UntrustedFileError

__all__ = ["STATE_FILES", "RunPosition", "is_run_folder", "run_position"]

#: the state files of the run kinds that use the shared loop (training, the searches)
STATE_FILES = ("train_state.safetensors", "search_state.safetensors")


@dataclass
class RunPosition:
    """A run folder's position: ``epoch`` finished epochs of ``epochs``, then ``step`` steps into the next."""

    folder: str
    kind: str  # "training" or "search"
    epochs: int | None
    epoch: int
    step: int
    steps_per_epoch: int | None
    history: list[dict[str, Any]] = field(default_factory=list)
    holder: dict[str, Any] | None = None  # the process working on the folder now (pid, host, since), if any
    partial_seconds: float | None = None  # the unfinished epoch's running seconds at its last save
    saved: str | None = None  # when the state was last saved (UTC, ISO 8601)

    @property
    def finished(self) -> bool:
        return self.epochs is not None and self.epoch >= self.epochs

    def hours_run(self) -> float:
        """Running hours recorded so far: the finished epochs' seconds plus the saved part of the next."""
        seconds = sum(float(r.get("seconds") or 0.0) for r in self.history)
        return (seconds + (self.partial_seconds or 0.0)) / 3600

    def hours_left(self) -> float | None:
        """Steps left at the last finished epoch's pace (None before an epoch has finished).

        The last epoch, not a median: it ran under the conditions most like the coming ones (the same
        machine and load), and runs stopped and resumed before 2026-12-07 recorded only the last
        segment of each epoch, which makes their early epochs look far shorter than they were.
        """
        paces = [float(r["seconds"]) for r in self.history if r.get("seconds")]
        if self.epochs is None or not self.steps_per_epoch or not paces:
            return None
        steps_left = (self.epochs - self.epoch) * self.steps_per_epoch - self.step
        return max(steps_left, 0) * paces[-1] / self.steps_per_epoch / 3600

    def to_dict(self) -> dict[str, Any]:
        derived = {"finished": self.finished, "hours_run": self.hours_run(), "hours_left": self.hours_left()}
        return {**asdict(self), **derived}

    def format(self) -> str:
        where = (
            f"finished: {self.epoch} of {self.epochs} epochs"
            if self.finished
            else f"epoch {self.epoch + 1} of {self.epochs or '?'}, step {self.step} of {self.steps_per_epoch or '?'}"
        )
        state = (
            f"running (pid {self.holder.get('pid')} on {self.holder.get('host')})"
            if self.holder
            else "not running" + ("" if self.finished else ": continue it with --resume")
        )
        left = self.hours_left()
        lines = [
            f"{self.folder}: {self.kind} run, {where} (saved {self.saved or '?'}); {state}",
            f"  {self.hours_run():.2f} h of running time recorded"
            + ("" if left is None or self.finished else f"; about {left:.1f} h left at the last epoch's pace"),
        ]
        metrics = _metric_keys(self.history)
        if self.history:
            head = ["epoch", "hours"] + [k.removeprefix("val_").removesuffix("_acc") for k in metrics]
            lines.append("  " + "".join(h.rjust(10) for h in head))
            for r in self.history:
                cells = [str(r.get("epoch", "?")), f"{float(r.get('seconds') or 0) / 3600:.2f}"]
                cells += [f"{100 * float(r[k]):.1f}%" if isinstance(r.get(k), (int, float)) else "-" for k in metrics]
                lines.append("  " + "".join(c.rjust(10) for c in cells))
            if metrics:
                lines.append(f"  ({', '.join(metrics)}: the validation figures each epoch recorded)")
        return "\n".join(lines)


def _metric_keys(history: list[dict[str, Any]]) -> list[str]:
    """Validation accuracies the records carry (``val_clean_acc``, ``val_robust_acc``, ``val_natural_acc``)."""
    keys: list[str] = []
    for r in history:
        for k, v in r.items():
            if k.startswith("val_") and k.endswith("_acc") and isinstance(v, (int, float)) and k not in keys:
                keys.append(k)
    return keys


def _state_file(folder: Path) -> Path | None:
    return next((folder / name for name in STATE_FILES if (folder / name).is_file()), None)


def is_run_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds the state file of a training or search run."""
    return _state_file(Path(folder)) is not None


def _header(path: Path) -> dict[str, Any]:
    """The state's header, verified against its digest like a resume does (a few MB read; nothing kept)."""
    from arnas_zoo.runs.state import read_state

    _, header = read_state(path)
    if not isinstance(header.get("history", []), list):
        raise UntrustedFileError(f"{path}: the run header is not a run position")
    return header


def _flock_held(path: Path) -> bool | None:
    """Whether some process holds an flock on ``path`` now, from Linux's ``/proc/locks`` (None elsewhere).

    Read, not tried: taking the lock to test it, however briefly, could refuse a run starting that instant.
    """
    try:
        st = path.stat()
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return any(line.split()[1:2] == ["FLOCK"] and device in line.split() for line in table.splitlines())


def _holder(folder: Path) -> dict[str, Any] | None:
    """The process that holds the folder's run lock now (pid, host, since; from ``.lock``), or None."""
    from arnas_zoo.runs.lock import LOCK_FILE

    path = folder / LOCK_FILE
    try:
        info = json.loads(path.read_text()[:65536])
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    held = _flock_held(path)
    if held is None and info.get("host") == socket.gethostname():  # no lock table here: is the writer alive?
        try:
            os.kill(int(info["pid"]), 0)
            held = True
        except (OSError, ValueError, KeyError, TypeError):
            held = False
    if held is False:
        return None
    return {k: info.get(k) for k in ("pid", "host", "started", "what")}


def run_position(folder: str | Path) -> RunPosition:
    """Read ``folder``'s run state header (no tensors) and lock: see :class:`RunPosition`."""
    from arnas_zoo.runs.loop import ELAPSED_KEY

    root = Path(folder)
    path = _state_file(root)
    if path is None:
        raise ConfigError(f"{folder}: no {' or '.join(STATE_FILES)}; not a training or search run folder")
    header = _header(path)
    settings = header.get("settings") or {}
    kind = "training" if path.name.startswith("train") else "search"
    source = settings.get("recipe") if kind == "training" else settings.get("config")
    source = source if isinstance(source, dict) else {}
    history = [r for r in header.get("history", []) if isinstance(r, dict)]
    steps = source.get("steps_per_epoch")
    if not steps and history and history[0].get("global_step") and history[0].get("epoch"):
        steps = int(history[0]["global_step"]) // int(history[0]["epoch"])  # training: steps of the first epoch
    sums = header.get("sums") or {}
    epochs = source.get("epochs")
    return RunPosition(
        folder=str(folder),
        kind=kind,
        epochs=int(epochs) if isinstance(epochs, int) else None,
        epoch=int(header.get("epoch", 0)),
        step=int(header.get("step", 0)),
        steps_per_epoch=int(steps) if steps else None,
        history=history,
        holder=_holder(root),
        partial_seconds=float(sums[ELAPSED_KEY]) if isinstance(sums.get(ELAPSED_KEY), (int, float)) else None,
        saved=datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
