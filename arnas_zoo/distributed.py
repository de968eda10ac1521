"""Device choice and ``torchrun`` process-group set-up, shared by training and the architecture search."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    """This process's place in the process group (rank 0 of 1 without ``torchrun``)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto``: CUDA when present, else CPU; anything else as given."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def init_distributed(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group ``torchrun`` describes when ``WORLD_SIZE > 1`` (gloo on CPU, NCCL on CUDA).

    Returns this process's :class:`Dist` and its device: under ``torchrun`` a CUDA device becomes
    ``cuda:<LOCAL_RANK>`` (and the current device), so one command serves one or many GPUs per node.
    A single process gets ``Dist()`` and the device unchanged.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return Dist(dist.get_rank(), dist.get_world_size()), device
