"""The job layer (arnas_zoo.jobs): in-process and Ray backends, retries, kills, resume, sharded evaluation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from arnas_zoo.job_status import status
from arnas_zoo.jobs import Job, JobSetResult, JobsFailed, register_kind, run_jobs

REPO = Path(__file__).resolve().parents[1]
register_kind("test-square", "job_kinds:square")
register_kind("test-die-once", "job_kinds:die_once")
register_kind("test-always-fails", "job_kinds:always_fails")
register_kind("test-counted", "job_kinds:counted")


def squares(n: int, **extra: object) -> list[Job]:
    return [Job("test-square", {"x": i, **extra}) for i in range(n)]


def result_bytes(run_dir: Path, jobs: list[Job]) -> list[bytes]:
    return [(run_dir / "jobs" / f"{j.key}.json").read_bytes() for j in jobs]


def test_keys_are_stable_and_describe_the_work() -> None:
    a, b = Job("test-square", {"x": 1, "y": [1, 2]}), Job("test-square", {"y": [1, 2], "x": 1}, cpus=4)
    assert a.key == b.key and len(a.key) == 20  # resources are not part of the work
    assert Job("test-square", {"x": 2}).key != a.key


def test_local_backend_runs_skips_finished_and_reports_failures(tmp_path: Path) -> None:
    jobs = squares(4)
    first = run_jobs(jobs, tmp_path, progress=False)
    assert first.ran == 4 and [first.results[j.key]["square"] for j in jobs] == [0, 1, 4, 9]
    again = run_jobs(jobs, tmp_path, progress=False)
    assert again.ran == 0 and again.skipped == 4
    st = status(tmp_path, jobs + squares(5)[4:])
    assert len(st.done) == 4 and len(st.pending) == 1
    bad = [Job("test-always-fails", {"x": 7}), *squares(6)]
    with pytest.raises(JobsFailed, match="1 job") as info:
        run_jobs(bad, tmp_path, retries=2, progress=False)
    assert (tmp_path / "attempts-7").read_text() == "3"  # first try + 2 retries
    assert set(info.value.failed) == {bad[0].key}
    assert status(tmp_path).failed == [bad[0].key]
    assert json.loads((tmp_path / "jobs" / f"{bad[0].key}.failed.json").read_text())["attempts"] == 3
    assert all((tmp_path / "jobs" / f"{j.key}.json").is_file() for j in bad[1:])  # the others finished


def test_a_killed_driver_loses_nothing_and_the_restart_skips_finished_jobs(tmp_path: Path) -> None:
    script = (
        "import sys; sys.path.insert(0, {tests!r}); from arnas_zoo.jobs import Job, register_kind, run_jobs; "
        "register_kind('test-square', 'job_kinds:square'); "
        "run_jobs([Job('test-square', {{'x': i, 'sleep': 0.5}}) for i in range(8)], {run!r}, progress=False)"
    ).format(tests=str(REPO / "tests"), run=str(tmp_path))
    driver = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.time() + 60
    while time.time() < deadline and len(list((tmp_path / "jobs").glob("*.meta.json"))) < 3:
        time.sleep(0.1)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    finished = len(list((tmp_path / "jobs").glob("*.meta.json")))
    assert 3 <= finished < 8
    st = status(tmp_path)
    assert not st.running  # the killed driver's marker is recognised as stale
    rest = run_jobs(squares(8, sleep=0.5), tmp_path, progress=False)
    assert rest.skipped == finished and rest.ran == 8 - finished


def _driver(run_dir: Path, calls: str) -> subprocess.Popen[bytes]:
    """A Python process running ``calls`` (jobs API calls on ``test-counted`` jobs) against ``run_dir``."""
    script = (
        "import sys, json; sys.path.insert(0, {tests!r}); from arnas_zoo.jobs import Job, register_kind, run_jobs; "
        "from arnas_zoo.jobs_help import help_jobs; register_kind('test-counted', 'job_kinds:counted'); " + calls
    ).format(tests=str(REPO / "tests"), run=str(run_dir))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)


def _wait_for(predicate, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_helper_process_takes_a_share_of_the_jobs_and_none_runs_twice(tmp_path: Path) -> None:
    from arnas_zoo.jobs_help import help_jobs

    jobs = [Job("test-counted", {"x": i, "sleep": 0.3}) for i in range(8)]
    leader = _driver(
        tmp_path,
        "out = run_jobs([Job('test-counted', {{'x': i, 'sleep': 0.3}}) for i in range(8)], {run!r}, progress=False); "
        "print(json.dumps([out.ran, out.skipped, sorted(r['square'] for r in out.results.values())]))",
    )
    _wait_for(lambda: (tmp_path / "runs-0").exists(), "the run's first job")
    helped = help_jobs(jobs, tmp_path, progress=False)
    stdout, _ = leader.communicate(timeout=120)
    assert leader.returncode == 0
    runs = {i: (tmp_path / f"runs-{i}").read_text().split() for i in range(8)}
    assert all(len(pids) == 1 for pids in runs.values()), runs  # every job ran exactly once
    by_helper = [i for i, pids in runs.items() if pids == [str(os.getpid())]]
    assert helped.ran == len(by_helper) >= 1 and len(by_helper) < 8  # both processes worked
    assert sorted(r["square"] for r in helped.results.values()) == [i * i for i in by_helper]
    ran, skipped, squares_seen = json.loads(stdout)
    assert ran == 8 - len(by_helper) and skipped == len(by_helper)  # the run took the helper's results
    assert squares_seen == [i * i for i in range(8)]
    again = run_jobs(jobs, tmp_path, progress=False)  # every result is on disk, signed and verified
    assert again.ran == 0 and again.skipped == 8


def test_the_run_waits_for_a_job_its_helper_holds_and_reruns_it_when_the_helper_dies(tmp_path: Path) -> None:
    (tmp_path / "nap-0").write_text("")  # job 0 naps until this file goes
    helper = _driver(tmp_path, "help_jobs([Job('test-counted', {{'x': 0}})], {run!r}, progress=False)")
    _wait_for(lambda: (tmp_path / "runs-0").exists(), "the helper's job")
    done: dict[str, object] = {}
    jobs = [Job("test-counted", {"x": i}) for i in range(3)]
    leader = threading.Thread(target=lambda: done.update(out=run_jobs(jobs, tmp_path, progress=False)))
    leader.start()
    _wait_for(lambda: (tmp_path / "runs-2").exists(), "the run's own jobs")
    time.sleep(0.3)
    assert leader.is_alive()  # the others done, it waits for job 0, which the helper holds
    helper.send_signal(signal.SIGKILL)
    helper.wait()
    (tmp_path / "nap-0").unlink()
    leader.join(timeout=60)
    out = done["out"]
    assert isinstance(out, JobSetResult) and out.ran == 3 and not out.failed
    assert (tmp_path / "runs-0").read_text().split() == [str(helper.pid), str(os.getpid())]  # rerun here
    assert [out.results[j.key]["square"] for j in jobs] == [0, 1, 4]


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'arnas-zoo[ray]')")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}", "OMP_NUM_THREADS": "1"}},
    )
    yield ray
    ray.shutdown()


def test_ray_gives_byte_identical_results_to_the_local_backend(ray_cluster, tmp_path: Path) -> None:
    jobs = squares(6)
    run_jobs(jobs, tmp_path / "local", progress=False)
    out = run_jobs(jobs, tmp_path / "ray", backend="ray", max_parallel=2, progress=False)
    assert out.ran == 6
    assert result_bytes(tmp_path / "local", jobs) == result_bytes(tmp_path / "ray", jobs)


def test_ray_retries_a_worker_killed_mid_job(ray_cluster, tmp_path: Path) -> None:
    jobs = [Job("test-die-once", {"x": i}) for i in range(3)]
    out = run_jobs(jobs, tmp_path, backend="ray", retries=2, progress=False)
    assert out.ran == 3 and not out.failed
    assert all((tmp_path / f"died-{i}").exists() for i in range(3))  # each worker died once
    assert [out.results[j.key]["square"] for j in jobs] == [0, 1, 4]


def test_ray_reports_a_job_that_keeps_failing(ray_cluster, tmp_path: Path) -> None:
    jobs = [Job("test-always-fails", {"x": 1}), *squares(2)]
    out = run_jobs(jobs, tmp_path, backend="ray", retries=1, progress=False, raise_on_failure=False)
    assert set(out.failed) == {jobs[0].key} and out.ran == 2


def _folder(tmp_path: Path) -> Path:
    from arnas_zoo import create_model
    from arnas_zoo.checkpoint import save_folder
    from tests.test_bounds import _calibrated

    torch.manual_seed(3)
    model = create_model("arnas", in_channels=1, input_size=16, init_channels=4, layers=3, eps=0.1)
    return save_folder(_calibrated(model, torch.rand(32, 1, 16, 16)), tmp_path / "model")


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_sharded_evaluation_merges_to_the_single_process_report(tmp_path: Path, backend: str, request) -> None:
    from arnas_zoo.data import evaluation_data
    from arnas_zoo.evaluate import evaluate
    from arnas_zoo.evaluate.shards import evaluate_sharded
    from arnas_zoo.hub import load

    if backend == "ray":
        request.getfixturevalue("ray_cluster")
    folder = _folder(tmp_path)
    attacks = ["fgsm", "pgd5", "square"]
    single = evaluate(
        load(str(folder), device="cpu"),
        evaluation_data("digits", n=40),
        attacks,
        eps=0.1,
        batch_size=8,
        device="cpu",
        seed=3,
        check_n=16,
        progress=False,
    )
    merged = evaluate_sharded(
        str(folder),
        dataset="digits",
        n=40,
        attacks=attacks,
        eps=0.1,
        batch_size=8,
        seed=3,
        shard_size=16,  # 16 + 16 + 8 points: three jobs
        run_dir=tmp_path / "run",
        backend=backend,
        device="cpu",
        check_n=16,
        progress=False,
    )
    assert len(list((tmp_path / "run" / "jobs").glob("*.meta.json"))) == 3
    a, b = single.to_metrics(), merged.to_metrics()
    for key in ("created", "seconds", "environment", "versions", "host", "platform", "model"):
        a.pop(key, None), b.pop(key, None)
    for ra, rb in zip(a["results"], b["results"]):
        ra.pop("seconds"), rb.pop("seconds")
    assert a == b
    for ra, rb in zip(single.results, merged.results):
        assert torch.equal(ra.correct, rb.correct) and torch.equal(ra.robust, rb.robust)


def test_cli_sharded_eval_matches_the_plain_eval_takes_a_helpers_shards_and_status_lists_them(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from arnas_zoo.cli import main

    folder = str(_folder(tmp_path))
    common = [folder, "--dataset", "digits", "--n", "24", "--eps", "0.1", "--attacks", "fgsm,pgd3"]
    common += ["--batch-size", "8", "--device", "cpu", "--no-checks", "-q"]
    runner = CliRunner()
    plain = runner.invoke(main, ["eval", *common, "--json", str(tmp_path / "plain.json")])
    assert plain.exit_code == 0, plain.output
    run = tmp_path / "run"
    shards = ["--shard-size", "8", "--run-dir", str(run)]
    # a helper (--join) with the run's options makes the run's jobs: alone, it runs all three, reports nothing
    helper = runner.invoke(main, ["eval", *common, *shards, "--join"])
    assert helper.exit_code == 0 and f"helped {run}: ran 3 of its 3 shards" in helper.output, helper.output
    written = {p.name: p.stat().st_mtime_ns for p in (run / "jobs").glob("*.meta.json")}
    assert len(written) == 3 and not list(tmp_path.glob("s.json"))
    sharded = runner.invoke(main, ["eval", *common, *shards, "--json", str(tmp_path / "s.json")])
    assert sharded.exit_code == 0, sharded.output
    assert {p.name: p.stat().st_mtime_ns for p in (run / "jobs").glob("*.meta.json")} == written  # all reused
    ray = runner.invoke(main, ["eval", *common, *shards, "--backend", "ray", "--join"])
    assert ray.exit_code == 2 and "--join helps a run of the local backend" in ray.output
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("plain.json", "s.json"))
    assert [(r["attack"], r["robust_accuracy"]) for r in a["results"]] == [
        (r["attack"], r["robust_accuracy"]) for r in b["results"]
    ]
    assert a["worst_case_accuracy"] == b["worst_case_accuracy"] and a["clean_accuracy"] == b["clean_accuracy"]
    st = runner.invoke(main, ["status", str(run)])
    assert st.exit_code == 0 and "3 done, 0 running, 0 failed, 0 pending" in st.output, st.output
    assert "points 0-7" in st.output and "points 16-23" in st.output
    first_done = json.loads(runner.invoke(main, ["status", str(run), "--json"]).output)["done"][0]
    (run / "jobs" / f"{first_done}.json").unlink()
    assert "2 done, 0 running, 0 failed, 1 pending" in runner.invoke(main, ["status", str(run)]).output
    missing = runner.invoke(main, ["status", str(tmp_path / "nowhere")])
    assert missing.exit_code != 0 and "Traceback" not in missing.output and "nor a job set" in missing.output


def test_training_runs_as_a_job_and_a_rerun_reuses_it(tmp_path: Path) -> None:
    from arnas_zoo.checkpoint import load_folder

    torch.set_num_threads(1)
    tiny = {"epochs": 1, "train_n": 64, "batch_size": 32, "steps": 1, "val_n": 32, "val_steps": 1}
    job = Job(
        "train",
        {
            "arch": "arnas",
            "recipe": "cpu_digits",
            "dataset": "digits",
            "out": "train/arnas",
            "val_rows": 100,
            "recipe_overrides": tiny,
            "model_overrides": {"init_channels": 4, "layers": 5},
            "eval_attacks": ["fgsm"],
            "eval_n": 16,
            "device": "cpu",
        },
    )
    first = run_jobs([job], tmp_path, progress=False)
    result = first.results[job.key]
    model = load_folder(tmp_path / result["best_dir"])
    assert model.config.init_channels == 4
    assert result["metrics"]["results"][0]["attack"] == "fgsm" and result["metrics"]["data"]["n"] == 16
    again = run_jobs([job], tmp_path, progress=False)
    assert again.ran == 0 and again.results[job.key] == result
