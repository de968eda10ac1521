"""Progress for long work: a bar on a terminal, plain timestamped lines in a log file, nothing when quiet.

A progress bar redrawn with carriage returns is unreadable in a log file, and nothing at all for 28
minutes reads as a hang. :class:`Progress` picks per stream: on a terminal it draws tqdm bars; on
anything else (a file, a pipe, CI) it writes one line at the start, at most one every ``every``
seconds while running, and one at the end, each with counts, elapsed time and an estimate of what is
left. ``Progress(quiet=True)`` writes nothing. Library functions take ``progress=`` (True, False or a
:class:`Progress`) and report through it; the CLI passes ``--quiet``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 90:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def units(n: int, unit: str) -> str:
    """``unit`` for a count of ``n``: "1 chunk of 50 points", "2 chunks of 50 points" (the first word's plural s)."""
    first, _, rest = unit.partition(" ")
    if n == 1 and first.endswith(("ches", "shes", "sses", "xes")):
        first = first[:-2]
    elif n == 1 and first.endswith("s") and not first.endswith("ss"):
        first = first[:-1]
    return f"{first} {rest}".rstrip() if rest else first


class Task:
    """One counted piece of work (``total`` units); :meth:`update` advances it."""

    def __init__(self, progress: Progress, desc: str, total: int | None, unit: str):
        self.progress, self.desc, self.total, self.unit = progress, desc, total, unit
        self.done = 0
        self.started = self.last = time.monotonic()
        self.info = ""
        self._bar: Any = None
        if progress.enabled and progress.is_terminal:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=progress.stream, dynamic_ncols=True)
        elif progress.enabled:
            self._line(start=True)

    def update(self, n: int = 1, **info: Any) -> None:
        self.done += n
        if info:
            self.info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
        if self._bar is not None:
            self._bar.update(n)
            if info:
                self._bar.set_postfix_str(self.info, refresh=False)
        elif self.progress.enabled and time.monotonic() - self.last >= self.progress.every:
            if not (self.total and self.done >= self.total):  # the closing line says it
                self._line()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.progress.enabled:
            self._line(end=True)

    def _line(self, start: bool = False, end: bool = False) -> None:
        now = time.monotonic()
        self.last = now
        elapsed = now - self.started
        unit = units(self.total if self.total is not None else self.done, self.unit)
        if start:
            count = f"{self.total} {unit}" if self.total is not None else ""
            text = f"{self.desc}: started {count}".rstrip()
        else:
            count = f"{self.done}/{self.total}" if self.total else str(self.done)
            pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
            left = ""
            if not end and self.total and self.done:
                left = f", ~{_duration(elapsed * (self.total - self.done) / self.done)} left"
            verb = "done" if end else "at"
            text = f"{self.desc}: {verb} {count} {unit}{pct}, {_duration(elapsed)}{left}"
        if self.info:
            text += f"; {self.info}"
        self.progress.write(text)


class Progress:
    """Where progress goes: ``enabled`` (False = quiet), the stream, and the line interval off a terminal."""

    def __init__(self, enabled: bool = True, stream: IO[str] | None = None, every: float = 10.0):
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.every = every
        isatty = getattr(self.stream, "isatty", None)
        self.is_terminal = bool(isatty and isatty())

    @classmethod
    def of(cls, progress: bool | Progress | None) -> Progress:
        """A :class:`Progress` from a library argument: True (stderr), False/None (quiet), or as given."""
        if isinstance(progress, Progress):
            return progress
        return cls(enabled=bool(progress))

    def write(self, text: str) -> None:
        """One line (e.g. an epoch summary), timestamped off a terminal; nothing when quiet."""
        if not self.enabled:
            return
        if not self.is_terminal:
            text = f"[{time.strftime('%H:%M:%S')}] {text}"
        if self.is_terminal:
            from tqdm.auto import tqdm

            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    @contextmanager
    def task(self, desc: str, total: int | None = None, unit: str = "steps") -> Iterator[Task]:
        """``with progress.task("eval pgd20", total=40, unit="batches") as t: ... t.update()``."""
        task = Task(self, desc, total, unit)
        try:
            yield task
        finally:
            task.close()


QUIET = Progress(enabled=False)
