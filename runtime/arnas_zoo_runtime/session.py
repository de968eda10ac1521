"""An ONNX Runtime session for an exported arnas-zoo model, with numpy alone (no torch).

``Predictor(path)`` loads a ``.onnx`` file written by ``arnas-zoo export onnx`` (or any single-input
image classifier), picks the execution providers, and maps float NCHW images in [0, 1] to logits.
It checks what it is given (rank, shape, dtype, range, NaN) with one-line :class:`InputError`
messages, and on the CPU provider splits large batches into chunks run on several threads.
``arnas_zoo.onnx.OnnxModel`` is this class with the torch interface added.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from arnas_zoo_runtime.digest import sha256_file

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
# Metadata keys written by `arnas-zoo export onnx` into the ONNX file (ModelProto.metadata_props).
META_FORMAT = "arnas_zoo.format"
META_CONFIG = "arnas_zoo.config"
META_PARITY = "arnas_zoo.parity"
META_SOURCE_SHA256 = "arnas_zoo.source_sha256"
FORMAT = "arnas-zoo/onnx@1"

#: CUDA provider options: a heuristic cuDNN algorithm choice. The default exhaustive search benchmarks
#: every algorithm for each new input shape, which makes attacks with varying batch sizes (Square,
#: restarts on the surviving points) spend most of their time searching.
CUDA_OPTIONS = {"cudnn_conv_algo_search": "HEURISTIC"}

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


class RuntimeFault(Exception):
    """Base of the runtime's errors: one line, meant for the user (arnas_zoo's errors subclass these)."""


class InputError(RuntimeFault, ValueError):
    """Images of the wrong rank, shape, dtype or range (or not finite)."""


class ModelFileError(RuntimeFault, OSError):
    """The ONNX file is missing or ONNX Runtime cannot load it."""


class ProviderError(RuntimeFault, RuntimeError):
    """The requested ONNX Runtime execution provider is not available or did not load."""


class ProviderFallbackWarning(UserWarning):
    """``providers="auto"`` asked for CUDA, and ONNX Runtime runs the graph on the CPU instead."""


def ort() -> Any:
    """The onnxruntime module, or a one-line :class:`ProviderError` saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise ProviderError(
            "onnxruntime is not installed: pip install arnas-zoo-runtime (CPU), or onnxruntime-gpu on CUDA machines"
        ) from None
    return onnxruntime


def ort_errors() -> tuple[type[BaseException], ...]:
    """The exception classes onnxruntime raises when a file cannot be loaded (they subclass Exception)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "InvalidProtobuf", "InvalidGraph", "NotImplemented")
    return tuple(getattr(state, name) for name in names if hasattr(state, name)) + (RuntimeError, OSError)


def resolve_providers(providers: str | Sequence[str] = "auto") -> list[str]:
    """``"auto"`` (CUDA when onnxruntime has it, then CPU), ``"cpu"``, ``"cuda"``, or explicit provider names."""
    available = list(ort().get_available_providers())
    if isinstance(providers, str):
        key = providers.lower()
        if key == "auto":
            return [CUDA, CPU] if CUDA in available else [CPU]
        if key == "cpu":
            return [CPU]
        if key == "cuda":
            if CUDA not in available:
                raise ProviderError(
                    f"providers='cuda': this onnxruntime build has no CUDA provider (available: {available}); "
                    "install onnxruntime-gpu (pip install 'arnas-zoo[onnx-gpu]', without the CPU onnxruntime)"
                )
            return [CUDA]
        raise InputError(f"providers: expected 'auto', 'cpu', 'cuda' or a list of provider names, got {providers!r}")
    names = list(providers)
    unknown = [name for name in names if name not in available]
    if unknown:
        raise ProviderError(f"providers {unknown} are not in this onnxruntime build (available: {available})")
    return names


def usable_cores() -> int:
    """The cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def fallback_message(path: Path, cuda_version: str | None = None) -> str:
    built = f" (torch is built for CUDA {cuda_version})" if cuda_version else ""
    return (
        f"{path}: the CUDA provider did not load, ONNX Runtime runs this model on the CPU. The usual cause is an "
        f"onnxruntime-gpu build for another CUDA/cuDNN than the one installed{built}; see the onnxruntime-gpu "
        "install matrix, or pass providers='cpu' to silence this"
    )


