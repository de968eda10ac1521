"""Dilated depthwise convolutions on CPU: plain oneDNN vs space-to-batch (``ARNAS_ZOO_DILATED=s2b``).

Two levels, alternating the implementations in one run (same load):
1. the op: forward + backward of a depthwise 3x3 / 5x5 convolution with dilation 2 at stride 1 and 2,
   C=64, 32x32, batch 32, NCHW and channels_last;
2. a PGD-7 adversarial training step (forward/backward x 8, SGD) of the 20-cell ARNAS at width C
   (default 16) and batch 32, channels_last, whose Robust cells are built of dilated convolutions.

    python benchmarks/bench_dilated.py --out benchmarks/results/dilated_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _best(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    from arnas_zoo import create_model
    from arnas_zoo.attacks import pgd
    from arnas_zoo.fastconv import dilated_depthwise_s2b

    ops = []
    for k, pad in ((3, 2), (5, 4)):
        for stride in (1, 2):
            for channels_last in (False, True):
                x = torch.randn(32, 64, 32, 32)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                w = torch.randn(64, 1, k, k)

                def step(fast: bool, x=x, w=w, k=k, pad=pad, stride=stride) -> None:  # type: ignore[no-untyped-def]
                    xi, wi = x.detach().requires_grad_(), w.detach().requires_grad_()
                    if fast:
                        y = dilated_depthwise_s2b(xi, wi, stride, pad, 2)
                    else:
                        y = F.conv2d(xi, wi, stride=stride, padding=pad, dilation=2, groups=64)
                    y.sum().backward()

                plain, fast = [], []
                for _ in range(args.repeats):
                    plain.append(_best(lambda: step(False), 1))
                    fast.append(_best(lambda: step(True), 1))
                row = {
                    "kernel": k,
                    "stride": stride,
                    "channels_last": channels_last,
                    "plain_ms": 1000 * min(plain),
                    "s2b_ms": 1000 * min(fast),
                    "speedup": min(plain) / min(fast),
                }
                ops.append(row)
                print(
                    f"op k={k} s={stride} cl={channels_last}: plain {row['plain_ms']:.1f} ms, "
                    f"s2b {row['s2b_ms']:.1f} ms, {row['speedup']:.2f}x",
                    flush=True,
                )

    torch.manual_seed(0)
    model = create_model("arnas", init_channels=args.width, auxiliary=False).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(args.batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,))

    def train_step() -> None:
        x_adv = pgd(model, x, y, eps=8 / 255, step_size=2 / 255, steps=7, check_inputs=False)
        model.train()
        loss = F.cross_entropy(model(x_adv), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    steps = {"plain": [], "s2b": []}
    for _ in range(args.repeats):
        for mode in ("plain", "s2b"):
            os.environ["ARNAS_ZOO_DILATED"] = mode
            steps[mode].append(_best(train_step, 1))
    training = {m: min(v) for m, v in steps.items()}
    print(
        f"PGD-7 training step, ARNAS 20 cells C={args.width}, batch {args.batch}: plain {training['plain']:.2f} s, "
        f"s2b {training['s2b']:.2f} s, {training['plain'] / training['s2b']:.2f}x",
        flush=True,
    )
    report = {
        "benchmark": "dilated depthwise convolution: plain vs space-to-batch",
        "ops": ops,
        "training_step": {
            "width": args.width,
            "batch": args.batch,
            "seconds": training,
            "all": steps,
            "speedup": training["plain"] / training["s2b"],
        },
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        print(f"written {args.out}")


if __name__ == "__main__":
    main()
