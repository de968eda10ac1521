"""Are the cell networks' ops bound by memory? Each op of a zoo-size cell, timed on its activation, as GB/s.

    python benchmarks/bench_memory_bound.py --threads 1 --out benchmarks/results/memory_bound_cpu_c16.json

For the activations of the zoo's 20-cell networks at C=16 (batch 64, channels_last, fp32: stage 1 is
64x16x32x32, 4 MiB; stages 2 and 3 are 64x32x16x16 and 64x32x8x8 with 1-2-2 filters), each op the cells
run is timed alone (median of ``--repeats`` calls after a warm-up) and its time turned into the bytes it
must at least move (every input read once, the output written once) per second. A plain copy of the same
tensor is the ceiling: an op near the copy's GB/s is already as fast as one pass over memory can be, and
only doing fewer passes (fusing ops) can make it faster. The convolutions' arithmetic rate is reported
too, against a 2048^3 matmul in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _report import machine, write

STAGES = {"stage 1 (16x32x32)": (16, 32), "stage 2 (32x16x16)": (32, 16), "stage 3 (32x8x8)": (32, 8)}


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _ops(x: torch.Tensor) -> dict[str, tuple[Callable[[], object], int, float]]:
    """name -> (call, tensors moved (reads + writes, each x-sized), multiply-adds)."""
    n, c, h, w = x.shape
    y = torch.randn_like(x)
    g = torch.randn_like(x)
    out = torch.empty_like(x)
    dw3 = torch.randn(c, 1, 3, 3)
    dw5 = torch.randn(c, 1, 5, 5)
    pw = torch.randn(c, c, 1, 1).contiguous(memory_format=torch.channels_last)
    gamma, beta = torch.ones(c), torch.zeros(c)
    pixels = n * h * w
    return {
        "copy (the ceiling)": (lambda: out.copy_(x), 2, 0.0),
        "relu": (lambda: torch.relu(x), 2, 0.0),
        "relu backward": (lambda: torch.ops.aten.threshold_backward(g, x, 0.0), 3, 0.0),
        "add (node sum)": (lambda: torch.add(x, y), 3, 0.0),
        "batch norm, training forward": (lambda: F.batch_norm(x, None, None, gamma, beta, training=True), 3, 0.0),
        "depthwise 3x3": (lambda: F.conv2d(x, dw3, padding=1, groups=c), 2, pixels * c * 9.0),
        "depthwise 5x5, dilation 2": (lambda: F.conv2d(x, dw5, padding=4, dilation=2, groups=c), 2, pixels * c * 25.0),
        "pointwise 1x1": (lambda: F.conv2d(x, pw), 2, pixels * c * c * 1.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    a = torch.randn(2048, 2048)
    matmul_s = _median_ms(lambda: a @ a, 5) / 1e3
    peak = 2 * 2048**3 / matmul_s / 1e9
    rows = []
    for stage, (c, hw) in STAGES.items():
        x = torch.randn(args.batch, c, hw, hw).contiguous(memory_format=torch.channels_last)
        ceiling = None
        for name, (fn, moved, macs) in _ops(x).items():
            ms = _median_ms(fn, args.repeats)
            gbs = moved * x.numel() * x.element_size() / (ms / 1e3) / 1e9
            ceiling = ceiling or gbs
            rows.append(
                {
                    "stage": stage,
                    "op": name,
                    "ms": round(ms, 4),
                    "GB/s": round(gbs, 2),
                    "of copy": round(gbs / ceiling, 3),
                    "GFLOP/s": round(2 * macs / (ms / 1e3) / 1e9, 2) if macs else None,
                }
            )
            print(f"{stage:<20} {name:<30} {ms:7.3f} ms {gbs:6.1f} GB/s ({gbs / ceiling:4.0%} of copy)")
    result = {
        "command": " ".join(sys.argv),
        **machine(),
        "batch": args.batch,
        "matmul_2048_fp32_gflops": round(peak, 1),
        "rows": rows,
    }
    write(result, args.out, echo=False)


if __name__ == "__main__":
    main()
