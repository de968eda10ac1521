"""Mixed precision: which autocast a run uses, and logits in full precision for the loss."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from arnas_zoo.cpuflags import cpu_flags

Autocast = Callable[[], contextlib.AbstractContextManager[Any]]


def cpu_has_native_bf16() -> bool | None:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), from /proc/cpuinfo; None if unknown."""
    flags = cpu_flags()
    return bool({"avx512_bf16", "amx_bf16"} & flags) if flags else None


def autocast_for(device: torch.device, bf16: bool, *, cpu: bool = False) -> Autocast:
    """bf16 autocast on CUDA when ``bf16``; on CPU only when ``cpu`` is also asked for (opt-in: it pays
    only on CPUs with native bf16; without it, emulated bf16 was measured 14x slower per training step,
    so a warning says so). Otherwise a no-op context."""
    if cpu and bf16 and device.type == "cpu" and cpu_has_native_bf16() is False:
        warnings.warn(
            "bf16 autocast on a CPU without native bf16 (no avx512_bf16/amx_bf16 in /proc/cpuinfo): it is emulated "
            "and much slower than fp32 here (benchmarks/results/training_cpu_zoo_recipe_bf16.json)",
            stacklevel=2,
        )
    if bf16 and (device.type == "cuda" or (cpu and device.type == "cpu")):
        return partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def full_precision(logits: torch.Tensor) -> torch.Tensor:
    """Logits for the loss: float32 under bf16/fp16 autocast; float64 left alone (tests run in float64)."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


@contextlib.contextmanager
def no_tf32() -> Any:
    """TF32 off for matmuls and cuDNN convolutions inside the block (restored after).

    On Ampere+ GPUs cuDNN convolutions run in TF32 by default (10-bit mantissa); a finite difference
    of two gradients at ``w +- r v`` drowns in that rounding, so the Hessian-vector product of the
    second-order search runs in full float32. No effect on CPU.
    """
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


def tune_cudnn(device: torch.device) -> None:
    """Let cuDNN pick the fastest convolution algorithms for a run's fixed shapes (CUDA only).

    Training and search feed the same batch shapes for thousands of steps, so the one-off benchmark
    per shape pays for itself. It makes the chosen algorithms, and so the low bits of a CUDA run,
    depend on timing: bit-exact resume is a CPU promise (docs/gpu.md).
    """
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
