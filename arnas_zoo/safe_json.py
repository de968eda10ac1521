"""One bounded, typed reader for every JSON file the command line and the job layer read from disk.

A hostile or damaged file must never become an untyped crash or a huge allocation: the size is checked
before anything is read, bytes that are not UTF-8, text that is not JSON and nesting too deep for the
parser all become :class:`~arnas_zoo.errors.UntrustedFileError` with the path and what was expected.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from arnas_zoo.errors import UntrustedFileError

#: Default size cap: far above any config, metrics or job result this project writes.
MAX_JSON_BYTES = 64 * 1024 * 1024


def read_json(path: str | os.PathLike[str], *, max_bytes: int = MAX_JSON_BYTES, what: str = "JSON file") -> Any:
    """The parsed content of ``path``; UntrustedFileError when it is oversized, not UTF-8 or not JSON.

    OSError (missing, unreadable) passes through unchanged: callers decide whether absence is an error.
    """
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise UntrustedFileError(f"{path}: {what} of {size:,} bytes exceeds the limit of {max_bytes:,}; not read")
    with open(path, "rb") as fh:
        raw = fh.read(max_bytes + 1)
    if len(raw) > max_bytes:  # grew while we looked
        raise UntrustedFileError(f"{path}: {what} exceeds the limit of {max_bytes:,} bytes; not read")
    return parse_json(raw, where=str(path), what=what)


def parse_json(raw: bytes | str, *, where: str, what: str = "JSON") -> Any:
    """``raw`` parsed as JSON, with every way it can be wrong typed (see :func:`read_json`)."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise UntrustedFileError(f"{where}: {what} is not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise UntrustedFileError(f"{where}: {what} is nested too deeply to parse") from None
    except ValueError as exc:
        raise UntrustedFileError(f"{where}: {what} is not valid JSON ({str(exc)[:120]})") from None


def read_json_object(path: str | os.PathLike[str], *, max_bytes: int = MAX_JSON_BYTES, what: str = "JSON file") -> dict:
    """Like :func:`read_json`, for files that must hold one JSON object."""
    data = read_json(path, max_bytes=max_bytes, what=what)
    if not isinstance(data, dict):
        raise UntrustedFileError(f"{path}: {what} must be a JSON object, got {type(data).__name__}")
    return data
