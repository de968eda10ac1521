"""What one fused pass could win: a prototype ReLU-depthwise-pointwise kernel against the three ops as run now.

    python benchmarks/bench_fused_sepconv.py --threads 1 --out benchmarks/results/fused_sepconv_prototype.json

Builds ``benchmarks/prototypes/fused_sepconv.cpp`` with ``torch.utils.cpp_extension`` (needs a C++ compiler
and an AVX-512 CPU; about 20 s), then times, on the zoo's stage-1 activation (batch 64, 16 channels, 32x32,
channels_last, fp32), ``F.conv2d(F.conv2d(relu(x), depthwise, dilation=d, groups=16), pointwise, bias)``
(the eval-mode form of a separable or dilated convolution with BatchNorm folded) against the one-pass
kernel, and against the two convolutions alone on an input whose ReLU was computed before (the
network's default shares one ReLU per state, so this is the chain the cells run). The three alternate
for ``--rounds`` rounds of ``--calls`` calls each; the median and the best
round are reported. Outputs are compared (relative max error). Forward only: this measures the possible
gain, it is not a path the package uses.

The script re-runs itself with glibc's mmap and trim thresholds raised (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``). Without them, the chain's time in a fresh process was
bimodal here (~1.1 or ~3.7 ms for the same shape, changing from process to process): some processes
page-fault every fresh 4 MiB output. A training step does not: its time was the same with and without
these settings (12.8 and 12.8 against 12.9 and 12.9 images/s, ARNAS C=16, 20 cells, cpu_cifar10 recipe,
one thread), so the raised thresholds give the chain the steady state it has inside the network.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _report import machine, write

SHAPES = [(3, 1), (5, 1), (3, 2), (5, 2)]  # sep_conv_3x3, sep_conv_5x5, dil_conv_3x3, dil_conv_5x5


MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(4 << 30),
    "MALLOC_TOP_PAD_": str(256 << 20),
}


def main() -> None:
    if any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if "avx512f" not in Path("/proc/cpuinfo").read_text():
        raise SystemExit("the prototype kernel needs AVX-512 (avx512f not in /proc/cpuinfo)")
    from torch.utils.cpp_extension import load

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    start = time.perf_counter()
    source = Path(__file__).resolve().parent / "prototypes" / "fused_sepconv.cpp"
    ext = load("arnas_zoo_fused_sepconv_prototype", [str(source)], extra_cflags=["-O3", "-march=native"])
    build_s = time.perf_counter() - start
    x = torch.randn(64, 16, 32, 32).contiguous(memory_format=torch.channels_last)
    x_relu = torch.relu(x)
    rows = []
    for k, d in SHAPES:
        pad = d * (k - 1) // 2
        dw = torch.randn(16, 1, k, k)
        pw = torch.randn(16, 16, 1, 1).contiguous(memory_format=torch.channels_last)
        bias = torch.randn(16)
        dw_t, pw_t = dw[:, 0].permute(1, 2, 0).contiguous(), pw[:, :, 0, 0].t().contiguous()

        def chain(dw=dw, pw=pw, bias=bias, d=d, pad=pad) -> torch.Tensor:
            return F.conv2d(F.conv2d(F.relu(x), dw, padding=pad, dilation=d, groups=16), pw, bias)

        def chain_shared_relu(dw=dw, pw=pw, bias=bias, d=d, pad=pad) -> torch.Tensor:
            # the network's default (ARNAS_ZOO_SHARED_RELU=1): the ReLU of a state is computed once, outside
            return F.conv2d(F.conv2d(x_relu, dw, padding=pad, dilation=d, groups=16), pw, bias)

        def fused(dw_t=dw_t, pw_t=pw_t, bias=bias, k=k, d=d, pad=pad) -> torch.Tensor:
            return ext.fused_fwd(x, dw_t, pw_t, bias, k, d, pad, 1)

        ref = chain()
        err = ((fused() - ref).abs().max() / ref.abs().max()).item()
        times: dict[str, list[float]] = {"chain": [], "chain_shared_relu": [], "fused": []}
        for _ in range(args.rounds):
            for name, fn in (("chain", chain), ("chain_shared_relu", chain_shared_relu), ("fused", fused)):
                fn()
                t0 = time.perf_counter()
                for _ in range(args.calls):
                    fn()
                times[name].append((time.perf_counter() - t0) / args.calls * 1e3)
        row = {"kernel": k, "dilation": d, "relative_max_error": err}
        for name, ts in times.items():
            row[f"{name}_ms_median"] = round(statistics.median(ts), 3)
            row[f"{name}_ms_best"] = round(min(ts), 3)
        row["speedup_median"] = round(row["chain_ms_median"] / row["fused_ms_median"], 2)
        row["speedup_best"] = round(row["chain_ms_best"] / row["fused_ms_best"], 2)
        row["speedup_over_shared_relu_median"] = round(row["chain_shared_relu_ms_median"] / row["fused_ms_median"], 2)
        rows.append(row)
        print(
            f"k{k} d{d}: chain {row['chain_ms_median']:.3f} ms (best {row['chain_ms_best']:.3f}), "
            f"fused {row['fused_ms_median']:.3f} ms (best {row['fused_ms_best']:.3f}), "
            f"{row['speedup_median']:.2f}x median, {row['speedup_best']:.2f}x best-to-best; without the ReLU pass "
            f"{row['chain_shared_relu_ms_median']:.3f} ms ({row['speedup_over_shared_relu_median']:.2f}x); "
            f"rel err {err:.1e}"
        )
    result = {
        "command": " ".join(sys.argv),
        **machine(),
        "build_s": round(build_s, 1),
        "malloc_env": MALLOC_ENV,
        "shape": [64, 16, 32, 32],
        "rows": rows,
    }
    write(result, args.out, echo=False)


if __name__ == "__main__":
    main()
