"""Strided picks on CPU: autograd's slices against arnas_zoo.subsample's one-node picks (``ARNAS_ZOO_SUBSAMPLE``).

    python benchmarks/bench_subsample.py --threads 1 --steps 3 --out benchmarks/results/subsample_cpu.json

The two ways (``slices``: as before, ``phases``: the default) alternate in one process, median of ``--reps``
after a warm-up, so that both meet the same memory state:

- **ops**: :class:`arnas_zoo.ops.FactorizedReduce` (train mode, BatchNorm included) at the zoo's shapes
  (batch 64, channels_last, fp32): the cells' preprocessing after each reduction and the reduction cells'
  stride-2 skips, and the ResNets' strided 1x1 shortcuts (:class:`arnas_zoo.ops.PointwiseConv2d`):
  a training forward and backward (input and weight gradients), and the input gradient alone (an attack
  step), each with whether the two ways' values and gradients are bit-identical.
- **networks**: ``--nets ARCH:C`` (20 cells, or ResNet-18 at width C), batch 64: a train-mode forward and
  backward, and an eval-mode input gradient of the BatchNorm-folded frozen network (an attack step).
- **steps** (``--steps N``): whole training steps of the zoo's recipe (``cpu_cifar10``: PGD-3, batch 64,
  the auxiliary head) as ``benchmarks/bench_training.py`` runs them, alternating step by step.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dw_routes import Env, _median_ms, alternate_steps, common_parser, network_passes, set_env  # noqa: E402

from arnas_zoo import subsample  # noqa: E402
from arnas_zoo.ops import FactorizedReduce, PointwiseConv2d  # noqa: E402
from arnas_zoo.registry import create_model  # noqa: E402

WAYS = ("slices", "phases")
#: (module, c_in, c_out, side): FactorizedReduce of ARNAS C=16 and DARTS_V2 C=15 (preprocessing after a
#: reduction, stride-2 skips inside one), the strided 1x1 shortcuts of ResNet-18 at width 27
SHAPES = [("factorized_reduce", c_in, c_out, side) for c_in, c_out, side in
          ((64, 32, 32), (128, 64, 16), (32, 32, 32), (64, 64, 16), (60, 30, 32), (120, 60, 16))]  # fmt: skip
SHAPES += [("pointwise_stride2", c_in, c_out, side) for c_in, c_out, side in
           ((27, 54, 32), (54, 108, 16), (108, 216, 8))]  # fmt: skip


def op_row(kind: str, c_in: int, c_out: int, side: int, batch: int, reps: int) -> dict:
    torch.manual_seed(0)
    module = FactorizedReduce(c_in, c_out) if kind == "factorized_reduce" else PointwiseConv2d(c_in, c_out, stride=2)
    module = module.train().to(memory_format=torch.channels_last)
    x = torch.rand(batch, c_in, side, side).contiguous(memory_format=torch.channels_last).requires_grad_()
    g = torch.randn(batch, c_out, side // 2, side // 2).contiguous(memory_format=torch.channels_last)

    def train(way: str) -> Callable[[], list[torch.Tensor]]:
        def run() -> list[torch.Tensor]:
            set_env({subsample.ENV: way})
            x.grad = None
            module.zero_grad(set_to_none=True)
            out = module(x)
            out.backward(g)
            return [out.detach(), x.grad.clone()] + [p.grad.clone() for p in module.parameters() if p.grad is not None]  # type: ignore[union-attr]

        return run

    def attack(way: str) -> Callable[[], object]:
        def run() -> object:
            set_env({subsample.ENV: way})
            return torch.autograd.grad(module(x), x, g)

        return run

    same = all(torch.equal(a, b) for a, b in zip(train("slices")(), train("phases")()))
    train_ms = _median_ms({w: train(w) for w in WAYS}, reps)
    attack_ms = _median_ms({w: attack(w) for w in WAYS}, reps)
    return {"module": kind, "c_in": c_in, "c_out": c_out, "side": side, "batch": batch, "bit_identical": same,
            "train_ms": train_ms, "train_gain": train_ms["slices"] / train_ms["phases"],
            "input_grad_ms": attack_ms, "input_grad_gain": attack_ms["slices"] / attack_ms["phases"]}  # fmt: skip


def _network(arch: str, channels: int) -> torch.nn.Module:
    if arch.startswith("resnet"):
        return create_model(arch, init_channels=channels)
    return create_model(arch, init_channels=channels, layers=20)


def network_row(arch: str, channels: int, batch: int, reps: int) -> dict:
    torch.manual_seed(0)
    model = _network(arch, channels).train().to(memory_format=torch.channels_last)
    x = torch.rand(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    ways: dict[str, Env] = {w: {subsample.ENV: w} for w in WAYS}
    train_ms, attack_ms = network_passes(model, x, y, ways, ways, reps)
    return {"arch": arch, "channels": channels, "batch": batch, "train_forward_backward_ms": train_ms,
            "train_gain": train_ms["slices"] / train_ms["phases"], "attack_input_grad_ms": attack_ms,
            "attack_gain": attack_ms["slices"] / attack_ms["phases"]}  # fmt: skip


def step_row(arch: str, channels: int, batch: int, steps: int) -> dict:
    times = alternate_steps(arch, channels, batch, steps, {w: {subsample.ENV: w} for w in WAYS})
    median = {w: statistics.median(v) for w, v in times.items()}
    rates = {w: batch / m for w, m in median.items()}
    return {"arch": arch, "channels": channels, "recipe": "cpu_cifar10", "batch": batch, "step_s": times,
            "images_per_s": rates, "gain": median["slices"] / median["phases"]}  # fmt: skip


def main() -> None:
    parser = common_parser(__doc__.splitlines()[0], ["arnas:16", "darts_v2:15", "arnas_cpu_s0:15", "resnet18:27"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result: dict = {
        "what": __doc__.splitlines()[0],
        "machine": {"platform": platform.platform(), "cpu_capability": torch.backends.cpu.get_cpu_capability()},
        "torch": torch.__version__,
        "threads": args.threads,
        "load_average_start": os.getloadavg(),
        "ops": [],
        "networks": [],
        "steps": [],
    }
    for shape in SHAPES:
        result["ops"].append(op_row(*shape, args.batch, args.reps))
        print(json.dumps(result["ops"][-1]), flush=True)
    for spec in args.nets:
        arch, channels = spec.split(":")
        result["networks"].append(network_row(arch, int(channels), args.batch, args.net_reps))
        print(json.dumps(result["networks"][-1]), flush=True)
        if args.steps:
            result["steps"].append(step_row(arch, int(channels), args.batch, args.steps))
            print(json.dumps(result["steps"][-1]), flush=True)
    os.environ.pop(subsample.ENV, None)
    result["load_average_end"] = os.getloadavg()
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
