"""What every benchmark records about the machine, and how it writes its result (``--out``)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    """The CPU, torch, threads and the load average now (call it when the timing is done)."""
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_at_end": os.getloadavg(),
    }


def write(result: dict[str, Any], out: str | None, echo: bool = True) -> None:
    """Print ``result`` as JSON (``echo``) and write it to ``out`` when given."""
    text = json.dumps(result, indent=1)
    if echo:
        print(text)
    if out:
        Path(out).write_text(text + "\n")
        print(f"wrote {out}")
