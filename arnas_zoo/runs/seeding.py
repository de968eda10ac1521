"""Reproducible randomness per (seed, epoch, step): every batch's draws come from their own generator.

A run resumed at any step therefore sees exactly the batches and noise an uninterrupted run would
have seen, without replaying earlier draws. ``step = -1`` is the epoch's shuffle; ``stream``
separates independent streams of one step (e.g. a search's weight and architecture batches).
"""

from __future__ import annotations

import torch

_MOD = 2**62


def seed_for(seed: int, epoch: int, step: int, stream: int = 0) -> int:
    """A distinct, reproducible seed for ``(seed, epoch, step, stream)``."""
    base = (((seed + 1) * 1_000_003 + epoch) * 1_000_033 + step + 1) % _MOD
    return (base * 1_000_037 + stream) % _MOD if stream else base


def generator(device: torch.device | str, seed: int) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen
