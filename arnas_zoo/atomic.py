"""Atomic file writes: a reader sees a file's old content or its new content, never part of either.

Every file the project writes that another process may read (run states' companions, job results,
checkpoints, JSON records, plots, arrays, ONNX models) goes through :func:`replacing`: the content is
written to a temporary file beside the target (same directory, so the same filesystem), which is then
renamed over the target with ``os.replace``, atomic on POSIX and Windows. The temporary name carries
the host and the process, so writers on a shared filesystem never collide; it is removed if the write
fails. A leaf module: the standard library only, importable from anywhere without a cycle.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_json", "atomic_write_text", "replacing", "temporary_path"]


def temporary_path(path: str | Path) -> Path:
    """A hidden name beside ``path`` for this host and process, ending in ``path``'s suffix (writers such as
    ``numpy.savez`` and ``matplotlib`` choose a format, or append one, by the suffix)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp-{socket.gethostname()}-{os.getpid()}{path.suffix}")


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """``with replacing(path) as tmp: write(tmp)``: on success ``tmp`` replaces ``path``; on error it is removed."""
    target = Path(path)
    tmp = temporary_path(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, data: Any, *, sort_keys: bool = False) -> None:
    """``data`` as indented JSON with a final newline."""
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=sort_keys) + "\n")
