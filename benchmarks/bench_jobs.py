"""Sharded evaluation through the job layer: 1 vs 2 workers, and the cost of a job itself.

Two measurements, in one run (same load):
1. one PGD evaluation of a small model, split into shards, run by Ray with ``--max-parallel`` 1 and 2
   (and in-process, the reference); each row's report is checked equal to the in-process one;
2. the overhead per job: N trivial jobs (no work) in-process and on Ray, seconds per job.

    python benchmarks/bench_jobs.py --out benchmarks/results/jobs_cpu.json

Ray's workers are started (and import torch) before each timing: start-up is a one-off, not per job.
Each worker uses one thread (OMP_NUM_THREADS=1), so 2 workers on a 2-core machine should approach 2x
when the machine is otherwise idle; the load average is recorded with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _model(folder: Path, width: int) -> Path:
    import torch

    from arnas_zoo import create_model
    from arnas_zoo.checkpoint import save_folder

    torch.manual_seed(0)
    model = create_model("arnas", in_channels=1, input_size=16, init_channels=width, layers=5, eps=0.1)
    model.train()
    with torch.no_grad():
        model(torch.rand(64, 1, 16, 16))  # BatchNorm statistics of something; cost does not depend on them
    return save_folder(model.eval(), folder)


def _warm(ray) -> None:  # type: ignore[no-untyped-def]
    """Start both workers and import torch and the evaluator there (startup is not per-job cost)."""

    def load() -> int:
        import arnas_zoo.evaluate  # noqa: F401

        return os.getpid()

    remote = ray.remote(num_cpus=1)(load)
    ray.get([remote.remote() for _ in range(2)])


def _strip(metrics: dict) -> dict:
    out = {k: v for k, v in metrics.items() if k not in ("created", "seconds", "versions", "host", "platform")}
    out["results"] = [{k: v for k, v in r.items() if k != "seconds"} for r in metrics["results"]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=256, help="evaluation points (digits test split)")
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--attack", default="pgd20")
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--trivial-jobs", type=int, default=40)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import ray

    from arnas_zoo.evaluate.shards import evaluate_sharded
    from arnas_zoo.jobs import run_jobs

    work = Path(tempfile.mkdtemp(prefix="bench_jobs-"))
    folder = str(_model(work / "model", args.width))
    common = dict(dataset="digits", n=args.n, attacks=[args.attack], eps=0.1, batch_size=16, seed=0)
    common.update(shard_size=args.shard_size, device="cpu", checks=False, progress=False)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}},
    )
    _warm(ray)
    rows = []
    reference = None
    for name, backend, parallel in (
        ("in-process", "local", None),
        ("ray 1 worker", "ray", 1),
        ("ray 2 workers", "ray", 2),
    ):
        run_dir = work / f"run-{backend}-{parallel}"
        start = time.perf_counter()
        report = evaluate_sharded(folder, run_dir=run_dir, backend=backend, max_parallel=parallel, **common)
        seconds = time.perf_counter() - start
        metrics = _strip(report.to_metrics())
        reference = reference or metrics
        rows.append(
            {
                "backend": name,
                "seconds": round(seconds, 2),
                "equal_to_in_process": metrics == reference,
                "robust_accuracy": report.results[0].robust_accuracy,
            }
        )
        print(f"{name:<14} {seconds:7.1f} s  equal={metrics == reference}", flush=True)
    one, two = rows[1]["seconds"], rows[2]["seconds"]
    overhead = []
    sys.path.insert(0, str(REPO / "tests"))
    from arnas_zoo.jobs import Job, register_kind

    register_kind("bench-square", "job_kinds:square")
    ray_env = {"env_vars": {"PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}", "OMP_NUM_THREADS": "1"}}
    ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=ray_env)
    _warm(ray)
    for backend in ("local", "ray"):
        run_jobs([Job("bench-square", {"x": -1, "warm": backend})], work / "warm", backend=backend, progress=False)
        jobs = [Job("bench-square", {"x": i, "bench": backend}) for i in range(args.trivial_jobs)]
        start = time.perf_counter()
        run_jobs(jobs, work / f"trivial-{backend}", backend=backend, progress=False)
        per_job = (time.perf_counter() - start) / len(jobs)
        overhead.append({"backend": backend, "jobs": len(jobs), "seconds_per_job": round(per_job, 4)})
        print(f"trivial jobs {backend:<6} {1000 * per_job:8.1f} ms/job", flush=True)
    ray.shutdown()
    shutil.rmtree(work, ignore_errors=True)
    result = {
        "benchmark": "bench_jobs",
        "settings": {
            **{k: v for k, v in vars(args).items() if k != "out"},
            "eps": 0.1,
            "batch_size": 16,
            "model": f"arnas C={args.width} 5 cells 16x16 random weights",
            "threads_per_worker": 1,
        },
        "sharded_eval": rows,
        "speedup_2_vs_1_workers": round(one / two, 3),
        "job_overhead": overhead,
        "load_average_after": os.getloadavg(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(f"2 workers vs 1: {one / two:.2f}x")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
