"""Which oneDNN kernel runs each convolution of a training forward and backward, and how long it takes.

    python benchmarks/onednn_kernels.py --arch arnas --init-channels 16 --layers 20 --batch 64 --top 15

Runs ``--iters`` train-mode forward and backward passes (channels_last, fp32, one thread) in a child
process with ``ONEDNN_VERBOSE=1`` and glibc's mmap and trim thresholds raised (so that fresh 4 MiB buffers
do not page-fault into every kernel's time), and tallies the last pass's convolution calls by
implementation, propagation kind and shape. A convolution that oneDNN has no fast kernel for shows up
by name: on an AVX2 EPYC the dilated depthwise weight gradients ran on ``x64:gemm:jit`` and the 5x5
ones on the generic ``jit:avx2`` (docs/performance.md). The times are oneDNN's own, per call; the verbose
mode adds a little to each.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
from pathlib import Path

MARK = "=== last pass"


def child(args: argparse.Namespace) -> None:
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from arnas_zoo.registry import create_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    sizes = {"init_channels": args.init_channels}
    if args.arch != "resnet18":
        sizes["layers"] = args.layers
    model = create_model(args.arch, **sizes).train().to(memory_format=torch.channels_last)
    x = torch.rand(args.batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,))
    for i in range(args.iters):
        if i == args.iters - 1:
            print(MARK, flush=True)
        model.zero_grad(set_to_none=True)
        out = model(x)
        F.cross_entropy(out[0] if isinstance(out, tuple) else out, y).backward()


def tally(lines: list[str]) -> tuple[list[dict], float]:
    """Convolution calls after the mark, summed by (implementation, propagation, shape)."""
    after = lines[lines.index(MARK) + 1 :] if MARK in lines else lines
    totals: dict[tuple[str, str, str], list[float]] = collections.defaultdict(lambda: [0.0, 0])
    for line in after:
        fields = line.split(",")
        if len(fields) < 8 or fields[3] != "exec" or fields[5] != "convolution":
            continue
        key = (fields[6], fields[7], fields[-2])
        totals[key][0] += float(fields[-1])
        totals[key][1] += 1
    rows = [{"impl": k[0], "prop": k[1], "shape": k[2], "ms": v[0], "calls": int(v[1])} for k, v in totals.items()]
    rows.sort(key=lambda row: -row["ms"])
    return rows, sum(row["ms"] for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="arnas")
    parser.add_argument("--init-channels", type=int, default=16)
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--iters", type=int, default=4, help="passes; the last is tallied")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    env = dict(os.environ, ONEDNN_VERBOSE="1", OMP_NUM_THREADS="1")
    env.update(MALLOC_MMAP_THRESHOLD_="1000000000", MALLOC_TRIM_THRESHOLD_="1000000000")
    cmd = [sys.executable, __file__, "--child", *sys.argv[1:]]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    rows, total = tally(out.splitlines())
    if not rows:  # a torch without oneDNN, or a verbose format this parser does not know
        raise SystemExit("no oneDNN convolution calls in the child's output: is this torch built with oneDNN?")
    print(f"convolution time in the last pass: {total:.1f} ms in {sum(r['calls'] for r in rows)} calls")
    for row in rows[: args.top]:
        print(f"{row['ms']:8.1f} ms {row['calls']:4d}  {row['impl']:<34} {row['prop']:<16} {row['shape']}")
    if args.out:
        settings = {k: v for k, v in vars(args).items() if k not in ("out", "child")}
        switches = {k: v for k, v in os.environ.items() if k.startswith("ARNAS_ZOO_")}
        args.out.write_text(json.dumps({"settings": settings, "switches": switches, "total_ms": total,
                                        "rows": rows}, indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
