"""Running and checking deployed models: PyTorch or ONNX Runtime behind one interface.

- :func:`load_any`: ``model.onnx`` -> :class:`~arnas_zoo.onnx.OnnxModel`, anything else ->
  :func:`arnas_zoo.hub.load` (registry name, Hub id, folder).
- :func:`predict_files`: top-k classes for PNG/JPEG files and npz batches.
- :func:`check_onnx`: is the deployed ONNX file as robust as the PyTorch model it came from?
  Runs the score-based Square attack (the AutoAttack authors' reference implementation, from
  ``pyautoattack``, through :func:`arnas_zoo.attacks.square`) directly against ONNX Runtime and, with
  the same seed and images, against the PyTorch twin; runs PGD (:func:`arnas_zoo.attacks.pgd`) on the
  twin and transfers its adversarial examples to the ONNX file; then
  compares the figures within sampling error and runs sanity checks on the attacks themselves.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from arnas_zoo.config import ModelConfig
from arnas_zoo.errors import ConfigError, DataNotFoundError
from arnas_zoo.evaluate.report import fraction
from arnas_zoo.images import read_images
from arnas_zoo.onnx import OnnxModel
from arnas_zoo.progress import Progress
from arnas_zoo.sources import resolve

Model = Any  # a ZooModel or an OnnxModel: both map [0, 1] NCHW images to logits


def load_any(spec: str | os.PathLike[str], device: Any = "cpu", providers: str | Sequence[str] = "auto") -> Model:
    """An :class:`OnnxModel` for ``*.onnx`` files, else the checkpoint the spec names (eval mode)."""
    source = resolve(spec, allow_onnx=True)
    if source.kind == "onnx":
        return OnnxModel(str(source.path), providers=providers)
    from arnas_zoo.hub import load_source

    return load_source(source, device=device)


def model_config(model: Model) -> ModelConfig | None:
    return getattr(model, "config", None)


def _input_geometry(model: Model) -> tuple[int, int | None]:
    config = model_config(model)
    if config is not None:
        return config.in_channels, config.input_size
    shape = getattr(model, "input_shape", [None, 3, None, None])
    channels = shape[1] if isinstance(shape[1], int) else 3
    size = shape[2] if isinstance(shape[2], int) else None
    return channels, size


def _logits(model: Model, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    outs = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            out = model(x[start : start + batch_size])
            outs.append(out if isinstance(out, torch.Tensor) else torch.from_numpy(np.asarray(out)))
    return torch.cat(outs).float().cpu()


def predict_files(
    model: Model, paths: Sequence[str | os.PathLike[str]], top_k: int = 3, device: str | torch.device = "cpu"
) -> list[dict[str, Any]]:
    """Top-``top_k`` classes with softmax probabilities for each image (npz files give one row each)."""
    channels, size = _input_geometry(model)
    images, names = read_images(paths, channels=channels, size=size)
    if not isinstance(model, OnnxModel):
        images = images.to(device)
    probs = F.softmax(_logits(model, images), dim=1)
    config = model_config(model)
    class_names = list((config.extra or {}).get("class_names", [])) if config is not None else []
    k = min(top_k, probs.shape[1])
    values, indices = probs.topk(k, dim=1)
    rows = []
    for name, vals, idx in zip(names, values.tolist(), indices.tolist()):
        top = [
            {"class": int(c), "name": class_names[c] if c < len(class_names) else str(c), "probability": float(p)}
            for p, c in zip(vals, idx)
        ]
        rows.append({"image": name, "top": top})
    return rows


# ---- robustness check of a deployed ONNX file -------------------------------------------------------
def _in_chunks(fn: Any, x: torch.Tensor, y: torch.Tensor, task: Any, chunk: int = 50) -> torch.Tensor:
    """``fn`` over chunks of points (each point is attacked independently), reporting progress per chunk."""
    parts = []
    for start in range(0, len(x), chunk):
        parts.append(fn(x[start : start + chunk], y[start : start + chunk]))
        task.update()
    return torch.cat(parts)


def _attack_side(
    model: Model, x: torch.Tensor, y: torch.Tensor, name: str, run: Any, progress: Progress
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_adv, correct on x_adv)`` of attack ``run(x, y)`` on ``model``, with progress."""
    with progress.task(f"check: {name}", (len(x) + 49) // 50, "chunks of 50 points") as task:
        x_adv = _in_chunks(run, x, y, task)
    return x_adv, _logits(model, x_adv).argmax(1) == y.cpu()


def _norm_of(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().max(dim=1).values if norm == "linf" else flat.norm(dim=1)


@dataclass
class RobustnessCheck:
    """Figures of :func:`check_onnx` (accuracies are fractions of ``n``)."""

    onnx: str
    source: str | None
    data: str
    n: int
    norm: str
    eps: float
    square_queries: int
    pgd_steps: int
    seed: int
    device: str
    provider: str
    clean_onnx: float
    square_onnx: float
    clean_torch: float | None = None
    square_torch: float | None = None
    pgd_torch: float | None = None
    transfer_onnx: float | None = None
    discordant_square: int | None = None
    margin: float | None = None
    consistent: bool | None = None
    sanity: dict[str, bool] = field(default_factory=dict)
    sanity_details: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        lines = [
            f"ONNX {self.onnx} on {self.data} (n={self.n}), {self.norm} eps={self.eps:.4g}, seed {self.seed}, "
            f"provider {self.provider}",
            f"  clean accuracy          ONNX {self.clean_onnx:.3f}"
            + (f"   PyTorch {self.clean_torch:.3f}" if self.clean_torch is not None else ""),
            f"  Square ({self.square_queries} queries)   ONNX {self.square_onnx:.3f}"
            + (f"   PyTorch {self.square_torch:.3f}" if self.square_torch is not None else ""),
        ]
        if self.pgd_torch is not None:
            lines.append(
                f"  PGD-{self.pgd_steps} on the twin      PyTorch {self.pgd_torch:.3f}   "
                f"transferred to ONNX {self.transfer_onnx:.3f}"
            )
        if self.consistent is not None:
            verdict = "as robust as its source" if self.consistent else "NOT as robust as its source"
            lines.append(
                f"  verdict: the ONNX file is {verdict} (within sampling error: |difference| <= {self.margin:.3f}; "
                f"{self.discordant_square} images where Square's outcome differs)"
            )
        failed = [name for name, ok in self.sanity.items() if not ok]
        outcome = (
            "all passed"
            if not failed
            else "FAILED: " + "; ".join(f"{name} ({self.sanity_details.get(name, '')})" for name in failed)
        )
        lines.append(f"  sanity checks: {outcome} ({len(self.sanity)})")
        return "\n".join(lines)


def _threat(onnx_model: OnnxModel, onnx_path: Any, eps: float | None, norm: str | None) -> tuple[float, str]:
    config = onnx_model.config
    norm = (norm or (config.threat_model if config is not None and config.threat_model else "linf")).lower()
    if norm not in ("linf", "l2"):
        raise ConfigError(f"norm: Square supports 'linf' or 'l2', got {norm!r}")
    if eps is None:
        if config is None or config.eps is None:
            raise ConfigError(f"{onnx_path}: no eps stored in the file; pass --eps")
        eps = float(config.eps)
    return eps, norm


def _check_data(dataset: str, n: int, channels: int, data_dir: Any) -> tuple[Any, str]:
    from arnas_zoo.data import evaluation_data

    data = evaluation_data(dataset, n=n, data_dir=data_dir)
    if data.x.shape[1] != channels:
        raise DataNotFoundError(f"{dataset}: images have {data.x.shape[1]} channel(s), the model expects {channels}")
    info = data.describe()
    return data, f"{info['dataset']} {info['split']} (official indices {info['indices']})"


@dataclass
class _Setup:
    """The points and attack settings both sides of a check share."""

    x: torch.Tensor
    y: torch.Tensor
    eps: float
    norm: str
    queries: int
    pgd_steps: int
    seed: int
    device: str
    report: Progress

    def square_on(self, model: Model) -> Any:
        from arnas_zoo.attacks import square

        return lambda xb, yb: square(
            model, xb, yb, eps=self.eps, norm=self.norm, n_queries=self.queries, seed=self.seed
        )

    def result(
        self, name: str, x_adv: torch.Tensor, correct: torch.Tensor, clean_ok: torch.Tensor, **fields: Any
    ) -> Any:
        return _attack_result(name, self.x, x_adv, correct, clean_ok, self.eps, self.norm, **fields)

    @property
    def square_fields(self) -> dict[str, Any]:
        return {"steps": None, "black_box": True, "version": f"{self.queries} queries", "family": "square"}


@dataclass
class _Side:
    """One model's part of a check: its clean outcome and attack results (for the sanity checks)."""

    name: str
    model: Model
    clean_pred: torch.Tensor
    clean_ok: torch.Tensor
    results: list[Any]
    probes: bool = False


def _onnx_side(setup: _Setup, onnx_model: OnnxModel) -> tuple[_Side, torch.Tensor]:
    clean_pred = _logits(onnx_model, setup.x).argmax(1)
    clean_ok = clean_pred == setup.y.cpu()
    adv, square_ok = _attack_side(
        onnx_model,
        setup.x,
        setup.y,
        f"Square ({setup.queries} queries) on ONNX",
        setup.square_on(onnx_model),
        setup.report,
    )
    side = _Side(
        "onnx",
        onnx_model,
        clean_pred,
        clean_ok,
        [setup.result("square", adv, square_ok, clean_ok, **setup.square_fields)],
    )
    return side, square_ok


def _twin_side(
    setup: _Setup, twin: Model, onnx: _Side, probes: bool
) -> tuple[_Side, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The PyTorch twin attacked the same way, plus PGD on it transferred to ONNX."""
    from arnas_zoo.attacks import pgd

    clean_pred = _logits(twin, setup.x).argmax(1)
    clean_ok = clean_pred == setup.y.cpu()
    adv_square, square_ok = _attack_side(
        twin, setup.x, setup.y, f"Square ({setup.queries} queries) on PyTorch", setup.square_on(twin), setup.report
    )
    generator = torch.Generator(device=setup.device).manual_seed(setup.seed)

    def run_pgd(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        # step 2.5 * eps / steps: the usual PGD choice (Madry et al.), reaching the ball's edge from any start
        return pgd(
            twin,
            xb,
            yb,
            eps=setup.eps,
            step_size=2.5 * setup.eps / setup.pgd_steps,
            steps=setup.pgd_steps,
            norm=setup.norm,
            generator=generator,
        )

    adv_pgd, pgd_ok = _attack_side(twin, setup.x, setup.y, f"PGD-{setup.pgd_steps} on PyTorch", run_pgd, setup.report)
    transfer_ok = _logits(onnx.model, adv_pgd).argmax(1) == setup.y.cpu()
    onnx.results.append(
        setup.result(
            f"transfer-pgd{setup.pgd_steps}",
            adv_pgd,
            transfer_ok,
            onnx.clean_ok,
            steps=setup.pgd_steps,
            black_box=True,
            source="the PyTorch twin",
        )
    )
    results = [
        setup.result(
            f"pgd{setup.pgd_steps}", adv_pgd, pgd_ok, clean_ok, steps=setup.pgd_steps, random_start=True, loss="ce"
        ),
        setup.result("square", adv_square, square_ok, clean_ok, **setup.square_fields),
    ]
    return _Side("torch", twin, clean_pred, clean_ok, results, probes), square_ok, pgd_ok, transfer_ok


def check_onnx(
    onnx_path: str | os.PathLike[str],
    dataset: str,
    n: int = 100,
    source: str | os.PathLike[str] | None = None,
    eps: float | None = None,
    norm: str | None = None,
    square_queries: int = 1000,
    pgd_steps: int = 20,
    seed: int = 0,
    providers: str | Sequence[str] = "auto",
    data_dir: str | os.PathLike[str] | None = None,
    probes: bool = False,
    progress: bool | Progress = False,
) -> RobustnessCheck:
    """Is the ONNX file as robust as its PyTorch source? See the module docstring.

    ``eps``/``norm`` default to the threat model stored in the file's config. Without ``source``
    only the ONNX file is attacked (no comparison). The verdict compares Square robust accuracy on
    ONNX and on PyTorch (same images, seed and budget): with ``d`` images whose outcome differs, the
    figures agree within sampling error when ``|difference| <= 2 * sqrt(d) / n`` (McNemar's test at
    about 95%), and the transferred PGD examples must fool ONNX as they fool the twin. The evaluation
    module's sanity checks run on both; ``probes`` adds its gradient probes on the twin.
    """
    onnx_model = OnnxModel(onnx_path, providers=providers, check_range=False)
    eps, norm = _threat(onnx_model, onnx_path, eps, norm)
    config = onnx_model.config
    data, label = _check_data(dataset, n, config.in_channels if config else (onnx_model.input_shape[1] or 3), data_dir)
    device = "cuda" if onnx_model.provider == "CUDAExecutionProvider" and torch.cuda.is_available() else "cpu"
    data = data.to(device)
    setup = _Setup(data.x, data.y, eps, norm, square_queries, pgd_steps, seed, device, Progress.of(progress))
    onnx, square_onnx_ok = _onnx_side(setup, onnx_model)
    result = RobustnessCheck(
        onnx=str(onnx_path),
        source=str(source) if source is not None else None,
        data=label,
        n=len(data),
        norm=norm,
        eps=eps,
        square_queries=square_queries,
        pgd_steps=pgd_steps,
        seed=seed,
        device=device,
        provider=onnx_model.provider,
        clean_onnx=fraction(onnx.clean_ok),
        square_onnx=fraction(onnx.clean_ok & square_onnx_ok),
    )
    sides, checks = [onnx], {}
    if source is not None:
        from arnas_zoo.hub import load
        from arnas_zoo.runs.precision import no_tf32

        with no_tf32():  # the twin in full float32, like ONNX Runtime (TF32 would move borderline predictions)
            twin, square_torch_ok, pgd_ok, transfer_ok = _twin_side(setup, load(source, device=device), onnx, probes)
        _compare(result, onnx.clean_ok, twin.clean_ok, square_onnx_ok, square_torch_ok, pgd_ok, transfer_ok)
        differ = int((onnx.clean_pred != twin.clean_pred).sum())
        checks["clean_predictions_identical"] = (differ == 0, f"{differ} differ")
        sides.append(twin)
    _run_sanity_checks(sides, data, eps, norm, seed, checks)
    result.sanity = {name: passed for name, (passed, _) in checks.items()}
    result.sanity_details = {name: detail for name, (_, detail) in checks.items()}
    return result


def _compare(
    result: RobustnessCheck,
    clean_onnx_ok: torch.Tensor,
    clean_torch_ok: torch.Tensor,
    square_onnx_ok: torch.Tensor,
    square_torch_ok: torch.Tensor,
    pgd_torch_ok: torch.Tensor,
    transfer_ok: torch.Tensor,
) -> None:
    """The PyTorch side's figures and the verdict (McNemar on the per-point outcomes)."""
    onnx_robust, torch_robust = clean_onnx_ok & square_onnx_ok, clean_torch_ok & square_torch_ok
    result.clean_torch = fraction(clean_torch_ok)
    result.square_torch = fraction(torch_robust)
    result.pgd_torch = fraction(clean_torch_ok & pgd_torch_ok)
    result.transfer_onnx = fraction(clean_onnx_ok & transfer_ok)
    n = max(len(onnx_robust), 1)
    discordant = int((onnx_robust != torch_robust).sum())
    transfer_discordant = int(((clean_onnx_ok & transfer_ok) != (clean_torch_ok & pgd_torch_ok)).sum())
    result.discordant_square = discordant
    result.margin = 2.0 * math.sqrt(max(discordant, 1)) / n
    transfer_margin = 2.0 * math.sqrt(max(transfer_discordant, 1)) / n
    result.consistent = bool(
        abs(result.square_onnx - result.square_torch) <= result.margin
        and abs(result.transfer_onnx - result.pgd_torch) <= transfer_margin
    )


def _run_sanity_checks(
    sides: list[_Side], data: Any, eps: float, norm: str, seed: int, checks: dict[str, tuple[bool, str]]
) -> None:
    """The evaluation module's automatic checks (Carlini et al. 2019) on both sides; the gradient probes
    need gradients, so they run on the twin only, on request."""
    from arnas_zoo.evaluate import sanity_checks

    for side in sides:
        found = sanity_checks(
            side.model,
            data,
            side.clean_ok.cpu(),
            side.results,
            eps=eps,
            norm=norm,
            batch_size=256,
            seed=seed,
            probes=side.probes,
        )
        for check in found:
            if check.passed is not None:
                checks[f"{side.name}.{check.name}"] = (bool(check.passed), check.detail)


def _attack_result(
    name: str,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    correct: torch.Tensor,
    clean_ok: torch.Tensor,
    eps: float,
    norm: str,
    **fields: Any,
) -> Any:
    """An :class:`arnas_zoo.evaluate.AttackResult` for the evaluation module's sanity checks."""
    from arnas_zoo.evaluate import AttackResult

    delta = x_adv - x
    outside = torch.maximum((x_adv - 1).clamp_min(0), (-x_adv).clamp_min(0))
    robust = correct.cpu() & clean_ok.cpu()
    return AttackResult(
        attack=name,
        norm=norm,
        eps=eps,
        restarts=1,
        n=len(x),
        robust_accuracy=fraction(robust),
        adversarial_accuracy=fraction(correct),
        seconds=0.0,
        forward_passes_per_image=0.0,
        backward_passes_per_image=0.0,
        max_perturbation=float(_norm_of(delta, norm).max()) if len(x) else 0.0,
        out_of_box=float(outside.max()) if len(x) else 0.0,
        correct=correct.cpu(),
        robust=robust,
        **fields,
    )
