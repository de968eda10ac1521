"""``arnas-zoo serve``: an HTTP server over one ONNX model, with dynamic micro-batching and bounded requests.

FastAPI on uvicorn (the ``serve`` extra): FastAPI is the most used Python API framework, brings request
parsing and an OpenAPI page (``/docs``) for free, and needs no torch; LitServe would add its own
process model on top of the same stack for nothing this server needs.

Endpoints:

- ``POST /predict``: one PNG/JPEG (``image/png``, ``image/jpeg``), an npz batch (``application/x-npz``:
  array ``x``, as ``arnas-zoo predict`` reads it), JSON ``{"inputs": [...]}`` (one image (C, H, W) or a
  batch (N, C, H, W) of floats in [0, 1]) or a multipart form with one or more image files. Query
  ``top_k`` (default 3) and ``logits=true`` (also return the raw logits). Answers
  ``{"predictions": [{"top": [{"class", "name", "probability"}, ...]}, ...]}``.
- ``GET /health``: ``{"status": "ok"}`` and the batching counters.
- ``GET /metadata``: the model (name, threat model, eps, image shape, classes, source sha256, opset,
  the provider running it and any CUDA fallback warning) and the server's limits.

Requests from concurrent clients are merged into one ONNX Runtime run of up to ``max_batch`` images:
the requests that arrived while the last run was busy go together into the next, so an idle server runs
a lone request at once and a loaded one batches by itself; ``max_wait_ms`` (default 0) additionally
holds a run that long for more to arrive. Bad input is a 4xx with a one-line ``detail``:
413 for a body over ``max_body_bytes`` (refused from its Content-Length before it is read, or as soon
as a streamed body passes the limit) or more than ``max_images`` images; 415 for a content type it
does not take; 400 for bytes that are not an image or npz; 422 for a wrong shape, dtype, range or NaN.
On SIGTERM/SIGINT uvicorn stops accepting connections and finishes the requests in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

try:  # module level: FastAPI resolves the endpoints' (string) annotations in this module's namespace
    from fastapi import Request
except ImportError:  # the serve extra is not installed: create_app says so
    Request = Any  # type: ignore[misc,assignment]

from arnas_zoo_runtime.images import ImageFileError, decode_image, npz_arrays, scale, to_nchw
from arnas_zoo_runtime.session import InputError, Predictor, ProviderError


@dataclass
class Limits:
    """What one request may carry, and how requests are merged."""

    max_body_bytes: int = 8 * 1024 * 1024
    max_images: int = 256
    max_batch: int = 4
    max_wait_ms: float = 0.0


@dataclass
class BatchStats:
    batches: int = 0
    images: int = 0
    requests: int = 0
    largest_batch: int = 0
    sizes: dict[int, int] = field(default_factory=dict)


class MicroBatcher:
    """Merges the images of concurrent requests into runs of at most ``max_batch`` images.

    A run takes every request waiting when the last run ended, up to ``max_batch`` images, and, when
    ``max_wait_ms`` > 0, waits that long after the first for more. The model runs in a worker thread, so
    the event loop keeps reading requests meanwhile: under load they pile up during one run and form
    the next batch, with no timer; an idle server answers a lone request without waiting. A request
    larger than ``max_batch`` runs alone (the session splits it on the CPU); one that would overflow the
    batch opens the next.
    """

    def __init__(self, model: Predictor, limits: Limits) -> None:
        self.model = model
        self.limits = limits
        self.stats = BatchStats()
        self._queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future[np.ndarray]]] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def submit(self, x: np.ndarray) -> np.ndarray:
        assert self._queue is not None, "MicroBatcher.start() first"
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self._queue.put((x, future))
        self.stats.requests += 1
        return await future

    async def _loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        carry: tuple[np.ndarray, asyncio.Future[np.ndarray]] | None = None
        while True:
            first = carry if carry is not None else await self._queue.get()
            carry = None
            group, count = [first], len(first[0])
            # what arrived while the last batch ran joins this one at once: no wait when the server is idle
            while count < self.limits.max_batch and not self._queue.empty():
                item = self._queue.get_nowait()
                if count + len(item[0]) > self.limits.max_batch:
                    carry = item  # would overflow: it opens the next batch
                    break
                group.append(item)
                count += len(item[0])
            deadline = loop.time() + self.limits.max_wait_ms / 1000
            while carry is None and count < self.limits.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
                if count + len(item[0]) > self.limits.max_batch:
                    carry = item
                    break
                group.append(item)
                count += len(item[0])
            await self._run(loop, group)

    async def _run(
        self, loop: asyncio.AbstractEventLoop, group: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]]
    ) -> None:
        x = np.concatenate([g[0] for g in group]) if len(group) > 1 else group[0][0]
        try:
            logits = await loop.run_in_executor(None, self.model.run_host, x)
        except Exception as exc:  # noqa: BLE001 - every waiting request gets the failure
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        self.stats.batches += 1
        self.stats.images += len(x)
        self.stats.largest_batch = max(self.stats.largest_batch, len(x))
        self.stats.sizes[len(x)] = self.stats.sizes.get(len(x), 0) + 1
        start = 0
        for part, future in group:
            if not future.done():
                future.set_result(logits[start : start + len(part)])
            start += len(part)


class RequestError(Exception):
    """A bad request: its HTTP status and a one-line reason."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


