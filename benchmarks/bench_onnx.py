"""ONNX Runtime vs PyTorch eager inference, side by side, same machine, same run.

For each architecture (full-size evaluation networks, random weights: speed does not depend on the
weights) and batch size, the model is exported with the project's exporter (torch.onnx.export,
dynamo=True, dynamic batch), then PyTorch eager in both layouts (eval, inference_mode, fp32; NCHW and
channels_last, model and input) and ONNX Runtime are timed in alternation (so load changes on a
shared machine hit all alike). Reported: median latency per batch, throughput (images/s), the
largest |logit difference| between ORT and eager, and the ratio of the *faster* eager layout to ORT
(> 1: ORT faster). All use the same number of intra-op threads. On a CUDA machine with
onnxruntime-gpu, the CUDA provider is timed against PyTorch on CUDA too.

    python benchmarks/bench_onnx.py --out benchmarks/results/onnx_cpu.json
    python benchmarks/bench_onnx.py --archs arnas --batches 1 32 --reps 5 --out benchmarks/results/onnx_cpu_paper.json

Writes JSON; prints a table. Defaults take a couple of minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from bench_training import machine_peak_gflops  # noqa: E402

from arnas_zoo import create_model, model_stats  # noqa: E402
from arnas_zoo.onnx import CUDA, OnnxModel, ProviderError  # noqa: E402
from export.onnx_export import export_onnx  # noqa: E402


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def calibrate_bn(model: torch.nn.Module, size: int) -> torch.nn.Module:
    """Set every BatchNorm's running statistics from one random batch, so that a random-weight network's
    logits depend on its input (at initialisation they are nearly the classifier's bias) and the parity
    figure measures something."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one batch sets the statistics
    model.train()
    with torch.no_grad():
        model(torch.rand(16, 3, size, size))
    return model.eval()


def _split_runner(model: torch.nn.Module, x: torch.Tensor, chunk: int, pool: Any) -> Callable[[], torch.Tensor]:
    """Eager inference the way OnnxModel splits a batch: chunks of ``chunk`` images, as many at a time as
    ``pool`` has Python threads, each chunk on one torch intra-op thread (the caller sets torch's threads
    to 1 around it)."""

    def run() -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat(list(pool.map(lambda i: model(x[i : i + chunk]), range(0, len(x), chunk))))

    return run


def bench_pair(
    model: torch.nn.Module, sessions: dict[str, OnnxModel], batch: int, reps: int, device: str, size: int, threads: int
) -> dict:
    """Eager NCHW, eager channels_last (one call, and split like OnnxModel splits) and ORT (split batches and one run)
    on the same batch, alternating; the speedup is ORT's default (split) over the fastest eager way."""
    import copy
    from concurrent.futures import ThreadPoolExecutor

    x = torch.rand(batch, 3, size, size, device=device)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    chunk = sessions["onnxruntime"].micro_batch or batch
    pool = ThreadPoolExecutor(max_workers=threads)
    split = _split_runner(model_cl, x_cl, chunk, pool)

    def eager_split() -> torch.Tensor:
        torch.set_num_threads(1)
        try:
            return split()
        finally:
            torch.set_num_threads(threads)

    runs: dict[str, Callable[[], Any]] = {
        "torch": lambda: model(x),
        "torch_channels_last": lambda: model_cl(x_cl),
        "onnxruntime": lambda: sessions["onnxruntime"](x),
        "onnxruntime_one_run": lambda: sessions["onnxruntime_one_run"](x),
    }
    if device == "cpu" and batch > chunk:
        runs["torch_channels_last_split"] = eager_split
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        outputs = {name: fn() for name, fn in runs.items()}  # warm-up (allocations, kernel selection)
        for _ in range(reps):
            for name, fn in runs.items():
                _sync(device)
                time.sleep(0.05)  # let the previous runtime's spinning threads (ORT's pools spin after a run) park
                start = time.perf_counter()
                fn()
                _sync(device)
                times[name].append(time.perf_counter() - start)
    pool.shutdown()
    row: dict = {"batch": batch, "reps": reps, "micro_batch": chunk}
    for name, values in times.items():
        median = statistics.median(values)
        row[name] = {"median_ms": 1e3 * median, "min_ms": 1e3 * min(values), "images_per_s": batch / median}
    if "torch_channels_last_split" in outputs:
        row["max_abs_diff_split_vs_one_call"] = float(
            (outputs["torch_channels_last_split"] - outputs["torch"]).abs().max()
        )
    ort_out = torch.as_tensor(outputs["onnxruntime"]).to(outputs["torch"].device)
    row["max_abs_diff_ort_vs_torch"] = float((ort_out - outputs["torch"]).abs().max())
    row["logit_spread"] = float(outputs["torch"].std(dim=-1).mean())  # the scale the difference is small against
    # the float64 forward is the truth both fp32 runtimes round away from: parity = ORT no worse than eager
    with torch.inference_mode():
        exact = copy.deepcopy(model).double()(x.double())
    row["max_abs_err_vs_float64"] = {
        "torch": float((outputs["torch"].double() - exact).abs().max()),
        "onnxruntime": float((ort_out.double() - exact).abs().max()),
    }
    eager = [name for name in ("torch", "torch_channels_last", "torch_channels_last_split") if name in row]
    best = min(eager, key=lambda name: row[name]["median_ms"])
    row["best_eager"] = best
    row["speedup_ort_over_torch"] = row["torch"]["median_ms"] / row["onnxruntime"]["median_ms"]
    row["speedup_ort_over_best_eager"] = row[best]["median_ms"] / row["onnxruntime"]["median_ms"]
    row["speedup_ort_one_run_over_best_eager"] = row[best]["median_ms"] / row["onnxruntime_one_run"]["median_ms"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["arnas", "darts_v2"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions per (arch, batch, runtime)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--no-peak", dest="peak", action="store_false", help="skip measuring the machine's fp32 peak (about 5 s)"
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    devices = [("cpu", "cpu")]
    import onnxruntime

    if torch.cuda.is_available() and CUDA in onnxruntime.get_available_providers():
        devices.append(("cuda", "cuda"))
    results: dict[str, Any] = {
        "what": "ONNX Runtime vs PyTorch eager, full-size evaluation networks, random weights, fp32, 32x32 inputs",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "threads": args.threads,
            "load_average_start": os.getloadavg(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        "rows": [],
    }
    peak = machine_peak_gflops() if args.peak else None
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs:
            model = create_model(arch).eval()
            size = model.config.input_size
            macs = model_stats(model, (3, size, size)).macs
            calibrate_bn(model, size)
            start = time.perf_counter()
            path = export_onnx(model, Path(tmp) / f"{arch}.onnx", torch.rand(2, 3, size, size))
            export_s = time.perf_counter() - start
            for device, providers in devices:
                try:
                    sessions = {
                        "onnxruntime": OnnxModel(path, providers=providers, threads=args.threads, check_range=False),
                        "onnxruntime_one_run": OnnxModel(
                            path, providers=providers, threads=args.threads, check_range=False, micro_batch=None
                        ),
                    }
                    session = sessions["onnxruntime"]
                except ProviderError as exc:  # onnxruntime-gpu present but its CUDA libraries did not load
                    print(f"{arch}: skipping {device}: {exc}", file=sys.stderr)
                    continue
                model = model.to(device)
                for batch in args.batches:
                    row = bench_pair(model, sessions, batch, args.reps, device, size, args.threads)
                    row.update({"arch": arch, "device": device, "provider": session.provider, "export_s": export_s})
                    flop = 2 * macs * batch
                    for name in [k for k, v in row.items() if isinstance(v, dict) and "median_ms" in v]:
                        row[name]["gflops"] = flop / (row[name]["median_ms"] / 1e3) / 1e9
                        if peak is not None and device == "cpu":
                            row[name]["fraction_of_fp32_peak"] = row[name]["gflops"] / peak["float32"]
                    results["rows"].append(row)
                    print(
                        f"{arch:10s} {device:4s} batch {batch:3d}: torch NCHW {row['torch']['median_ms']:8.1f} ms, "
                        f"channels_last {row['torch_channels_last']['median_ms']:8.1f} ms, "
                        f"split {row.get('torch_channels_last_split', {}).get('median_ms', float('nan')):8.1f} ms, "
                        f"ORT {row['onnxruntime']['median_ms']:8.1f} ms (one run "
                        f"{row['onnxruntime_one_run']['median_ms']:8.1f} ms); ORT over the best eager "
                        f"x{row['speedup_ort_over_best_eager']:.2f}; max |diff| {row['max_abs_diff_ort_vs_torch']:.1e} "
                        f"(vs float64: torch {row['max_abs_err_vs_float64']['torch']:.1e}, "
                        f"ORT {row['max_abs_err_vs_float64']['onnxruntime']:.1e})",
                        flush=True,
                    )
                model = model.to("cpu")
    results["machine"]["load_average_end"] = os.getloadavg()
    results["machine_peak_gflops"] = peak
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1) if args.out is None else f"wrote {args.out}")


if __name__ == "__main__":
    main()
