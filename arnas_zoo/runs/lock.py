"""One writer per run folder: an OS-level lock held for the life of a run.

Two processes writing into one run folder interleave their files (the second run's recipe beside the
first run's state and log) and one run's results are lost. :class:`RunFolderLock` takes an exclusive
``fcntl.flock`` on ``RUN_DIR/.lock`` without waiting; a second writer is refused at once with a
:class:`~arnas_zoo.errors.RunFolderBusyError` naming the holder (pid, host, command, since when). The
kernel releases the lock when the holder exits, however it exits (SIGKILL included), so a stale lock
file never blocks the next run. On systems without ``fcntl`` (Windows) the lock is a no-op.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from arnas_zoo.errors import RunFolderBusyError

LOCK_FILE = ".lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class RunFolderLock:
    """``with RunFolderLock(run_dir): ...`` -- exclusive for the block; re-entrant within one process."""

    _held: dict[str, int] = {}  # resolved folder -> nesting depth in this process

    def __init__(self, run_dir: str | Path, what: str = "run") -> None:
        self.folder = Path(run_dir)
        self.what = what
        self._fh: IO[str] | None = None
        self._key = ""

    def __enter__(self) -> RunFolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._key = str(self.folder.resolve())
        if self._held.get(self._key):
            self._held[self._key] += 1  # the same process already holds it (a run inside a run)
            return self
        if fcntl is None:  # pragma: no cover
            self._held[self._key] = 1
            return self
        fh = open(self.folder / LOCK_FILE, "a+")  # noqa: SIM115 -- held open for the life of the run
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = _describe(fh.read(4096))
            fh.close()
            raise RunFolderBusyError(
                f"{self.folder}: in use by another {holder}; one writer per run folder: wait for it to finish, "
                "or choose another output folder"
            ) from None
        fh.seek(0)
        fh.truncate()
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "what": self.what}
        info["command"] = " ".join(sys.argv)[:300]
        fh.write(json.dumps(info))
        fh.flush()
        self._fh = fh
        self._held[self._key] = 1
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._held[self._key] -= 1
        if self._held[self._key] > 0:
            return
        del self._held[self._key]
        if self._fh is not None:
            self._fh.close()  # closing releases the flock
            self._fh = None


def lock_if(enabled: bool, run_dir: str | Path, what: str) -> contextlib.AbstractContextManager[Any]:
    """``RunFolderLock(run_dir, what)`` where ``enabled`` (rank 0 of a DDP run speaks for all), else nothing."""
    return RunFolderLock(run_dir, what) if enabled else contextlib.nullcontext()


def _describe(text: str) -> str:
    try:
        info: dict[str, Any] = json.loads(text)
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["started"])))
        command = info.get("command", "?")
        return f"{info.get('what', 'run')} (pid {info['pid']} on {info['host']}, since {since}: {command})"
    except (ValueError, KeyError, TypeError):
        return "process (its lock file is unreadable)"


@contextlib.contextmanager
def job_claim(folder: str | Path, key: str, *, wait: bool) -> Iterator[bool]:
    """``with job_claim(jobs_dir, key, wait=False) as mine:`` -- an exclusive ``flock`` on
    ``jobs_dir/KEY.claim`` for the block, so that processes sharing a job folder (a run and its helpers,
    ``arnas-zoo eval --join``) never run one job twice. ``mine`` is False when another process holds it
    and ``wait`` is False; with ``wait`` the block starts once the holder is done (its result is then on
    disk, or the holder died and the job is free). Without ``fcntl``: always True."""
    if fcntl is None:  # pragma: no cover
        yield True
        return
    path = Path(folder) / f"{key}.claim"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError:
            yield False
            return
        yield True  # closing the file releases the flock
