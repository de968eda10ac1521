"""Throughput and peak memory of one PGD-7 adversarial training step of ARNAS: ours vs the authors' way.

    python benchmarks/bench_training.py --out benchmarks/results/training_cpu.json            # CPU, reduced width
    python benchmarks/bench_training.py --init-channels 64 --layers 20 --device cuda           # the paper's network

*authors* has the passes and host data pipeline of the authors' loop (:func:`authors_step`; a
DataLoader with two workers running torchvision transforms on PIL images). *ours* is
:func:`arnas_zoo.training.step.train_step` as :func:`~arnas_zoo.training.train` runs it: data resident
on the device, augmentation on tensors (crop, flip, cutout), channels_last, bf16 autocast on CUDA (on
CPU with ``ours-bf16``). *reference* is round one's lighter loop (per-sample numpy augmentation, one
host-to-device copy per batch, fp32 NCHW, no clean pass): it turned out 1.8x faster than the authors'
code it stood for. All use the ARNAS recipe's attack (PGD-7, eps 8/255, step 0.01, start x + 0.001
N(0, 1), model in eval mode) and SGD with clipping 5. Each (implementation, batch) runs in its own
subprocess so that the peak memory (CUDA: max allocated; CPU: peak RSS of the process) is its own;
the implementations alternate in the same run on the same machine. The JSON also has each row's
achieved GFLOP/s (forward-equivalents x MACs) and, on CPU, the fraction of this machine's fp32 peak
measured at the end of the same run (the best of a large matmul and large oneDNN convolutions, each
reported: see ``machine_peak_gflops``).

``--recipe NAME`` times another recipe for the ours* rows (its attack, batch augmentation and
channels_last), and ``--arch``/``--image`` another network and image shape, e.g. the zoo's pushed
MNIST model, fp32 vs bf16:

    python benchmarks/bench_training.py --arch resnet18 --image 1x28 --init-channels 16 --batches 128 \
        --recipe cpu_mnist_full --impls ours,ours-bf16 --threads 1
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


class _HostImages(torch.utils.data.Dataset):
    """uint8 HWC images through a torchvision transform pipeline on PIL images, as the authors' loader runs."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        import torchvision.transforms as T

        self.images, self.labels = images, labels
        self.transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        t = self.transform(Image.fromarray(self.images[i]))
        cy, cx = np.random.randint(32), np.random.randint(32)  # cutout 16, one numpy mask per sample
        mask = np.ones((32, 32), np.float32)
        mask[max(0, cy - 8) : cy + 8, max(0, cx - 8) : cx + 8] = 0.0
        return t * torch.from_numpy(mask), int(self.labels[i])


