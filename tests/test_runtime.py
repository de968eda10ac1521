"""The deployment runtime (arnas_zoo_runtime): torch-free, batch prediction over folders, and the HTTP server.

One tiny grey 16x16 network is exported to ONNX per module; the server runs under uvicorn on a loopback
port in a thread and is driven by a real HTTP client (httpx) and, for the size limit, a raw socket.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from arnas_zoo import create_model
from arnas_zoo.onnx import FORMAT, META_CONFIG, META_FORMAT, OnnxModel

pytest.importorskip("onnxruntime")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export.onnx_export import export_onnx

    torch.manual_seed(0)
    model = create_model("resnet18", init_channels=4, in_channels=1, input_size=16, num_classes=10).eval()
    meta = {META_FORMAT: FORMAT, META_CONFIG: model.config.to_json()}
    path = tmp_path_factory.mktemp("runtime") / "model.onnx"
    return export_onnx(model, path, torch.rand(2, 1, 16, 16), metadata=meta)


def _png(path: Path, seed: int) -> np.ndarray:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, size=(16, 16), dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(path)
    return pixels.astype(np.float32)[None, None] / 255.0


def test_the_runtime_imports_and_predicts_where_torch_cannot_be_imported(onnx_file: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    x = np.concatenate([_png(folder / f"{i}.png", i) for i in range(3)])
    (folder / "broken.png").write_bytes(b"not a png")
    script = f"""
