"""Depthwise input gradients on CPU: oneDNN's backward vs the flipped-kernel forward (``ARNAS_ZOO_DWGRAD=flip``).

Two levels, alternating the implementations in one run (same load):
1. the op: forward + input gradient of stride-1 depthwise convolutions (3x3 / 5x5, dilation 1 and 2,
   the shapes of the supernet at C=24 and of the paper network at C=64), channels_last, batch 32, with
   frozen weights as in an attack; best of ``--repeats``;
2. PGD-20 (frozen weights, BN folded, channels_last) on ARNAS at the widths and depths given.

    python benchmarks/bench_dwgrad.py --out benchmarks/results/dwgrad_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from bench_dilated import _best  # noqa: E402 (the benchmarks share their best-of-n timer)

OPS = [(48, 16, 5, 1), (48, 16, 3, 1), (24, 32, 5, 1), (48, 16, 5, 2), (64, 32, 3, 1), (64, 32, 3, 2), (128, 16, 5, 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--networks", default="16x8x16,64x20x8", help="C x cells x batch for the PGD-20 rows")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import torch

    from arnas_zoo.attacks import pgd
    from arnas_zoo.fastconv import DepthwiseConv2d
    from arnas_zoo.registry import create_model

    os.environ["ARNAS_ZOO_DILATED"] = "plain"
    ops = []
    for c, h, k, d in OPS:
        conv = DepthwiseConv2d(c, c, k, padding=d * (k - 1) // 2, dilation=d, groups=c, bias=False)
        conv = conv.to(memory_format=torch.channels_last).requires_grad_(False)
        x = torch.randn(args.batch, c, h, h).contiguous(memory_format=torch.channels_last)
        times = {}
        for mode in ("native", "flip", "native", "flip"):
            os.environ["ARNAS_ZOO_DWGRAD"] = mode
            xi = x.clone().requires_grad_()

            def run() -> None:
                out = conv(xi)  # noqa: B023 (called in this iteration only)
                torch.autograd.grad(out, [xi], torch.ones_like(out))  # noqa: B023

            times[mode] = min(times.get(mode, float("inf")), _best(run, args.repeats))
        with torch.no_grad():
            forward = _best(lambda: conv(x), args.repeats)  # noqa: B023
        row = {"channels": c, "size": h, "kernel": k, "dilation": d, "forward_ms": round(1e3 * forward, 3)}
        row.update({f"{m}_ms": round(1e3 * t, 3) for m, t in times.items()})
        row["speedup"] = round(times["native"] / times["flip"], 2)
        print(row, flush=True)
        ops.append(row)
    networks = []
    for spec in args.networks.split(","):
        c, cells, batch = (int(v) for v in spec.split("x"))
        torch.manual_seed(0)
        model = create_model("arnas", in_channels=3, input_size=32, init_channels=c, layers=cells, auxiliary=False)
        model = model.eval().to(memory_format=torch.channels_last)
        x, y = torch.rand(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
        times = {}
        for mode in ("native", "flip", "native", "flip"):
            os.environ["ARNAS_ZOO_DWGRAD"] = mode
            start = time.perf_counter()
            pgd(model, x, y, eps=8 / 255, step_size=2 / 255, steps=20, generator=torch.Generator().manual_seed(0))
            times.setdefault(mode, []).append(time.perf_counter() - start)
        row = {"init_channels": c, "cells": cells, "batch": batch, "seconds": times}
        row["speedup_best"] = round(min(times["native"]) / min(times["flip"]), 2)
        print(row, flush=True)
        networks.append(row)
    report = {
        "benchmark": "depthwise input gradient: oneDNN backward vs flipped-kernel forward",
        "host": platform.node(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_at_end": os.getloadavg(),
        "ops": ops,
        "pgd20": networks,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        print(f"written {args.out}")


if __name__ == "__main__":
    main()
