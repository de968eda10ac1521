"""Data-parallel training (torchrun, gloo, 2 CPU processes) equals one process on the same global batch.

One epoch of 4 PGD steps: sign-gradient attacks amplify float round-off (a different reduction order
flips the sign of near-zero gradient entries), so the comparison is kept to a few steps where the two
runs agree to ~1e-4; over longer runs they drift apart the way two GPUs' runs do.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from arnas_zoo.checkpoint import load_folder

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys, torch
sys.path.insert(0, {repo!r})
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from test_training import tiny_model, tiny_recipe, digits
from arnas_zoo.training import train
train(tiny_model(), tiny_recipe(epochs=1, batch_size=16, method={method!r}), digits(64), digits(32, offset=1000),
      {out!r}, device="cpu", progress=False, run_name="tiny")
from arnas_zoo.runs.distributed import finish_worker
finish_worker()  # how a torchrun script ends (docs/training.md)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(tmp_path: Path, name: str, nproc: int, method: str) -> Path:
    out = tmp_path / name
    script = tmp_path / f"{name}.py"
    script.write_text(
        textwrap.dedent(SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests"), out=str(out), method=method))
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env["OMP_NUM_THREADS"] = "1"
    if nproc == 1:
        cmd = [sys.executable, str(script)]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(nproc),
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(_free_port()),
            str(script),
        ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.parametrize("method", ["pgd"])
def test_two_gloo_processes_match_one(tmp_path, method):
    single = _run(tmp_path, "single", 1, method)
    double = _run(tmp_path, "ddp", 2, method)
    a = load_folder(single / "last").state_dict()
    b = load_folder(double / "last").state_dict()
    changed = 0
    for key, value in a.items():
        if value.is_floating_point():
            torch.testing.assert_close(b[key], value, rtol=1e-3, atol=2e-4, msg=key)
            changed += 1
        else:
            assert torch.equal(b[key], value), key  # num_batches_tracked: same number of steps
    assert changed > 50
    initial = {k: v for k, v in __import__("test_training").tiny_model().state_dict().items()}
    assert any(not torch.allclose(initial[k], a[k]) for k in a if a[k].is_floating_point())  # training did move
    log_single = (single / "log.jsonl").read_text().splitlines()
    log_double = (double / "log.jsonl").read_text().splitlines()
    assert len(log_single) == len(log_double) == 1
    # the mean training loss of the epoch (all-reduced over both processes) agrees too
    loss_single, loss_double = (__import__("json").loads(lines[0])["train_loss"] for lines in (log_single, log_double))
    assert abs(loss_single - loss_double) < 1e-4


EXIT_SCRIPT = """
import atexit, os, sys, torch
import torch.distributed as dist
sys.path.insert(0, {repo!r})
from arnas_zoo.runs.distributed import all_reduce_sum, init_distributed

def report():  # registered first, so it runs after init_distributed's handler (atexit is LIFO)
    with open(os.path.join({out!r}, "rank" + os.environ["RANK"]), "w") as f:
        f.write(str(dist.is_initialized()))

atexit.register(report)
info, _ = init_distributed(torch.device("cpu"))
assert dist.is_initialized() and info.world == 2
assert all_reduce_sum(info, torch.ones(3)).tolist() == [2.0, 2.0, 2.0]
"""


def _torchrun_two(tmp_path: Path, name: str, template: str) -> subprocess.CompletedProcess:
    """Run ``template`` (formatted with repo and out) as 2 gloo processes; stdout holds both ranks' output."""
    script = tmp_path / name
    script.write_text(textwrap.dedent(template.format(repo=str(REPO), out=str(tmp_path))))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
    cmd += ["--master_port", str(_free_port()), "--tee", "1", str(script)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def test_process_group_is_destroyed_before_the_interpreter_exits(tmp_path):
    # gloo threads still alive during interpreter finalisation made a rank abort in CI
    # ("terminate called without an active exception"): init_distributed registers the teardown
    proc = _torchrun_two(tmp_path, "exit.py", EXIT_SCRIPT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["False", "False"]


FINISH_SCRIPT = """
import atexit, os, sys, torch
sys.path.insert(0, {repo!r})
from arnas_zoo.runs.distributed import all_reduce_sum, finish_worker, init_distributed

def mark(name):
    with open(os.path.join({out!r}, name + os.environ["RANK"]), "w") as f:
        f.write("x")

atexit.register(mark, "atexit")
info, _ = init_distributed(torch.device("cpu"))
assert all_reduce_sum(info, torch.ones(2)).tolist() == [2.0, 2.0]
print("flushed by finish_worker", end="")  # no newline: only an explicit flush gets it out before os._exit
mark("before")
finish_worker()
mark("after")
"""


def test_finish_worker_meets_every_rank_and_exits_before_finalisation(tmp_path):
    # a second CI abort at exit, with the group already destroyed by the atexit handler: a successful
    # worker now leaves through a barrier, destroy_process_group and os._exit(0)
    proc = _torchrun_two(tmp_path, "finish.py", FINISH_SCRIPT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    made = sorted(p.name for p in tmp_path.iterdir() if p.name[:-1] in ("before", "after", "atexit"))
    assert made == ["before0", "before1"]  # nothing after finish_worker ran, not even atexit handlers
    assert proc.stdout.count("flushed by finish_worker") == 2


def test_finish_worker_is_a_no_op_without_a_process_group():
    from arnas_zoo.runs.distributed import finish_worker

    finish_worker()  # returns (a single process has nothing to end)


@pytest.mark.parametrize("group", ["arnas_zoo", "search"])
def test_both_command_groups_end_successful_commands_through_finish_worker(group, monkeypatch):
    from click.testing import CliRunner

    from arnas_zoo.runs import distributed

    calls: list[int] = []
    monkeypatch.setattr(distributed, "finish_worker", lambda: calls.append(1))
    if group == "arnas_zoo":
        from arnas_zoo.cli import main

        ok, bad = ["pretrained"], ["eval", "no-such-model", "--n", "1"]
    else:
        from search.cli import main

        ok, bad = ["presets"], ["run", "no-such-preset"]
    runner = CliRunner()
    assert runner.invoke(main, ok).exit_code == 0 and calls == [1]
    assert runner.invoke(main, bad).exit_code != 0 and calls == [1]  # failures exit through the atexit teardown
