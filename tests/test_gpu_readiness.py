"""CUDA paths checked on a CPU-only machine: where collectives run, and the GPU smoke script.

NCCL accepts only CUDA tensors, so a collective on a CPU tensor kills a multi-GPU run at its first
call. That cannot be reproduced without a GPU; what can be checked here is that every tensor
collective of the code base goes through :mod:`arnas_zoo.runs.distributed`, whose helpers put the
tensor on the process group's device (``Dist.device``: the local GPU under NCCL), and that those
helpers hand the collective a tensor on that device and return values on the caller's device.
The GPU smoke script (scripts/gpu_smoke.py) runs on CPU here; its DDP step is the multi-process
check to run on a lent GPU.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from arnas_zoo.runs import distributed as zdist
from arnas_zoo.runs.distributed import Dist

REPO = Path(__file__).resolve().parents[1]
TENSOR_COLLECTIVES = {"all_reduce", "broadcast", "all_gather", "all_gather_into_tensor", "reduce", "reduce_scatter"}


def _collective_calls(path: Path) -> list[tuple[int, str]]:
    calls = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in TENSOR_COLLECTIVES:
            owner = ast.unparse(node.func.value)
            if owner in ("dist", "torch.distributed", "torch.distributed.nn.functional"):
                calls.append((node.lineno, f"{owner}.{node.func.attr}"))
    return calls


def test_every_tensor_collective_lives_in_the_distributed_helpers() -> None:
    offenders = []
    for package in ("arnas_zoo", "search", "export"):
        for path in (REPO / package).rglob("*.py"):
            if path == REPO / "arnas_zoo" / "runs" / "distributed.py":
                continue
            offenders += [f"{path.relative_to(REPO)}:{line} {name}" for line, name in _collective_calls(path)]
    assert not offenders, "collectives outside arnas_zoo/runs/distributed.py (NCCL needs them on Dist.device): " + (
        ", ".join(offenders)
    )


class _Recorder:
    """A fake process group of 2 ranks that records the device of every tensor handed to a collective."""

    def __init__(self) -> None:
        self.devices: list[torch.device] = []

    def all_reduce(self, t: torch.Tensor, op: object = None) -> None:
        self.devices.append(t.device)
        t.mul_(2)  # both ranks hold the same values

    def broadcast(self, t: torch.Tensor, src: int) -> None:
        self.devices.append(t.device)


def test_helpers_run_collectives_on_the_group_device(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _Recorder()
    monkeypatch.setattr(zdist.dist, "all_reduce", recorder.all_reduce)
    monkeypatch.setattr(zdist.dist, "broadcast", recorder.broadcast)
    group_device = torch.device("cpu")
    info = Dist(rank=0, world=2, device=group_device)
    # inputs that are not what a collective wants: float32 (sums need float64), channels_last, non-contiguous
    sums = zdist.all_reduce_sum(info, torch.tensor([1.0, 2.0], dtype=torch.float32))
    assert sums.tolist() == [2.0, 4.0] and sums.device == torch.device("cpu")
    grads = [torch.ones(2, 3, 4, 4).to(memory_format=torch.channels_last), torch.arange(6.0).view(2, 3).t()]
    mean = zdist.all_reduce_mean(grads, info)
    assert torch.equal(mean[0], grads[0]) and torch.equal(mean[1], grads[1])  # (2 x) / 2 ranks
    assert mean[0].is_contiguous(memory_format=torch.channels_last)  # the optimizer's fast path keeps working
    assert zdist.vote(info, True) is True
    bn = torch.nn.BatchNorm2d(3)
    zdist.average_buffers(bn, info)
    assert recorder.devices and all(d == group_device for d in recorder.devices)
    assert len(recorder.devices) == 1 + 1 + 1 + 3  # sum, one flat buffer, the vote, BN's three buffers


def test_single_process_helpers_touch_no_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("a single process must not call a collective")

    monkeypatch.setattr(zdist.dist, "all_reduce", boom)
    info = Dist()
    assert zdist.vote(info, False) is False
    assert zdist.all_reduce_sum(info, torch.ones(2)).tolist() == [1.0, 1.0]
    assert zdist.all_reduce_mean([torch.ones(2)], info)[0].tolist() == [1.0, 1.0]


def test_gpu_smoke_script_parses_and_refuses_cuda_without_a_gpu(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: run scripts/gpu_smoke.sh itself")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "scripts/gpu_smoke.py", "--device", "cuda", "--out", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "DEV=cpu" in done.stderr
    machine = json.loads(done.stdout.splitlines()[0])
    assert machine["cuda_available"] is False and machine["torch"] == torch.__version__
