"""Seconds per ARNAS search step and peak memory of the supernet, first vs second order.

A search step is what `python -m search run` does per batch: PGD on the training batch, PGD on the
validation batch (the robust objective), the architecture step (MGDA), the weight step. Each
(batch size, order) runs in a fresh subprocess so that its peak memory (max RSS on CPU,
``torch.cuda.max_memory_allocated`` on CUDA) is its own. Synthetic [0, 1] images, since the timing
does not depend on the pixels. Writes one JSON file.

    python benchmarks/bench_search.py --out bench_search.json              # paper supernet, PGD-7
    python benchmarks/bench_search.py --pgd-steps 1 --steps 1 --warmup 0   # a quicker CPU estimate
    python benchmarks/bench_search.py --orders first --objectives pgd_ce,jacobian,certified   # ARNAS vs DSRNA

``--objectives``: ``pgd_ce`` is ARNAS' step (PGD weight training, PGD objective); ``jacobian``,
``certified`` and ``combined`` are DSRNA's steps on the same supernet (clean weight training, the
metric as the robust objective).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def measure(args: argparse.Namespace) -> dict:
    import tempfile

    import torch

    from arnas_zoo.devices import resolve_device
    from arnas_zoo.runs.distributed import Dist
    from search.config import load_config
    from search.data import SearchData
    from search.run import SearchRun

    device = resolve_device(args.device)
    overrides = [
        f"batch_size={args.batch_size}",
        f"order={args.order}",
        f"pgd_steps={args.pgd_steps}",
        f"channels_last={json.dumps(args.channels_last)}",
        f"amp={json.dumps(not args.no_amp)}",
        f"robust_objective={args.objective}",
        f"weight_attack={'pgd' if args.objective == 'pgd_ce' else 'none'}",
    ]
    overrides += [f"init_channels={args.init_channels}", f"layers={args.layers}"]
    cfg = load_config("paper", overrides)
    g = torch.Generator().manual_seed(0)
    n = args.batch_size * (args.steps + args.warmup)
    x = torch.rand(2 * n, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (2 * n,), generator=g).to(device)
    data = SearchData(x[:n], y[:n], x[n:], y[n:], 10, "synthetic uniform [0, 1] images")
    run = SearchRun(cfg, data, Path(tempfile.mkdtemp()), device, Dist(device=device))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run.step(0, i)  # one full search step: batches, PGD, architecture step, weight step
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
        peak_kind = "torch.cuda.max_memory_allocated"
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        peak_kind = "max RSS of the process"
    return {
        "batch_size": args.batch_size,
        "order": args.order,
        "objective": args.objective,
        "weights_trained_on": "PGD examples" if args.objective == "pgd_ce" else "clean images",
        "pgd_steps": args.pgd_steps,
        "seconds_per_step": sum(times) / len(times),
        "step_seconds": times,
        "peak_memory_mb": round(peak_mb, 1),
        "peak_memory_kind": peak_kind,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "channels_last": cfg.channels_last,
        "amp_bf16": bool(cfg.amp and device.type == "cuda"),
        "supernet": f"{cfg.layers} cells C={cfg.init_channels} {cfg.placement} {cfg.filters}, 7 ops x 14 edges",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", default="32,64")
    parser.add_argument("--orders", default="first,second")
    parser.add_argument("--objectives", default="pgd_ce", help="pgd_ce (ARNAS), jacobian, certified, combined")
    parser.add_argument("--objective", default="pgd_ce", help=argparse.SUPPRESS)
    parser.add_argument("--pgd-steps", type=int, default=7)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--init-channels", type=int, default=24)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-amp", action="store_true", help="disable bf16 autocast on CUDA")
    parser.add_argument("--channels-last", type=lambda s: s.lower() in ("1", "true", "yes"), default=True)
    parser.add_argument("--out", default="bench_search.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--order", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return
    results = []
    combos = [
        (o, obj, int(b))
        for o in args.orders.split(",")
        for obj in args.objectives.split(",")
        for b in args.batch_sizes.split(",")
    ]
    for order, objective, bs in combos:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            "--batch-size",
            str(bs),
            "--order",
            order,
            "--objective",
            objective,
            "--pgd-steps",
            str(args.pgd_steps),
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
            "--init-channels",
            str(args.init_channels),
            "--layers",
            str(args.layers),
            "--device",
            args.device,
            "--channels-last",
            str(args.channels_last),
        ] + (["--no-amp"] if args.no_amp else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{order:6s} {objective:9s} batch {bs:3d}: {row['seconds_per_step']:.2f} s/step, "
            f"peak {row['peak_memory_mb']:.0f} MB",
            flush=True,
        )
        results.append(row)
    report = {
        "benchmark": "search step (PGD train + PGD val + architecture step + weight step)",
        "host": platform.node(),
        "python": platform.python_version(),
        "results": results,
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
