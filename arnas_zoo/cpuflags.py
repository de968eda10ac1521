"""What this CPU can do, from /proc/cpuinfo's flags (read once per process; empty where unknown)."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The first processor's flags in /proc/cpuinfo; empty where the file is absent or has none (not Linux)."""
    try:
        with open("/proc/cpuinfo") as info:
            return frozenset(next((line for line in info if line.startswith("flags")), "").split()[2:])
    except OSError:
        return frozenset()


def has_amx_bf16() -> bool:
    """Whether the CPU has AMX tiles for bf16 (Sapphire Rapids and later): oneDNN runs bf16 convolutions there.

    A constant to ``torch.compile``: a model's forward asks it, and tracing the file read would break the graph.
    """
    return _HAS_AMX_BF16


_HAS_AMX_BF16 = "amx_bf16" in cpu_flags()
