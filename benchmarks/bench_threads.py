"""The quick start on an idle CPU and next to a competing CPU hog, with and without the thread policy.

    python benchmarks/bench_threads.py                  # full quick start, 4 runs (about 20 min on 2 cores)
    python benchmarks/bench_threads.py --epochs 2       # shorter

Runs ``arnas-zoo quickstart`` as a user would, in fresh processes, four times in one session:
idle and under a hog of ``--hog`` busy-looping processes (as many as the cores by default), each
with the project's policy (OpenMP threads wait passively, :mod:`arnas_zoo.threads`) and with the
OpenMP default (``ARNAS_ZOO_THREAD_POLICY=default``, threads spin while waiting). Writes
``benchmarks/results/threads_<host>.json`` with wall times, the ratio hog/idle per policy, the load
averages seen and the versions.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x += 1


def run_quickstart(policy: str, epochs: int | None) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if policy == "openmp-default":
        env["ARNAS_ZOO_THREAD_POLICY"] = "default"
    out = tempfile.mkdtemp(prefix="bench-threads-")
    cmd = [sys.executable, "-m", "arnas_zoo.cli", "quickstart", "--out", out, "--quiet"]
    if epochs is not None:
        cmd += ["--epochs", str(epochs)]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=None, help="quick start epochs (default: the recipe's 10)")
    parser.add_argument("--hog", type=int, default=os.cpu_count() or 2, help="busy-looping processes")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rows = []
    for loaded in (False, True):
        hogs = []
        if loaded:
            hogs = [multiprocessing.Process(target=_spin, args=(10_000,), daemon=True) for _ in range(args.hog)]
            for h in hogs:
                h.start()
            time.sleep(2)
        try:
            for policy in ("passive (arnas-zoo default)", "openmp-default"):
                load_before = os.getloadavg()[0]
                seconds = run_quickstart(policy, args.epochs)
                rows.append(
                    {
                        "hog_processes": args.hog if loaded else 0,
                        "policy": policy,
                        "seconds": seconds,
                        "loadavg_1min_before": load_before,
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
        finally:
            for h in hogs:
                h.terminate()
    idle = {r["policy"]: r["seconds"] for r in rows if r["hog_processes"] == 0}
    ratios = {r["policy"]: r["seconds"] / idle[r["policy"]] for r in rows if r["hog_processes"]}
    import torch

    result = {
        "benchmark": "arnas-zoo quickstart wall time, idle vs next to a CPU hog",
        "epochs": args.epochs or 10,
        "rows": rows,
        "hog_over_idle": ratios,
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "host": platform.node(),
        },
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    path = Path(args.out or REPO / "benchmarks" / "results" / "threads_cpu.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(ratios), f"-> {path}")


if __name__ == "__main__":
    main()