import sys, json
sys.modules["torch"] = None  # any `import torch` now raises ImportError
from arnas_zoo_runtime import Predictor, predict_paths
model = Predictor({str(onnx_file)!r}, providers="cpu")
rows = list(predict_paths(model, [{str(folder)!r}], top_k=2))
import numpy as np
logits = model(np.load({str(tmp_path / "x.npy")!r}))
loaded = sys.modules.get("torch") is not None
print(json.dumps({{"rows": rows, "logits": logits.tolist(), "torch": loaded}}))
"""
    np.save(tmp_path / "x.npy", x)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "runtime")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["torch"] is False
    rows = result["rows"]
    assert [r["image"] for r in rows[:3]] == ["0.png", "1.png", "2.png"] and "broken.png" in rows[3]["image"]
    assert "error" in rows[3] and "not a readable image" in rows[3]["error"]  # reported, the run went on
    expected = OnnxModel(onnx_file, providers="cpu")(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.array(result["logits"]), expected, rtol=1e-5, atol=1e-6)
    assert [r["top"][0]["class"] for r in rows[:3]] == expected.argmax(1).tolist()


def test_predict_command_streams_csv_over_a_folder_and_reports_bad_files(onnx_file: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from arnas_zoo.cli import main

    for i in range(2):
        _png(tmp_path / f"img{i}.png", i)
    (tmp_path / "notes.png").write_text("text")
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(main, ["predict", str(onnx_file), str(tmp_path), "--csv", str(out)])
    assert result.exit_code == 1, result.output  # one bad file: reported, exit 1
    lines = out.read_text().splitlines()
    assert lines[0] == "image,class,name,probability,error" and len(lines) == 4
    assert lines[1].startswith("img0.png,") and lines[2].startswith("img1.png,")
    assert "notes.png" in lines[3] and "not a readable image" in lines[3]


class _Server:
    def __init__(self, onnx_file: Path, **limits: float) -> None:
        from arnas_zoo_runtime import Predictor
        from arnas_zoo_runtime.serve import Limits, create_app

        self.model = Predictor(onnx_file, providers="cpu", threads=1)
        app = create_app(self.model, Limits(**limits))  # type: ignore[arg-type]
        self.app = app
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def server(onnx_file: Path) -> Iterator[_Server]:
    limits = {"max_body_bytes": 200_000, "max_images": 8, "max_batch": 16, "max_wait_ms": 200.0}
    with _Server(onnx_file, **limits) as running:
        yield running


def test_server_answers_equal_the_session_and_metadata_says_what_runs(server: _Server, tmp_path: Path) -> None:
    x = _png(tmp_path / "a.png", 7)
    expected = server.model(x)
    png = httpx.post(f"{server.url}/predict?logits=true&top_k=2", content=(tmp_path / "a.png").read_bytes(),
                     headers={"content-type": "image/png"})  # fmt: skip
    assert png.status_code == 200, png.text
    np.testing.assert_allclose(np.array(png.json()["logits"]), expected, rtol=1e-5, atol=1e-6)
    assert len(png.json()["predictions"][0]["top"]) == 2
    batch = np.random.default_rng(1).random((3, 1, 16, 16)).astype(np.float32)
    as_json = httpx.post(f"{server.url}/predict?logits=true", json={"inputs": batch.tolist()})
    assert as_json.status_code == 200, as_json.text
    np.testing.assert_allclose(np.array(as_json.json()["logits"]), server.model(batch), rtol=1e-5, atol=1e-6)
    form = httpx.post(
        f"{server.url}/predict", files=[("file", ("a.png", (tmp_path / "a.png").read_bytes(), "image/png"))] * 2
    )
    assert form.status_code == 200 and len(form.json()["predictions"]) == 2
    meta = httpx.get(f"{server.url}/metadata").json()
    assert meta["provider"] == "CPUExecutionProvider" and meta["provider_fallback"] is None
    assert meta["image_shape"] == [1, 16, 16] and meta["num_classes"] == 10 and meta["limits"]["max_images"] == 8
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"


def test_concurrent_requests_are_merged_into_batches(onnx_file: Path) -> None:
    with _Server(onnx_file, max_batch=16, max_wait_ms=300.0) as running:
        rng = np.random.default_rng(2)
        images = [rng.random((1, 1, 16, 16)).astype(np.float32) for _ in range(8)]
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(
                    lambda a: httpx.post(f"{running.url}/predict?logits=true", json={"inputs": a.tolist()}, timeout=60),
                    images,
                )
            )
        for a, answer in zip(images, answers):
            assert answer.status_code == 200
            np.testing.assert_allclose(np.array(answer.json()["logits"]), running.model(a), rtol=1e-5, atol=1e-6)
        stats = httpx.get(f"{running.url}/health").json()
        assert stats["requests"] == 8 and stats["images"] == 8 and stats["batches"] < 8 and stats["largest_batch"] > 1


class _HeldModel:
    """A model whose runs can be held open: what the batcher merges while one run is busy."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.batches: list[int] = []

    def run_host(self, x: np.ndarray) -> np.ndarray:
        self.batches.append(len(x))
        self.started.set()
        assert self.release.wait(30), "the test never released the run"
        return x.reshape(len(x), -1)[:, :2] * 2


def test_an_idle_batcher_runs_at_once_and_a_busy_one_merges_what_piles_up() -> None:
    import asyncio

    from arnas_zoo_runtime.serve import Limits, MicroBatcher

    async def scenario() -> tuple[float, list[int], list[np.ndarray]]:
        model = _HeldModel()
        batcher = MicroBatcher(model, Limits(max_batch=4, max_wait_ms=0.0))  # type: ignore[arg-type]
        batcher.start()
        model.release.set()
        t0 = time.perf_counter()
        await batcher.submit(np.ones((1, 3), np.float32))  # alone on an idle server: no timer to wait out
        alone = time.perf_counter() - t0
        model.release.clear()
        model.started.clear()
        busy = asyncio.ensure_future(batcher.submit(np.zeros((1, 3), np.float32)))
        await asyncio.get_running_loop().run_in_executor(None, model.started.wait, 30)
        inputs = [np.full((1, 3), i, np.float32) for i in range(1, 7)]  # 6 arrive while that run is busy
        waiting = [asyncio.ensure_future(batcher.submit(x)) for x in inputs]
        await asyncio.sleep(0.05)
        model.release.set()
        await busy
        outputs = list(await asyncio.gather(*waiting))
        await batcher.stop()
        return alone, model.batches, [o - x[:, :2] * 2 for o, x in zip(outputs, inputs)]

    alone, batches, errors = asyncio.run(scenario())
    assert alone < 0.5, f"a lone request waited {alone:.3f} s"
    assert batches == [1, 1, 4, 2], batches  # the 6 that piled up: one full batch of 4, then the other 2
    assert all(not e.any() for e in errors)  # each request got its own rows back


