"""ONNX export of a checkpoint folder, checked for validity and for parity with PyTorch.

The exporter is ``torch.onnx.export`` with ``dynamo=True`` (the torch.export-based exporter, the
default since torch 2.9), a dynamic batch dimension, and every weight inside the one .onnx file
(``external_data=False``). After export:

1. ``onnx.checker.check_model(path, full_check=True)`` (structure plus shape inference);
2. parity on real images: ONNX Runtime (CPU provider) against PyTorch eager on the same batch;
   fp32 passes when max |ONNX - PyTorch| <= 1e-4 and the top-1 classes are identical. fp16 passes
   when the difference stays within 1e-2 * (1 + max |logit|) and top-1 differs only on near-ties
   (rows whose fp32 top-2 margin is below that tolerance).

The result is recorded twice: in the ONNX file's metadata (with the model's config.json, so the
file is self-describing) and in ``onnx.json`` inside the checkpoint folder (one entry per exported
file, keyed by its path relative to the folder).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arnas_zoo.atomic import atomic_write_json, replacing
from arnas_zoo.checkpoint import WEIGHTS_FILE, load_folder, sha256_file
from arnas_zoo.config import ModelConfig
from arnas_zoo.errors import CheckpointError, DataNotFoundError
from arnas_zoo.images import read_npz_batch
from arnas_zoo.onnx import FORMAT, META_CONFIG, META_FORMAT, META_PARITY, META_SOURCE_SHA256, OnnxModel

ONNX_RECORD = "onnx.json"
FP32_TOLERANCE = 1e-4


class ParityError(CheckpointError):
    """The exported ONNX file does not compute what the PyTorch model computes."""


@dataclass(frozen=True)
class ParityReport:
    """How closely ONNX Runtime reproduces PyTorch on a batch of real images."""

    images: str
    n: int
    dtype: str
    max_abs_diff: float
    tolerance: float
    top1_agreement: float
    top1_mismatches_not_near_tie: int
    provider: str
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_images(config: ModelConfig, n: int) -> tuple[torch.Tensor, str]:
    """Real images matching ``config``'s input: its training dataset's evaluation points
    (:func:`arnas_zoo.data.evaluation_data`: the test split, or CIFAR-10's validation rows offline)."""
    from arnas_zoo.data import evaluation_data

    by_shape = {(1, 28, 10): "mnist", (1, 16, 10): "digits", (3, 32, 10): "cifar10", (3, 32, 100): "cifar100"}
    dataset = dict(config.extra or {}).get("dataset") or by_shape.get(
        (config.in_channels, config.input_size, config.num_classes)
    )
    if not isinstance(dataset, str):
        raise DataNotFoundError(
            f"no known dataset of shape {config.in_channels}x{config.input_size}x{config.input_size} with "
            f"{config.num_classes} classes for the parity check; pass --images FILE.npz"
        )
    data = evaluation_data(dataset, n=n)
    info = data.describe()
    return data.x, f"{info['dataset']} {info['split']} (official indices {info['indices']})"


def export_onnx(
    model: torch.nn.Module,
    output: str | os.PathLike[str],
    example: torch.Tensor,
    opset: int | None = None,
    fp16: bool = False,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Export ``model`` (eval mode, CPU) to one self-contained ONNX file with a dynamic batch axis."""
    import onnx

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu").eval()
    example = example.to("cpu")
    if fp16:
        model = model.half()
        example = example.half()
    # Two rows so the exporter cannot specialise the batch dimension to 1.
    if example.shape[0] < 2:
        example = example.repeat(2, 1, 1, 1)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.export's informational warnings are not user errors
        program = torch.onnx.export(
            model,
            (example,),
            None,
            dynamo=True,
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            opset_version=opset,
            external_data=False,
            verbose=False,
        )
    if program is None:  # pragma: no cover - dynamo=True always returns a program
        raise CheckpointError("torch.onnx.export returned no program")
    proto = program.model_proto
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    # Write next to the target then rename, so a crash never leaves a half-written model.onnx.
    with replacing(output) as tmp:
        onnx.save_model(proto, str(tmp), save_as_external_data=False)
    onnx.checker.check_model(str(output), full_check=True)
    return output


def check_parity(
    model: torch.nn.Module, onnx_path: str | os.PathLike[str], images: torch.Tensor, label: str
) -> ParityReport:
    """Compare ONNX Runtime (CPU provider) with PyTorch on ``images``; see the module docstring."""
    session = OnnxModel(onnx_path, providers="cpu", check_range=True)
    with torch.no_grad():
        reference = model.to("cpu").float().eval()(images.float()).numpy().astype(np.float64)
    got = np.asarray(session(images.numpy()), dtype=np.float64)
    diff = float(np.abs(got - reference).max())
    fp16 = session.input_dtype == np.float16
    tolerance = 1e-2 * (1.0 + float(np.abs(reference).max())) if fp16 else FP32_TOLERANCE
    ref_top1, got_top1 = reference.argmax(1), got.argmax(1)
    mismatch = ref_top1 != got_top1
    if fp16:
        top2 = np.sort(reference, axis=1)[:, -2:]
        near_tie = (top2[:, 1] - top2[:, 0]) < tolerance
        hard = int((mismatch & ~near_tie).sum())
    else:
        hard = int(mismatch.sum())
    return ParityReport(
        images=label,
        n=int(len(images)),
        dtype="float16" if fp16 else "float32",
        max_abs_diff=diff,
        tolerance=tolerance,
        top1_agreement=float(1.0 - mismatch.mean()),
        top1_mismatches_not_near_tie=hard,
        provider=session.provider,
        passed=bool(diff <= tolerance and hard == 0),
    )


def export_folder(
    folder: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    opset: int | None = None,
    fp16: bool = False,
    images: str | os.PathLike[str] | None = None,
    n: int = 64,
) -> tuple[Path, ParityReport]:
    """Export checkpoint ``folder`` to ONNX (default ``FOLDER/model.onnx``), check it, record it.

    Raises ParityError (after writing ``onnx.json`` with the failing figures) when the parity check
    fails; the .onnx file is then removed so that a failing export is never shipped by accident.
    """
    import onnx
    import onnxruntime

    folder = Path(folder)
    model = load_folder(folder, device="cpu")
    config = model.config
    if images is not None:
        x, _ = read_npz_batch(images, channels=config.in_channels, n=n)
        label = f"{Path(images).name} rows 0..{len(x) - 1}"
    else:
        x, label = default_images(config, n)
    if tuple(x.shape[1:]) != (config.in_channels, config.input_size, config.input_size):
        raise DataNotFoundError(
            f"parity images have shape {tuple(x.shape[1:])}, the model expects "
            f"{(config.in_channels, config.input_size, config.input_size)}"
        )
    output = Path(output) if output is not None else folder / "model.onnx"
    source_sha = sha256_file(folder / WEIGHTS_FILE)
    meta = {META_FORMAT: FORMAT, META_CONFIG: config.to_json(), META_SOURCE_SHA256: source_sha}
    with tempfile.TemporaryDirectory() as tmp:
        # Export once without the parity record, measure, then write the final file with it.
        draft = export_onnx(load_folder(folder), Path(tmp) / "draft.onnx", x[:2], opset=opset, fp16=fp16, metadata=meta)
        report = check_parity(model, draft, x, label)
        proto = onnx.load_model(str(draft))
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_PARITY, json.dumps(report.to_dict())
        opset_used = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
        if report.passed:
            output.parent.mkdir(parents=True, exist_ok=True)
            with replacing(output) as tmp_out:
                onnx.save_model(proto, str(tmp_out), save_as_external_data=False)
            onnx.checker.check_model(str(output), full_check=True)
    key = (
        os.path.relpath(output, folder) if output.resolve().is_relative_to(folder.resolve()) else str(output.resolve())
    )
    record = {
        "sha256": sha256_file(output) if report.passed else None,
        "source_sha256": source_sha,
        "exporter": "torch.onnx.export(dynamo=True)",
        "opset": opset_used,
        "fp16": fp16,
        "dynamic_batch": True,
        "checker": "onnx.checker.check_model(full_check=True): passed",
        "parity": report.to_dict(),
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    # One record per exported file, so an fp16 export beside model.onnx does not erase its record.
    records = read_onnx_record(folder) or {}
    records[key] = record
    atomic_write_json(folder / ONNX_RECORD, records)
    if not report.passed:
        raise ParityError(
            f"{folder}: ONNX parity failed on {report.n} images ({report.images}): max |diff| "
            f"{report.max_abs_diff:.3g} (tolerance {report.tolerance:.3g}), top-1 agreement "
            f"{report.top1_agreement:.3f}; nothing written to {output} (details in {ONNX_RECORD})"
        )
    return output, report


def read_onnx_record(folder: str | os.PathLike[str]) -> dict[str, dict[str, Any]] | None:
    """The folder's ``onnx.json``: export record per ONNX file (key: path relative to the folder,
    e.g. ``model.onnx``); None when the folder was never exported."""
    path = Path(folder) / ONNX_RECORD
    return json.loads(path.read_text()) if path.is_file() else None
