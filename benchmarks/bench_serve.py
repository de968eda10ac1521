"""Load test of ``arnas-zoo serve`` on loopback against direct ``InferenceSession.run`` calls, in one run.

    python benchmarks/bench_serve.py --model resnet18.cifar10_linf_cpu_w16_mix_e18 --seconds 10 \\
        --out benchmarks/results/serve_cpu.json

The zoo model is exported to ONNX (no parity check: the file is only timed), the server runs in its own
process (``python -m arnas_zoo_runtime serve FILE --threads T``), and for each number of concurrent
clients (1, 8, 32) that many keep-alive connections of this process (asyncio streams on uvloop when
installed: a lean load generator, as it shares the cores with the server) send one PNG image per
request (``image/png``, a genuine CIFAR-10 image when ``../shared/data`` is there, else random pixels),
back to back, for ``--seconds`` seconds; every request's latency is recorded. The reference, in the
same run and with the same ONNX Runtime threads: ``session.run`` on one image at a time (the call a
user would make without the server), and on batches of 32 (the best the session can do). The load
stops by itself; the server is stopped with SIGTERM. Also records the cold start of
``arnas-zoo-runtime predict FILE image.png`` (a new process, no torch) and the size of a torch-free
install when ``--runtime-venv`` names one.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _report import write

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "runtime"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _export(name: str, out: Path) -> Path:
    """A zoo model (``load(name)``), or ``ARCH:C:L`` (random weights: timing only), exported to ONNX."""
    import torch

    from arnas_zoo import create_model, load
    from arnas_zoo.onnx import FORMAT, META_CONFIG, META_FORMAT
    from export.onnx_export import export_onnx

    if name.count(":") == 2:
        arch, c, layers = name.split(":")
        model = create_model(arch, init_channels=int(c), layers=int(layers)).eval()
    else:
        model = load(name).eval()
    c, s = model.config.in_channels, model.config.input_size
    meta = {META_FORMAT: FORMAT, META_CONFIG: model.config.to_json()}
    return export_onnx(model, out / "model.onnx", torch.rand(2, c, s, s), metadata=meta)


def _image(shape: tuple[int, int, int]) -> tuple[bytes, np.ndarray]:
    from PIL import Image

    c, h, w = shape
    pixels = None
    shared = ROOT.parent / "shared" / "data" / "cifar10" / "train.npz"
    if c == 3 and h == w == 32 and shared.is_file():
        with np.load(shared) as f:
            pixels = f["x"][-1]  # a genuine CIFAR-10 image (HWC uint8)
    if pixels is None:
        pixels = np.random.default_rng(0).integers(0, 256, size=(h, w, c), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels[:, :, 0] if c == 1 else pixels).save(buf, format="PNG")
    return buf.getvalue(), pixels.transpose(2, 0, 1)[None].astype(np.float32) / 255.0


def _stats(latencies: list[float], seconds: float, images: int) -> dict[str, float]:
    arr = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "images_per_s": images / seconds,
        "p50_ms": float(np.percentile(arr, 50)),
        "p99_ms": float(np.percentile(arr, 99)),
    }


def direct(path: Path, x: np.ndarray, threads: int, seconds: float, batch: int) -> dict[str, float]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    xb = np.ascontiguousarray(np.repeat(x, batch, axis=0))
    session.run(None, {name: xb})
    latencies, end = [], time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        session.run(None, {name: xb})
        latencies.append(time.perf_counter() - t0)
    return _stats(latencies, time.perf_counter() - start, batch * len(latencies))


async def _client(port: int, request: bytes, end: float, latencies: list[float], errors: list[int]) -> None:
    """One keep-alive HTTP/1.1 connection sending ``request`` until ``end``: a lean client (raw asyncio
    streams, like a C load generator in spirit), so that the load generator takes as little as possible of
    the two cores it shares with the server."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            writer.write(request)
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                key, _, value = line.partition(b":")
                if key.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            if b" 200 " in status:
                latencies.append(time.perf_counter() - t0)
            else:
                errors.append(1)
    finally:
        writer.close()