@pytest.mark.parametrize(
    "body, kind, status, words",
    [
        (b"\x89PNG but not really", "image/png", 400, "not a readable image"),
        (b"PK\x03\x04 garbage", "application/x-npz", 400, "not a readable npz"),
        (b"hello", "text/plain", 415, "content type"),
        (b"{not json", "application/json", 400, "not JSON"),
        (json.dumps({"inputs": np.zeros((1, 3, 16, 16)).tolist()}).encode(), "application/json", 422, "shape"),
        (json.dumps({"inputs": np.full((1, 1, 16, 16), 2.0).tolist()}).encode(), "application/json", 422, "[0, 1]"),
        (
            b'{"inputs": ' + json.dumps(np.zeros((1, 1, 16, 16)).tolist()).replace("0.0", "NaN", 1).encode() + b"}",
            "application/json",
            422,
            "NaN",
        ),  # fmt: skip
        (json.dumps({"inputs": np.zeros((9, 1, 16, 16)).tolist()}).encode(), "application/json", 413, "limit of 8"),
        (json.dumps({"inputs": []}).encode(), "application/json", 422, ""),
        (json.dumps({"images": 1}).encode(), "application/json", 422, "inputs"),
    ],
)
def test_bad_input_gets_a_clear_4xx(server: _Server, body: bytes, kind: str, status: int, words: str) -> None:
    answer = httpx.post(f"{server.url}/predict", content=body, headers={"content-type": kind})
    assert answer.status_code == status, answer.text
    assert words in answer.json()["detail"]
    assert httpx.get(f"{server.url}/health").status_code == 200  # and the server lives on


def test_a_body_over_the_limit_is_refused_before_it_is_read(server: _Server) -> None:
    # declared 50 MB, nothing sent: the answer comes back at once, so the body was never waited for
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 50000000\r\n\r\n"
        )
        answer = b""
        while b"over the limit" not in answer and len(answer) < 8192:
            chunk = sock.recv(4096)  # the headers and the body may come in separate packets
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413") and b"over the limit" in answer

    def chunks() -> Iterator[bytes]:  # no Content-Length: a streamed body is cut at the limit
        for _ in range(100):
            yield b"0" * 10_000

    streamed = httpx.post(f"{server.url}/predict", content=chunks(), headers={"content-type": "image/png"})
    assert streamed.status_code == 413


