"""Running attacks over a dataset: :func:`evaluate` (one model, many attacks) and :func:`transfer_matrix`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from arnas_zoo.attacks import CountingModel, PassCounter, attack_mode
from arnas_zoo.data import ImageData
from arnas_zoo.devices import describe_device, resolve_device
from arnas_zoo.errors import ConfigError
from arnas_zoo.evaluate.checks import sanity_checks
from arnas_zoo.evaluate.report import AttackResult, EvaluationReport, fmt_eps, fraction
from arnas_zoo.evaluate.specs import AttackSpec, make_attack
from arnas_zoo.inputs import check_images, check_labels
from arnas_zoo.progress import Progress
from arnas_zoo.provenance import environment, now_utc
from arnas_zoo.runs.seeding import seed_for


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def correct_mask(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Per point: the model's prediction equals the label (the model's mode is the caller's)."""
    parts = [model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size] for i in range(0, len(x), batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool, device=x.device)


def batch_generator(device: torch.device, seed: int, index: int) -> torch.Generator:
    """The random starts of batch ``index``: seeded per batch, so any run of whole batches (a shard of
    the points, see :mod:`arnas_zoo.evaluate.shards`) draws exactly what a single run draws for them."""
    return torch.Generator(device=device).manual_seed(seed_for(seed, 0, index, stream=7))


def _perturbation_size(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> tuple[float, float]:
    if not x_adv.numel():
        return 0.0, 0.0
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    outside = torch.maximum(torch.clamp(-x_adv, min=0).amax(), torch.clamp(x_adv - 1, min=0).amax())
    return float(size.max()), float(outside)


#: attack families whose cost is mostly gradient-free forwards (the compiled inference path pays there)
QUERY_HEAVY = ("autoattack", "square")
#: forward passes per image of AutoAttack (standard), for the compile decision: ~1,000 on a 20-cell ARNAS at
#: 38% clean accuracy, 2,868 on the ResNet-18 w16 at 71% (its reports); the lower figure is the safe guess
AUTOATTACK_FORWARDS_PER_IMAGE = 1000


def run_attack(
    model: nn.Module,
    data: ImageData,
    spec: AttackSpec,
    clean_correct: torch.Tensor,
    *,
    eps: float,
    norm: str,
    batch_size: int,
    seed: int,
    progress: Progress,
    source: nn.Module | None = None,
    source_name: str | None = None,
    batch_offset: int = 0,
) -> AttackResult:
    """Run one attack batch by batch over ``data`` (examples crafted on ``source`` when given).

    ``batch_offset``: the index of ``data``'s first batch in the whole evaluation (a shard of the points
    draws the random starts that a single run draws for those batches).
    """
    counter = PassCounter()
    query_heavy = source is None and spec.family in QUERY_HEAVY
    parts = []
    max_size, max_out = 0.0, 0.0
    label = spec.name if source is None else f"{spec.name} <- {source_name}"
    total = (len(data) + batch_size - 1) // batch_size
    with contextlib.ExitStack() as stack:
        queried: nn.Module = source if source is not None else model
        if query_heavy:
            # AutoAttack and Square run the reference code on the model: fold its eval-mode BatchNorms into the
            # convolutions for the duration (the same function; ~1.6x per gradient step on CPU, as our PGD does),
            # and answer the gradient-free queries from a frozen compiled graph (arnas_zoo.attacks.inference)
            from arnas_zoo.attacks.batchnorm import folded_batchnorm
            from arnas_zoo.attacks.inference import maybe_compiled

            stack.enter_context(attack_mode(model))
            stack.enter_context(folded_batchnorm(model))
            if len(data):
                per_image = (spec.steps if spec.family == "square" else None) or AUTOATTACK_FORWARDS_PER_IMAGE
                queried = maybe_compiled(model, data.x[:1], forwards=len(data) * per_image)
        counted = CountingModel(queried, counter)
        _sync(data.device)
        start = time.perf_counter()
        with progress.task(f"eval {label}", total, "batches") as task:
            for index, (x, y) in enumerate(data.batches(batch_size)):
                generator = batch_generator(data.device, seed, batch_offset + index)
                x_adv = spec.run(counted, x, y, eps=eps, norm=norm, generator=generator, counter=None, seed=seed)
                size, out = _perturbation_size(x_adv, x, norm)
                max_size, max_out = max(max_size, size), max(max_out, out)
                with attack_mode(model):
                    parts.append(correct_mask(model, x_adv, y, batch_size))
                task.update()
    _sync(data.device)
    correct = torch.cat(parts).cpu() if parts else torch.zeros(0, dtype=torch.bool)
    robust = correct & clean_correct
    n = max(len(data), 1)
    described = spec.describe(eps)
    return AttackResult(
        attack=spec.name if source is None else f"transfer-{spec.name}",
        norm=norm,
        eps=eps,
        n=len(data),
        robust_accuracy=fraction(robust),
        adversarial_accuracy=fraction(correct),
        seconds=time.perf_counter() - start,
        forward_passes_per_image=counter.forward / n,
        backward_passes_per_image=counter.backward / n,
        correct=correct,
        robust=robust,
        max_perturbation=max_size,
        out_of_box=max_out,
        source=source_name,
        black_box=spec.black_box or source is not None,
        family=spec.family,
        **{k: described[k] for k in ("steps", "restarts", "step_size", "loss", "random_start", "version")},
    )


def check_model_fits(model: nn.Module, data: ImageData) -> None:
    """A model with a config must take the data's image shape and have at least its classes."""
    config = getattr(model, "config", None)
    if config is None:
        return
    want = (config.in_channels, config.input_size, config.input_size)
    if tuple(data.shape) != want or config.num_classes < data.num_classes:
        raise ConfigError(
            f"model {config.name!r} expects {want[0]}x{want[1]}x{want[2]} images and {config.num_classes} classes; "
            f"the data {data.name} has {'x'.join(map(str, data.shape))} images and {data.num_classes} classes"
        )


def _checked_inputs(
    model: nn.Module, data: ImageData, attacks: Iterable[str | AttackSpec], norm: str, batch_size: int
) -> list[AttackSpec]:
    """The attack specs, after checking the threat model, batch size, images and labels."""
    if norm not in ("linf", "l2"):
        raise ConfigError(f"norm: expected 'linf' or 'l2', got {norm!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size: expected a positive integer, got {batch_size}")
    specs = [make_attack(a) if isinstance(a, str) else a for a in attacks]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"attacks: each attack once, got {names}")
    check_images(data.x, f"{data.name} images")
    num_classes = getattr(getattr(model, "config", None), "num_classes", None)
    check_labels(data.y, len(data), num_classes, f"{data.name} labels")
    return specs


