"""PGD-20 throughput: this project's PGD versus torchattacks' PGD, same model, data, batch and device.

Both attacks run on one model wrapped in a pass counter (arnas_zoo.attacks.CountingModel), alternating
ours/theirs for ``--repeats`` rounds so that load changes on a shared machine hit both alike; the
median time per round is reported. Writes a JSON result describing the machine.

    python benchmarks/bench_attacks.py --n 32 --batch-size 32 --repeats 3 --out bench_attacks.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arnas_zoo.attacks import CountingModel, PassCounter, pgd  # noqa: E402
from arnas_zoo.data import load_dataset, shared_data_dir  # noqa: E402
from arnas_zoo.devices import resolve_device as pick_device  # noqa: E402
from arnas_zoo.registry import create_model  # noqa: E402


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict:
    return {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def timed(fn, device: torch.device) -> float:  # type: ignore[no-untyped-def]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="arnas")
    parser.add_argument("--init-channels", type=int, default=16, help="reduced ARNAS width (paper: 64)")
    parser.add_argument("--layers", type=int, default=8, help="reduced ARNAS depth (paper: 20)")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench_attacks.json")
    args = parser.parse_args()

    import torchattacks

    device = pick_device(args.device)
    torch.manual_seed(args.seed)
    if shared_data_dir() is not None:
        data = load_dataset("cifar10", "train", data_dir=shared_data_dir(), n=args.n, device=device)
        data_desc = data.describe()
    else:  # outside the workplace: uniform noise images of the CIFAR shape (stated in the result)
        x = torch.rand(args.n, 3, 32, 32, device=device)
        data = None
        data_desc = {"dataset": "uniform noise", "n": args.n}
    x_all = data.x if data is not None else x
    y_all = data.y if data is not None else torch.randint(0, 10, (args.n,), device=device)

    model = create_model(args.arch, init_channels=args.init_channels, layers=args.layers).to(device).eval()
    eps, alpha = 8 / 255, 2 / 255
    variants = ("ours", "ours_auto", "ours_flip", "ours_auto_flip", "ours_nchw")
    counters = {k: PassCounter() for k in (*variants, "torchattacks")}
    wrapped = {k: CountingModel(model, c) for k, c in counters.items()}
    theirs = torchattacks.PGD(wrapped["torchattacks"], eps=eps, alpha=alpha, steps=args.steps, random_start=True)

    def run_ours_nchw() -> None:
        gen = torch.Generator(device=device).manual_seed(args.seed)
        for i in range(0, args.n, args.batch_size):
            pgd(
                wrapped["ours_nchw"],
                x_all[i : i + args.batch_size],
                y_all[i : i + args.batch_size],
                eps=eps,
                step_size=alpha,
                steps=args.steps,
                generator=gen,
                channels_last=False,
            )

    def with_env(key: str, env: dict[str, str]) -> Callable[[], None]:
        """Our PGD (channels_last) under fastconv's environment switches (none: the default paths), e.g.
        ``ARNAS_ZOO_DILATED=auto`` (per shape, the faster dilated convolution) or ``ARNAS_ZOO_DWGRAD=flip``."""

        def run() -> None:
            old = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                gen = torch.Generator(device=device).manual_seed(args.seed)
                for i in range(0, args.n, args.batch_size):
                    pgd(wrapped[key], x_all[i : i + args.batch_size], y_all[i : i + args.batch_size], eps=eps,
                        step_size=alpha, steps=args.steps, generator=gen)  # fmt: skip
            finally:
                for k, v in old.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v

        return run

    def run_theirs() -> None:
        for i in range(0, args.n, args.batch_size):
            theirs(x_all[i : i + args.batch_size], y_all[i : i + args.batch_size])

    runs = {
        "ours": with_env("ours", {}),
        "ours_auto": with_env("ours_auto", {"ARNAS_ZOO_DILATED": "auto"}),
        "ours_flip": with_env("ours_flip", {"ARNAS_ZOO_DWGRAD": "flip"}),
        "ours_auto_flip": with_env("ours_auto_flip", {"ARNAS_ZOO_DILATED": "auto", "ARNAS_ZOO_DWGRAD": "flip"}),
        "ours_nchw": run_ours_nchw,
        "torchattacks": run_theirs,
    }
    # warm-up (allocator, oneDNN primitive caches) on one batch each, not timed or counted
    for _ in range(1):
        pgd(model, x_all[: args.batch_size], y_all[: args.batch_size], eps=eps, step_size=alpha, steps=1)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for key, fn in runs.items():
            times[key].append(timed(fn, device))
    result = {
        "benchmark": "pgd20_throughput",
        "machine": machine(device),
        "model": {"arch": args.arch, "init_channels": args.init_channels, "layers": args.layers},
        "data": data_desc,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "eps": eps,
        "step_size": alpha,
        "repeats": args.repeats,
        "results": {},
    }
    for key in runs:
        best = min(times[key])
        c = counters[key]
        images = args.n * args.repeats
        result["results"][key] = {
            "seconds_per_round": times[key],
            "median_seconds": statistics.median(times[key]),
            "best_seconds": best,
            "images_per_second": args.n / best,
            "forward_passes_per_image": c.forward / images,
            "backward_passes_per_image": c.backward / images,
        }
    for key in variants:
        result[f"speedup_{key}_vs_torchattacks"] = (
            result["results"][key]["images_per_second"] / result["results"]["torchattacks"]["images_per_second"]
        )
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for key, r in result["results"].items():
        print(
            f"{key:>13}: {r['images_per_second']:.3f} img/s, {r['forward_passes_per_image']:.1f} fwd/img, "
            f"{r['backward_passes_per_image']:.1f} bwd/img"
        )
    print(
        "speedup over torchattacks: "
        + ", ".join(f"{key} {result[f'speedup_{key}_vs_torchattacks']:.2f}x" for key in variants)
        + f"  -> {args.out}"
    )


if __name__ == "__main__":
    main()
