"""Seconds per ARNAS search step and peak memory of the supernet, first vs second order.

A search step is what `python -m search run` does per batch: PGD on the training batch, PGD on the
validation batch (the robust objective), the architecture step (MGDA), the weight step. Each
(batch size, order) runs in a fresh subprocess so that its peak memory (max RSS on CPU,
``torch.cuda.max_memory_allocated`` on CUDA) is its own. Synthetic [0, 1] images, since the timing
does not depend on the pixels. Writes one JSON file.

    python benchmarks/bench_search.py --out bench_search.json              # paper supernet, PGD-7
    python benchmarks/bench_search.py --pgd-steps 1 --steps 1 --warmup 0   # a quicker CPU estimate
    python benchmarks/bench_search.py --orders first --objectives pgd_ce,jacobian,certified   # ARNAS vs DSRNA

``--objectives``: ``pgd_ce`` is ARNAS' step (PGD weight training, PGD objective); ``jacobian``,
``certified`` and ``combined`` are DSRNA's steps on the same supernet (clean weight training, the
metric as the robust objective).

``--impls ours,authors``: *authors* is the reference for ``pgd_ce``: the passes of the authors' search
loop (fyqsama/ARNAS ``train_search.py`` + ``architect_2.py``, read for behaviour, not copied) on the
same supernet built the authors' way (every op its own ReLU, the edge's weighted sum as products and
partial sums: ``search.supernet.SHARE_RELU`` and ``FUSED_SUM`` off): NCHW fp32; uint8 images through
PIL transforms; a fresh iterator over the validation loader every step; PGD-7 with the model in train
mode; per objective a separately unrolled *copy* of the network (its own forward and backward on the
training batch) and its own finite-difference Hessian-vector product; MGDA; the weight step; the loss
read on the host.

``--impls ours-bf16,ours-bf16-all`` (CPU with native bf16): bf16 autocast (``amp_cpu=true``) in the
PGD crafting and the weight step only (``amp_arch=false``), or also in the architecture gradients
(``-all``); the finite-difference passes are float32 in both. ``--check-numerics`` adds, for these,
the cosine between their architecture gradients and the float32 ones on the same batches. A suffix
``-s2b`` or ``-auto`` sets ``ARNAS_ZOO_DILATED`` (dilated depthwise convolutions by space-to-batch,
always or where measured faster per shape; ``arnas_zoo/fastconv.py``): ``ours-auto``,
``ours-bf16-auto``, ``ours-bf16-all-auto``. A suffix ``-sep-plain`` keeps separable blocks as two
convolutions under bf16 (``ARNAS_ZOO_SEPCONV=plain``; by default they are composed into one dense
convolution under CPU bf16 autocast on AMX CPUs): ``--impls ours-bf16,ours-bf16-sep-plain``. A suffix
``-rcK`` recomputes the first K cells' activations in the backward (config ``recompute_cells``;
``--recompute-cells K`` sets it for every ours row), so ``--impls authors,ours,ours-rc1,ours-rc2`` times
the memory/time trade-off in one run. A suffix ``-dgrad-alt`` alternates the steps of one process between
``ARNAS_ZOO_DWGRAD=native`` and the search step's default (its training routes: the dilated depthwise
convolutions' input gradients as flipped-kernel forward convolutions) and reports each route's steps
(``--warmup 2`` warms both): ``--impls ours-dgrad-alt --orders first --batch-sizes 32 --steps 4``; ``-slices-alt``
alternates autograd's slices and ``arnas_zoo.subsample``'s one-node picks in FactorizedReduce the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _pgd_train_mode(model, x, y, eps: float, alpha: float, steps: int):  # type: ignore[no-untyped-def]
    """The authors' attack call: uniform start, sign steps, projection, the model left in train mode."""
    import torch
    import torch.nn.functional as F

    x_adv = x + torch.empty_like(x).uniform_(-eps, eps)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), [x_adv])
        x_adv = (x + (x_adv.detach() + alpha * grad.sign() - x).clamp(-eps, eps)).detach()
    return x_adv


