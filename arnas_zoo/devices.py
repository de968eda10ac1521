"""The one place that turns a device argument into a ``torch.device``."""

from __future__ import annotations

import torch

from arnas_zoo.errors import ConfigError

_KINDS = ("cpu", "cuda", "mps", "xpu")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None): CUDA when present, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:1"``, a torch.device.

    Unknown or unavailable devices raise :class:`ConfigError` with what is available, instead of
    failing later inside torch.
    """
    if isinstance(device, torch.device):
        return device
    text = "auto" if device is None else str(device).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind = text.split(":", 1)[0]
    if kind not in _KINDS:
        raise ConfigError(f"device: expected auto, cpu, cuda or cuda:N, got {str(device)[:40]!r}")
    try:
        resolved = torch.device(text)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device: cannot read {str(device)[:40]!r}; expected auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {text} was asked for but CUDA is not available here; use --device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ConfigError(f"device: {text} does not exist; this machine has {torch.cuda.device_count()} GPU(s)")
    elif resolved.type != "cpu":
        raise ConfigError(f"device: {text} is not supported; use cpu or cuda")
    return resolved


def describe_device(device: torch.device) -> str:
    """``cuda:0 (NVIDIA H200)`` or ``cpu (x86_64, 2 threads)``: what a report says it ran on."""
    import platform

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
