"""Time to robustness on this CPU: short adversarial trainings under candidate recipes, robust accuracy per CPU-hour.

    OMP_NUM_THREADS=1 python benchmarks/bench_time_to_robustness.py --arch resnet18 --model-set init_channels=16 \\
        --train-n 8000 --epochs 2 --out benchmarks/results/time_to_robustness_cpu_resnet18_w16.json

Each candidate is one ``arnas-zoo train`` process (one thread) on the same network, data and budget in
images: ``--epochs`` over the first ``--train-n`` rows of CIFAR-10 ``train_mix``, cosine learning rate
0.05, batch 64, eps 8/255, the eps ramp over the first epoch, all as the zoo's ``cpu_cifar10`` recipe,
only the training attack changing:

- ``fgsm-rs``: FGSM from a uniform start, step 1.25 eps (Wong et al. 2020), with the catastrophic-
  overfitting guard (``co_guard=0.5``: the run stops and keeps its best epoch when the validation robust
  accuracy falls under half its best);
- ``pgd2``: PGD-2, step eps/2; ``pgd3``: PGD-3, step 3/255 (the zoo's recipe, as the long runs train);
- ``trades3``: TRADES (beta 6) with a 3-step inner maximisation of step 3/255.

Every figure comes from the **selection split** (``--selection-rows 1000``: 1,000 genuine rows held out
before the reporting rows), because this benchmark exists to choose a recipe; no reporting row is read
(``--eval-attacks none``). The measure is the last epoch's validation on the first ``--val-n`` selection
rows: clean accuracy, and robust accuracy under PGD-10 (l_inf 8/255, step 2/255, uniform start, one
restart, seed 0; a point counts when correct clean and attacked). CPU time and peak RSS are the
training process's own (``os.wait4``), so the figures hold beside other jobs; wall time is also kept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import write

ROOT = Path(__file__).resolve().parents[1]

CANDIDATES: dict[str, list[str]] = {
    "fgsm-rs": ["method=fgsm", "steps=1", "step_size=10/255", "start=uniform", "co_guard=0.5"],
    "pgd2": ["method=pgd", "steps=2", "step_size=4/255", "start=uniform"],
    "pgd3": ["method=pgd", "steps=3", "step_size=3/255", "start=uniform"],
    "trades3": ["method=trades", "steps=3", "step_size=3/255", "start=uniform", "trades_beta=6"],
}


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"))


def run_candidate(name: str, args: argparse.Namespace, out: Path) -> dict:
    cmd = [
        sys.executable, "-m", "arnas_zoo.cli", "train", args.arch, "--dataset", "cifar10", "--train-split",
        "train_mix", "--val-rows", "1000", "--selection-rows", "1000", "--recipe", "cpu_cifar10",
        "--set", f"epochs={args.epochs}", "--set", f"train_n={args.train_n}", "--set", f"val_n={args.val_n}",
        "--set", "val_steps=10", "--set", "val_step_size=2/255", "--set", f"seed={args.seed}",
        *[item for kv in CANDIDATES[name] for item in ("--set", kv)],
        *[item for kv in args.model_set for item in ("--model-set", kv)],
        "--eval-attacks", "none", "--out", str(out), "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    start = time.perf_counter()
    process = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    output = process.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"{name}: exit {process.returncode}\n{output[-3000:]}")
    epochs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    last = epochs[-1]
    cpu_s = usage.ru_utime + usage.ru_stime
    images = args.train_n * len(epochs)
    return {
        "candidate": name,
        "recipe_overrides": CANDIDATES[name],
        "epochs_run": len(epochs),
        "stopped_early": len(epochs) < args.epochs,
        "train_images": images,
        "cpu_seconds": cpu_s,
        "wall_seconds": wall,
        "images_per_cpu_s": images / cpu_s,
        "peak_rss_bytes": usage.ru_maxrss * 1024,
        "selection_clean_acc": last["val_clean_acc"],
        "selection_robust_acc": last["val_robust_acc"],
        "selection_n": last["val_n"],
        "selection_attack": last["val_attack"],
        "robust_acc_per_cpu_hour": last["val_robust_acc"] / (cpu_s / 3600),
        "per_epoch": [
            {k: e.get(k) for k in ("epoch", "val_clean_acc", "val_robust_acc", "train_acc", "seconds")} for e in epochs
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--model-set", action="append", default=[], help="a model config field, e.g. init_channels=16")
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--train-n", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--val-n", type=int, default=500, help="selection rows the last validation reads")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    names = [n for n in args.candidates.split(",") if n]
    unknown = sorted(set(names) - set(CANDIDATES))
    if unknown:
        raise SystemExit(f"unknown candidates {unknown}; expected some of {list(CANDIDATES)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rows.append(run_candidate(name, args, Path(tmp) / name))
            row = rows[-1]
            print(
                f"{name}: {row['epochs_run']} epochs, {row['cpu_seconds'] / 60:.1f} CPU-min, "
                f"{row['images_per_cpu_s']:.1f} img/CPU-s, selection clean {row['selection_clean_acc']:.3f} "
                f"robust {row['selection_robust_acc']:.3f} (n={row['selection_n']})",
                flush=True,
            )
    result = {
        "benchmark": "time to robustness: short trainings per candidate recipe, figures on the selection split",
        "arch": args.arch,
        "model_set": args.model_set,
        "data": f"cifar10 train_mix, first {args.train_n} rows, {args.epochs} epochs; selection split (1000 "
        f"genuine rows before the reporting rows), first {args.val_n} read",
        "base_recipe": "cpu_cifar10 (batch 64, cosine lr 0.05, wd 5e-4, eps 8/255, eps ramp over epoch 1)",
        "threads": args.threads,
        "seed": args.seed,
        "cpu": platform.processor() or platform.machine(),
        "cpu_flags": cpu_flags(),
        "load_average_at_end": os.getloadavg(),
        "rows": rows,
    }
    write(result, args.out)


if __name__ == "__main__":
    main()