def _unrolled_copy(model, w_opt, x, y, eta: float):  # type: ignore[no-untyped-def]
    """A new network holding w - eta (momentum buf + grad + wd w): its own forward/backward, then a copy."""
    import copy

    import torch
    import torch.nn.functional as F

    weights = model.weight_parameters()
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), weights)
    group = w_opt.param_groups[0]
    clone = copy.deepcopy(model)
    with torch.no_grad():
        for p, q, g in zip(weights, clone.weight_parameters(), grads):
            buf = w_opt.state.get(p, {}).get("momentum_buffer")
            step = g + group["weight_decay"] * p + (group["momentum"] * buf if buf is not None else 0.0)
            q.copy_(p - eta * step)
    return clone


def _authors_implicit(model, clone, x_tr, y_tr, r: float = 1e-2) -> list:  # type: ignore[no-untyped-def]
    """d alpha of the unrolled copy minus eta-free finite-difference Hessian-vector term on the original."""
    import torch
    import torch.nn.functional as F

    vector = [q.grad for q in clone.weight_parameters()]
    radius = r / torch.cat([v.flatten() for v in vector]).norm()
    weights, alphas = model.weight_parameters(), model.arch_parameters()
    out = []
    for sign in (1.0, -2.0):
        with torch.no_grad():
            for p, v in zip(weights, vector):
                p.add_(v, alpha=sign * float(radius))
        out.append(torch.autograd.grad(F.cross_entropy(model(x_tr), y_tr), alphas))
    with torch.no_grad():
        for p, v in zip(weights, vector):
            p.add_(v, alpha=float(radius))
    return [(a - b) / (2 * radius) for a, b in zip(*out)]


def authors_step(run, loaders, lam: float, eps: float, alpha: float, steps: int) -> None:  # type: ignore[no-untyped-def]
    """One search step with the passes of the authors' loop (see the module docstring)."""
    import torch
    import torch.nn.functional as F

    model, w_opt, a_opt = run.model, run.w_opt, run.architect.optimizer
    eta = w_opt.param_groups[0]["lr"]
    model.train()
    x_tr, y_tr = next(loaders["train"])
    x_adv = _pgd_train_mode(model, x_tr, y_tr, eps, alpha, steps)
    x_val, y_val = next(iter(loaders["val"]))  # a fresh iterator every step, as the authors' loop does
    x_val_adv = _pgd_train_mode(model, x_val, y_val, eps, alpha, steps)
    a_opt.zero_grad()
    directions = []
    for x_obj, scale in ((x_val, 1.0), (x_val_adv, lam)):
        clone = _unrolled_copy(model, w_opt, x_adv, y_tr, eta)
        (scale * F.cross_entropy(clone(x_obj), y_val)).backward()
        implicit = _authors_implicit(model, clone, x_adv, y_tr)
        directions.append(torch.cat([(a.grad - eta * h).flatten() for a, h in zip(clone.arch_parameters(), implicit)]))
    u1, u2 = directions
    gamma = (torch.dot(u2 - u1, u2) / torch.dot(u2 - u1, u2 - u1)).clamp(0.0, 1.0)
    combined, offset = gamma * u1 + (1 - gamma) * u2, 0
    for a in model.arch_parameters():
        a.grad = combined[offset : offset + a.numel()].view_as(a).clone()
        offset += a.numel()
    a_opt.step()
    w_opt.zero_grad()
    loss = F.cross_entropy(model(x_adv), y_tr)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.weight_parameters(), 5.0)
    w_opt.step()
    float(loss)


