"""Checkpoint folders: ``config.json`` + ``model.safetensors`` (+ ``metrics.json``).

This is the format every part of the project exchanges (DESIGN.md, "The files that connect the
parts"): training writes it, evaluation and export read it, the Hub holds it. Weights are
safetensors only (never pickle) and are loaded strictly: a missing, unexpected, misshapen,
non-float32 or non-finite tensor is an error, never silently random or broken weights. Every file
is untrusted input: its size is bounded and its config validated before the network is built.
Files are written atomically.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arnas_zoo.atomic import atomic_write_json, atomic_write_text, replacing
from arnas_zoo.config import ModelConfig
from arnas_zoo.errors import CheckpointError, ConfigError
from arnas_zoo_runtime.digest import sha256_file  # noqa: F401  (one implementation, torch-free; re-exported)

if TYPE_CHECKING:  # torch is imported where tensors are handled, so listing the zoo stays light
    import torch

    from arnas_zoo.models import ZooModel

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
MAX_JSON_FILE_BYTES = 20_000_000


def save_folder(
    model: ZooModel,
    folder: str | Path,
    metrics: Mapping[str, Any] | None = None,
    config: ModelConfig | None = None,
) -> Path:
    """Write ``model`` (its ``config`` unless given) as a checkpoint folder; returns the folder."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = config or model.config
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", "config_name": str(config.name), ARCH_DIGEST_KEY: architecture_digest(config)}
    with replacing(folder / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata=metadata)
        canonical_header(tmp)
    atomic_write_text(folder / CONFIG_FILE, config.to_json() + "\n")
    if metrics is not None:
        atomic_write_json(folder / METRICS_FILE, dict(metrics))
    return folder


def _read_json_file(path: Path) -> Any:
    from arnas_zoo.genotype import parse_json

    try:
        if path.stat().st_size > MAX_JSON_FILE_BYTES:
            raise CheckpointError(f"{path}: {path.stat().st_size} bytes exceed the limit of {MAX_JSON_FILE_BYTES}")
        text = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return parse_json(text)
    except ValueError as exc:  # GenotypeError from the bounded parser
        raise CheckpointError(f"{path}: {str(exc).removeprefix('$: ')}") from None


def read_config(folder: str | Path) -> ModelConfig:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{path}: no {CONFIG_FILE}; expected a checkpoint folder with config.json and model.safetensors"
        )
    try:
        return ModelConfig.from_dict(_read_json_file(path))
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def read_metrics(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / METRICS_FILE
    if not path.is_file():
        return None
    data = _read_json_file(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _check_tensors(state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], weights: Path) -> None:
    import torch

    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshapen = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    wrong_type = [k for k in own if k in state and state[k].dtype != own[k].dtype]
    if missing or unexpected or misshapen or wrong_type:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0][:80]})")
        if misshapen:
            k = misshapen[0]
            parts.append(
                f"{len(misshapen)} misshapen (e.g. {k}: expected {tuple(own[k].shape)}, got {tuple(state[k].shape)})"
            )
        if wrong_type:
            k = wrong_type[0]
            parts.append(
                f"{len(wrong_type)} of the wrong dtype (e.g. {k}: expected {own[k].dtype}, got {state[k].dtype})"
            )
        raise CheckpointError(f"{weights}: weights do not fit the config: " + "; ".join(parts))
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{weights}: {len(bad)} tensors hold NaN or infinite values (e.g. {bad[0]})")