def evaluate(
    model: nn.Module,
    data: ImageData,
    attacks: Iterable[str | AttackSpec] = ("fgsm", "pgd20"),
    *,
    eps: float = 8 / 255,
    norm: str = "linf",
    batch_size: int = 128,
    device: str | torch.device = "auto",
    seed: int = 0,
    checks: bool = True,
    check_n: int = 128,
    progress: bool | Progress = True,
    transfer_sources: Mapping[str, nn.Module] | None = None,
    model_info: Mapping[str, Any] | None = None,
) -> EvaluationReport:
    """Evaluate ``model`` on ``data``: clean accuracy, every attack in ``attacks``, worst case, checks.

    Args:
        model: maps [0, 1] images to logits (moved to ``device``; its training flag is restored).
        data: the points (use ``data.first(n)`` for RobustBench-style subsets).
        attacks: names for :func:`~arnas_zoo.evaluate.make_attack` (``"fgsm"``, ``"pgd20"``, ``"aa"``,
            ``"square"``, ...) or :class:`AttackSpec` objects.
        eps, norm: the threat model (``"linf"`` or ``"l2"``).
        seed: seeds each attack's random starts (and AutoAttack's), so a report is reproducible.
        checks: run the sanity checks, probes included (on the first ``check_n`` points).
        transfer_sources: name -> model; PGD-20 examples crafted on each are scored on ``model``.
        model_info: what to record about the model (name, source) in the report.
    """
    specs = _checked_inputs(model, data, attacks, norm, batch_size)
    report_progress = Progress.of(progress)
    dev = resolve_device(device)
    data = data.to(dev)
    model.to(dev)
    check_model_fits(model, data)
    start = time.perf_counter()
    with attack_mode(model):
        clean_correct = correct_mask(model, data.x, data.y, batch_size).cpu()
    run = partial(
        run_attack, model, data, eps=eps, norm=norm, batch_size=batch_size, seed=seed, progress=report_progress
    )
    results = [run(spec, clean_correct) for spec in specs]
    for source_name, source in (transfer_sources or {}).items():
        source.to(dev)
        results.append(run(make_attack("pgd20"), clean_correct, source=source, source_name=source_name))
    return assemble_report(
        model, data, clean_correct, results, eps=eps, norm=norm, batch_size=batch_size, seed=seed, checks=checks,
        check_n=check_n, model_info=model_info, device=dev, seconds=time.perf_counter() - start,
    )  # fmt: skip