def load(url: str, png: bytes, clients: int, seconds: float) -> dict[str, float]:
    """``clients`` concurrent connections, each sending one PNG per request, back to back, for ``seconds``."""
    port = int(url.rsplit(":", 1)[1])
    head = f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nContent-Length: {len(png)}\r\n\r\n"
    request = head.encode() + png
    latencies: list[float] = []
    errors: list[int] = []

    async def run() -> None:
        end = time.perf_counter() + seconds
        await asyncio.gather(*[_client(port, request, end, latencies, errors) for _ in range(clients)])

    start = time.perf_counter()
    _event_loop_run(run())
    return {**_stats(latencies, time.perf_counter() - start, len(latencies)), "errors": len(errors), "clients": clients}


def _event_loop_run(coro: Any) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def cold_predict(path: Path, png: bytes, repeats: int = 5) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "image.png"
        image.write_bytes(png)
        env = {**os.environ, "PYTHONPATH": str(ROOT / "runtime")}
        cmd = [sys.executable, "-m", "arnas_zoo_runtime", "predict", str(path), str(image), "--providers", "cpu"]
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, env=env)
            times.append(time.perf_counter() - t0)
    return {"median_s": float(np.median(times)), "min_s": min(times), "max_s": max(times), "repeats": repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18.cifar10_linf_cpu_w16_mix_e18", help="zoo name, or ARCH:C:LAYERS")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads, server and reference alike")
    parser.add_argument("--max-batch", type=int, default=4)
    parser.add_argument("--max-wait-ms", type=float, default=0.0)
    parser.add_argument("--access-log", action="store_true", help="serve with uvicorn's access log on (off by default)")
    parser.add_argument("--runtime-venv", default=None, help="a venv with only arnas-zoo-runtime[serve]: its size")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = _export(args.model, Path(tmp))
        from arnas_zoo_runtime import Predictor

        png, x = _image(Predictor(path, providers="cpu").image_shape)  # type: ignore[arg-type]
        result: dict = {
            "benchmark": "arnas-zoo serve on loopback vs direct InferenceSession.run (same run)",
            "model": args.model,
            "request": f"one PNG image per request ({len(png)} bytes)",
            "client": "keep-alive HTTP/1.1 connections on asyncio streams in the benchmark process",
            "threads": args.threads,
            "server": {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "access_log": args.access_log},
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "seconds_per_row": args.seconds,
        }
        result["direct_batch1"] = direct(path, x, args.threads, args.seconds, 1)
        result["direct_batch32"] = direct(path, x, args.threads, args.seconds, 32)
        port = _free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT / "runtime")}
        server = subprocess.Popen(
            [sys.executable, "-m", "arnas_zoo_runtime", "serve", str(path), "--port", str(port), "--providers",
             "cpu", "--threads", str(args.threads), "--max-batch", str(args.max_batch), "--max-wait-ms",
             str(args.max_wait_ms), *(["--access-log"] if args.access_log else [])], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            import httpx

            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("server did not start")
                time.sleep(0.1)
            load(url, png, 4, 1.0)  # warm-up
            result["served"] = [load(url, png, int(c), args.seconds) for c in args.clients.split(",")]
            result["server_batching"] = httpx.get(f"{url}/health").json()
        finally:
            server.send_signal(signal.SIGTERM)
            result["server_exit_code"] = server.wait(timeout=60)
        result["cold_predict"] = cold_predict(path, png)
    if args.runtime_venv:
        size = subprocess.run(["du", "-sb", args.runtime_venv], capture_output=True, text=True).stdout.split()[0]
        result["runtime_venv_bytes"] = int(size)
    direct1 = result["direct_batch1"]
    for row in result["served"]:
        row["throughput_vs_direct_batch1"] = row["images_per_s"] / direct1["images_per_s"]
        row["p99_vs_direct_batch1_p50"] = row["p99_ms"] / direct1["p50_ms"]
        row["p99_vs_direct_batch1_p99"] = row["p99_ms"] / direct1["p99_ms"]
    result["load_average_at_end"] = os.getloadavg()
    write(result, args.out)


if __name__ == "__main__":
    main()
