"""RobNets supernet training vs training a fixed RobNet-large of the same width: images/s and peak memory.

Both run the same adversarial training step (PGD-k crafted on the network, then one SGD step on the
adversarial batch) on random images of the same shape. The supernet samples a new code (uniform bits,
one row shared by all cells) every step and runs only its ops; RobNet-large is the published cell
code, shared by all cells, at the same width and depth. Each network runs in a fresh subprocess so
its peak memory (max RSS on CPU, ``torch.cuda.max_memory_allocated`` on CUDA) is its own.

    python benchmarks/bench_robnet.py --width 8 --layers 5 --size 16 --out benchmarks/results/robnet_cpu.json
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
    import numpy as np
    import torch
    import torch.nn.functional as F

    from arnas_zoo.attacks import pgd
    from arnas_zoo.devices import resolve_device
    from arnas_zoo.models import build_model
    from search.robnet.model import RobNetSupernet, genotype_code, macro_config, sample_code, sampled_config

    device = resolve_device(args.device)
    torch.manual_seed(0)
    config = macro_config(
        init_channels=args.width, layers=args.layers, in_channels=3, input_size=args.size, num_classes=10
    )
    gen = torch.Generator().manual_seed(0)
    if args.which == "supernet":
        model = RobNetSupernet(config).to(device)
    else:
        from arnas_zoo.registry import get_config

        code = genotype_code(get_config("robnet_large").genotype)
        model = build_model(sampled_config(config, code, "robnet_large")).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    codes_active = []

    def step() -> None:
        if args.which == "supernet":
            code = sample_code(gen, 1)
            codes_active.append(float(np.asarray(code).mean()))
            model.set_code(code)
        x_adv = pgd(model, x, y, eps=8 / 255, step_size=2 / 255, steps=args.pgd_steps, bn="batch", check_inputs=False)
        model.train()
        loss = F.cross_entropy(model(x_adv), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak_mb, kind = torch.cuda.max_memory_allocated(device) / 2**20, "torch.cuda.max_memory_allocated"
    else:
        peak_mb, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "max RSS of the process"
    return {
        "network": args.which,
        "images_per_s": round(args.batch * args.steps / seconds, 2),
        "seconds": round(seconds, 2),
        "parameters": sum(p.numel() for p in model.parameters()),
        "mean_active_bits": round(float(np.mean(codes_active)), 3) if codes_active else None,
        "peak_memory_mb": round(peak_mb, 1),
        "peak_memory_kind": kind,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--pgd-steps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None)
    parser.add_argument("--which", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.which:
        print(json.dumps(measure(args)))
        return
    rows = []
    for which in ("supernet", "robnet_large"):
        cmd = [sys.executable, __file__, "--which", which]
        for key in ("width", "layers", "size", "batch", "pgd_steps", "steps", "warmup", "device"):
            cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{which:<13} {row['images_per_s']:8.1f} images/s, peak {row['peak_memory_mb']:.0f} MB", flush=True)
        rows.append(row)
    ratio = rows[0]["images_per_s"] / rows[1]["images_per_s"]
    print(f"supernet / RobNet-large throughput: {ratio:.2f}x")
    report = {
        "benchmark": "adversarial training step: RobNets supernet (path sampling) vs fixed RobNet-large",
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "which")},
        "results": rows,
        "supernet_over_robnet_large_throughput": round(ratio, 3),
        "supernet_over_robnet_large_peak_memory": round(rows[0]["peak_memory_mb"] / rows[1]["peak_memory_mb"], 3),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        print(f"written {args.out}")


if __name__ == "__main__":
    main()
