"""Checkpoint folders: ``config.json`` + ``model.safetensors`` (+ ``metrics.json``).

This is the format every part of the project exchanges (DESIGN.md, "The files that connect the
parts"): training writes it, evaluation and export read it, the Hub holds it. Weights are
safetensors only (never pickle) and are loaded strictly: a missing, unexpected or misshapen tensor
is an error, never silently random weights. Files are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from arnas_zoo.errors import CheckpointError, ConfigError
from arnas_zoo.network import ModelConfig, ZooModel, build_model

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_folder(
    model: ZooModel,
    folder: str | Path,
    metrics: Mapping[str, Any] | None = None,
    config: ModelConfig | None = None,
) -> Path:
    """Write ``model`` (its ``config`` unless given) as a checkpoint folder; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = config or model.config
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tmp = folder / f".{WEIGHTS_FILE}.tmp-{os.getpid()}"
    save_file(state, str(tmp), metadata={"format": "pt", "config_name": str(config.name)})
    os.replace(tmp, folder / WEIGHTS_FILE)
    atomic_write_text(folder / CONFIG_FILE, config.to_json() + "\n")
    if metrics is not None:
        atomic_write_json(folder / METRICS_FILE, dict(metrics))
    return folder


def read_config(folder: str | Path) -> ModelConfig:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{path}: no {CONFIG_FILE}; expected a checkpoint folder with config.json and model.safetensors"
        )
    try:
        return ModelConfig.from_json(path.read_text())
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def read_metrics(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / METRICS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: malformed JSON ({exc})") from None


def load_state(model: torch.nn.Module, weights: str | Path) -> None:
    """Load safetensors ``weights`` into ``model`` strictly, with a one-line error on mismatch."""
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights}: unreadable safetensors file ({exc})") from None
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshapen = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or misshapen:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if misshapen:
            k = misshapen[0]
            parts.append(
                f"{len(misshapen)} misshapen (e.g. {k}: expected {tuple(own[k].shape)}, got {tuple(state[k].shape)})"
            )
        raise CheckpointError(f"{weights}: weights do not fit the config: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def load_folder(folder: str | Path, device: str | torch.device = "cpu", expected_sha256: str | None = None) -> ZooModel:
    """Rebuild the model of a checkpoint folder, load its weights strictly, return it in eval mode.

    The returned model carries ``config`` and ``metrics`` (None when the folder has no
    metrics.json) as attributes.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(
            f"{folder}: not a directory; expected a checkpoint folder (config.json + model.safetensors)"
        )
    config = read_config(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(
            f"{weights}: missing; a checkpoint folder needs {WEIGHTS_FILE} (pickle files are not read)"
        )
    if expected_sha256 is not None:
        got = sha256_file(weights)
        if got != expected_sha256:
            raise CheckpointError(
                f"{weights}: sha256 {got[:12]}... does not match the expected {expected_sha256[:12]}..."
            )
    model = build_model(config)
    load_state(model, weights)
    model.metrics = read_metrics(folder)  # type: ignore[assignment]
    return model.to(device).eval()
