"""What a job run folder holds (`arnas-zoo status`): done, running, failed and pending jobs of `arnas_zoo.jobs`."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from arnas_zoo.errors import ConfigError, UntrustedFileError
from arnas_zoo.jobs import Job, _jobs_dir, plan
from arnas_zoo.safe_json import read_json

__all__ = ["JobStatus", "status"]


@dataclass
class JobStatus:
    done: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"{len(self.done)} done, {len(self.running)} running, {len(self.failed)} failed, "
            f"{len(self.pending)} pending"
        )


def status(run_dir: str | Path, jobs: Sequence[Job] | None = None) -> JobStatus:
    """What the run folder holds: done / running / failed jobs (and pending ones when ``jobs`` is given)."""
    folder = _jobs_dir(Path(run_dir))
    if not folder.is_dir():
        raise ConfigError(f"{run_dir}: no jobs/ folder; not a job run folder")
    names = {p.name for p in folder.iterdir()}
    st = JobStatus()
    keys = (
        [j.key for j in jobs]
        if jobs is not None
        else sorted(
            set(plan(run_dir))
            | {n.split(".")[0] for n in names if _is_key(n.split(".")[0]) and n.endswith((".json", ".running"))}
        )
    )
    for key in keys:
        if f"{key}.json" in names:
            st.done.append(key)
        elif f"{key}.running" in names and _alive(folder / f"{key}.running"):
            st.running.append(key)
        elif f"{key}.failed.json" in names:
            st.failed.append(key)
        else:
            st.pending.append(key)
    return st


def _is_key(name: str) -> bool:
    return len(name) == 20 and all(c in "0123456789abcdef" for c in name)


def _alive(marker: Path) -> bool:
    """A running marker is stale when its process (on this host) is gone, e.g. a killed driver."""
    try:
        info = read_json(marker, max_bytes=65536, what="running marker")
        if not isinstance(info, dict):
            return False
    except (OSError, UntrustedFileError):
        return False
    if info.get("host") != socket.gethostname():
        return True  # another machine's worker: trust the marker
    try:
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return False
    return True
