"""ONNX Runtime inference with the torch model's call interface.

>>> from arnas_zoo.onnx import OnnxModel
>>> model = OnnxModel("model.onnx")              # providers="auto": CUDA if it really loads, else CPU  # doctest: +SKIP
>>> logits = model(images)                        # [0, 1] NCHW float, torch tensor or numpy array      # doctest: +SKIP
>>> model.provider                                # the provider actually running the graph             # doctest: +SKIP
'CPUExecutionProvider'

Files written by ``python -m export onnx`` carry the model's ``config.json`` (and the parity check
of the export) in their metadata, so ``model.config`` is the same :class:`ModelConfig` the torch twin
has. Normalization is inside the graph, as in the torch model.

Needs the ``onnx`` extra (``pip install arnas-zoo[onnx]``, or ``[onnx-gpu]`` on CUDA machines).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arnas_zoo.config import ModelConfig
from arnas_zoo.errors import ArnasZooError, CheckpointError, ConfigError, InputRangeError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
# Metadata keys written by `python -m export onnx` into the ONNX file (ModelProto.metadata_props).
META_FORMAT = "arnas_zoo.format"
META_CONFIG = "arnas_zoo.config"
META_PARITY = "arnas_zoo.parity"
META_SOURCE_SHA256 = "arnas_zoo.source_sha256"
FORMAT = "arnas-zoo/onnx@1"

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


class ProviderError(ArnasZooError, RuntimeError):
    """The requested ONNX Runtime execution provider is not available or did not load."""


class ProviderFallbackWarning(UserWarning):
    """``providers="auto"`` asked for CUDA, and ONNX Runtime runs the graph on the CPU instead."""


#: CUDA provider options: a heuristic cuDNN algorithm choice. The default exhaustive search benchmarks
#: every algorithm for each new input shape, which makes attacks with varying batch sizes (Square,
#: restarts on the surviving points) spend most of their time searching.
CUDA_OPTIONS = {"cudnn_conv_algo_search": "HEURISTIC"}


def _fallback_message(path: Path) -> str:
    cuda = getattr(torch.version, "cuda", None)
    return (
        f"{path}: the CUDA provider did not load, ONNX Runtime runs this model on the CPU. The usual cause is an "
        f"onnxruntime-gpu build for another CUDA/cuDNN than the one installed (torch is built for CUDA {cuda}); "
        "see the onnxruntime-gpu install matrix, or pass providers='cpu' to silence this"
    )


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ProviderError(
            "onnxruntime is not installed: pip install 'arnas-zoo[onnx]' (CPU) or 'arnas-zoo[onnx-gpu]' (CUDA)"
        ) from None
    return onnxruntime


def _ort_errors() -> tuple[type[BaseException], ...]:
    """The exception classes onnxruntime raises when a file cannot be loaded (they subclass Exception)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "InvalidProtobuf", "InvalidGraph", "NotImplemented")
    return tuple(getattr(state, name) for name in names if hasattr(state, name)) + (RuntimeError, OSError)


def resolve_providers(providers: str | Sequence[str] = "auto") -> list[str]:
    """Turn ``"auto" | "cpu" | "cuda" | [names]`` into the provider list to ask ONNX Runtime for.

    ``"auto"`` asks for CUDA first when this onnxruntime build has it, then CPU; ``"cuda"`` asks
    for CUDA only (and :class:`OnnxModel` then fails if it did not load instead of running on CPU).
    """
    available = list(_ort().get_available_providers())
    if isinstance(providers, str):
        choice = providers.lower()
        if choice == "auto":
            return [CUDA, CPU] if CUDA in available else [CPU]
        if choice == "cpu":
            return [CPU]
        if choice == "cuda":
            if CUDA not in available:
                raise ProviderError(
                    f"providers='cuda': this onnxruntime build has no CUDA provider (available: {available}); "
                    "install onnxruntime-gpu (pip install 'arnas-zoo[onnx-gpu]', without the CPU onnxruntime)"
                )
            return [CUDA]
        raise ConfigError(f"providers: expected 'auto', 'cpu', 'cuda' or a list of provider names, got {providers!r}")
    names = list(providers)
    unknown = [name for name in names if name not in available]
    if unknown:
        raise ProviderError(f"providers {unknown} are not in this onnxruntime build (available: {available})")
    return names