def _authors_loaders(n: int, batch: int) -> dict:
    """uint8 images through the authors' search transforms (crop, flip, to tensor) on PIL images."""
    import numpy as np
    import torch
    import torchvision.transforms as T

    class Images(torch.utils.data.Dataset):
        def __init__(self, seed: int):
            rng = np.random.default_rng(seed)
            self.x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
            self.y = rng.integers(0, 10, size=n)
            self.t = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()])

        def __len__(self) -> int:
            return n

        def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
            from PIL import Image

            return self.t(Image.fromarray(self.x[i])), int(self.y[i])

    train = torch.utils.data.DataLoader(Images(0), batch_size=batch, shuffle=True)
    val = torch.utils.data.DataLoader(Images(1), batch_size=batch, shuffle=True)
    return {"train": iter(train), "val": val}


def _numerics(run, cfg) -> dict:  # type: ignore[no-untyped-def]
    """Cosine of this run's architecture gradients (t, t_hat) with the float32 ones: same weights,
    batches and PGD start; PGD crafted in each precision."""
    from contextlib import nullcontext

    import torch

    from arnas_zoo.attacks.batchnorm import frozen_running_stats
    from search.arnas.bilevel import Architect
    from search.arnas.objectives import PgdCrossEntropy

    x_tr, y_tr, _ = run.train_batches.batch(0, 0)
    x_val, y_val, noise = run.val_batches.batch(0, 0)
    x_tr, x_val = (x.contiguous(memory_format=torch.channels_last) for x in (x_tr, x_val))
    grads = {}
    for name, crafting, arch in (
        ("fp32", nullcontext, nullcontext),
        ("this", run.autocast, run.autocast if cfg.amp_arch else nullcontext),
    ):
        objective = PgdCrossEntropy(cfg.eps, cfg.step_size, cfg.pgd_steps, cfg.attack_bn, crafting)
        architect = Architect(run.model, run.w_opt, objective, lam=cfg.lam, order=cfg.order, autocast=arch)
        run.model.train()
        with frozen_running_stats(run.model):
            prepared = objective.prepare(run.model, x_val, y_val, noise)
            t, t_hat, _ = architect.gradients((x_tr, y_tr), (x_val, y_val), prepared, eta=cfg.w_lr)
        grads[name] = [torch.cat([g.reshape(-1) for g in gs]) for gs in (t, t_hat)]
    out = {}
    for key, a, b in zip(("t", "t_hat"), grads["fp32"], grads["this"]):
        out[f"cosine_{key}"] = round(float(a @ b / (a.norm() * b.norm())), 4)
        out[f"norm_ratio_{key}"] = round(float(b.norm() / a.norm()), 4)
    return out


def _recompute_cells(args: argparse.Namespace) -> int:
    """``--recompute-cells``, or the K of an impl suffix ``-rcK`` (``ours-rc1``); 0 for the authors'."""
    if not args.impl.startswith("ours"):
        return 0
    match = re.search(r"-rc(\d+)", args.impl)
    return int(match.group(1)) if match else args.recompute_cells


#: ``-ALT-alt`` suffixes: (environment variable, its value on even steps, on odd steps; None: unset)
_ALTERNATIONS = {
    "dgrad": ("ARNAS_ZOO_DWGRAD", "native", None),  # oneDNN's dilated input gradients / the training routes
    "slices": ("ARNAS_ZOO_SUBSAMPLE", "slices", "phases"),  # autograd's slices / arnas_zoo.subsample's picks
}


def _set_route(impl: str, i: int) -> str | None:
    """``-dgrad-alt`` / ``-slices-alt``: step ``i`` of this process runs the old way when even (oneDNN's
    input gradients for the dilated depthwise convolutions / autograd's slices in FactorizedReduce) and the
    default when odd, so that both ways see the same machine state. Returns ``old`` / ``default``."""
    match = re.search(r"-(\w+)-alt", impl)
    if not match:
        return None
    key, old, new = _ALTERNATIONS[match.group(1)]
    value = old if i % 2 == 0 else new
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value
    return "old" if i % 2 == 0 else "default"


