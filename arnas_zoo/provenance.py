"""What produced a figure: package versions, the interpreter, the machine. Recorded in every metrics file."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from typing import Any


def versions() -> dict[str, str]:
    """Versions a result depends on (python, torch, numpy, arnas-zoo; torchvision when importable)."""
    import numpy
    import torch

    from arnas_zoo._version import __version__

    out = {
        "arnas_zoo": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
    }
    try:
        import torchvision

        out["torchvision"] = torchvision.__version__
    except ImportError:  # optional for reporting
        pass
    return out


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


#: The environment switches that choose how the networks compute (kernels, fusions, rounding order). Each
#: keeps the function, but several change float rounding, so a figure records the ones that were set.
COMPUTE_SWITCHES = (
    "ARNAS_ZOO_SEPCONV",
    "ARNAS_ZOO_DILATED",
    "ARNAS_ZOO_DWGRAD",
    "ARNAS_ZOO_DW_WGRAD",
    "ARNAS_ZOO_DW_FP32",
    "ARNAS_ZOO_SHARED_RELU",
    "ARNAS_ZOO_SUBSAMPLE",
    "ARNAS_ZOO_COMPILED_INFERENCE",
)


def compute() -> dict[str, Any]:
    """How this process computes: torch's CPU kernel level, whether the CPU has AMX for bf16 (where the
    default composes separable blocks under bf16 autocast), and the compute switches set (unset: defaults)."""
    import torch

    from arnas_zoo.cpuflags import has_amx_bf16

    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "amx_bf16": has_amx_bf16(),
        "switches": {k: os.environ[k] for k in COMPUTE_SWITCHES if k in os.environ},
    }


def environment() -> dict[str, Any]:
    """Versions plus the host, platform and compute paths, as one JSON-able object."""
    return {"versions": versions(), "host": platform.node(), "platform": platform.platform(), "compute": compute()}
