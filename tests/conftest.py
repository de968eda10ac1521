"""Shared fixtures: the offline data of ``../shared/data`` (skipped with a reason when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """``$ARNAS_ZOO_SHARED_DATA`` or ``../shared/data`` beside the checkout, if present."""
    env = os.environ.get("ARNAS_ZOO_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for path in candidates:
        if path.is_dir():
            return path
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data is absent (an outside clone); set ARNAS_ZOO_SHARED_DATA to run this test")
    return path


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
