"""A test hook that kills the process right after a chosen write point (no sleeps, no races).

``ARNAS_ZOO_KILL_AFTER=<point>:<n>`` makes the n-th passage (1-based) through :func:`write_point`
named ``<point>`` end the process with SIGKILL, exactly as a machine that dies there would. Tests
use it to prove that a kill after any write leaves a run that resumes to the uninterrupted result.
"""

from __future__ import annotations

import os
import signal

ENV = "ARNAS_ZOO_KILL_AFTER"
_seen: dict[str, int] = {}


def write_point(name: str) -> None:
    """Mark that the write ``name`` just completed (a no-op unless the test hook targets it)."""
    target = os.environ.get(ENV)
    if not target:
        return
    point, _, count = target.partition(":")
    if point != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