async def read_body(request: Any, limit: int) -> bytes:
    """The request body, refused (413) from its Content-Length before reading, or once a streamed body
    passes ``limit`` bytes (the rest is never read)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise RequestError(400, f"Content-Length {declared!r} is not a number") from None
        if size > limit:
            raise RequestError(413, f"request body of {size:,} bytes is over the limit of {limit:,}")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise RequestError(413, f"request body over the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_images(body: bytes) -> np.ndarray:
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise RequestError(400, f"body is not JSON ({str(exc).splitlines()[0][:80]})") from None
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise RequestError(422, 'expected a JSON object {"inputs": [...]} of images in [0, 1]')
    try:
        x = np.asarray(payload["inputs"], dtype=np.float32)
    except (TypeError, ValueError):
        raise RequestError(422, "inputs: expected a nested list of numbers (C, H, W) or (N, C, H, W)") from None
    return x[None] if x.ndim == 3 else x


async def images_of(request: Any, model: Predictor, limits: Limits) -> np.ndarray:
    """The request's images as float32 NCHW in [0, 1], checked against the model; RequestError otherwise."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request, limits.max_body_bytes)
    channels, size, _ = model.image_shape
    try:
        if kind in ("image/png", "image/jpeg", "image/jpg", "image/webp", "image/bmp"):
            x = decode_image(body, channels or 3, size, "upload")
        elif kind in ("application/x-npz", "application/npz", "application/octet-stream"):
            raw, _ = npz_arrays(body, "upload")
            x = scale(to_nchw(raw, channels, "upload"), "upload")
        elif kind == "application/json":
            x = _json_images(body)
        elif kind == "multipart/form-data":
            request._body = body  # starlette's form parser reads the cached body
            form = await request.form(max_files=limits.max_images, max_fields=limits.max_images)
            files = [v for _, v in form.multi_items() if hasattr(v, "read")]
            if not files:
                raise RequestError(422, "multipart form without image files")
            x = np.concatenate(
                [decode_image(await f.read(), channels or 3, size, f.filename or "upload") for f in files]
            )
        else:
            raise RequestError(415, f"content type {kind or 'missing'!r}: send image/png, image/jpeg, "
                                    "application/x-npz, application/json or multipart/form-data")  # fmt: skip
    except ImageFileError as exc:
        raise RequestError(400, str(exc)) from None
    except InputError as exc:
        raise RequestError(422, str(exc)) from None
    if x.ndim == 4 and len(x) > limits.max_images:
        raise RequestError(413, f"{len(x)} images in one request, over the limit of {limits.max_images}")
    if x.ndim == 4 and len(x) == 0:
        raise RequestError(422, "no images in the request")
    try:
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)  # NaN propagates through both
        model.check(x.shape, lo, hi, bool(np.issubdtype(x.dtype, np.floating)))
    except InputError as exc:
        raise RequestError(422, str(exc)) from None
    return np.ascontiguousarray(x, dtype=model.input_dtype)


def create_app(model: Predictor, limits: Limits | None = None) -> Any:
    """The FastAPI application serving ``model`` (run it with uvicorn, or :func:`serve`)."""
    try:
        from fastapi import FastAPI
        from fastapi.responses import JSONResponse
    except ImportError:
        raise ProviderError("the server needs FastAPI and uvicorn: pip install 'arnas-zoo-runtime[serve]'") from None

    limits = limits or Limits()
    batcher = MicroBatcher(model, limits)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="arnas-zoo model server", lifespan=lifespan)
    app.state.batcher = batcher
    started = time.time()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "uptime_s": round(time.time() - started, 1), **_stats(batcher.stats)}

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        return {**model.describe(), "limits": limits.__dict__, "batching": _stats(batcher.stats)}

    @app.post("/predict")
    async def predict(request: Request, top_k: int = 3, logits: bool = False) -> Any:
        if not 1 <= top_k <= 1000:
            return JSONResponse({"detail": "top_k: expected 1..1000"}, status_code=422)
        try:
            x = await images_of(request, model, limits)
        except RequestError as exc:
            return JSONResponse({"detail": exc.detail}, status_code=exc.status)
        out = await batcher.submit(x)
        body: dict[str, Any] = {"predictions": [{"top": top} for top in model.top_k(out, top_k)]}
        if logits:
            body["logits"] = out.tolist()
        return body

    return app


def _stats(stats: BatchStats) -> dict[str, Any]:
    return {"requests": stats.requests, "batches": stats.batches, "images": stats.images,
            "largest_batch": stats.largest_batch}  # fmt: skip


def serve(model_path: str, *, host: str = "127.0.0.1", port: int = 8000, providers: str = "auto",
          threads: int | None = None, limits: Limits | None = None, log_level: str = "info",
          access_log: bool = False) -> None:  # fmt: skip
    """Serve ``model_path`` until SIGTERM/SIGINT; in-flight requests finish (up to 30 s) before it exits.

    uvicorn runs on uvloop with the httptools parser when they are installed (the ``serve`` extra brings
    them); the pure-Python fallbacks cost more per request. The access log (one line per request) is off
    unless asked for: with it, a 0.7 ms model served at 32 clients fell from 0.83x to 0.73x of direct
    ONNX Runtime throughput (``benchmarks/bench_serve.py``, docs/deploy.md).
    """
    import uvicorn

    model = Predictor(model_path, providers=providers, threads=threads)
    if model.fallback:
        print(f"warning: {model.fallback}")
    config = uvicorn.Config(create_app(model, limits), host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=30, access_log=access_log)  # fmt: skip
    uvicorn.Server(config).run()
