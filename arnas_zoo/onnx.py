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

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from arnas_zoo.config import ModelConfig
from arnas_zoo.errors import ArnasZooError, CheckpointError, ConfigError, InputRangeError
from arnas_zoo_runtime import session as _rt
from arnas_zoo_runtime.session import (  # noqa: F401  (re-exported: the names this module always had)
    CPU,
    CUDA,
    CUDA_OPTIONS,
    FORMAT,
    META_CONFIG,
    META_FORMAT,
    META_PARITY,
    META_SOURCE_SHA256,
    Predictor,
    ProviderFallbackWarning,
)


class ProviderError(ArnasZooError, _rt.ProviderError):
    """The requested ONNX Runtime execution provider is not available or did not load."""


def _translated(exc: _rt.RuntimeFault) -> ArnasZooError:
    """The torch package's error class for one of the runtime's."""
    if isinstance(exc, _rt.ProviderError):
        return ProviderError(str(exc))
    if isinstance(exc, _rt.ModelFileError):
        return CheckpointError(str(exc))
    return ConfigError(str(exc))


def resolve_providers(providers: str | Sequence[str] = "auto") -> list[str]:
    """Turn ``"auto" | "cpu" | "cuda" | [names]`` into the provider list to ask ONNX Runtime for.

    ``"auto"`` asks for CUDA first when this onnxruntime build has it, then CPU; ``"cuda"`` asks
    for CUDA only (and :class:`OnnxModel` then fails if it did not load instead of running on CPU).
    """
    try:
        return _rt.resolve_providers(providers)
    except _rt.RuntimeFault as exc:
        raise _translated(exc) from None


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The arnas-zoo metadata stored in an ONNX file (empty dict for foreign files)."""
    session = _rt.ort().InferenceSession(str(path), providers=[CPU])
    return dict(session.get_modelmeta().custom_metadata_map)


class OnnxModel(Predictor):
    """An ONNX Runtime session that behaves like the torch model it was exported from.

    ``model(x)`` takes float images in [0, 1], NCHW, as a torch tensor or a numpy array, and returns
    logits of the same kind (a CPU tensor for CPU tensors; for CUDA tensors on the CUDA provider the
    input and output stay on the GPU through I/O binding, without a host copy). ``config`` is the
    exported model's ModelConfig when the file carries it, and ``provider`` the execution provider
    that actually runs the graph: ONNX Runtime silently falls back to CPU when the CUDA provider
    cannot load (missing CUDA/cuDNN libraries), so the requested list is not evidence.

    The numpy path is :class:`arnas_zoo_runtime.Predictor` (torch-free, for deployments); its
    arguments are this class's. ``micro_batch`` chunks: measured on a 2-core AVX-512 EPYC, the 20-cell
    C=64 ARNAS at batch 32 ran in 305 ms against 421 ms as one run (benchmarks/bench_onnx.py,
    docs/performance.md).
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
        try:
            super().__init__(path, providers, threads, check_range, device_id, micro_batch, torch.version.cuda)
        except _rt.RuntimeFault as exc:
            raise _translated(exc) from None
        self.config: ModelConfig | None = None
        if META_CONFIG in self.metadata:
            self.config = ModelConfig.from_json(self.metadata[META_CONFIG])

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

    def check(self, shape: tuple[int, ...], lo: float, hi: float, floating: bool) -> None:
        try:
            super().check(shape, lo, hi, floating)
        except _rt.InputError as exc:
            raise InputRangeError(str(exc)) from None

    def __call__(self, x: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:  # type: ignore[override]
        if isinstance(x, torch.Tensor):
            x = x.detach()
            if x.numel():
                self.check(tuple(x.shape), float(x.min()), float(x.max()), x.is_floating_point())
            if x.is_cuda and self.provider == CUDA:
                return self._run_cuda(x)
            array = x.to("cpu", dtype=torch.float32).numpy().astype(self.input_dtype, copy=False)
            return torch.from_numpy(self.run_host(array)).to(x.device)
        return super().__call__(x)

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
