"""The thread policy of the command line: OpenMP threads that sleep instead of spinning.

PyTorch's CPU kernels run on OpenMP threads that, by default, spin in barriers waiting for work
(GNU OpenMP's ``OMP_WAIT_POLICY=active``-like default). On an idle machine that costs nothing; on a
busy one a spinning thread burns the core another thread of the same op needs, and every small
kernel (the quick start's networks are made of them) waits for a descheduled sibling. Measured on
this project's 2-core machine (docs/performance.md): the quick start's first two epochs took 59 s
idle, 399 s next to a 2-process CPU hog with the default policy, and 150 s with passive waiting.

:func:`apply_thread_policy` sets ``OMP_WAIT_POLICY=PASSIVE`` before torch is imported, unless the
user set it (or ``ARNAS_ZOO_THREAD_POLICY=default`` asks to leave OpenMP alone). It must run before
the first ``import torch`` of the process: the command lines call it first thing; a library user
can call it before importing torch, or export the variable.
"""

from __future__ import annotations

import os
import sys

POLICY_ENV = "ARNAS_ZOO_THREAD_POLICY"


def apply_thread_policy() -> str:
    """Choose how OpenMP threads wait; returns what was decided (for logs and tests).

    ``passive`` unless ``OMP_WAIT_POLICY`` is already set (the user's choice wins), or
    ``ARNAS_ZOO_THREAD_POLICY=default`` keeps the OpenMP default. Once torch is imported the OpenMP
    runtime has read its environment, so a late call changes nothing and says so.
    """
    if os.environ.get(POLICY_ENV, "").lower() == "default":
        return "default (ARNAS_ZOO_THREAD_POLICY=default)"
    if "OMP_WAIT_POLICY" in os.environ:
        return f"user ({os.environ['OMP_WAIT_POLICY']})"
    if "torch" in sys.modules:
        return "unchanged (torch was imported before the policy could apply)"
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return "passive"
