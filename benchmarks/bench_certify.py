"""Cost of one certification pass per image: IBP vs CROWN, on the 20-cell ARNAS network at two widths.

One pass = the margin lower bounds of one batch at one eps (``arnas_zoo.bounds.margin_bounds``); a
certified radius costs ``radius_steps + 2`` passes. Every (width, method) runs in a fresh subprocess
so that its peak memory (max RSS on CPU, ``torch.cuda.max_memory_allocated`` on CUDA) is its own;
a plain forward pass of the same batch is timed in the same process as the reference. Random
weights with BatchNorm calibrated on random images (the cost does not depend on the weights).

    python benchmarks/bench_certify.py --widths 16,64 --batch 1 --out benchmarks/results/certify_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def measure(args: argparse.Namespace) -> dict:
    import torch

    from arnas_zoo.bounds import margin_bounds
    from arnas_zoo.devices import resolve_device
    from arnas_zoo.registry import create_model

    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = create_model("arnas", init_channels=args.width, auxiliary=False).to(device)
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 3, 32, 32, device=device))  # BN statistics of something
    model.eval()
    x = torch.rand(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)

    def timed(fn) -> float:  # type: ignore[no-untyped-def]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    with torch.no_grad():
        forward = min(timed(lambda: model(x)) for _ in range(args.repeats))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = [timed(lambda: margin_bounds(model, x, y, args.eps, method=args.method)) for _ in range(args.repeats)]
    if device.type == "cuda":
        peak_mb, kind = torch.cuda.max_memory_allocated(device) / 2**20, "torch.cuda.max_memory_allocated"
    else:
        peak_mb, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "max RSS of the process"
    best = min(times)
    return {
        "model": f"ARNAS, 20 cells, C={args.width}, 32x32, 10 classes",
        "width": args.width,
        "method": args.method,
        "batch": args.batch,
        "eps": args.eps,
        "seconds_per_pass": best,
        "seconds_per_image": best / args.batch,
        "pass_seconds": times,
        "forward_seconds": forward,
        "pass_over_forward": best / forward,
        "peak_memory_mb": round(peak_mb, 1),
        "peak_memory_kind": kind,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", default="16,64")
    parser.add_argument("--methods", default="ibp,crown")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--eps", type=float, default=1 / 255)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="bench_certify.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, default=16, help=argparse.SUPPRESS)
    parser.add_argument("--method", default="ibp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return
    rows = []
    for width in (int(w) for w in args.widths.split(",")):
        for method in args.methods.split(","):
            cmd = [sys.executable, __file__, "--child", "--width", str(width), "--method", method]
            cmd += ["--batch", str(args.batch), "--eps", str(args.eps), "--repeats", str(args.repeats)]
            cmd += ["--device", args.device]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"C={width:3d} {method:5s}: {row['seconds_per_image']:.3f} s/image "
                f"({row['pass_over_forward']:.1f}x a forward), peak {row['peak_memory_mb']:.0f} MB",
                flush=True,
            )
            rows.append(row)
    report = {
        "benchmark": "one certification pass (margin lower bounds at one eps) per image",
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "results": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
