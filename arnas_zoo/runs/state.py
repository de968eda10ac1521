"""The resume state of every run (training and every search): safetensors + a JSON header, one digest.

A state file holds tensors (weights, optimizer buffers, RNG states, architecture tensors, ...) and a
JSON header (position, history, settings). One SHA-256 covers the header text *and* every tensor's
name, dtype, shape and bytes, so an edited header (``"epoch": 2``) is refused exactly like a flipped
bit in a weight. Nothing is pickled: ``torch.load`` appears nowhere in this project.

Writes are atomic (a temporary file, fsync, rename) and keep the previous good state beside the new
one (``<name>.prev.safetensors``), so a latest state that fails verification can be set aside and the
run resumed from the one before (``load_state(..., previous=True)``; ``--resume-previous`` on the
command lines).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arnas_zoo.atomic import replacing
from arnas_zoo.errors import CheckpointError

HEADER_KEY = "header"
DIGEST_KEY = "digest"


def previous_path(path: Path) -> Path:
    """Where the state before ``path`` is kept: ``state.safetensors`` -> ``state.prev.safetensors``."""
    return path.with_name(path.name.removesuffix(".safetensors") + ".prev.safetensors")


def _digest(header_text: str, tensors: Mapping[str, torch.Tensor]) -> str:
    digest = hashlib.sha256(header_text.encode())
    for key in sorted(tensors):
        t = tensors[key]
        digest.update(f"\0{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        flat = t.contiguous().reshape(-1)
        if flat.numel():
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _fsync_write(path: Path, write: Any) -> None:
    write(path)
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def save_state(path: str | Path, tensors: Mapping[str, torch.Tensor], header: Mapping[str, Any]) -> Path:
    """Write ``tensors`` and the JSON-able ``header`` atomically; the previous file becomes ``.prev``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu = {k: v.detach().to("cpu").clone(memory_format=torch.contiguous_format) for k, v in tensors.items()}
    header_text = json.dumps(dict(header), sort_keys=True, allow_nan=True)
    metadata = {HEADER_KEY: header_text, DIGEST_KEY: _digest(header_text, cpu)}
    with replacing(path) as tmp:  # the new state replaces `path` last, once the previous one is kept
        _fsync_write(tmp, lambda p: save_file(cpu, str(p), metadata=metadata))
        if path.exists():  # keep the last good state: a hard link renamed into place, so `path` never disappears
            link = path.with_name(f".{path.name}.link-{os.getpid()}")
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            try:
                os.link(path, link)
            except OSError:  # file systems without hard links: copy
                import shutil

                shutil.copyfile(path, link)
            os.replace(link, previous_path(path))
    return path


def read_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify one state file; anything wrong raises a one-line :class:`CheckpointError`."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no saved state to resume from; start without --resume")
    try:
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            for key in fh.keys():  # noqa: SIM118 (safe_open is not a mapping)
                tensors[key] = fh.get_tensor(key)
        header_text, stored = metadata[HEADER_KEY], metadata[DIGEST_KEY]
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise CheckpointError(
            f"{path}: unreadable state ({type(exc).__name__}); it is corrupt or not an arnas-zoo state. "
            f"{_what_to_do(path)}"
        ) from None
    if _digest(header_text, tensors) != stored:
        raise CheckpointError(f"{path}: digest mismatch: the state was modified or corrupted. {_what_to_do(path)}")
    try:
        header = json.loads(header_text)
    except ValueError:
        raise CheckpointError(f"{path}: malformed header. {_what_to_do(path)}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: malformed header. {_what_to_do(path)}")
    return tensors, header


def _what_to_do(path: Path) -> str:
    prev = previous_path(path)
    if prev.is_file():
        return f"Resume from the state before it ({prev.name}) with --resume-previous, or start a new run"
    return "Delete the run folder to start over"


def load_state(
    path: str | Path, *, schema: str, previous: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The verified state at ``path`` (or the one kept before it) with its header's ``schema`` checked."""
    path = Path(path)
    source = previous_path(path) if previous else path
    tensors, header = read_state(source)
    if header.get("schema") != schema:
        raise CheckpointError(f"{source}: expected a {schema!r} state, got {str(header.get('schema'))[:60]!r}")
    return tensors, header


# ---- pieces every state holds ---------------------------------------------------------------------
def prefixed(prefix: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}/{k}": v for k, v in tensors.items()}


def unprefixed(prefix: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    start = len(prefix) + 1
    return {k[start:]: v for k, v in tensors.items() if k.startswith(prefix + "/")}


def load_module(module: torch.nn.Module, weights: Mapping[str, torch.Tensor], where: str) -> None:
    """Strict ``load_state_dict`` with a one-line :class:`CheckpointError`."""
    try:
        module.load_state_dict(dict(weights), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{where}: weights do not fit the model ({str(exc).splitlines()[0]})") from None


def optimizer_state(optimizer: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state dict split into tensors (under ``prefix``) and JSON."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    state_meta: dict[str, dict[str, Any]] = {}
    for index, entries in sd["state"].items():
        state_meta[str(index)] = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                name = f"{prefix}/{index}/{key}"
                tensors[name] = value
                state_meta[str(index)][key] = {"__tensor__": name}
            else:
                state_meta[str(index)][key] = value
    return tensors, {"state": state_meta, "param_groups": sd["param_groups"]}


def load_optimizer(
    optimizer: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any], where: str
) -> None:
    try:
        state: dict[int, Any] = {
            int(index): {
                key: tensors[value["__tensor__"]] if isinstance(value, dict) and "__tensor__" in value else value
                for key, value in entries.items()
            }
            for index, entries in meta["state"].items()
        }
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{where}: optimizer state does not fit ({type(exc).__name__}: {exc})"[:300]) from None


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The global RNG states (torch, CUDA, numpy, python): tensors and JSON."""
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = state
    np_state: Any = np.random.get_state()  # the legacy tuple (name, keys, pos, has_gauss, cached)
    tensors["rng/numpy_keys"] = torch.from_numpy(np.asarray(np_state[1], dtype=np.int64))
    py_state = random.getstate()
    meta: dict[str, Any] = {
        "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    return tensors, meta


def restore_rng(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    torch.set_rng_state(tensors["rng/torch"])
    cuda = sorted(k for k in tensors if k.startswith("rng/cuda/"))
    if cuda and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):  # fewer GPUs now than when saved: keep the fresh states
            torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["rng/numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