def authors_step(model, optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    """One step with the passes of the authors' ARNAS training loop (read from fyqsama/ARNAS, not copied).

    A clean train-mode forward with the auxiliary head whose graph stays alive until the end of the
    step; PGD-7 in eval mode (input gradients only, start x + 0.001 N(0, 1)); a train-mode forward on
    the adversarial batch (the auxiliary head runs and is discarded); CE(adv) + 0.4 CE(aux, clean)
    backpropagated through both graphs; clipping 5; the loss and top-1/top-5 read on the host.
    """
    model.train()
    optimizer.zero_grad()
    logits, logits_aux = model.forward_train(x)
    model.eval()
    x_adv = x.detach() + 0.001 * torch.randn_like(x)
    for _ in range(7):
        x_adv.requires_grad_()
        loss = F.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, [x_adv])
        x_adv = torch.min(torch.max(x_adv.detach() + 0.01 * grad.sign(), x - 8 / 255), x + 8 / 255).clamp(0, 1)
    model.train()
    optimizer.zero_grad()
    adv_logits, _ = model.forward_train(x_adv.detach())
    loss = F.cross_entropy(adv_logits, y) + 0.4 * F.cross_entropy(logits_aux, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    optimizer.step()
    top5 = logits.topk(5, 1).indices
    float(loss), float((top5[:, 0] == y).float().mean()), float((top5 == y[:, None]).any(1).float().mean())


def forward_equivalents(steps: int, clean_pass: bool) -> int:
    """Forward-pass equivalents of one step: the attack's forwards and input-only backwards (~1 forward
    each), the adversarial forward and full backward (~2), and the clean pass with its backward if any.
    The ARNAS recipe (PGD-7, clean auxiliary pass): 7 + 7 + 3 + 3 = 20, in the authors' loop and ours."""
    return 2 * steps + 3 + (3 if clean_pass else 0)


FORWARD_EQUIVALENTS = forward_equivalents(7, True)


def _best_gflops(fn, flop: float, seconds: float) -> float:
    """Best-of GFLOP/s of ``fn`` over ``seconds`` (after one warm-up call)."""
    fn()
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return flop / best / 1e9


def machine_peak_gflops(seconds: float = 3.0) -> dict:
    """The machine's fp32 and bf16 GFLOP/s with this process's threads, as the best of the dense kernels torch
    has, each reported: a 2048^3 matmul (MKL's GEMM for fp32) and large channels_last convolutions (oneDNN:
    1x1 at 256 channels, 3x3 at 128, batch 32). The best one is the peak: on AMD CPUs MKL's fp32 GEMM takes
    its AVX2 path (measured on this project's AVX-512 EPYC: 86 GFLOP/s per core against oneDNN's ~200), so a
    matmul alone understates an AVX-512 machine by about 2x. bf16 matmul at 512^3, since CPUs without native
    bf16 emulate it at a fraction of a GFLOP/s. Also whether the CPU has native bf16."""
    from arnas_zoo.runs.precision import cpu_has_native_bf16

    out: dict = {"cpu_native_bf16": cpu_has_native_bf16(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    kernels: dict[str, float] = {}
    for dtype, n in ((torch.float32, 2048), (torch.bfloat16, 512)):
        name = str(dtype).removeprefix("torch.")
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        kernels[f"{name} matmul {n}^3"] = _best_gflops(lambda a=a, b=b: a @ b, 2 * n**3, seconds)
    cl = torch.channels_last
    with torch.no_grad():
        for k, c, size in ((1, 256, 32), (3, 128, 32)):
            x = torch.randn(32, c, size, size).contiguous(memory_format=cl)
            w = torch.randn(c, c, k, k).contiguous(memory_format=cl)
            flop = 2 * 32 * c * c * k * k * size * size
            kernels[f"float32 conv {k}x{k} {c}ch {size}x{size} batch 32 channels_last"] = _best_gflops(
                lambda x=x, w=w, k=k: torch.nn.functional.conv2d(x, w, padding=k // 2), flop, seconds / 2
            )
    out["kernels"] = kernels
    for name in ("float32", "bfloat16"):
        out[name] = max(v for key, v in kernels.items() if key.startswith(name))
    return out


def _image(args: argparse.Namespace, ours: bool) -> tuple[int, int]:
    """(channels, size) of the images: ``--image`` for the ours* rows, CIFAR's 3x32 for the references."""
    c, size = (int(v) for v in args.image.split("x")) if ours else (3, 32)
    return c, size


def _model(args: argparse.Namespace, ours: bool):  # type: ignore[no-untyped-def]
    """``--arch`` at ``--init-channels`` (and ``--layers`` for cell networks) for the ours* rows; ARNAS otherwise."""
    c, size = _image(args, ours)
    arch = args.arch if ours else "arnas"
    sizes = {"init_channels": args.init_channels}
    if arch != "resnet18":
        sizes["layers"] = args.layers
    return create_model(arch, in_channels=c, input_size=size, **sizes)


def prepare(impl: str, batch: int, args: argparse.Namespace):
    """``(run_step, work)``: ``run_step(i)`` runs step ``i`` of ``impl`` on its own data (``args.warmup +
    args.steps`` batches are made); ``work`` is the step's forward-pass equivalents."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = _model(args, ours=impl.startswith("ours")).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    rng = np.random.default_rng(0)
    n = batch * (args.steps + args.warmup)
    c, size = _image(args, ours=impl.startswith("ours"))
    images = rng.integers(0, 256, size=(n, size, size, c), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).astype(np.int64)
    recipe = get_recipe(args.recipe, batch_size=batch)  # the "ours*" impls follow it; authors/reference are PGD-7
    work = FORWARD_EQUIVALENTS if impl == "authors" else forward_equivalents(7, False)  # reference: no clean pass
    if impl.startswith("ours"):
        if "s2b" in impl or "auto" in impl:
            os.environ["ARNAS_ZOO_DILATED"] = "s2b" if "s2b" in impl else "auto"
        # ``-relu-per-op``: every op applies its own leading ReLU, as before cells shared one per state
        os.environ["ARNAS_ZOO_SHARED_RELU"] = "0" if "relu-per-op" in impl else "1"
        # ``-wgrad-native``: oneDNN's own depthwise weight gradients, as before the phase/window route
        os.environ["ARNAS_ZOO_DW_WGRAD"] = "native" if "wgrad-native" in impl else "auto"
        # ``-dgrad-native`` / ``-dgrad-flip``: oneDNN's own depthwise input gradients everywhere / the
        # flipped-kernel forward for every stride-1 one; by default the training step flips the dilated ones
        os.environ.pop("ARNAS_ZOO_DWGRAD", None)
        if "dgrad-native" in impl or "dgrad-flip" in impl:
            os.environ["ARNAS_ZOO_DWGRAD"] = "native" if "dgrad-native" in impl else "flip"
        # ``-slices``: autograd's slices for FactorizedReduce and strided 1x1 convolutions (arnas_zoo.subsample)
        os.environ["ARNAS_ZOO_SUBSAMPLE"] = "slices" if "slices" in impl else "phases"
        # ``-sep-plain`` / ``-sep-dense``: separable blocks as two convolutions / one composed dense one
        # (the default, ``auto``, composes them under CPU bf16 autocast only)
        os.environ["ARNAS_ZOO_SEPCONV"] = "plain" if "sep-plain" in impl else "dense" if "sep-dense" in impl else "auto"
        bf16_cpu = "bf16" in impl
        if recipe.channels_last:
            model = model.to(memory_format=torch.channels_last)
        x_all = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div(255)
        x_all = x_all.contiguous(memory_format=torch.channels_last)
        y_all = torch.from_numpy(labels).to(device)
        use_cuda = device.type == "cuda"
        work = forward_equivalents(recipe.steps, recipe.aux_input == "clean" and model.config.auxiliary)

        def autocast():
            import contextlib

            if use_cuda and recipe.bf16:
                return torch.autocast("cuda", dtype=torch.bfloat16)
            if not use_cuda and bf16_cpu:
                return torch.autocast("cpu", dtype=torch.bfloat16)
            return contextlib.nullcontext()

    if impl == "authors":
        loader = iter(torch.utils.data.DataLoader(_HostImages(images, labels), batch_size=batch, shuffle=True,
                                                  num_workers=2, drop_last=True))  # fmt: skip
    model.train()
    models = None
    if impl.startswith("ours"):
        if "compile" in impl:  # inductor; the warm-up steps pay the compilation
            from arnas_zoo.training.compiled import compiled_models

            models = compiled_models(model, True, 0.4, Dist())
        else:
            use_aux = getattr(model, "auxiliary_head", None) is not None
            models = StepModels(model, model, use_aux=use_aux, aux_weight=0.4, dist=Dist())

    def run_step(i: int) -> None:
        sl = slice(i * batch, (i + 1) * batch)
        if impl.startswith("ours"):
            gen = torch.Generator(device=device).manual_seed(i)
            xb = augment(
                x_all[sl], gen, crop_padding=recipe.crop_padding, flip=recipe.flip, cutout=recipe.cutout
            ).contiguous(memory_format=torch.channels_last)
            noise = torch.randn(xb.shape, generator=gen, device=device)
            train_step(models, optimizer, recipe, xb, y_all[sl], noise, recipe.eps, autocast)
        elif impl == "authors":
            xb, yb = next(loader)
            authors_step(model, optimizer, xb.to(device), yb.to(device))
        else:
            reference_step(model, optimizer, images[sl], labels[sl], rng, device)

    return run_step, work


def measure(impl: str, batch: int, args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    run_step, work = prepare(impl, batch, args)
    times = []
    for i in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        run_step(i)
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
    from arnas_zoo.stats import count_ops

    c, size = _image(args, impl.startswith("ours"))
    macs, _ = count_ops(_model(args, impl.startswith("ours")).eval(), (c, size, size))
    return {
        "impl": impl,
        "batch": batch,
        "achieved_gflops": 2 * macs * work * batch / float(np.median(times)) / 1e9,
        "forward_equivalents": work,
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
        default="authors,reference,ours",
        help="comma-separated, the first is the base of the ratios: authors (the authors' passes and host "
        "pipeline), reference (round one's lighter loop), ours, ours-bf16 (bf16 autocast on CPU), ours-s2b "
        "(space-to-batch dilated convolutions), ours-auto (per shape, the measured faster), ours-bf16-s2b, "
        "ours-sep-plain / ours-sep-dense (separable blocks as two convolutions / as one composed dense convolution; "
        "the default composes them under CPU bf16 autocast only; combine, e.g. ours-bf16-sep-plain), "
        "ours-relu-per-op (cells apply each op's leading ReLU, as before they shared one per state; combines with the "
        "others, e.g. ours-bf16-relu-per-op), ours-wgrad-native (oneDNN's own weight gradients for dilated and "
        "5x5 depthwise convolutions, as before arnas_zoo.dw_wgrad), ours-dgrad-native / ours-dgrad-flip (oneDNN's own "
        "depthwise input gradients / the flipped-kernel forward for all stride-1 ones; the default flips the dilated "
        "ones), ours-slices (autograd's slices for FactorizedReduce and strided 1x1 convolutions, as before "
        "arnas_zoo.subsample), ours-compile (torch.compile, inductor; give "
        "--warmup 2 or more: the first steps compile)",
    )
    parser.add_argument(
        "--recipe",
        default="arnas",
        help="recipe of the ours* implementations (e.g. cpu_cifar10 to time the zoo's recipe, fp32 vs bf16); "
        "authors and reference always run the ARNAS recipe's PGD-7, so compare them only under 'arnas'",
    )
    parser.add_argument("--arch", default="arnas", help="architecture of the ours* rows (e.g. resnet18)")
    parser.add_argument("--image", default="3x32", help="CxS images of the ours* rows (1x28 for MNIST)")
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
                "--recipe",
                args.recipe,
                "--arch",
                args.arch,
                "--image",
                args.image,
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
    peak = machine_peak_gflops() if args.device == "cpu" else None
    for row in rows:
        if peak:
            row["fraction_of_fp32_peak"] = row["achieved_gflops"] / peak["float32"]
    result = {
        "benchmark": f"one adversarial training step: ours* by recipe {args.recipe}; authors and reference: "
        "the ARNAS recipe's PGD-7",
        "machine_peak_gflops": peak,
        "recipe_of_ours": args.recipe,
        "model": f"{args.arch} init_channels={args.init_channels}"
        + (f" layers={args.layers}" if args.arch != "resnet18" else "")
        + f" on {args.image} images"
        + (" (paper: arnas 64, 20 on 3x32)" if args.arch == "arnas" else ""),
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