def measure(args: argparse.Namespace) -> dict:
    import tempfile

    import torch

    from arnas_zoo.devices import resolve_device
    from arnas_zoo.runs.distributed import Dist
    from search.arnas.config import load_config
    from search.arnas.data import SearchData
    from search.arnas.run import SearchRun

    if args.impl == "authors":  # the authors' MixedOp: a ReLU per op, a product and a partial sum per term
        import search.arnas.supernet

        search.supernet.SHARE_RELU = search.supernet.FUSED_SUM = False
    if "s2b" in args.impl or "auto" in args.impl:  # before any model is built
        os.environ["ARNAS_ZOO_DILATED"] = "s2b" if "s2b" in args.impl else "auto"
    if "sep-plain" in args.impl:  # separable blocks as two convolutions also under bf16 (arnas_zoo.ops.SEPCONV_ENV)
        os.environ["ARNAS_ZOO_SEPCONV"] = "plain"
    device = resolve_device(args.device)
    overrides = [
        f"batch_size={args.batch_size}",
        f"order={args.order}",
        f"pgd_steps={args.pgd_steps}",
        f"channels_last={json.dumps(args.channels_last and args.impl.startswith('ours'))}",
        f"amp={json.dumps(not args.no_amp and args.impl.startswith('ours'))}",
        f"amp_cpu={json.dumps(args.impl.startswith('ours-bf16'))}",
        f"amp_arch={json.dumps(not args.impl.startswith('ours-bf16') or args.impl.startswith('ours-bf16-all'))}",
        f"robust_objective={args.objective}",
        f"weight_attack={'pgd' if args.objective == 'pgd_ce' else 'none'}",
    ]
    overrides += [f"init_channels={args.init_channels}", f"layers={args.layers}"]
    overrides += [f"recompute={json.dumps(args.recompute and args.impl.startswith('ours'))}"]
    overrides += [f"recompute_cells={_recompute_cells(args)}"]
    cfg = load_config("paper", overrides)
    g = torch.Generator().manual_seed(0)
    n = args.batch_size * (args.steps + args.warmup)
    x = torch.rand(2 * n, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (2 * n,), generator=g).to(device)
    data = SearchData(x[:n], y[:n], x[n:], y[n:], 10, "synthetic uniform [0, 1] images")
    run = SearchRun(cfg, data, Path(tempfile.mkdtemp()), device, Dist(device=device))
    if args.impl == "authors":
        if args.objective != "pgd_ce" or args.order != "second":
            raise SystemExit("--impls authors: only the ARNAS step (pgd_ce, second order) has an authors' reference")
        loaders = _authors_loaders(n, args.batch_size)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    by_route: dict[str, list[float]] = {"old": [], "default": []}
    for i in range(args.warmup + args.steps):
        route = _set_route(args.impl, i)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        if args.impl == "authors":
            authors_step(run, loaders, cfg.lam, cfg.eps, cfg.step_size, cfg.pgd_steps)
        else:
            run.step(0, i)  # one full search step: batches, PGD, architecture step, weight step
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
            if route:
                by_route[route].append(times[-1])
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
        peak_kind = "torch.cuda.max_memory_allocated"
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        peak_kind = "max RSS of the process"
    # after the peak is read: the check runs extra float32 and bf16 passes
    numerics = _numerics(run, cfg) if args.check_numerics and args.impl.startswith("ours-bf16") else None
    return {
        "impl": args.impl,
        "recompute": bool(args.recompute and args.impl.startswith("ours")),
        "recompute_cells": _recompute_cells(args),
        "batch_size": args.batch_size,
        "order": args.order,
        "objective": args.objective,
        "weights_trained_on": "PGD examples" if args.objective == "pgd_ce" else "clean images",
        "pgd_steps": args.pgd_steps,
        "seconds_per_step": sum(times) / len(times),
        "step_seconds": times,
        "step_seconds_alternating": by_route if "-alt" in args.impl else None,
        "peak_memory_mb": round(peak_mb, 1),
        "peak_memory_mb_per_image": round(peak_mb / args.batch_size, 2),
        "peak_memory_kind": peak_kind,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "channels_last": cfg.channels_last,
        "amp_bf16": bool(cfg.amp and (device.type == "cuda" or cfg.amp_cpu)),
        "amp_arch": cfg.amp_arch,
        "dilated": os.environ.get("ARNAS_ZOO_DILATED", "plain"),
        "sepconv": os.environ.get("ARNAS_ZOO_SEPCONV", "auto"),
        "numerics": numerics,
        "supernet": f"{cfg.layers} cells C={cfg.init_channels} {cfg.placement} {cfg.filters}, 7 ops x 14 edges",
    }