def assemble_report(
    model: nn.Module,
    data: ImageData,
    clean_correct: torch.Tensor,
    results: list[AttackResult],
    *,
    eps: float,
    norm: str,
    batch_size: int,
    seed: int,
    checks: bool,
    check_n: int,
    model_info: Mapping[str, Any] | None,
    device: torch.device,
    seconds: float,
) -> EvaluationReport:
    """The one report of plain and sharded evaluation: the worst case over ``results`` (every attack's
    per-point outcomes), the sanity checks (probes included) on the first ``check_n`` points, provenance."""
    worst = clean_correct.clone()
    for r in results:
        assert r.robust is not None  # run_attack always records the per-point outcomes
        worst &= r.robust
    report_checks = []
    if checks:
        report_checks = sanity_checks(
            model.to(device),
            data.to(device),
            clean_correct,
            results,
            eps=eps,
            norm=norm,
            batch_size=batch_size,
            seed=seed,
            check_n=check_n,
            probes=True,
        )
    return EvaluationReport(
        model=dict(model_info or {"name": type(model).__name__, "source": "object"}),
        data=data.describe(),
        norm=norm,
        eps=eps,
        clean_accuracy=fraction(clean_correct),
        worst_case_accuracy=fraction(worst),
        results=results,
        checks=report_checks,
        seed=seed,
        device=describe_device(device),
        batch_size=batch_size,
        created=now_utc(),
        seconds=seconds,
        environment=environment(),
        clean=clean_correct.cpu(),
    )


@dataclass
class TransferReport:
    """Accuracy of each target model on examples crafted on each source model (paper Table 2)."""

    names: list[str]
    accuracy: list[list[float]]  # accuracy[source][target]
    clean_accuracy: list[float]
    attack: str
    eps: float
    norm: str
    data: dict[str, Any]
    seed: int
    device: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), **environment()}

    def format_table(self) -> str:
        width = max(12, *(len(n) + 2 for n in self.names))
        lines = [
            f"transfer {self.attack} ({self.norm} eps={fmt_eps(self.eps)}), data {self.data['dataset']} "
            f"{self.data['split']} n={self.data['n']} (indices {self.data['indices']}), seed {self.seed}, "
            f"device {self.device}",
            "rows: source (crafts the examples); columns: target (classifies them); diagonal = white-box",
            "source \\ target".ljust(width) + "".join(n.rjust(width) for n in self.names),
            "clean".ljust(width) + "".join(f"{100 * a:.2f}%".rjust(width) for a in self.clean_accuracy),
        ]
        for name, row in zip(self.names, self.accuracy):
            lines.append(name.ljust(width) + "".join(f"{100 * a:.2f}%".rjust(width) for a in row))
        return "\n".join(lines)


def transfer_matrix(
    models: Mapping[str, nn.Module],
    data: ImageData,
    *,
    attack: str = "pgd20",
    eps: float = 8 / 255,
    norm: str = "linf",
    batch_size: int = 128,
    device: str | torch.device = "auto",
    seed: int = 0,
    progress: bool | Progress = True,
) -> TransferReport:
    """Craft ``attack`` examples on every model and classify them with every model (source x target).

    Accuracies here are correct-on-the-adversarial-input shares (the transfer table's convention).
    """
    if len(models) < 1:
        raise ConfigError("transfer: expected at least one model")
    report_progress = Progress.of(progress)
    dev = resolve_device(device)
    data = data.to(dev)
    spec = make_attack(attack)
    names = list(models)
    for m in models.values():
        m.to(dev)
        check_model_fits(m, data)
    clean = []
    for m in models.values():
        with attack_mode(m):
            clean.append(fraction(correct_mask(m, data.x, data.y, batch_size)))
    matrix: list[list[float]] = []
    total = len(names) * ((len(data) + batch_size - 1) // batch_size)
    with report_progress.task(f"transfer {attack}", total, "batches") as task:
        for source_name in names:
            source = models[source_name]
            correct: dict[str, list[torch.Tensor]] = {t: [] for t in names}
            for index, (x, y) in enumerate(data.batches(batch_size)):
                generator = batch_generator(dev, seed, index)
                x_adv = spec.run(source, x, y, eps=eps, norm=norm, generator=generator, counter=None, seed=seed)
                for target_name in names:
                    with attack_mode(models[target_name]):
                        correct[target_name].append(correct_mask(models[target_name], x_adv, y, batch_size))
                task.update()
            matrix.append([fraction(torch.cat(correct[t])) for t in names])
    return TransferReport(
        names=names,
        accuracy=matrix,
        clean_accuracy=clean,
        attack=attack,
        eps=eps,
        norm=norm,
        data=data.describe(),
        seed=seed,
        device=describe_device(dev),
    )
