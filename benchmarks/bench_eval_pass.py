"""Throughput of a PGD-20 evaluation pass (images/s) on one network, for code paths chosen by env switches.

    python benchmarks/bench_eval_pass.py --arch arnas --init-channels 16 --layers 20 --threads 1 \\
        --variants ARNAS_ZOO_SHARED_RELU=0 ARNAS_ZOO_SHARED_RELU=1 --out benchmarks/results/eval_pass.json

The pass is what ``arnas-zoo eval`` runs for its PGD row: :func:`arnas_zoo.attacks.pgd` (l_inf, eps 8/255,
step 2/255, 20 steps, uniform start, one restart) on a model in eval mode with channels_last and BatchNorm
folded into the convolutions, then the accuracy forward. Each variant sets its environment variables in
this process before its rounds (the switches are read at call time) and the variants alternate for
``--repeats`` rounds, so a load change on a shared machine hits them alike; the median round is reported,
with each variant's ratio to the first. Random weights and random images: this times the pass, it does
not measure robustness. The adversarial examples of all variants are compared with the first's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from _report import machine, write

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arnas_zoo.attacks import pgd  # noqa: E402
from arnas_zoo.registry import create_model  # noqa: E402


def _assign(variant: str) -> dict[str, str]:
    pairs = {}
    for part in filter(None, variant.split(",")):
        key, sep, value = part.partition("=")
        if not sep or not key.startswith("ARNAS_ZOO_"):
            raise SystemExit(f"variant {variant!r}: expected ARNAS_ZOO_NAME=VALUE[,...]")
        pairs[key] = value
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="arnas")
    parser.add_argument("--init-channels", type=int, default=16)
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--n", type=int, default=32, help="images per round")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=["ARNAS_ZOO_SHARED_RELU=0", "ARNAS_ZOO_SHARED_RELU=1"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sizes = {"init_channels": args.init_channels} | ({} if args.arch.startswith("resnet") else {"layers": args.layers})
    model = create_model(args.arch, **sizes).eval().to(memory_format=torch.channels_last)
    c, s = model.config.in_channels, model.config.input_size
    x = torch.rand(args.n, c, s, s)
    y = torch.randint(0, model.config.num_classes, (args.n,))
    assignments = [_assign(v) for v in args.variants]

    def run() -> torch.Tensor:
        parts = []
        for i in range(0, args.n, args.batch_size):
            xb, yb = x[i : i + args.batch_size], y[i : i + args.batch_size]
            generator = torch.Generator().manual_seed(i)
            adv = pgd(model, xb, yb, eps=8 / 255, step_size=2 / 255, steps=args.steps, generator=generator)
            with torch.no_grad():
                model(adv.contiguous(memory_format=torch.channels_last))
            parts.append(adv)
        return torch.cat(parts)

    times: dict[str, list[float]] = {v: [] for v in args.variants}
    advs: dict[str, torch.Tensor] = {}
    for round_ in range(args.repeats + 1):  # round 0 warms up every variant
        for variant, env in zip(args.variants, assignments):
            os.environ.update(env)
            start = time.perf_counter()
            adv = run()
            if round_:
                times[variant].append(time.perf_counter() - start)
            advs[variant] = adv
            print(f"round {round_} {variant}: {time.perf_counter() - start:.2f} s", flush=True)
    first = args.variants[0]
    rows = []
    for variant in args.variants:
        median = statistics.median(times[variant])
        rows.append({
            "variant": variant,
            "round_seconds": times[variant],
            "median_round_s": median,
            "images_per_s": args.n / median,
            "over_first": statistics.median(times[first]) / median,
            "adversarial_max_abs_difference_from_first": float((advs[variant] - advs[first]).abs().max()),
        })  # fmt: skip
    result = {
        "benchmark": "PGD-20 evaluation pass (l_inf 8/255, step 2/255, uniform start, eval mode, folded BN, "
        "channels_last) plus the accuracy forward; random weights and images",
        "model": f"{args.arch} {sizes}",
        "n": args.n,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "repeats": args.repeats,
        **machine(),
        "rows": rows,
    }
    write(result, args.out)


if __name__ == "__main__":
    main()