def main() -> None:
    from search.arnas.config import SearchConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", default="32,64")
    parser.add_argument(
        "--impls", default="ours", help="ours, ours-bf16, ours-bf16-all, authors (the reference: pgd_ce, second order)"
    )
    parser.add_argument("--impl", default="ours", help=argparse.SUPPRESS)
    parser.add_argument("--recompute", action="store_true", help="ours: recompute each cell's activations")
    parser.add_argument(
        "--recompute-cells",
        type=int,
        default=SearchConfig().recompute_cells,
        help="ours: recompute the first K cells only [the search default]",
    )
    parser.add_argument("--orders", default="first,second")
    parser.add_argument("--objectives", default="pgd_ce", help="pgd_ce (ARNAS), jacobian, certified, combined")
    parser.add_argument("--objective", default="pgd_ce", help=argparse.SUPPRESS)
    parser.add_argument("--pgd-steps", type=int, default=7)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--init-channels", type=int, default=24)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-amp", action="store_true", help="disable bf16 autocast on CUDA")
    parser.add_argument("--check-numerics", action="store_true", help="ours-bf16*: cosine with float32 gradients")
    parser.add_argument("--channels-last", type=lambda s: s.lower() in ("1", "true", "yes"), default=True)
    parser.add_argument("--out", default="bench_search.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--order", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return
    results = []
    combos = [
        (o, obj, int(b), impl)
        for o in args.orders.split(",")
        for obj in args.objectives.split(",")
        for b in args.batch_sizes.split(",")
        for impl in args.impls.split(",")
        if impl.startswith("ours") or (o == "second" and obj == "pgd_ce")
    ]
    for order, objective, bs, impl in combos:
        cmd = (
            [
                sys.executable,
                __file__,
                "--child",
                "--impl",
                impl,
                "--batch-size",
                str(bs),
                "--order",
                order,
                "--objective",
                objective,
                "--pgd-steps",
                str(args.pgd_steps),
                "--steps",
                str(args.steps),
                "--warmup",
                str(args.warmup),
                "--init-channels",
                str(args.init_channels),
                "--layers",
                str(args.layers),
                "--device",
                args.device,
                "--channels-last",
                str(args.channels_last),
            ]
            + (["--no-amp"] if args.no_amp else [])
            + (["--recompute"] if args.recompute else [])
            + ["--recompute-cells", str(args.recompute_cells)]
            + (["--check-numerics"] if args.check_numerics else [])
        )
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{impl:13s} {order:6s} {objective:9s} batch {bs:3d}: {row['seconds_per_step']:.2f} s/step, "
            f"peak {row['peak_memory_mb']:.0f} MB",
            flush=True,
        )
        for route, seconds in (row.get("step_seconds_alternating") or {}).items():
            print(f"  {route}: " + ", ".join(f"{t:.2f}" for t in seconds) + " s", flush=True)
        results.append(row)
    report = {
        "benchmark": "search step (PGD train + PGD val + architecture step + weight step)",
        "host": platform.node(),
        "load_average_at_end": os.getloadavg(),
        "python": platform.python_version(),
        "results": results,
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
