"""Job kinds for tests/test_jobs.py (importable by Ray workers through PYTHONPATH)."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path
from typing import Any


def square(args: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """A deterministic job: the square of ``x`` and a digest (same bytes on every backend)."""
    time.sleep(float(args.get("sleep", 0.0)))
    x = int(args["x"])
    return {"x": x, "square": x * x, "digest": hashlib.sha256(str(x).encode()).hexdigest()}


def die_once(args: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """SIGKILLs its own process the first time (a worker dying mid-job), succeeds the second time."""
    marker = Path(run_dir) / f"died-{args['x']}"
    if not marker.exists():
        marker.write_text("x")
        os.kill(os.getpid(), signal.SIGKILL)
    return square(args, run_dir)


def always_fails(args: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    count = Path(run_dir) / f"attempts-{args['x']}"
    count.write_text(str(int(count.read_text()) + 1 if count.exists() else 1))
    raise ValueError(f"job {args['x']} cannot succeed")


def counted(args: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Appends this process's pid to ``runs-X`` (how often, and by whom, the job ran), then naps ``sleep``
    seconds and for as long as ``run_dir/nap-X`` exists."""
    with open(Path(run_dir) / f"runs-{args['x']}", "a") as fh:
        fh.write(f"{os.getpid()}\n")
    time.sleep(float(args.get("sleep", 0.0)))
    while (Path(run_dir) / f"nap-{args['x']}").exists():
        time.sleep(0.05)
    return square(args, run_dir)
