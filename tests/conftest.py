"""Shared fixtures: the offline data of ``../shared/data`` (skipped with a reason when absent).

The tests use tiny models, for which one intra-op thread is as fast as two, and several tests start
worker processes (torchrun, DDP with gloo): one thread per process keeps a 2-core machine from
oversubscribing. ``OMP_NUM_THREADS`` is inherited by those child processes.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from arnas_zoo.data import shared_data_dir  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data is absent (an outside clone); set ARNAS_ZOO_SHARED_DATA to run this test")
    return path


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


@pytest.fixture
def flip_spy():  # type: ignore[no-untyped-def]
    """A stand-in for an attack: records whether the dilated flip (``fastconv.flip_enabled(2)``) is on when
    it is called, then raises ``Stop`` so that the caller ends there. ``.spy``, ``.seen``, ``.Stop``."""
    from types import SimpleNamespace

    from arnas_zoo.fastconv import flip_enabled

    class Stop(Exception):
        pass

    seen: list[bool] = []

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(flip_enabled(2))
        raise Stop

    return SimpleNamespace(spy=spy, seen=seen, Stop=Stop)
