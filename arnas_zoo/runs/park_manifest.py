"""What a park holds and how its manifest is read: shared by the folder and the Hub transports.

``PARKED.json`` (:data:`MANIFEST`) lists every parked file (path relative to the parked folder, size,
SHA-256) and every run's position. A manifest is untrusted input: its paths must stay inside the folder
they name, and names a park never holds (locks, temporaries) are refused.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

from arnas_zoo.errors import ConfigError, UntrustedFileError

__all__ = ["MANIFEST", "SCHEMA", "SKIPPED", "NothingParkedError", "read_manifest", "skipped"]

MANIFEST = "PARKED.json"
SCHEMA = "arnas-zoo/parked-runs/v1"
SKIPPED = (".lock", "*.lock", "*.claim", "*.tmp", ".*.link-*", "*.prev.safetensors", MANIFEST)


class NothingParkedError(ConfigError):
    """The destination holds no park (a folder without LATEST, a Hub repo that does not exist)."""


def skipped(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in SKIPPED)


def _safe_relative(rel: Any) -> str:
    """A manifest path that stays inside the folder it names (no absolute path, no ``..``)."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel:
        raise UntrustedFileError(f"{MANIFEST}: bad file name {str(rel)[:80]!r}")
    if any(part in ("", ".", "..") for part in rel.split("/")) or skipped(rel.rsplit("/", 1)[-1]):
        raise UntrustedFileError(f"{MANIFEST}: bad file name {rel[:80]!r}")
    return rel


def read_manifest(folder: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{folder}: no {MANIFEST}; not a parked folder of runs") from None
    except (OSError, ValueError) as exc:
        raise UntrustedFileError(f"{folder / MANIFEST}: unreadable ({type(exc).__name__})") from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("schema") != SCHEMA
        or not isinstance(manifest.get("files"), dict)
    ):
        raise UntrustedFileError(f"{folder / MANIFEST}: not an arnas-zoo park manifest ({SCHEMA})")
    for rel, entry in manifest["files"].items():
        _safe_relative(rel)
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise UntrustedFileError(f"{folder / MANIFEST}: bad entry for {rel[:80]!r}")
    runs = manifest.get("runs", {})
    if not isinstance(runs, dict) or not all(_is_position(run) for run in runs.values()):
        raise UntrustedFileError(f"{folder / MANIFEST}: bad run positions (each needs an integer epoch and step)")
    return manifest


def _is_position(run: Any) -> bool:
    return isinstance(run, dict) and all(type(run.get(k)) is int and run[k] >= 0 for k in ("epoch", "step"))