def test_sigterm_lets_the_request_in_flight_finish(onnx_file: Path, tmp_path: Path) -> None:
    """The served process, stopped by SIGTERM while a request sits in the batcher, answers it, then exits."""
    import signal

    x = _png(tmp_path / "a.png", 3)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "runtime"), os.environ.get("PYTHONPATH", "")])}
    # a 1.5 s batching wait holds a lone request in flight long enough to signal the server meanwhile
    process = subprocess.Popen(
        [sys.executable, "-m", "arnas_zoo_runtime", "serve", str(onnx_file), "--port", str(port), "--providers",
         "cpu", "--threads", "1", "--max-wait-ms", "1500"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                assert process.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(
                httpx.post, f"{url}/predict?logits=true", content=(tmp_path / "a.png").read_bytes(),
                headers={"content-type": "image/png"}, timeout=30,
            )  # fmt: skip
            while httpx.get(f"{url}/health", timeout=5).json()["requests"] < 1:  # not yet in the batcher
                assert time.monotonic() < deadline and not pending.done(), "the request never reached the batcher"
                time.sleep(0.02)
            assert not pending.done()  # it waits out the 1.5 s batching window
            process.send_signal(signal.SIGTERM)
            answer = pending.result(timeout=30)
        assert answer.status_code == 200, answer.text
        expected = OnnxModel(onnx_file, providers="cpu")(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(np.array(answer.json()["logits"]), expected, rtol=1e-5, atol=1e-6)
        code = process.wait(timeout=30)
        assert code in (0, -signal.SIGTERM), code  # uvicorn re-raises the signal once it has shut down
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/health", timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def test_progress_lines_count_in_the_singular_for_one() -> None:
    import io

    from arnas_zoo.progress import Progress, units

    assert units(1, "chunks of 50 points") == "chunk of 50 points"
    assert units(2, "chunks of 50 points") == "chunks of 50 points"
    assert [units(1, u) for u in ("steps", "batches", "passes", "boxes")] == ["step", "batch", "pass", "box"]
    stream = io.StringIO()
    with Progress(enabled=True, stream=stream).task("check: square", 1, "chunks of 50 points") as task:
        task.update()
    assert "1 chunk of 50 points" in stream.getvalue() and "chunks" not in stream.getvalue()


def test_metadata_uses_the_files_beside_the_model_only_when_they_belong_to_it(tmp_path: Path) -> None:
    from arnas_zoo.checkpoint import save_folder, sha256_file
    from arnas_zoo.onnx import META_SOURCE_SHA256
    from arnas_zoo_runtime import Predictor
    from export.onnx_export import export_onnx

    torch.manual_seed(0)
    model = create_model("resnet18", init_channels=4, in_channels=1, input_size=16, num_classes=10).eval()
    metrics = {"clean_accuracy": 0.5, "worst_case_accuracy": 0.25, "data": {"dataset": "digits", "n": 4},
               "results": [{"attack": "pgd20", "robust_accuracy": 0.25}]}  # fmt: skip
    folder = save_folder(model, tmp_path / "ckpt", metrics=metrics)
    meta = {
        META_FORMAT: FORMAT,
        META_CONFIG: model.config.to_json(),
        META_SOURCE_SHA256: sha256_file(folder / "model.safetensors"),
    }
    path = export_onnx(model, folder / "model.onnx", torch.rand(2, 1, 16, 16), metadata=meta)
    (folder / "onnx.json").write_text(json.dumps({"model.onnx": {"sha256": sha256_file(path), "opset": 18}}))
    described = Predictor(path, providers="cpu").describe()
    assert (
        described["figures"]["clean_accuracy"] == 0.5
        and described["figures"]["attacks"]["pgd20"]["robust_accuracy"] == 0.25
    )
    assert described["opset"] == 18 and described["sha256"] == sha256_file(path)
    # other weights in the folder (its metrics.json may be theirs) and a record of another export: neither is used
    torch.manual_seed(1)
    save_folder(
        create_model("resnet18", init_channels=4, in_channels=1, input_size=16, num_classes=10), folder, metrics=metrics
    )
    (folder / "onnx.json").write_text(json.dumps({"model.onnx": {"sha256": "0" * 64, "opset": 18}}))
    described = Predictor(path, providers="cpu").describe()
    assert described["figures"] is None and described["opset"] is None and described["sha256"] is None


def test_predict_reports_a_missing_file_and_an_empty_glob_as_rows(onnx_file: Path, tmp_path: Path) -> None:
    from arnas_zoo_runtime import Predictor, predict_paths

    _png(tmp_path / "ok.png", 0)
    rows = list(
        predict_paths(Predictor(onnx_file, providers="cpu"), [str(tmp_path / "gone.png"), str(tmp_path / "ok.png")])
    )
    assert rows[0] == {"image": str(tmp_path / "gone.png"), "error": f"{tmp_path / 'gone.png'}: no such file"}
    assert rows[1]["image"] == "ok.png" and "top" in rows[1]
    empty = list(predict_paths(Predictor(onnx_file, providers="cpu"), [str(tmp_path / "*.jpg")]))
    assert len(empty) == 1 and "no such file" in empty[0]["error"]  # a glob that matched nothing is said
