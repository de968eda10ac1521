"""scripts/zoo_runs.sh: the long runs' exact commands; a queue that skips finished steps, stops on a failed one."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "zoo_runs.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _pool_worker(root: Path, steps: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """One pool worker on ``root`` in the background, its output piped."""
    return subprocess.Popen(
        ["bash", str(SCRIPT), "pool", str(root), *steps], stdout=subprocess.PIPE, text=True, env=env
    )


def _run(cli: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ARNAS_ZOO_CLI": cli}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60)


def test_the_queue_runs_each_step_once_in_order_with_the_documented_commands(tmp_path) -> None:
    root = tmp_path / "zoo"
    first = _run("/bin/echo", "queue", str(root), "darts_v2_c15", "aa:darts_v2_c15")
    assert first.returncode == 0, first.stderr
    lines = [line for line in first.stdout.splitlines() if not line[:4].isdigit()]
    train, pgd, aa = lines
    assert train.startswith("train darts_v2 --dataset cifar10 --train-split train_mix --val-rows 1000")
    assert "--recipe cpu_cifar10 --set epochs=10 --model-set init_channels=15 --model-set layers=20" in train
    assert f"--out {root}/darts_v2_c15" in train and "--resume" not in train
    reporting = f"eval {root}/darts_v2_c15/best --dataset cifar10 --split test --n 1000"
    assert pgd.startswith(f"{reporting} --attacks fgsm,pgd20") and pgd.endswith("best.eval1000.json")
    assert aa.startswith(f"{reporting} --attacks aa") and aa.endswith("best.aa1000.json")
    assert (root / "darts_v2_c15.done").is_file() and (root / "darts_v2_c15.aa.done").is_file()
    again = _run("/bin/echo", "queue", str(root), "darts_v2_c15", "aa:darts_v2_c15")
    assert again.returncode == 0 and again.stdout == ""  # both done: nothing runs twice


def test_a_failed_step_stops_the_queue_and_leaves_no_marker(tmp_path) -> None:
    root = tmp_path / "zoo"
    stopped = _run("/bin/false", "queue", str(root), "arnas_c16", "aa:arnas_c16")
    assert stopped.returncode == 1 and "arnas_c16 stopped (exit 1)" in stopped.stdout
    assert "aa:arnas_c16" not in stopped.stdout and not list(root.glob("*.done"))
    (root / "arnas_c16").mkdir()
    (root / "arnas_c16" / "train_state.safetensors").write_bytes(b"")
    resumed = _run("/bin/echo", "train", "arnas_c16", str(root))
    assert resumed.stdout.rstrip().endswith("--resume")  # a state there: the training continues it
    (root / "arnas_c16.done").write_text("")
    (root / "arnas_c16" / "best.eval1000.json").write_text("{}")
    only_aa = _run("/bin/echo", "aa", "arnas_c16", str(root)).stdout.strip().splitlines()
    assert len(only_aa) == 1 and "--attacks aa" in only_aa[0]  # the PGD report exists: not run again
    early = _run("/bin/echo", "aa", "resnet18_w27", str(root))
    assert early.returncode != 0 and "training not finished" in early.stderr
    assert _run("/bin/echo", "train", "bogus").returncode == 2


def test_two_pool_workers_share_the_list_run_each_step_once_and_attack_only_trained_runs(tmp_path) -> None:
    root = tmp_path / "zoo"
    log = tmp_path / "calls.log"
    fake = tmp_path / "fake_cli.sh"
    # A stand-in for arnas-zoo: logs its start and end, with its parent's pid (the worker's, or for a training
    # the pid of the training's own shell, whose parent is the worker), and takes a little time.
    fake.write_text(
        f'#!/bin/bash\nw="$PPID $(ps -o ppid= -p $PPID | tr -d " ")"\n'
        f'echo "start $w $1 $2" >> {log}\nsleep 1\necho "end $w $1 $2" >> {log}\n'
    )
    fake.chmod(0o755)
    steps = ["arnas_c16", "resnet18_w27", "aa:arnas_c16", "darts_v2_c15", "aa:resnet18_w27", "compare"]
    env = {**os.environ, "ARNAS_ZOO_CLI": str(fake), "ZOO_POOL_POLL_S": "0.2"}
    cmd = ["bash", str(SCRIPT), "pool", str(root), *steps]
    workers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outputs = [w.communicate(timeout=60)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    pids = {str(w.pid) for w in workers}
    # (start|end, worker pid, command, argument)
    events = [(e[0], e[1] if e[1] in pids else e[2], *e[3:]) for e in map(str.split, log.read_text().splitlines())]
    started = [(e[2], e[3]) for e in events if e[0] == "start"]
    # every step ran exactly once across both workers (an AutoAttack step evaluates twice: PGD rows, then AA)
    assert sorted(started) == sorted(
        [
            ("train", "arnas"),
            ("train", "resnet18"),
            ("eval", f"{root}/arnas_c16/best"),
            ("eval", f"{root}/arnas_c16/best"),
            ("train", "darts_v2"),
            ("eval", f"{root}/resnet18_w27/best"),
            ("eval", f"{root}/resnet18_w27/best"),
            ("merge", f"{root}/arnas_c16/best.eval1000.json"),
            ("merge", f"{root}/resnet18_w27/best.eval1000.json"),
            ("compare", f"{root}/arnas_c16/best.all1000.json"),
        ]
    )
    # the comparison comes last, after every AutoAttack has ended
    last_eval_end = max(i for i, e in enumerate(events) if e[0] == "end" and e[2] == "eval")
    first_merge = min(i for i, e in enumerate(events) if e[2] == "merge")
    assert last_eval_end < first_merge and events[-1][:3] == ("end", events[-1][1], "compare")
    assert {e[1] for e in events} == pids  # both workers did work
    for name in ("arnas_c16", "resnet18_w27"):  # no AutoAttack before its training ended
        trained = events.index(
            next(e for e in events if e[0] == "end" and e[2] == "train" and e[3] == name.split("_")[0])
        )
        attacked = events.index(next(e for e in events if e[0] == "start" and e[3] == f"{root}/{name}/best"))
        assert trained < attacked
    assert all(line.endswith("every step done") for line in (o.rstrip().splitlines()[-1] for o in outputs))
    assert len(list(root.glob("*.done"))) == 6 and (root / "compare.done").is_file()
    again = _run(str(fake), "pool", str(root), *steps)
    assert again.returncode == 0 and "pool: every step done" in again.stdout and "pool: arnas" not in again.stdout


def test_a_pool_step_held_by_a_live_lock_is_left_to_its_holder(tmp_path) -> None:
    root = tmp_path / "zoo"
    root.mkdir()
    # flock's child (sleep) holds the lock too: the holder gets its own process group to end both
    holder = subprocess.Popen(["flock", str(root / ".arnas_c16.lock"), "sleep", "30"], start_new_session=True)
    try:
        env = {**os.environ, "ARNAS_ZOO_CLI": "/bin/echo", "ZOO_POOL_POLL_S": "0.2"}
        worker = _pool_worker(root, ["arnas_c16", "darts_v2_c15"], env)
        with pytest.raises(subprocess.TimeoutExpired):
            worker.communicate(timeout=3)  # darts_v2_c15 done, then it waits on the held step
        worker.kill()
        out = worker.communicate()[0]
        assert "pool: darts_v2_c15" in out and "pool: arnas_c16" not in out and "waiting" in out
        assert not (root / "arnas_c16.done").exists()
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    # the holder is gone, and with it its lock: the step runs
    done = _run("/bin/echo", "pool", str(root), "arnas_c16", "darts_v2_c15")
    assert done.returncode == 0 and "pool: arnas_c16" in done.stdout


def test_a_stopped_pool_step_stops_its_worker_releases_the_step_and_an_unknown_name_is_refused(tmp_path) -> None:
    root = tmp_path / "zoo"
    stopped = _run("/bin/false", "pool", str(root), "arnas_c16", "darts_v2_c15")
    assert stopped.returncode == 1 and "pool: arnas_c16 stopped (exit 1)" in stopped.stdout
    assert "darts_v2_c15" not in stopped.stdout and not list(root.glob("*.done"))
    again = _run("/bin/echo", "pool", str(root), "arnas_c16", "darts_v2_c15")
    assert again.returncode == 0 and "pool: arnas_c16" in again.stdout  # its lock went with the worker
    bad = _run("/bin/echo", "pool", str(root), "arnas_c16", "aa:bogus")
    assert bad.returncode == 2 and "unknown run 'bogus'" in bad.stderr
    alone = _run("/bin/echo", "pool", str(root), "arnas_c16", "aa:arnas_c16", "compare")
    assert alone.returncode == 2 and "compare needs two or more aa:NAME steps" in alone.stderr


def test_compare_merges_each_models_reports_then_compares_them_under_their_model_names(tmp_path) -> None:
    root = tmp_path / "zoo"
    root.mkdir()
    early = _run("/bin/echo", "compare", str(root), "arnas_c16", "resnet18_w27")
    assert early.returncode == 1 and "arnas_c16: AutoAttack not finished" in early.stderr
    for name in ("arnas_c16", "resnet18_w27"):
        (root / f"{name}.aa.done").write_text("")
    done = _run("/bin/echo", "compare", str(root), "arnas_c16", "resnet18_w27")
    assert done.returncode == 0, done.stderr
    merge_a, merge_b, compare = done.stdout.strip().splitlines()
    out = f"{root}/arnas_c16"
    assert merge_a == (
        f"merge {out}/best.eval1000.json {out}/best.aa1000.json --model {out}/best --json {out}/best.all1000.json"
    )
    assert merge_b.startswith(f"merge {root}/resnet18_w27/best.eval1000.json")
    assert compare == (
        f"compare {out}/best.all1000.json {root}/resnet18_w27/best.all1000.json --names "
        f"arnas.cifar10_linf_cpu_c16l20_mix,resnet18.cifar10_linf_cpu_w27_mix --json {root}/comparison.json"
    )
    assert (root / "comparison.txt").read_text().strip() == compare  # the table is kept beside the JSON


def _pool_for(cmd: list[str], env: dict[str, str], seconds: float) -> str:
    """What a pool worker printed in its first ``seconds`` (it is still waiting then: killed)."""
    worker = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    with pytest.raises(subprocess.TimeoutExpired):
        worker.communicate(timeout=seconds)
    worker.kill()
    return worker.communicate()[0]


def test_a_worker_with_nothing_free_helps_the_running_autoattack_with_the_same_command_and_join(tmp_path) -> None:
    root = tmp_path / "zoo"
    (root / "arnas_c16").mkdir(parents=True)
    (root / "arnas_c16.done").write_text("")
    # the AutoAttack step is held by a live worker (its lock)
    holder = subprocess.Popen(["flock", str(root / ".aa_arnas_c16.lock"), "sleep", "30"], start_new_session=True)
    try:
        env = {**os.environ, "ARNAS_ZOO_CLI": "/bin/echo", "ZOO_POOL_POLL_S": "0.3"}
        cmd = ["bash", str(SCRIPT), "pool", str(root), "aa:arnas_c16"]
        early = _pool_for(cmd, env, 1.5)
        assert "waiting" in early and "helping" not in early  # its PGD rows not written yet: nothing to help
        (root / "arnas_c16" / "best.eval1000.json").write_text("{}")
        assert "helping" not in _pool_for(cmd, {**env, "ZOO_POOL_JOIN": "0"}, 1.5)  # the switch
        worker = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        with pytest.raises(subprocess.TimeoutExpired):
            worker.communicate(timeout=1.5)
        (root / "arnas_c16.aa.done").write_text("")  # the holder's run finished
        out = worker.communicate(timeout=10)[0]
        assert worker.returncode == 0 and out.rstrip().endswith("every step done"), out
        helps = [line for line in out.splitlines() if line.startswith("eval ")]
        assert len(helps) >= 2 and len(set(helps)) == 1  # it helps again after each wait, the same command
        aa = f"eval {root}/arnas_c16/best --dataset cifar10 --split test --n 1000 --attacks aa --batch-size 64"
        tail = f"--shard-size 64 --run-dir {root}/arnas_c16-aa --json {root}/arnas_c16/best.aa1000.json --join"
        assert helps[0] == f"{aa} {tail}"  # the leading run's command (test_the_queue_...) plus --join
        assert "pool: helping aa:arnas_c16 with its shards" in out
        # an AutoAttack under way is helped before a step later in the list starts; then the worker moves on
        (root / "arnas_c16.aa.done").unlink()
        out = _pool_for([*cmd, "darts_v2_c15"], env, 2.0)  # it then waits for the held step: killed
        calls = [line.split()[0] for line in out.splitlines() if line.startswith(("eval ", "train "))]
        assert calls[:2] == ["eval", "train"] and out.index("--join") < out.index("train darts_v2"), out
        assert (root / "darts_v2_c15.done").is_file()
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()


def test_a_training_yields_to_an_earlier_autoattack_under_way_then_resumes(tmp_path) -> None:
    root = tmp_path / "zoo"
    (root / "arnas_c16").mkdir(parents=True)
    (root / "arnas_c16.done").write_text("")
    log, slow = tmp_path / "calls.log", tmp_path / "slow"
    fake = tmp_path / "fake_cli.sh"
    # the first training (it takes the file `slow`) runs until SIGTERM (logged); a later one ends at once
    fake.write_text(
        f'#!/bin/bash\necho "start $1 $*" >> {log}\n'
        f'if [ "$1" = train ] && rm {slow} 2>/dev/null; then trap \'echo "term $1" >> {log}; exit 143\' TERM; '
        f"sleep 30 & wait $!; fi\n"
        f'echo "end $1" >> {log}\n'
    )
    fake.chmod(0o755)
    slow.write_text("")
    holder = subprocess.Popen(["flock", str(root / ".aa_arnas_c16.lock"), "sleep", "60"], start_new_session=True)
    env = {**os.environ, "ARNAS_ZOO_CLI": str(fake), "ZOO_POOL_POLL_S": "0.3", "ZOO_POOL_YIELD_S": "1"}
    worker = _pool_worker(root, ["aa:arnas_c16", "darts_v2_c15"], env)
    try:

        def logged(text: str) -> bool:
            return log.exists() and text in log.read_text()

        def wait_for(text: str) -> None:
            for _ in range(200):
                if logged(text):
                    return
                time.sleep(0.05)
            raise AssertionError(f"{text!r} never logged: {log.read_text() if log.exists() else ''}")

        wait_for("start train")  # nothing to help yet (no PGD rows): the training started
        time.sleep(1.5)
        assert not logged("term")  # and is not stopped while the AutoAttack cannot be helped
        (root / "arnas_c16" / "best.eval1000.json").write_text("{}")  # the other worker's AutoAttack is under way
        wait_for("term train")
        wait_for("start eval")
        wait_for("end train")
        (root / "arnas_c16.aa.done").write_text("")
        out = worker.communicate(timeout=20)[0]
    finally:
        worker.kill()
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    assert worker.returncode == 0 and out.rstrip().endswith("every step done"), out
    calls = [line.split()[:2] for line in log.read_text().splitlines()]
    assert calls[:5] == [["start", "train"], ["term", "train"], ["start", "eval"], ["end", "eval"], ["start", "train"]]
    assert "--join" in log.read_text().splitlines()[2] and calls[5] == ["end", "train"]
    assert "stopping darts_v2_c15 (state saved) to help aa:arnas_c16 first" in out
    trainings = [line for line in log.read_text().splitlines() if line.startswith("start train")]
    assert trainings[0].replace(" --resume", "") == trainings[1].replace(" --resume", "")  # the same run resumed
    assert (root / "darts_v2_c15.done").is_file() and "stopped (exit" not in out


def test_a_pool_with_zoo_park_unparks_an_empty_root_and_parks_what_it_finished(tmp_path) -> None:
    import json
    import sys

    from arnas_zoo.runs.park import park

    # a stand-in CLI: park and unpark are the real commands, everything else is echoed
    fake = tmp_path / "cli.sh"
    fake.write_text('#!/bin/bash\ncase $1 in park | unpark) exec "$PY" -m arnas_zoo.cli "$@" ;; *) echo "$@" ;; esac\n')
    fake.chmod(0o755)
    env = {
        **os.environ,
        "ARNAS_ZOO_CLI": str(fake),
        "PY": sys.executable,
        "PYTHONPATH": str(SCRIPT.parents[1]),
        "ZOO_POOL_POLL_S": "0.2",
    }
    steps = ["arnas_c16", "darts_v2_c15"]
    # a first machine finished arnas_c16 and parked its ROOT
    first, dest = tmp_path / "machine1", tmp_path / "volume"
    (first / "arnas_c16").mkdir(parents=True)
    (first / "arnas_c16" / "log.jsonl").write_text("{}\n")
    (first / "arnas_c16.done").write_text("")
    park(first, str(dest))
    # a second machine starts the same pool on an empty ROOT
    root = tmp_path / "machine2"
    worker = subprocess.run(
        ["bash", str(SCRIPT), "pool", str(root), *steps],
        capture_output=True,
        text=True,
        env={**env, "ZOO_PARK": str(dest)},
        timeout=60,
    )
    assert worker.returncode == 0, worker.stdout + worker.stderr
    assert "unparking" in worker.stdout and "1 files added" not in worker.stdout  # two files: marker and log
    assert "pool: arnas_c16" not in worker.stdout and "pool: darts_v2_c15" in worker.stdout
    latest = dest / "parks" / (dest / "LATEST").read_text().strip()
    parked = json.loads((latest / "PARKED.json").read_text())["files"]
    assert sorted(parked) == ["arnas_c16.done", "arnas_c16/log.jsonl", "darts_v2_c15.done"]
    # nothing parked yet: a first start goes ahead and parks at the end
    fresh = subprocess.run(
        ["bash", str(SCRIPT), "pool", str(tmp_path / "m3"), "darts_v2_c15"],
        capture_output=True,
        text=True,
        env={**env, "ZOO_PARK": str(tmp_path / "new_volume")},
        timeout=60,
    )
    assert fresh.returncode == 0 and "nothing to unpark" in fresh.stdout, fresh.stdout + fresh.stderr
    assert (tmp_path / "new_volume" / "LATEST").is_file()
    bare = subprocess.run(["bash", str(SCRIPT), "park", str(root)], capture_output=True, text=True, env=env)
    assert bare.returncode == 2 and "ZOO_PARK is not set" in bare.stderr


def test_stop_ends_the_pool_then_its_steps_with_sigterm_even_paused_ones_and_reports_status(tmp_path) -> None:
    root = tmp_path / "zoo"
    log = tmp_path / "steps.log"
    fake = tmp_path / "cli.sh"
    # a stand-in training that saves and exits 130 on SIGTERM, as arnas-zoo train does
    fake.write_text(
        "#!/bin/bash\ncase $1 in\n"
        f"  train) trap 'echo saved >> {log}; exit 130' TERM; echo started >> {log}; while :; do sleep 0.1; done ;;\n"
        '  status) echo "status $2" ;;\n  *) echo "$@" ;;\nesac\n'
    )
    fake.chmod(0o755)
    env = {**os.environ, "ARNAS_ZOO_CLI": str(fake), "ZOO_POOL_POLL_S": "0.2"}
    worker = _pool_worker(root, ["arnas_c16", "darts_v2_c15"], env)
    try:
        deadline = time.monotonic() + 30
        while not (log.exists() and "started" in log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        step = subprocess.run(["pgrep", "-f", f"cli.sh train .*{root}/"], capture_output=True, text=True)
        assert step.stdout.strip(), "the stand-in training did not start"
        os.kill(int(step.stdout.split()[0]), signal.SIGSTOP)  # paused, as for a benchmark
        stop = subprocess.run(
            ["bash", str(SCRIPT), "stop", str(root)], capture_output=True, text=True, env=env, timeout=60
        )
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert "workers on" in stop.stdout and stop.stdout.rstrip().endswith(f"status {root}")
        assert worker.wait(timeout=10) is not None
        assert log.read_text().split() == ["started", "saved"]  # resumed, then stopped with its state saved
        assert not list(root.glob("*.done"))  # a stopped step is not done
        assert subprocess.run(["pgrep", "-f", f"cli.sh train .*{root}/"], capture_output=True).returncode == 1
    finally:
        worker.kill()
        subprocess.run(["pkill", "-KILL", "-f", f"cli.sh train .*{root}/"], check=False)