class Predictor:
    """An ONNX Runtime session mapping float NCHW images in [0, 1] (numpy) to logits (numpy float32).

    Args:
        path: the .onnx file.
        providers: ``"auto"`` (CUDA if present, else CPU), ``"cpu"``, ``"cuda"`` (error if CUDA does
            not load) or a list of ONNX Runtime provider names.
        threads: CPU threads (None: ONNX Runtime's default for single runs, all usable cores for
            split batches).
        check_range: reject inputs outside [0, 1], like a model that normalizes.
        device_id: the GPU the CUDA provider runs on.
        micro_batch: on the CPU provider, a batch larger than this runs as chunks of ``micro_batch``
            images, ``threads`` chunks at a time, each on one thread of a second, single-threaded
            session (None: every batch is one run). Results equal the single run's to float32 rounding.

    ``provider`` is the provider that really runs the graph (ONNX Runtime silently falls back to the
    CPU when CUDA cannot load); ``fallback`` holds the warning text when that happened.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        providers: str | Sequence[str] = "auto",
        threads: int | None = None,
        check_range: bool = True,
        device_id: int = 0,
        micro_batch: int | None = 4,
        cuda_version: str | None = None,
    ) -> None:
        runtime = ort()
        if micro_batch is not None and int(micro_batch) < 1:
            raise InputError(f"micro_batch must be a positive number of images or None, got {micro_batch}")
        if threads is not None and int(threads) < 1:
            raise InputError(f"threads must be a positive number or None (ONNX Runtime's default), got {threads}")
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFileError(f"{self.path}: no such ONNX file")
        requested = resolve_providers(providers)
        options = runtime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        options.log_severity_level = 3  # warnings about unused initializers are noise for users
        self.device_id = int(device_id)
        with_options = [
            (name, {"device_id": self.device_id, **CUDA_OPTIONS}) if name == CUDA else name for name in requested
        ]
        try:
            self.session = runtime.InferenceSession(str(self.path), sess_options=options, providers=with_options)
        except ort_errors() as exc:
            raise ModelFileError(f"{self.path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0]})") from None
        self.providers_requested = requested
        self.providers = list(self.session.get_providers())
        if requested == [CUDA] and CUDA not in self.providers:
            raise ProviderError(
                f"{self.path}: the CUDA provider did not load (running providers: {self.providers}); "
                "check the CUDA/cuDNN libraries onnxruntime-gpu needs, or use providers='auto'"
            )
        self.fallback: str | None = None
        if CUDA in requested and CUDA not in self.providers:
            self.fallback = fallback_message(self.path, cuda_version)
            warnings.warn(self.fallback, ProviderFallbackWarning, stacklevel=2)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise ModelFileError(f"{self.path}: expected one image input, got {[i.name for i in inputs]}")
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        self.input_dtype = _ORT_TYPES.get(inputs[0].type, np.float32)
        self.output_dtype = _ORT_TYPES.get(outputs[0].type, np.float32)
        self.input_shape = list(inputs[0].shape)
        self.num_classes = outputs[0].shape[-1] if isinstance(outputs[0].shape[-1], int) else None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.config_dict: dict[str, Any] | None = _json_or_none(self.metadata.get(META_CONFIG))
        self.parity: dict[str, Any] | None = _json_or_none(self.metadata.get(META_PARITY))
        self.check_range = check_range
        self.micro_batch = None if micro_batch is None else int(micro_batch)
        self.workers = int(threads) if threads is not None else usable_cores()
        self._providers_with_options = with_options
        self._chunk_session: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._description: dict[str, Any] | None = None

    @property
    def provider(self) -> str:
        """The execution provider that runs the graph (the first one the session really holds)."""
        return self.providers[0]

    @property
    def image_shape(self) -> tuple[int | None, int | None, int | None]:
        """(C, H, W) of one input image; None where the graph leaves a dimension free."""
        dims = [d if isinstance(d, int) else None for d in self.input_shape[1:4]]
        return (dims + [None, None, None])[0], (dims + [None, None])[1], (dims + [None, None, None])[2]

    @property
    def class_names(self) -> list[str]:
        names = ((self.config_dict or {}).get("extra") or {}).get("class_names") or []
        return [str(n) for n in names]

    def check(self, shape: tuple[int, ...], lo: float, hi: float, floating: bool) -> None:
        """Raise :class:`InputError` unless ``shape``/range/dtype fit the graph's input."""
        if not floating:
            raise InputError("expected float images in [0, 1] (convert uint8 with x / 255), got an integer array")
        if len(shape) != 4:
            raise InputError(f"expected NCHW images (4 dimensions), got shape {tuple(shape)}")
        fixed = self.input_shape[1:]
        if any(isinstance(want, int) and want != got for want, got in zip(fixed, shape[1:])):
            raise InputError(f"expected images of shape (N, {', '.join(map(str, fixed))}), got {tuple(shape)}")
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise InputError("images contain NaN or infinite values")
        if self.check_range and (lo < 0.0 or hi > 1.0):
            raise InputError(f"expected pixel values in [0, 1], got [{lo:.3g}, {hi:.3g}]; the model normalizes itself")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        array = np.asarray(x)
        if array.size:
            floating = bool(np.issubdtype(array.dtype, np.floating))
            # min and max propagate NaN, and +-inf fails the finiteness test: one pass each, no third one
            lo, hi = (float(array.min()), float(array.max())) if floating else (0.0, 0.0)
            self.check(array.shape, lo, hi, floating)
        return self.run_host(np.ascontiguousarray(array, dtype=self.input_dtype))

    def run_host(self, array: np.ndarray) -> np.ndarray:
        """One run, or (CPU provider, batch above ``micro_batch``) chunks run ``workers`` at a time."""
        n = len(array)
        chunk = self.micro_batch
        if chunk is None or n <= chunk or self.provider != CPU:
            out = self.session.run([self.output_name], {self.input_name: array})[0]
            return np.asarray(out, dtype=np.float32)
        session, pool = self._chunk_runner()
        parts = pool.map(
            lambda i: session.run([self.output_name], {self.input_name: np.ascontiguousarray(array[i : i + chunk])})[0],
            range(0, n, chunk),
        )
        return np.concatenate([np.asarray(part, dtype=np.float32) for part in parts])

    def _chunk_runner(self) -> tuple[Any, ThreadPoolExecutor]:
        """The single-threaded session and the thread pool that run chunks, made on first use."""
        if self._chunk_session is None:
            runtime = ort()
            options = runtime.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            self._chunk_session = runtime.InferenceSession(
                str(self.path), sess_options=options, providers=self._providers_with_options
            )
            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="onnx-chunk")
        assert self._pool is not None
        return self._chunk_session, self._pool

    def top_k(self, logits: np.ndarray, k: int) -> list[list[dict[str, Any]]]:
        """Per row, the ``k`` most probable classes: ``{"class", "name", "probability"}`` (softmax)."""
        z = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(z)
        probs /= probs.sum(axis=1, keepdims=True)
        k = min(k, probs.shape[1])
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        names = self.class_names
        return [
            [
                {"class": int(c), "name": names[c] if c < len(names) else str(int(c)), "probability": float(p[c])}
                for c in row
            ]  # fmt: skip
            for p, row in zip(probs, order)
        ]

    def describe(self) -> dict[str, Any]:
        """What ``GET /metadata`` answers: the model's identity, threat model, figures and where it runs.

        The files beside the ONNX file are used only when they are shown to belong to it: the export's
        record (``onnx.json``) when its sha256 is this file's, and the figures of ``metrics.json`` when
        the folder's ``model.safetensors`` is the very checkpoint the file was exported from (its sha256
        equals the source digest stored inside the ONNX file). Read once, at the first call.
        """
        if self._description is None:
            self._description = self._describe()
        return self._description

    def _describe(self) -> dict[str, Any]:
        config = self.config_dict or {}
        parity = self.parity or {}
        folder, source = self.path.parent, self.metadata.get(META_SOURCE_SHA256)
        sidecar = _json_file(folder / "onnx.json") or {}
        entry = sidecar.get(self.path.name)
        record: dict[str, Any] = entry if isinstance(entry, dict) else {}
        if record and record.get("sha256") != sha256_file(self.path):
            record = {}  # a record of another export: not this file's
        weights = folder / "model.safetensors"
        own_metrics = source is not None and weights.is_file() and sha256_file(weights) == source
        return {
            "file": self.path.name,
            "format": self.metadata.get(META_FORMAT),
            "name": config.get("name"),
            "threat_model": config.get("threat_model"),
            "eps": config.get("eps"),
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "source_sha256": self.metadata.get(META_SOURCE_SHA256),
            "opset": record.get("opset"),
            "sha256": record.get("sha256"),
            "providers_requested": self.providers_requested,
            "provider": self.provider,
            "provider_fallback": self.fallback,
            "parity": parity or None,
            "figures": _figures(folder / "metrics.json") if own_metrics else None,
        }