def load_weights_into(model: torch.nn.Module, weights: str | Path) -> None:
    """Load safetensors ``weights`` into ``model`` strictly, with a one-line error on any mismatch."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = Path(weights)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{weights}: unreadable safetensors file ({str(exc)[:120]})") from None
    _check_tensors(state, model.state_dict(), weights)
    model.load_state_dict(state, strict=True)


MAX_HEADER_BYTES = 64 * 1024 * 1024
ARCH_DIGEST_KEY = "arnas_zoo_architecture_sha256"
#: config fields that do not change what the weights compute (names, training-only settings, notes)
_NOT_ARCHITECTURE = ("name", "eps", "threat_model", "extra", "auxiliary", "auxiliary_weight", "drop_path_prob")


def architecture_digest(config: ModelConfig) -> str:
    """sha256 of what the network computes: genotype, macro, classes, input and normalisation. Saved with the
    weights, it catches weight-free edits of config.json (an op swapped for another without parameters)."""
    fields = {k: v for k, v in config.to_dict().items() if k not in _NOT_ARCHITECTURE}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def canonical_header(path: str | Path) -> None:
    """Rewrite a safetensors file's header with its keys sorted, in place, so that the same tensors and
    metadata always give the same bytes (safetensors writes its metadata in hash-map order, which varies
    between runs: a retrained file's sha256 was not reproducible). Same length, same data offsets."""
    path = Path(path)
    with open(path, "r+b") as fh:
        size = int.from_bytes(fh.read(8), "little")
        raw = fh.read(size)
        header = json.loads(raw)
        text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        if len(text) > size:  # never: the same characters in another order
            raise CheckpointError(f"{path}: cannot canonicalise its header ({len(text)} > {size} bytes)")
        fh.seek(8)
        fh.write(text + b" " * (size - len(text)))


def safetensors_header(weights: str | Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """``({tensor name: shape}, metadata)`` from a safetensors file's header alone, read once and bounded
    (no tensor is read or allocated)."""
    from arnas_zoo.safe_json import parse_json

    weights = Path(weights)
    with open(weights, "rb") as fh:
        head = fh.read(8)
        size = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < size <= min(MAX_HEADER_BYTES, weights.stat().st_size - 8):
            raise CheckpointError(f"{weights}: unreadable safetensors file (header length {size})")
        header = parse_json(fh.read(size), where=str(weights), what="safetensors header")
    if not isinstance(header, dict):
        raise CheckpointError(f"{weights}: unreadable safetensors file (header is not a JSON object)")
    shapes: dict[str, tuple[int, ...]] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise CheckpointError(f"{weights}: tensor {str(name)[:60]!r} has no valid shape in the header")
        shapes[str(name)] = tuple(shape)
    meta = header.get("__metadata__")
    metadata = {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}
    return shapes, metadata


def safetensors_shapes(weights: str | Path) -> dict[str, tuple[int, ...]]:
    """``{tensor name: shape}`` of a safetensors file, from its header (see :func:`safetensors_header`)."""
    return safetensors_header(weights)[0]


def check_weights_fit(config: ModelConfig, weights: str | Path) -> None:
    """Refuse weights that cannot belong to ``config`` before the network is built.

    First a count (no building): a config that describes far more parameters than the file holds is
    refused at once (a 1.5 KB config.json asking for C=512 beside small weights). Then the exact shapes,
    from the network built on PyTorch's ``meta`` device, which allocates no memory. Last, the architecture
    digest saved with the weights: same shapes but an edited parameter-free part (an op, the input).
    """
    import math

    import torch

    from arnas_zoo.models import build_model
    from arnas_zoo.models.base import get_family

    shapes, metadata = safetensors_header(weights)
    held = sum(math.prod(shape) for shape in shapes.values())
    estimate_params = get_family(config.arch).estimate_params
    if estimate_params is not None:
        estimate = estimate_params(config)
        if estimate > 4 * held + 100_000:
            raise CheckpointError(
                f"{weights}: the config describes about {estimate:.3g} parameters but the file holds {held:.3g} "
                "values: the weights do not fit the config (nothing was built)"
            )
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in build_model(config).state_dict().items()}
    except (RuntimeError, NotImplementedError, TypeError):
        expected = None  # a builder that cannot run on meta tensors: the strict load after building checks shapes
    if expected is not None:
        _check_shapes(expected, shapes, weights)
    recorded = metadata.get(ARCH_DIGEST_KEY)
    if recorded is not None and recorded != architecture_digest(config):
        raise CheckpointError(
            f"{weights}: config.json describes another network than the one these weights were saved with "
            "(same shapes, so an edit of parameter-free parts: an op, the normalisation, the input); "
            "restore the config.json saved with them"
        )


def _check_shapes(expected: Mapping[str, tuple[int, ...]], shapes: Mapping[str, tuple[int, ...]], weights: Any) -> None:
    missing = sorted(set(expected) - set(shapes))
    extra = sorted(set(shapes) - set(expected))
    wrong = [k for k in expected if k in shapes and shapes[k] != expected[k]]
    if not (missing or extra or wrong):
        return
    detail = (
        f"{wrong[0]} is {shapes[wrong[0]]} in the file, the config needs {expected[wrong[0]]}"
        if wrong
        else f"missing {missing[:2]}"
        if missing
        else f"unexpected {extra[:2]}"
    )
    raise CheckpointError(
        f"{weights}: the weights do not fit the config ({len(wrong)} misshapen, {len(missing)} missing, "
        f"{len(extra)} unexpected; {detail}); nothing was allocated"
    )


def verify_pins(folder: Path, pins: Mapping[str, str]) -> None:
    """Each pinned file of ``folder`` must have its pinned sha256 (a registry name means these exact files)."""
    for name, expected in pins.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing, but the registry pins it (sha256 {expected[:12]}...)")
        got = sha256_file(path)
        if got != expected:
            raise CheckpointError(
                f"{path}: sha256 {got[:12]}... does not match the pinned {expected[:12]}...; the file was changed "
                "after it was registered (reinstall arnas-zoo, or load the folder by path to use it anyway)"
            )


def strip_auxiliary_head(folder: str | Path) -> int:
    """Remove a cell network's auxiliary head from checkpoint ``folder`` in place; returns its parameter count.

    The head (DARTS' auxiliary classifier) only adds a training loss: evaluation, attacks and export
    never run it, yet at the zoo's reduced sizes it holds most of the weights (407k of the 417k
    parameters of ARNAS at C=4, 5 cells, on MNIST). ``config.json`` gets ``"auxiliary": false`` and
    ``extra.auxiliary_head_removed`` (the count), and the stripped weights are checked to load
    strictly before anything is replaced. A checkpoint without the head is left alone (0). Pins of a
    registered folder change: re-pin it.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    folder = Path(folder)
    raw = _read_json_file(folder / CONFIG_FILE)
    weights = folder / WEIGHTS_FILE
    with safe_open(str(weights), framework="pt") as fh:
        metadata = fh.metadata()
        state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open is not a mapping)
    head = [k for k in state if k.startswith("auxiliary_head.")]
    if not raw.get("auxiliary", True) or not head:
        return 0
    from arnas_zoo.models import build_model

    learned = dict(build_model(ModelConfig.from_dict(raw)).named_parameters())  # the head's buffers do not count
    removed = sum(state[k].numel() for k in head if k in learned)
    kept = {k: v for k, v in state.items() if k not in head}
    raw["auxiliary"] = False
    raw["extra"] = dict(raw.get("extra") or {}, auxiliary_head_removed=removed)
    model = build_model(ModelConfig.from_dict(raw))
    _check_tensors(kept, model.state_dict(), weights)
    model.load_state_dict(kept, strict=True)  # raises before any file is touched
    with replacing(weights) as tmp:
        save_file(kept, str(tmp), metadata=metadata)
        canonical_header(tmp)
    atomic_write_json(folder / CONFIG_FILE, raw)
    return removed


def load_folder(
    folder: str | Path, device: str | torch.device = "cpu", expected_sha256: str | Mapping[str, str] | None = None
) -> ZooModel:
    """Rebuild the model of a checkpoint folder, load its weights strictly, return it in eval mode.

    ``expected_sha256``: the weights' sha256, or ``{file name: sha256}`` pins checked before anything
    is read. The returned model carries ``config`` and ``metrics`` (None when the folder has no
    metrics.json) as attributes.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(
            f"{folder}: not a directory; expected a checkpoint folder (config.json + model.safetensors)"
        )
    if expected_sha256 is not None:
        pins = {WEIGHTS_FILE: expected_sha256} if isinstance(expected_sha256, str) else dict(expected_sha256)
        verify_pins(folder, pins)
    config = read_config(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(
            f"{weights}: missing; a checkpoint folder needs {WEIGHTS_FILE} (pickle files are not read)"
        )
    metrics = read_metrics(folder)
    from arnas_zoo.models import build_model, check_config

    try:
        check_config(config)
    except ConfigError as exc:
        raise CheckpointError(f"{folder / CONFIG_FILE}: {exc}") from None
    check_weights_fit(config, weights)  # before anything is allocated: config.json alone must not decide
    model = build_model(config)
    load_weights_into(model, weights)
    model.metrics = metrics  # type: ignore[assignment]
    return model.to(device).eval()
