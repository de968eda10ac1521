"""ONNX Runtime vs PyTorch eager inference, side by side, same machine, same run.

For each architecture (full-size evaluation networks, random weights: speed does not depend on the
weights) and batch size, the model is exported with the project's exporter (torch.onnx.export,
dynamo=True, dynamic batch), then PyTorch eager (eval, inference_mode, NCHW fp32) and ONNX Runtime
are timed in alternation (so load changes on a shared machine hit both alike). Reported: median
latency per batch, throughput (images/s) and the ratio torch/ORT (> 1: ORT faster). Both use the
same number of intra-op threads. On a CUDA machine with onnxruntime-gpu, the CUDA provider is
timed against PyTorch on CUDA too.

    python benchmarks/bench_onnx.py --out benchmarks/results/onnx_cpu.json

Writes JSON; prints a table. Defaults take a couple of minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
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


def bench_pair(model: torch.nn.Module, session: OnnxModel, batch: int, reps: int, device: str, size: int) -> dict:
    x = torch.rand(batch, 3, size, size, device=device)
    times: dict[str, list[float]] = {"torch": [], "onnxruntime": []}
    with torch.inference_mode():
        model(x)  # warm-up both (allocations, kernel selection)
        session(x)
        for _ in range(reps):
            for name, fn in (("torch", model), ("onnxruntime", session)):
                _sync(device)
                start = time.perf_counter()
                fn(x)
                _sync(device)
                times[name].append(time.perf_counter() - start)
    row = {"batch": batch, "reps": reps}
    for name, values in times.items():
        median = statistics.median(values)
        row[name] = {"median_ms": 1e3 * median, "min_ms": 1e3 * min(values), "images_per_s": batch / median}
    row["speedup_ort_over_torch"] = row["torch"]["median_ms"] / row["onnxruntime"]["median_ms"]
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
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs:
            model = create_model(arch).eval()
            size = model.config.input_size
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
                        f"{arch:10s} {device:4s} batch {batch:3d}: torch {row['torch']['median_ms']:9.1f} ms "
                        f"({row['torch']['images_per_s']:8.1f} img/s)  ORT {row['onnxruntime']['median_ms']:9.1f} ms "
                        f"({row['onnxruntime']['images_per_s']:8.1f} img/s)  "
                        f"ORT speedup x{row['speedup_ort_over_torch']:.2f}",
                        flush=True,
                    )
                model = model.to("cpu")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1) if args.out is None else f"wrote {args.out}")


if __name__ == "__main__":
    main()
