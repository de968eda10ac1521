"""Where a PGD-7 training step of ARNAS spends its time, per op type, and how far each is from the peak.

    python benchmarks/profile_step.py --init-channels 64 --layers 20 --batch 32 \\
        --out benchmarks/results/profile_cpu_paper.json      # the paper's network (minutes per step on CPU)
    python benchmarks/profile_step.py --init-channels 8 --layers 8 --batch 16   # a quick look

Each implementation of ``bench_training.py`` (default: ``authors`` = before, ``ours`` and ``ours-s2b``
= after) runs one warm-up step, then one step under ``torch.profiler`` in its own subprocess. The
profile's events are grouped by op type: every ``aten::convolution`` and ``aten::convolution_backward``
(with everything it calls) goes to a convolution class read from its arguments (dense, pointwise 1x1,
depthwise, dilated depthwise), every other op's self time to batch norm, elementwise, pooling,
layout/copy, loss/reduction, optimizer or other. For convolutions the script also counts the
multiply-adds (forward: N Cout Hout Wout Cin/groups k^2; backward: twice that when it computes both
gradients) and reports the GFLOP/s each class achieves as a fraction of the machine's fp32 peak
(bench_training.machine_peak_gflops), measured in the same run. Prints a markdown table (the one in
docs/performance.md) and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_training  # noqa: E402

CLASSES = (
    "conv: dilated depthwise",
    "conv: depthwise",
    "conv: pointwise 1x1",
    "conv: dense",
    "batch norm",
    "elementwise",
    "pooling",
    "layout / copy",
    "loss / reduction",
    "optimizer",
    "other",
)
_ELEMENTWISE = tuple(
    "relu threshold add mul sub div sign clamp max min where fill zero neg rsub lt gt ge le eq randn uniform normal "
    "masked".split()
)
_LAYOUT = tuple(
    "copy contiguous clone cat stack pad view reshape permute transpose slice select as_strided empty to expand "
    "unfold index narrow t detach flip".split()
)


def _conv_class(weight_shape: list[int], groups: int, dilation: list[int]) -> str:
    if weight_shape[1] == 1 and groups > 1:
        return "conv: dilated depthwise" if max(dilation) > 1 else "conv: depthwise"
    if weight_shape[2:] == [1, 1]:
        return "conv: pointwise 1x1"
    return "conv: dense"


def _conv_info(event) -> tuple[str, float]:  # type: ignore[no-untyped-def]
    """(class, multiply-adds) of an ``aten::convolution`` / ``aten::convolution_backward`` event."""
    shapes, args = event.input_shapes, event.concrete_inputs
    if event.name == "aten::convolution":
        x, w, stride, padding, dilation, groups = shapes[0], shapes[1], args[3], args[4], args[5], args[8]
        mult = 1.0
    else:  # grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed, out_pad, groups, mask
        x, w, stride, padding, dilation, groups = shapes[1], shapes[2], args[4], args[5], args[6], args[9]
        mask = args[10] or [True, True, True]
        mult = float(bool(mask[0]) + bool(mask[1]))
    k = w[2:]
    out_hw = [(x[2 + i] + 2 * padding[i] - dilation[i] * (k[i] - 1) - 1) // stride[i] + 1 for i in range(2)]
    macs = x[0] * w[0] * out_hw[0] * out_hw[1] * w[1] * k[0] * k[1] * mult
    return _conv_class(w, int(groups), list(dilation)), float(macs)


def _other_class(name: str) -> str:
    op = name.removeprefix("aten::").removeprefix("_").lower()
    if "batch_norm" in op:
        return "batch norm"
    if "pool" in op:
        return "pooling"
    if "sgd" in op or "foreach" in op or "clip" in op or "norm" in op:
        return "optimizer"
    if "entropy" in op or "nll" in op or "softmax" in op or "sum" in op or "mean" in op or "topk" in op:
        return "loss / reduction"
    if any(op.startswith(p) for p in _ELEMENTWISE):
        return "elementwise"
    if any(op.startswith(p) for p in _LAYOUT):
        return "layout / copy"
    return "other"


def classify(events) -> tuple[dict[str, float], dict[str, float]]:  # type: ignore[no-untyped-def]
    """Seconds and multiply-adds per class; a convolution counts with everything under it, once."""
    seconds: dict[str, float] = defaultdict(float)
    macs: dict[str, float] = defaultdict(float)
    roots = ("aten::convolution", "aten::convolution_backward")
    for event in events:
        parent, under_conv = event.cpu_parent, False
        while parent is not None:
            if parent.name in roots:
                under_conv = True
                break
            parent = parent.cpu_parent
        if under_conv:
            continue
        if event.name in roots:
            cls, work = _conv_info(event)
            seconds[cls] += event.cpu_time_total / 1e6
            macs[cls] += work
        elif event.name.startswith("aten::"):
            seconds[_other_class(event.name)] += event.self_cpu_time_total / 1e6
    return dict(seconds), dict(macs)


def profile_one(impl: str, args: argparse.Namespace) -> dict:
    from torch.profiler import ProfilerActivity, profile

    settings = {"recipe": "arnas", "arch": "arnas", **vars(args)}  # the defaults of the command line
    ns = argparse.Namespace(**settings, steps=1, warmup=1, device="cpu", image="3x32")
    run_step, _ = bench_training.prepare(impl, args.batch, ns)
    run_step(0)  # warm-up: allocations, oneDNN kernel choices
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        start = time.perf_counter()
        run_step(1)
        wall = time.perf_counter() - start
    seconds, macs = classify(prof.events())
    return {"impl": impl, "batch": args.batch, "step_seconds": wall, "seconds": seconds, "macs": macs}


def table(rows: list[dict], peak: float) -> str:
    head = "| op type | " + " | ".join(f"{r['impl']}: share | {r['impl']}: % of peak" for r in rows) + " |"
    lines = [head, "|---|" + "---:|---:|" * len(rows)]
    for cls in CLASSES:
        cells = []
        for r in rows:
            total = sum(r["seconds"].values())
            sec = r["seconds"].get(cls, 0.0)
            gflops = 2 * r["macs"].get(cls, 0.0) / sec / 1e9 if sec and cls in r["macs"] else None
            cells += [f"{100 * sec / total:.1f}%", "-" if gflops is None else f"{100 * gflops / peak:.1f}%"]
        lines.append(f"| {cls} | " + " | ".join(cells) + " |")
    walls = " | ".join(f"{r['step_seconds']:.1f} s | " for r in rows)
    lines.append(f"| **step wall time** | {walls}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--init-channels", type=int, default=8)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--impls", default="authors,ours,ours-s2b")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--recipe", default="arnas", help="recipe of the ours* rows (the zoo's: cpu_cifar10)")
    parser.add_argument("--arch", default="arnas", help="architecture of the ours* rows (e.g. darts_v2)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        worker_args = argparse.Namespace(
            init_channels=args.init_channels, layers=args.layers, batch=args.batch, recipe=args.recipe, arch=args.arch
        )
        print(json.dumps(profile_one(args.worker, worker_args)))
        return
    rows = []
    for impl in args.impls.split(","):
        cmd = [sys.executable, __file__, "--worker", impl, "--init-channels", str(args.init_channels)]
        cmd += ["--layers", str(args.layers), "--batch", str(args.batch), "--recipe", args.recipe, "--arch", args.arch]
        cmd += ["--threads", str(args.threads)] if args.threads else []
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(f"{impl}: {rows[-1]['step_seconds']:.1f} s", flush=True)
    peak = bench_training.machine_peak_gflops()
    text = table(rows, peak["float32"])
    print(text)
    if args.out:
        result = {
            "benchmark": "per-op-type profile of one PGD-7 training step (ARNAS recipe), torch.profiler, CPU",
            "model": f"{args.arch} init_channels={args.init_channels} layers={args.layers} (paper: 64, 20)",
            "recipe": args.recipe,
            "batch": args.batch,
            "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "load_average_at_end": os.getloadavg(),
            "machine_peak_gflops": peak,
            "rows": rows,
            "markdown": text,
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
