"""Data parallelism under ``torchrun``: the process group, synchronised BatchNorm, and collectives.

Every collective here runs on the process group's own device (:attr:`Dist.device`: the local GPU
for NCCL, the CPU for gloo), since NCCL accepts only CUDA tensors. ``ARNAS_ZOO_DIST_BACKEND=gloo``
forces gloo (for example several processes sharing one GPU, or a CPU-only smoke test), and ranks map
onto GPUs as ``LOCAL_RANK % device_count()``, so N processes can share fewer GPUs.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import warnings
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

BACKEND_ENV = "ARNAS_ZOO_DIST_BACKEND"


@dataclass(frozen=True)
class Dist:
    """This process's place in the process group (rank 0 of 1 without ``torchrun``)."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where collectives run

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group ``torchrun`` describes when ``WORLD_SIZE > 1``.

    Returns this process's :class:`Dist` and its compute device: under ``torchrun`` a CUDA device
    becomes ``cuda:<LOCAL_RANK % device_count>`` (and the current device). A single process gets
    ``Dist()`` and the device unchanged.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(device=device), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % max(torch.cuda.device_count(), 1))
        torch.cuda.set_device(device)
    backend = os.environ.get(BACKEND_ENV) or ("nccl" if device.type == "cuda" else "gloo")
    if not dist.is_initialized():
        if backend == "nccl":
            dist.init_process_group(backend, device_id=device)
        else:
            dist.init_process_group(backend)
        # The group lives for the whole process (a sweep runs several searches in it) and is destroyed
        # while the interpreter is still whole: a process that exits with gloo's worker threads alive
        # can abort in finalisation ("terminate called without an active exception", seen in CI).
        atexit.register(shutdown)
    collective_device = device if backend == "nccl" else torch.device("cpu")
    return Dist(dist.get_rank(), dist.get_world_size(), collective_device), device


def shutdown() -> None:
    """Destroy the default process group if one exists (registered at exit by :func:`init_distributed`).

    No barrier: a rank reaches this only after its last collective, and a rank that failed may never
    reach a barrier.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def finish_worker() -> None:
    """End a torchrun worker whose command succeeded: meet every rank, destroy the group, exit 0 at once.

    No-op outside a process group. The barrier keeps a rank from closing its gloo connections while
    another still uses them; leaving with ``os._exit`` skips interpreter finalisation, where threads
    that torch.distributed and its backends start can still run and abort the process ("terminate
    called without an active exception": a torchrun search rank in CI, once with and once without
    the group destroyed at exit). Output streams and logging are flushed first. Failures do not come
    here: they exit through :func:`shutdown` at exit, with no barrier a failed rank may never reach.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier()
    dist.destroy_process_group()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)


def vote(info: Dist, flag: bool) -> bool:
    """True on every rank when any rank says True (so all ranks stop at the same step)."""
    if info.world <= 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def all_reduce_sum(info: Dist, values: torch.Tensor) -> torch.Tensor:
    """The sum of ``values`` over ranks (computed on the group's device, returned on ``values``' device)."""
    if info.world <= 1:
        return values
    t = values.to(info.device, torch.float64).clone()
    dist.all_reduce(t)
    return t.to(values.device)


def all_reduce_mean(grads: list[torch.Tensor], info: Dist) -> list[torch.Tensor]:
    """Average gradients over ranks with one all-reduce of a flat buffer."""
    if info.world <= 1 or not grads:
        return grads
    buffer = torch.cat([g.reshape(-1).float() for g in grads]).to(info.device)
    dist.all_reduce(buffer)
    buffer /= info.world
    out, offset = [], 0
    for g in grads:
        # empty_like keeps the gradient's memory format (channels_last parameters keep a fast optimizer path)
        out.append(torch.empty_like(g).copy_(buffer[offset : offset + g.numel()].view(g.shape)))
        offset += g.numel()
    return out


def average_buffers(model: nn.Module, info: Dist) -> None:
    """Make floating buffers (BN running statistics) equal on every rank: their mean; others from rank 0."""
    if info.world <= 1:
        return
    with torch.no_grad():
        for b in model.buffers():
            t = b.to(info.device)
            if b.dtype.is_floating_point:
                dist.all_reduce(t)
                t /= info.world
            else:
                dist.broadcast(t, 0)
            b.copy_(t)


class DistBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics are those of the global batch across all processes.

    ``nn.SyncBatchNorm`` runs on CUDA only; this one all-reduces per-channel sums with
    ``torch.distributed.nn.functional.all_reduce`` (differentiable), so it works on gloo/CPU too.
    With N processes each holding a shard, it computes what one process computes on the whole batch.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        xf = x.float()
        count = torch.full((1,), x.numel() / c, device=x.device, dtype=torch.float32)  # a fill, no host copy
        packed = torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), count])
        with warnings.catch_warnings():  # its replacement in torch is private API; this one is differentiable
            warnings.filterwarnings("ignore", message=".*all_reduce is deprecated", category=FutureWarning)
            packed = all_reduce(packed)
        n = packed[-1]
        mean = packed[:c] / n
        var = (packed[c : 2 * c] / n - mean * mean).clamp_min(0.0)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1).clamp_min(1))
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked.add_(1)
        out = (xf - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out.to(x.dtype)


def convert_dist_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` of ``module`` (in place) by :class:`DistBatchNorm2d`, keeping its state."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, DistBatchNorm2d):
            new = DistBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            new.load_state_dict(child.state_dict())
            state = child.state_dict()
            if state:
                new.to(next(iter(state.values())).device)
            setattr(module, name, new)
        else:
            convert_dist_batchnorm(child)
    return module