def _json_file(path: Path, limit: int = 1_000_000) -> dict[str, Any] | None:
    """A small JSON object file, or None (missing, too large, not JSON, not an object)."""
    try:
        if not path.is_file() or path.stat().st_size > limit:
            return None
        return _json_or_none(path.read_text())
    except (OSError, UnicodeDecodeError):
        return None


def _figures(path: Path) -> dict[str, Any] | None:
    """The robustness figures of the checkpoint's ``metrics.json`` beside the file: clean, every attack's
    robust accuracy and the worst case, with the points (n, split) and the threat model they were measured at."""
    metrics = _json_file(path)
    if not metrics or not isinstance(metrics.get("results"), list):
        return None
    entry = metrics.get("data")
    data: dict[str, Any] = entry if isinstance(entry, dict) else {}
    attacks = {}
    for row in metrics["results"]:
        if isinstance(row, dict) and isinstance(row.get("attack"), str):
            attacks[row["attack"]] = {k: row.get(k) for k in ("robust_accuracy", "eps", "norm", "steps", "restarts")}
    return {
        "clean_accuracy": metrics.get("clean_accuracy"),
        "worst_case_accuracy": metrics.get("worst_case_accuracy"),
        "attacks": attacks,
        "data": {k: data.get(k) for k in ("dataset", "split", "n", "indices")},
        "threat_model": metrics.get("threat_model"),
        "source": path.name,
    }


def _json_or_none(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
