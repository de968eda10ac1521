"""What produced a figure: package versions, the interpreter, the machine. Recorded in every metrics file."""

from __future__ import annotations

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


def environment() -> dict[str, Any]:
    """Versions plus the host and platform, as one JSON-able object."""
    return {"versions": versions(), "host": platform.node(), "platform": platform.platform()}
