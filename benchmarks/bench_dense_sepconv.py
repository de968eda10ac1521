"""A separable block (depthwise KxK, then pointwise 1x1) as two convolutions or as one composed dense one.

    python benchmarks/bench_dense_sepconv.py --threads 1 --out benchmarks/results/dense_sepconv_cpu.json

``pointwise(depthwise(x))`` is ``conv(x, W)`` with ``W[o, c] = pointwise[o, c] * depthwise[c]``: the dense
convolution does K*K*C multiply-adds per output where the pair does K*K + C, 5-7x more at C=16-32, but
it runs on the kernels that CPUs do best (AMX for bf16 where the CPU has it), where oneDNN's depthwise
kernels are slow (2-6% of the fp32 peak in bf16 on a Sapphire Rapids core). For the activations of the
zoo's 20-cell networks at C=16 (batch 64, channels_last, 1-2-2 filters), each of the cells' four
separable shapes is timed forward and backward (input and both weight gradients), fp32 and bf16 autocast,
the two paths alternating, median of ``--repeats`` calls after two warm-ups. ``arnas_zoo.ops.DilConv``
composes under CPU bf16 autocast by default (``ARNAS_ZOO_SEPCONV``).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _report import machine, write

STAGES = {"stage 1 (16x32x32)": (16, 32), "stage 2 (32x16x16)": (32, 16), "stage 3 (32x8x8)": (32, 8)}
SHAPES = {"3x3": (3, 1), "3x3 dilation 2": (3, 2), "5x5": (5, 1), "5x5 dilation 2": (5, 2)}


def two_convolutions(x: torch.Tensor, dw: torch.Tensor, pw: torch.Tensor, k: int, d: int) -> torch.Tensor:
    y = F.conv2d(x, dw, padding=d * (k - 1) // 2, dilation=d, groups=x.shape[1])
    return F.conv2d(y, pw)


def composed(x: torch.Tensor, dw: torch.Tensor, pw: torch.Tensor, k: int, d: int) -> torch.Tensor:
    return F.conv2d(x, pw * dw.transpose(0, 1), padding=d * (k - 1) // 2, dilation=d)


def _step(fn: Callable, x: torch.Tensor, dw: torch.Tensor, pw: torch.Tensor, k: int, d: int, bf16: bool):  # type: ignore[no-untyped-def]
    def call() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            return fn(x, dw, pw, k, d)

    grad = torch.randn_like(call(), dtype=torch.float32)

    def run() -> None:
        x.grad = dw.grad = pw.grad = None
        call().backward(grad.to(torch.bfloat16 if bf16 else torch.float32))

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for stage, (c, hw) in STAGES.items():
        for shape, (k, d) in SHAPES.items():
            x = torch.randn(args.batch, c, hw, hw).relu().contiguous(memory_format=torch.channels_last)
            x.requires_grad_()
            dw = (torch.randn(c, 1, k, k) * 0.3).requires_grad_()
            pw = (torch.randn(c, c, 1, 1) * 0.3).requires_grad_()
            row: dict = {"stage": stage, "shape": shape}
            for precision in ("fp32", "bf16"):
                runs = {name: _step(fn, x, dw, pw, k, d, precision == "bf16")
                        for name, fn in (("two", two_convolutions), ("composed", composed))}  # fmt: skip
                times: dict[str, list[float]] = {name: [] for name in runs}
                for _ in range(2):
                    for run in runs.values():
                        run()
                for _ in range(args.repeats):
                    for name, run in runs.items():  # alternating
                        start = time.perf_counter()
                        run()
                        times[name].append(time.perf_counter() - start)
                two, comp = (statistics.median(times[n]) * 1e3 for n in ("two", "composed"))
                row[precision] = {"two_convolutions_ms": round(two, 3), "composed_ms": round(comp, 3),
                                  "speedup": round(two / comp, 2)}  # fmt: skip
            rows.append(row)
            print(
                f"{stage:<20} {shape:<15} "
                + "  ".join(
                    f"{p}: {row[p]['two_convolutions_ms']:7.2f} -> {row[p]['composed_ms']:6.2f} ms "
                    f"({row[p]['speedup']:.2f}x)"
                    for p in ("fp32", "bf16")
                ),  # fmt: skip
                flush=True,
            )
    result = {
        "command": " ".join(sys.argv),
        **machine(),
        "batch": args.batch,
        "what": "forward + backward (input, depthwise and pointwise weight gradients), channels_last",
        "rows": rows,
    }
    write(result, args.out, echo=False)


if __name__ == "__main__":
    main()
