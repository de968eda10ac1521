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
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from arnas_zoo import create_model  # noqa: E402
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


def bench_pair(model: torch.nn.Module, session: OnnxModel, batch: int, reps: int, device: str, size: int) -> dict:
    """Eager NCHW, eager channels_last and ORT on the same batch, alternating; speedup over the faster eager."""
    import copy

    x = torch.rand(batch, 3, size, size, device=device)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    runs = {"torch": lambda: model(x), "torch_channels_last": lambda: model_cl(x_cl), "onnxruntime": lambda: session(x)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        outputs = {name: fn() for name, fn in runs.items()}  # warm-up (allocations, kernel selection)
        for _ in range(reps):
            for name, fn in runs.items():
                _sync(device)
                start = time.perf_counter()
                fn()
                _sync(device)
                times[name].append(time.perf_counter() - start)
    row: dict = {"batch": batch, "reps": reps}
    for name, values in times.items():
        median = statistics.median(values)
        row[name] = {"median_ms": 1e3 * median, "min_ms": 1e3 * min(values), "images_per_s": batch / median}
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
    best = min(("torch", "torch_channels_last"), key=lambda name: row[name]["median_ms"])
    row["best_eager"] = best
    row["speedup_ort_over_torch"] = row["torch"]["median_ms"] / row["onnxruntime"]["median_ms"]
    row["speedup_ort_over_best_eager"] = row[best]["median_ms"] / row["onnxruntime"]["median_ms"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["arnas", "darts_v2"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions per (arch, batch, runtime)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    devices = [("cpu", "cpu")]
    import onnxruntime

    if torch.cuda.is_available() and CUDA in onnxruntime.get_available_providers():
        devices.append(("cuda", "cuda"))
    results = {
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
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs:
            model = create_model(arch).eval()
            size = model.config.input_size
            calibrate_bn(model, size)
            start = time.perf_counter()
            path = export_onnx(model, Path(tmp) / f"{arch}.onnx", torch.rand(2, 3, size, size))
            export_s = time.perf_counter() - start
            for device, providers in devices:
                try:
                    session = OnnxModel(path, providers=providers, threads=args.threads, check_range=False)
                except ProviderError as exc:  # onnxruntime-gpu present but its CUDA libraries did not load
                    print(f"{arch}: skipping {device}: {exc}", file=sys.stderr)
                    continue
                model = model.to(device)
                for batch in args.batches:
                    row = bench_pair(model, session, batch, args.reps, device, size)
                    row.update({"arch": arch, "device": device, "provider": session.provider, "export_s": export_s})
                    results["rows"].append(row)
                    print(
                        f"{arch:10s} {device:4s} batch {batch:3d}: torch NCHW {row['torch']['median_ms']:8.1f} ms, "
                        f"channels_last {row['torch_channels_last']['median_ms']:8.1f} ms, "
                        f"ORT {row['onnxruntime']['median_ms']:8.1f} ms; ORT over the best eager "
                        f"x{row['speedup_ort_over_best_eager']:.2f}; max |diff| {row['max_abs_diff_ort_vs_torch']:.1e} "
                        f"(vs float64: torch {row['max_abs_err_vs_float64']['torch']:.1e}, "
                        f"ORT {row['max_abs_err_vs_float64']['onnxruntime']:.1e})",
                        flush=True,
                    )
                model = model.to("cpu")
    results["machine"]["load_average_end"] = os.getloadavg()
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1) if args.out is None else f"wrote {args.out}")


if __name__ == "__main__":
    main()