def _usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The arnas-zoo metadata stored in an ONNX file (empty dict for foreign files)."""
    ort = _ort()
    session = ort.InferenceSession(str(path), providers=[CPU])
    return dict(session.get_modelmeta().custom_metadata_map)


class OnnxModel:
    """An ONNX Runtime session that behaves like the torch model it was exported from.

    ``model(x)`` takes float images in [0, 1], NCHW, as a torch tensor or a numpy array, and returns
    logits of the same kind (a CPU tensor for CPU tensors; for CUDA tensors on the CUDA provider the
    input and output stay on the GPU through I/O binding, without a host copy). ``config`` is the
    exported model's ModelConfig when the file carries it, and ``provider`` the execution provider
    that actually runs the graph: ONNX Runtime silently falls back to CPU when the CUDA provider
    cannot load (missing CUDA/cuDNN libraries), so the requested list is not evidence.

    Args:
        path: the .onnx file.
        providers: ``"auto"`` (CUDA if present, else CPU), ``"cpu"``, ``"cuda"`` (error if CUDA does
            not load) or a list of ONNX Runtime provider names.
        threads: CPU threads (None: ONNX Runtime's default for single runs, all usable cores for
            split batches).
        check_range: reject inputs outside [0, 1] (InputRangeError), like a model that normalizes.
        device_id: the GPU the CUDA provider runs on (CUDA tensors passed in must live there).
        micro_batch: on the CPU provider, a batch larger than this runs as chunks of ``micro_batch``
            images, ``threads`` chunks at a time, each on one thread of a second, single-threaded
            session (None: every batch is one run with ``threads`` intra-op threads). Chunks keep
            each run's activations small enough to stay in cache, and one image per thread scales
            where intra-op threading of small convolutions does not: measured on a 2-core AVX-512
            EPYC, the 20-cell C=64 ARNAS at batch 32 ran in 305 ms against 421 ms as one run
            (benchmarks/bench_onnx.py, docs/performance.md). Results equal the single run's to float32 rounding.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        providers: str | Sequence[str] = "auto",
        threads: int | None = None,
        check_range: bool = True,
        device_id: int = 0,
        micro_batch: int | None = 4,
    ) -> None:
        ort = _ort()
        if micro_batch is not None and int(micro_batch) < 1:
            raise ConfigError(f"micro_batch must be a positive number of images or None, got {micro_batch}")
        if threads is not None and int(threads) < 1:
            raise ConfigError(f"threads must be a positive number or None (ONNX Runtime's default), got {threads}")
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: no such ONNX file")
        requested = resolve_providers(providers)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        options.log_severity_level = 3  # warnings about unused initializers are noise for users
        self.device_id = int(device_id)
        with_options = [
            (name, {"device_id": self.device_id, **CUDA_OPTIONS}) if name == CUDA else name for name in requested
        ]
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=with_options)
        except _ort_errors() as exc:
            raise CheckpointError(f"{self.path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0]})") from None
        self.providers_requested = requested
        self.providers = list(self.session.get_providers())
        if requested == [CUDA] and CUDA not in self.providers:
            raise ProviderError(
                f"{self.path}: the CUDA provider did not load (running providers: {self.providers}); "
                "check the CUDA/cuDNN libraries onnxruntime-gpu needs, or use providers='auto'"
            )
        if CUDA in requested and CUDA not in self.providers:
            warnings.warn(_fallback_message(self.path), ProviderFallbackWarning, stacklevel=2)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise CheckpointError(f"{self.path}: expected one image input, got {[i.name for i in inputs]}")
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        self.input_dtype = _ORT_TYPES.get(inputs[0].type, np.float32)
        self.output_dtype = _ORT_TYPES.get(outputs[0].type, np.float32)
        self.input_shape = list(inputs[0].shape)
        self.num_classes = outputs[0].shape[-1] if isinstance(outputs[0].shape[-1], int) else None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.config: ModelConfig | None = None
        if META_CONFIG in self.metadata:
            self.config = ModelConfig.from_json(self.metadata[META_CONFIG])
        self.parity: dict[str, Any] | None = (
            json.loads(self.metadata[META_PARITY]) if META_PARITY in self.metadata else None
        )
        self.check_range = check_range
        self.micro_batch = None if micro_batch is None else int(micro_batch)
        self.workers = int(threads) if threads is not None else _usable_cores()
        self._providers_with_options = with_options
        self._chunk_session: Any = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def provider(self) -> str:
        """The execution provider that runs the graph (the first one the session really holds)."""
        return self.providers[0]

    # An ONNX graph is always in inference mode; these let attack helpers that save and restore a
    # torch model's training flag (model.training, model.train(False), model.eval()) run unchanged.
    training = False

    def eval(self) -> OnnxModel:
        """No-op, so that code written for torch models (``model.eval()``) runs unchanged."""
        return self

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """No trainable parameters (the weights are constants of the graph); for attack helpers."""
        return iter(())

    def train(self, mode: bool = True) -> OnnxModel:
        """Accepts ``train(False)``; an exported graph cannot train, so ``train(True)`` raises."""
        if mode:
            raise ConfigError("an ONNX model runs in inference mode only; train the PyTorch model instead")
        return self

    def _check(self, shape: tuple[int, ...], lo: float, hi: float, floating: bool) -> None:
        if not floating:
            raise InputRangeError("expected float images in [0, 1] (convert uint8 with x / 255), got an integer array")
        if len(shape) != 4:
            raise InputRangeError(f"expected NCHW images (4 dimensions), got shape {tuple(shape)}")
        fixed = self.input_shape[1:]
        if any(isinstance(want, int) and want != got for want, got in zip(fixed, shape[1:])):
            raise InputRangeError(f"expected images of shape (N, {', '.join(map(str, fixed))}), got {tuple(shape)}")
        if self.check_range and (lo < 0.0 or hi > 1.0):
            raise InputRangeError(
                f"expected pixel values in [0, 1], got [{lo:.3g}, {hi:.3g}]; the model normalizes itself"
            )

    def __call__(self, x: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        if isinstance(x, torch.Tensor):
            x = x.detach()
            if x.numel():
                self._check(tuple(x.shape), float(x.min()), float(x.max()), x.is_floating_point())
            if x.is_cuda and self.provider == CUDA:
                return self._run_cuda(x)
            array = x.to("cpu", dtype=torch.float32).numpy().astype(self.input_dtype, copy=False)
            return torch.from_numpy(self._run_host(array)).to(x.device)
        array = np.asarray(x)
        if array.size:
            self._check(array.shape, float(array.min()), float(array.max()), np.issubdtype(array.dtype, np.floating))
        return self._run_host(np.ascontiguousarray(array, dtype=self.input_dtype))

    def _run_host(self, array: np.ndarray) -> np.ndarray:
        """One run, or (CPU provider, batch above ``micro_batch``) chunks run ``workers`` at a time."""
        n = len(array)
        chunk = self.micro_batch
        if chunk is None or n <= chunk or self.provider != CPU:
            out = self.session.run([self.output_name], {self.input_name: array})[0]
            return np.asarray(out, dtype=np.float32)
        session, pool = self._chunk_runner()
        starts = range(0, n, chunk)
        parts = pool.map(
            lambda i: session.run([self.output_name], {self.input_name: np.ascontiguousarray(array[i : i + chunk])})[0],
            starts,
        )
        return np.concatenate([np.asarray(part, dtype=np.float32) for part in parts])

    def _chunk_runner(self) -> tuple[Any, ThreadPoolExecutor]:
        """The single-threaded session and the thread pool that run chunks, made on first use."""
        if self._chunk_session is None:
            ort = _ort()
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            self._chunk_session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=self._providers_with_options
            )
            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="onnx-chunk")
        assert self._pool is not None
        return self._chunk_session, self._pool

    forward = __call__

    def _run_cuda(self, x: torch.Tensor) -> torch.Tensor:
        """Run on the CUDA provider with the tensor's GPU memory bound directly (no host round trip).

        The output buffer is allocated by torch on the same device, so the result is an ordinary
        CUDA tensor; ONNX Runtime writes into it. Shapes: (N, C, H, W) -> (N, num_classes).
        """
        if self.num_classes is None:
            raise CheckpointError(f"{self.path}: the output's class dimension is not static; cannot bind CUDA output")
        dtype = torch.float16 if self.input_dtype == np.float16 else torch.float32
        out_dtype = torch.float16 if self.output_dtype == np.float16 else torch.float32
        x = x.to(dtype=dtype).contiguous()
        device_id = x.device.index or 0
        if device_id != self.device_id:
            raise InputRangeError(
                f"input is on cuda:{device_id}, the session runs on cuda:{self.device_id} (OnnxModel(device_id=...))"
            )
        out = torch.empty((x.shape[0], self.num_classes), dtype=out_dtype, device=x.device)
        binding = self.session.io_binding()
        binding.bind_input(self.input_name, "cuda", device_id, self.input_dtype, tuple(x.shape), x.data_ptr())
        binding.bind_output(self.output_name, "cuda", device_id, self.output_dtype, tuple(out.shape), out.data_ptr())
        # ORT may run on its own CUDA stream: make the producer of `x` finish first.
        torch.cuda.current_stream(x.device).synchronize()
        self.session.run_with_iobinding(binding)
        return out.float()

    def __repr__(self) -> str:
        name = self.config.name if self.config is not None else None
        return f"OnnxModel({str(self.path)!r}, provider={self.provider!r}, name={name!r})"
