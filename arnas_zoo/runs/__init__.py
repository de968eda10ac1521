"""The run machinery shared by training and every search.

- :mod:`~arnas_zoo.runs.loop`: the epoch loop (:func:`run_task`, :class:`RunTask`, :class:`RunInterrupted`)
- :mod:`~arnas_zoo.runs.state`: the verified resume state (safetensors + JSON, one digest, atomic, previous kept)
- :mod:`~arnas_zoo.runs.seeding`: per-(seed, epoch, step) generators
- :mod:`~arnas_zoo.runs.schedules`: learning-rate schedules
- :mod:`~arnas_zoo.runs.augment`: batched crop / flip / cutout on the device
- :mod:`~arnas_zoo.runs.distributed`: torchrun process group, synchronised BatchNorm, collectives
- :mod:`~arnas_zoo.runs.precision`: autocast choice, full-precision logits
- :mod:`~arnas_zoo.runs.signals`, :mod:`~arnas_zoo.runs.faults`: SIGTERM/SIGINT, the kill test hook
"""

from arnas_zoo.runs.augment import augment
from arnas_zoo.runs.distributed import Dist, init_distributed
from arnas_zoo.runs.loop import RunInterrupted, RunTask, run_task
from arnas_zoo.runs.schedules import SCHEDULES, scheduled_lr
from arnas_zoo.runs.seeding import generator, seed_for
from arnas_zoo.runs.state import load_state, read_state, save_state

__all__ = [
    "SCHEDULES",
    "Dist",
    "RunInterrupted",
    "RunTask",
    "augment",
    "generator",
    "init_distributed",
    "load_state",
    "read_state",
    "run_task",
    "save_state",
    "scheduled_lr",
    "seed_for",
]
