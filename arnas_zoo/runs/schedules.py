"""Learning-rate schedules in epoch units (fractional epochs give per-step schedules)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from arnas_zoo.errors import ConfigError

SCHEDULES = ("multistep", "cosine", "cyclic", "constant")


def scheduled_lr(
    kind: str,
    t: float,
    *,
    lr: float,
    total: float,
    lr_min: float = 0.0,
    milestones: Sequence[float] = (),
    gamma: float = 0.1,
    warmup: float = 0.0,
) -> float:
    """Learning rate after ``t`` of ``total`` epochs.

    ``multistep``: ``lr * gamma^k`` after the k-th milestone passed (``t >= m``); ``cosine``: from ``lr``
    to ``lr_min`` over ``total`` (DARTS, SGDR without restarts); ``cyclic``: a triangle 0 -> ``lr`` at
    2/5 of training -> 0 (Wong et al. 2020); ``constant``. A linear ``warmup`` multiplies the first
    epochs.
    """
    if kind == "multistep":
        value = lr * gamma ** sum(1 for m in milestones if t >= m)
    elif kind == "cosine":
        value = lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * min(t / total, 1.0)))
    elif kind == "cyclic":
        peak = 0.4 * total
        value = lr * (t / peak if t < peak else max(0.0, (total - t) / (total - peak)))
    elif kind == "constant":
        value = lr
    else:
        raise ConfigError(f"schedule: expected one of {list(SCHEDULES)}, got {kind!r}")
    if warmup > 0 and t < warmup:
        value *= t / warmup
    return value
