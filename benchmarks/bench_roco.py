"""RoCo-NAS candidate cost on this machine: candidates per hour, and where the time goes.

Runs ``--candidates`` random macro genotypes of a preset through the candidate job (a short clean
training by ``arnas_zoo.training``, then the objectives and the report-only figures) after building
the preset's transfer set once (its cost is reported separately), and splits each candidate's time
into training and scoring.

    python benchmarks/bench_roco.py --preset roco-tiny --candidates 6 --out benchmarks/results/roco_cpu.json
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="roco-tiny")
    parser.add_argument("--candidates", type=int, default=6)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import numpy as np
    import torch

    from search.roco.config import PRESETS
    from search.roco.run import candidate_job
    from search.roco.transfer import build_transfer_set

    config = PRESETS[args.preset]
    work = Path(tempfile.mkdtemp(prefix="bench_roco-"))
    start = time.perf_counter()
    build_transfer_set(config, work)
    transfer_seconds = time.perf_counter() - start
    rng = np.random.default_rng(0)
    rows = []
    for i in range(args.candidates):
        bits = rng.integers(0, 2, config.n_bits).tolist()
        t0 = time.perf_counter()
        r = candidate_job({"config": config.to_dict(), "bits": bits, "key": f"c{i}"}, work)
        total = time.perf_counter() - t0
        rows.append(
            {
                "seconds": round(total, 2),
                "train_seconds": r["train_seconds"],
                "score_seconds": r["score_seconds"],
                "flops": r["flops"],
            }
        )
        print(
            f"candidate {i}: {total:.1f} s (train {r['train_seconds']:.1f}, score {r['score_seconds']:.1f})", flush=True
        )
    shutil.rmtree(work, ignore_errors=True)
    mean = sum(r["seconds"] for r in rows) / len(rows)
    train = sum(r["train_seconds"] for r in rows) / len(rows)
    score = sum(r["score_seconds"] for r in rows) / len(rows)
    print(
        f"{3600 / mean:.0f} candidates/hour; training {100 * train / mean:.0f}%, scoring {100 * score / mean:.0f}%; "
        f"transfer set {transfer_seconds:.0f} s once"
    )
    report = {
        "benchmark": "RoCo-NAS candidate evaluation",
        "preset": config.to_dict(),
        "transfer_set_seconds": round(transfer_seconds, 1),
        "candidates": rows,
        "mean_seconds_per_candidate": round(mean, 2),
        "candidates_per_hour": round(3600 / mean, 1),
        "training_share": round(train / mean, 3),
        "scoring_share": round(score / mean, 3),
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        print(f"written {args.out}")


if __name__ == "__main__":
    main()
