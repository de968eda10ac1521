"""How long finding a model takes: ``arnas-zoo pretrained --dataset cifar10 --sort aa`` from a cold process.

    python benchmarks/bench_listing.py              # 15 runs of each command, interleaved
    python benchmarks/bench_listing.py --runs 30

Times whole processes, as a user meets them, in one run and interleaved so that machine noise hits every
command alike: the listing (which reads every bundled model's pinned metrics.json, checks its sha256 and
sorts), the same with ``--json``, and two references: ``arnas-zoo --version`` (the command line's start-up
floor) and ``python -c "import torch"`` (what the listing must not pay). Writes
``benchmarks/results/listing_<host>.json`` with min / median / max seconds, the ratios of medians to the
start-up floor, and the versions. Goal (issue: find and compare models): the listing under 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("arnas-zoo"))
COMMANDS = {
    "listing": [CLI, "pretrained", "--dataset", "cifar10", "--sort", "aa"],
    "listing_json": [CLI, "pretrained", "--dataset", "cifar10", "--sort", "aa", "--json"],
    "cli_startup": [CLI, "--version"],
    "import_torch": [sys.executable, "-c", "import torch"],
}


def time_once(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    for command in COMMANDS.values():  # warm the file cache once; not timed
        time_once(command)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.runs):
        for name, command in COMMANDS.items():
            times[name].append(time_once(command))
    floor = statistics.median(times["cli_startup"])
    rows = {
        name: {
            "min_s": round(min(values), 4),
            "median_s": round(statistics.median(values), 4),
            "max_s": round(max(values), 4),
            "median_over_cli_startup": round(statistics.median(values) / floor, 2),
        }
        for name, values in times.items()
    }
    for name, row in rows.items():
        print(f"{name:<14} min {row['min_s']:.3f} s  median {row['median_s']:.3f} s  max {row['max_s']:.3f} s  "
              f"{row['median_over_cli_startup']:.2f}x the CLI start-up")  # fmt: skip
    from arnas_zoo import __version__

    out = REPO / "benchmarks" / "results" / f"listing_{platform.node() or 'host'}.json"
    record = {
        "what": "wall seconds of whole processes, interleaved, after one untimed warm-up run each",
        "runs": args.runs,
        "commands": {
            name: " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd)) for name, cmd in COMMANDS.items()
        },  # fmt: skip
        "results": rows,
        "goal": "listing median < 1 s",
        "goal_met": rows["listing"]["median_s"] < 1.0,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "versions": {"python": platform.python_version(), "arnas_zoo": __version__},
    }
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
