"""Throughput and peak memory of one PGD-7 adversarial training step of ARNAS: ours vs the authors' way.

    python benchmarks/bench_training.py --out benchmarks/results/training_cpu.json            # CPU, reduced width
    python benchmarks/bench_training.py --init-channels 64 --layers 20 --device cuda           # the paper's network

*ours* is :func:`arnas_zoo.training.step.train_step` as :func:`~arnas_zoo.training.train` runs it: data
resident on the device, augmentation on tensors (crop, flip, cutout), channels_last, bf16 autocast on
CUDA. *reference* is a plain loop written the way the ARNAS recipe runs: per-sample augmentation on
host arrays (a DataLoader's transforms), a host-to-device copy of every batch, fp32, NCHW. Both use
the ARNAS recipe's attack (PGD-7, eps 8/255, step 0.01, start x + 0.001 N(0, 1), model in eval
mode), loss (CE + 0.4 aux CE), SGD with clipping 5. Each (implementation, batch) runs in its own
subprocess so that the peak memory (CUDA: max allocated; CPU: peak RSS of the process) is its own;
the two implementations alternate in the same run on the same machine. Writes JSON.
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

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from arnas_zoo import create_model  # noqa: E402
from arnas_zoo.runs.distributed import Dist  # noqa: E402
from arnas_zoo.training import augment, get_recipe  # noqa: E402
from arnas_zoo.training.step import StepModels, train_step  # noqa: E402


def reference_step(
    model, optimizer, images_u8: np.ndarray, labels: np.ndarray, rng: np.random.Generator, device: torch.device
) -> None:
    """One step the authors' way: per-sample numpy augmentation, host->device copy, fp32 NCHW."""
    batch = []
    for img in images_u8:  # HWC uint8, as a torchvision transform pipeline sees it
        padded = np.pad(img, ((4, 4), (4, 4), (0, 0)))
        dy, dx = rng.integers(0, 9, size=2)
        crop = padded[dy : dy + 32, dx : dx + 32]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        t = crop.transpose(2, 0, 1).astype(np.float32) / 255.0
        cy, cx = rng.integers(0, 32, size=2)
        t[:, max(0, cy - 8) : cy + 8, max(0, cx - 8) : cx + 8] = 0.0
        batch.append(t)
    x = torch.from_numpy(np.stack(batch)).to(device)
    y = torch.from_numpy(labels).to(device)
    model.eval()
    x_adv = (x + 0.001 * torch.randn_like(x)).detach()
    for _ in range(7):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + 0.01 * grad.sign(), x - 8 / 255), x + 8 / 255).clamp(0, 1)
    model.train()
    optimizer.zero_grad()
    logits, aux = model.forward_train(x_adv)
    loss = F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    optimizer.step()
    float(loss)  # the authors' loop reads the loss every step (a host sync)


def measure(impl: str, batch: int, args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = create_model("arnas", init_channels=args.init_channels, layers=args.layers).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    rng = np.random.default_rng(0)
    n = batch * (args.steps + args.warmup)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).astype(np.int64)
    recipe = get_recipe("arnas", batch_size=batch)
    if impl.startswith("ours"):
        if "s2b" in impl:
            os.environ["ARNAS_ZOO_DILATED"] = "s2b"
        bf16_cpu = "bf16" in impl
        if recipe.channels_last:
            model = model.to(memory_format=torch.channels_last)
        x_all = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div(255)
        x_all = x_all.contiguous(memory_format=torch.channels_last)
        y_all = torch.from_numpy(labels).to(device)
        use_cuda = device.type == "cuda"

        def autocast():
            import contextlib

            if use_cuda and recipe.bf16:
                return torch.autocast("cuda", dtype=torch.bfloat16)
            if not use_cuda and bf16_cpu:
                return torch.autocast("cpu", dtype=torch.bfloat16)
            return contextlib.nullcontext()

    model.train()
    times = []
    for i in range(args.warmup + args.steps):
        sl = slice(i * batch, (i + 1) * batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        if impl.startswith("ours"):
            gen = torch.Generator(device=device).manual_seed(i)
            xb = augment(x_all[sl], gen, crop_padding=4, flip=True, cutout=16).contiguous(
                memory_format=torch.channels_last
            )
            noise = torch.randn(xb.shape, generator=gen, device=device)
            models = StepModels(model, model, use_aux=True, aux_weight=0.4, dist=Dist())
            train_step(models, optimizer, recipe, xb, y_all[sl], noise, recipe.eps, autocast)
        else:
            reference_step(model, optimizer, images[sl], labels[sl], rng, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        peak_kind = "torch.cuda.max_memory_allocated"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        peak_kind = "peak RSS of the process (includes the Python/torch runtime)"
    return {
        "impl": impl,
        "batch": batch,
        "step_seconds": times,
        "median_step_s": float(np.median(times)),
        "images_per_s": batch / float(np.median(times)),
        "peak_memory_bytes": int(peak),
        "peak_memory_kind": peak_kind,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="32,128")
    parser.add_argument("--init-channels", type=int, default=8)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--impls",
        default="reference,ours",
        help="comma-separated: reference, ours, ours-bf16 (bf16 autocast on CPU), ours-s2b (space-to-batch "
        "dilated convolutions), ours-bf16-s2b",
    )
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(measure(args.worker[0], int(args.worker[1]), args)))
        return
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        for impl in args.impls.split(","):
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                impl,
                str(batch),
                "--init-channels",
                str(args.init_channels),
                "--layers",
                str(args.layers),
                "--steps",
                str(args.steps),
                "--warmup",
                str(args.warmup),
                "--device",
                args.device,
            ] + (["--threads", str(args.threads)] if args.threads else [])
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(
                json.dumps({k: rows[-1][k] for k in ("impl", "batch", "images_per_s", "peak_memory_bytes")}), flush=True
            )
    speedups = {}
    base = args.impls.split(",")[0]
    for batch in {r["batch"] for r in rows}:
        ref = next(r for r in rows if r["batch"] == batch and r["impl"] == base)
        speedups[str(batch)] = {
            f"{r['impl']}_over_{base}": {
                "throughput": r["images_per_s"] / ref["images_per_s"],
                "peak_memory": r["peak_memory_bytes"] / ref["peak_memory_bytes"],
            }
            for r in rows
            if r["batch"] == batch and r["impl"] != base
        }
    result = {
        "benchmark": "one PGD-7 adversarial training step (ARNAS recipe), ours vs reference loop",
        "model": f"arnas init_channels={args.init_channels} layers={args.layers} (paper: 64, 20)",
        "device": args.device,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_at_end": os.getloadavg(),
        "steps_timed": args.steps,
        "warmup_steps": args.warmup,
        "rows": rows,
        "ratios": speedups,
    }
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
