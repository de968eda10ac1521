"""benchmarks/profile_step.py sorts convolutions into the right classes and counts their multiply-adds."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import profile_step  # noqa: E402


def test_convolutions_are_classified_and_counted() -> None:
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),  # dense
        torch.nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8),  # dilated depthwise
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8),  # depthwise, stride 2
        torch.nn.Conv2d(8, 4, 1),  # pointwise
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
    )
    x = torch.rand(2, 3, 16, 16)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        net(x).sum().backward()  # the input needs no gradient: the first backward computes the weight's only
    seconds, macs = profile_step.classify(prof.events())
    hw, half = 16 * 16, 8 * 8
    expected_forward = {
        "conv: dense": 2 * 8 * hw * 3 * 9,
        "conv: dilated depthwise": 2 * 8 * hw * 9,
        "conv: depthwise": 2 * 8 * half * 9,
        "conv: pointwise 1x1": 2 * 4 * half * 8,
    }
    # backward: the dense layer computes only its weight gradient, the others both gradients
    expected = {k: v * (2 if k == "conv: dense" else 3) for k, v in expected_forward.items()}
    assert macs == expected
    assert set(seconds) >= set(expected) | {"batch norm", "elementwise"}
    assert all(v > 0 for v in seconds.values())


def test_worker_profiles_one_tiny_step() -> None:
    """The worker entry point builds its step through bench_training.prepare (whose arguments grow)."""
    import argparse

    row = profile_step.profile_one("ours", argparse.Namespace(init_channels=4, layers=5, batch=2))
    assert row["impl"] == "ours" and row["batch"] == 2 and row["step_seconds"] > 0
    assert row["macs"]["conv: pointwise 1x1"] > 0 and sum(row["seconds"].values()) > 0
