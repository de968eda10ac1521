"""Claim a run folder: a new one, or the same run resumed (its saved settings must match)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from arnas_zoo.errors import ConfigError
from arnas_zoo.genotype import DESCRIPTIVE_KEYS
from arnas_zoo.genotype import SCHEMA as GENOTYPE_SCHEMA


def changed_keys(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """The keys whose values differ between two settings mappings, compared as JSON (a tuple equals its list).

    A genotype's free text (:data:`arnas_zoo.genotype.DESCRIPTIVE_KEYS`: source, paper, notes) is not compared:
    rewording the notes of a registered genotype must not strand the runs that train it.
    """
    before, after = _as_json(saved), _as_json(now)
    return sorted(str(k) for k in set(before) | set(after) if before.get(k) != after.get(k))


def _as_json(settings: Mapping[str, Any]) -> dict[str, Any]:
    return _without_descriptions(json.loads(json.dumps(dict(settings))))


def _without_descriptions(value: Any) -> Any:
    if isinstance(value, list):
        return [_without_descriptions(v) for v in value]
    if not isinstance(value, dict):
        return value
    genotype = value.get("schema") == GENOTYPE_SCHEMA
    return {k: _without_descriptions(v) for k, v in value.items() if not (genotype and k in DESCRIPTIVE_KEYS)}


def claim_run_folder(
    out_dir: str | Path,
    settings: Mapping[str, Any],
    what: str,
    resume: bool,
    *,
    state: str | None = None,
    file: str = "config.json",
) -> Path:
    """Create ``out_dir`` with ``file`` (``config.json``) = ``settings``: every run folder is claimed here.

    A run of jobs (no ``state``): an existing ``file`` means a run is there. It is refused without ``resume``;
    with ``resume`` its saved settings must equal ``settings`` (the changed keys are named).

    A run on :func:`~arnas_zoo.runs.run_task` (``state``: its state file's name) is judged by its state: when
    the state exists, nothing is written here and :func:`run_task` refuses a run without ``resume`` or with
    other settings (the state holds them); a folder killed before its first save starts afresh.
    """
    from arnas_zoo.atomic import atomic_write_json

    out = Path(out_dir)
    saved = out / file
    if state is not None:
        if not (out / state).exists():
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(saved, _as_json(settings))
        return out
    if saved.is_file():
        if not resume:
            raise ConfigError(f"{out}: a {what} is already there; pass --resume to continue it")
        from arnas_zoo.safe_json import read_json_object

        changed = changed_keys(
            read_json_object(saved, max_bytes=16 * 1024 * 1024, what=f"saved {what} config"), settings
        )
        if changed:
            raise ConfigError(f"{out}: --resume with a different config (changed: {changed})")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(saved, _as_json(settings))
    return out
