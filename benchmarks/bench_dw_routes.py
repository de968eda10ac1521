"""Depthwise gradients on CPU: oneDNN's own kernels against the routes arnas_zoo takes instead.

    python benchmarks/bench_dw_routes.py --threads 1 --out benchmarks/results/dw_routes_cpu.json

Two tables, the two ways timed alternately in one process (median of ``--reps`` after a warm-up):

- **ops**: each stride-1 depthwise shape of the zoo's 20-cell networks at C=16 (batch 64, channels_last,
  fp32): the weight gradient by ``convolution_backward`` against :func:`arnas_zoo.dw_wgrad.weight_grad`
  (dilation to phases, 5x5 to 3x3 windows), and the input gradient by ``convolution_backward`` against
  the flipped-kernel forward convolution (what the training step takes for dilated ones), with each
  route's largest relative difference from the float64 gradient.
- **network**: ``--arch`` at ``--init-channels``, 20 cells, batch 64: a train-mode forward and backward
  (``ARNAS_ZOO_DW_WGRAD`` native / auto / windows), and an eval-mode input gradient of the BatchNorm-folded,
  frozen network as an attack step takes it (``ARNAS_ZOO_DWGRAD`` native / dilated).
- **steps** (``--steps N``): whole training steps of the zoo's recipe (``cpu_cifar10``: PGD-3, batch 64,
  the auxiliary head) as ``benchmarks/bench_training.py`` runs them, the two ways alternating step by
  step in one process, so that both meet the same memory state (across processes the same step varied
  by +-10% on the AVX2 EPYC).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from arnas_zoo import dw_wgrad  # noqa: E402
from arnas_zoo.attacks.batchnorm import folded_batchnorm  # noqa: E402
from arnas_zoo.registry import create_model  # noqa: E402

#: (channels, side, kernel, dilation) of the stride-1 depthwise convolutions in the C=16 cells
SHAPES = [(16, 32, 3, 1), (16, 32, 5, 1), (16, 32, 3, 2), (16, 32, 5, 2), (32, 16, 3, 1), (32, 16, 5, 1),
          (32, 16, 3, 2), (32, 16, 5, 2), (32, 8, 5, 1), (32, 8, 3, 2), (32, 8, 5, 2)]  # fmt: skip


def _median_ms(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(values) for name, values in times.items()}


def _backward(grad, x, w, p, d, mask):  # type: ignore[no-untyped-def]
    c = w.shape[0]
    return torch.ops.aten.convolution_backward(grad, x, w, None, [1, 1], [p, p], [d, d], False, [0, 0], c, mask)


def _op_row(c: int, side: int, k: int, d: int, batch: int, reps: int) -> dict:
    p = d * (k - 1) // 2
    torch.manual_seed(0)
    x64 = torch.randn(batch, c, side, side, dtype=torch.float64)
    g64 = torch.randn(batch, c, side, side, dtype=torch.float64)
    w64 = torch.randn(c, 1, k, k, dtype=torch.float64)
    exact_w = _backward(g64, x64, w64, p, d, [False, True, False])[1]
    exact_x = _backward(g64, x64, w64, p, d, [True, False, False])[0]
    cl = torch.channels_last
    x, g, w = x64.float().contiguous(memory_format=cl), g64.float().contiguous(memory_format=cl), w64.float()
    row: dict = {"channels": c, "side": side, "kernel": k, "dilation": d, "batch": batch}
    weight_ways = {"native": lambda: _backward(g, x, w, p, d, [False, True, False])[1]}
    if dw_wgrad.applies(k, p, d, side, side):
        weight_ways["phases_windows"] = lambda: dw_wgrad.weight_grad(x, g, k, p, d)
    input_ways = {
        "native": lambda: _backward(g, x, w, p, d, [True, False, False])[0],
        "flipped_forward": lambda: F.conv2d(g, w.flip(-1, -2), None, 1, d * (k - 1) - p, d, c),
    }
    for kind, ways, exact in (("weight_grad", weight_ways, exact_w), ("input_grad", input_ways, exact_x)):
        times = _median_ms(ways, reps)
        errors = {n: float((fn().double() - exact).abs().max() / exact.abs().max()) for n, fn in ways.items()}
        row[kind] = {"ms": times, "max_rel_error_vs_float64": errors}
        if len(times) == 2:
            other = [v for n, v in times.items() if n != "native"][0]
            row[kind]["gain"] = times["native"] / other
    return row


def op_rows(batch: int, reps: int) -> list[dict]:
    """Each shape's gradients; the weight gradient's rewrites are both on (``ARNAS_ZOO_DW_WGRAD=windows``)."""
    os.environ[dw_wgrad.ENV] = "windows"
    rows = []
    for c, side, k, d in SHAPES:
        rows.append(_op_row(c, side, k, d, batch, reps))
        print(json.dumps(rows[-1]), flush=True)
    return rows


Env = dict[str, "str | None"]  # environment variables a way sets (None: unset)


def set_env(env: Env) -> None:
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def network_passes(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, train_ways: dict[str, Env],
                   attack_ways: dict[str, Env], reps: int) -> tuple[dict[str, float], dict[str, float]]:  # fmt: skip
    """Median ms of a train-mode forward and backward of ``model`` per way of ``train_ways``, and of an
    eval-mode input gradient of its BatchNorm-folded frozen copy (an attack step) per way of ``attack_ways``,
    the ways alternating in this process."""
    x = x.contiguous(memory_format=torch.channels_last)

    def train(env: Env) -> Callable[[], None]:
        def run() -> None:
            set_env(env)
            model.zero_grad(set_to_none=True)
            out = model(x)
            F.cross_entropy(out[0] if isinstance(out, tuple) else out, y).backward()

        return run

    with folded_batchnorm(copy.deepcopy(model)) as folded:
        folded.eval().requires_grad_(False)

        def attack(env: Env) -> Callable[[], None]:
            def run() -> None:
                set_env(env)
                xi = x.clone().requires_grad_()
                torch.autograd.grad(F.cross_entropy(folded(xi), y), xi)

            return run

        train_ms = _median_ms({name: train(env) for name, env in train_ways.items()}, reps)
        attack_ms = _median_ms({name: attack(env) for name, env in attack_ways.items()}, reps)
    return train_ms, attack_ms


def alternate_steps(arch: str, channels: int, batch: int, steps: int, ways: dict[str, Env]) -> dict[str, list[float]]:
    """Seconds of whole training steps of the zoo's recipe (``cpu_cifar10``, as ``bench_training.py`` runs
    them) per way, the ways alternating step by step in this process after one warm-up step each."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_training import prepare

    n = len(ways) * (steps + 1)
    ns = argparse.Namespace(arch=arch, init_channels=channels, layers=20, steps=n, warmup=0,
                            recipe="cpu_cifar10", device="cpu", image="3x32")  # fmt: skip
    run_step, _ = prepare("ours", batch, ns)
    times: dict[str, list[float]] = {name: [] for name in ways}
    for i in range(n):
        name = list(ways)[i % len(ways)]
        set_env(ways[name])
        start = time.perf_counter()
        run_step(i)
        if i >= len(ways):
            times[name].append(time.perf_counter() - start)
    return times


