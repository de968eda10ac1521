"""Claim a run folder: a new one, or the same run resumed (its saved settings must match)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from arnas_zoo.errors import ConfigError


def claim_run_folder(out_dir: str | Path, settings: Mapping[str, Any], what: str, resume: bool) -> Path:
    """Create ``out_dir`` with ``config.json`` = ``settings``; an existing run there is refused without
    ``resume``, and with ``resume`` its saved settings must equal ``settings`` (the changed keys are named)."""
    from arnas_zoo.atomic import atomic_write_json

    out = Path(out_dir)
    saved = out / "config.json"
    now = json.loads(json.dumps(dict(settings)))  # tuples and lists compare as JSON does
    if saved.is_file():
        if not resume:
            raise ConfigError(f"{out}: a {what} is already there; pass --resume to continue it")
        from arnas_zoo.safe_json import read_json_object

        before = read_json_object(saved, max_bytes=16 * 1024 * 1024, what=f"saved {what} config")
        if before != now:
            changed = sorted(str(k) for k in set(before) | set(now) if before.get(k) != now.get(k))
            raise ConfigError(f"{out}: --resume with a different config (changed: {changed})")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(saved, now)
    return out