def network_rows(arch: str, channels: int, batch: int, reps: int) -> dict:
    torch.manual_seed(0)
    model = create_model(arch, init_channels=channels, layers=20).train().to(memory_format=torch.channels_last)
    x = torch.rand(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    train_ways: dict[str, Env] = {route: {dw_wgrad.ENV: route} for route in ("native", "auto", "windows")}
    attack_ways: dict[str, Env] = {route: {"ARNAS_ZOO_DWGRAD": route} for route in ("native", "dilated")}
    train, attack = network_passes(model, x, y, train_ways, attack_ways, reps)
    return {
        "arch": arch,
        "init_channels": channels,
        "layers": 20,
        "batch": batch,
        "train_forward_backward_ms": train,
        "train_gain": train["native"] / train["auto"],
        "train_gain_windows": train["native"] / train["windows"],
        "attack_input_grad_ms": attack,
        "attack_gain": attack["native"] / attack["dilated"],
    }


def step_rows(arch: str, channels: int, batch: int, steps: int) -> dict:
    """Whole training steps, the old routes (oneDNN's own gradients) and the defaults alternating."""
    ways: dict[str, Env] = {
        "native": {dw_wgrad.ENV: "native", "ARNAS_ZOO_DWGRAD": "native"},
        "default": {dw_wgrad.ENV: "auto", "ARNAS_ZOO_DWGRAD": None},
    }
    times = alternate_steps(arch, channels, batch, steps, ways)
    median = {name: statistics.median(values) for name, values in times.items()}
    return {
        "arch": arch,
        "init_channels": channels,
        "recipe": "cpu_cifar10",
        "batch": batch,
        "step_s": times,
        "median_step_s": median,
        "images_per_s": {name: batch / value for name, value in median.items()},
        "gain": median["native"] / median["default"],
    }


def common_parser(description: str, nets: list[str]) -> argparse.ArgumentParser:
    """The options this benchmark shares with ``bench_subsample.py``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--reps", type=int, default=9, help="timed calls of each op way (median)")
    parser.add_argument("--net-reps", type=int, default=3, help="timed passes of each network way (median)")
    parser.add_argument("--nets", nargs="*", default=nets, help="ARCH:C")
    parser.add_argument("--steps", type=int, default=0, help="timed training steps of each way (0: none)")
    return parser


def main() -> None:
    parser = common_parser(__doc__.splitlines()[0], ["arnas:16", "darts_v2:15", "arnas_cpu_s0:15"])
    parser.add_argument("--skip-ops", action="store_true", help="only the network rows (and steps)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {
        "what": __doc__.splitlines()[0],
        "machine": {"platform": platform.platform(), "cpu_capability": torch.backends.cpu.get_cpu_capability()},
        "torch": torch.__version__,
        "threads": args.threads,
        "load_average_start": os.getloadavg(),
        "ops": [] if args.skip_ops else op_rows(args.batch, args.reps),
        "networks": [],
        "steps": [],
    }
    for spec in args.nets:
        arch, channels = spec.split(":")
        row = network_rows(arch, int(channels), args.batch, args.net_reps)
        print(json.dumps(row), flush=True)
        result["networks"].append(row)
        if args.steps:
            step = step_rows(arch, int(channels), args.batch, args.steps)
            print(json.dumps(step), flush=True)
            result["steps"].append(step)
    result["load_average_end"] = os.getloadavg()
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
