"""The quick start: adversarial versus standard training of a small ARNAS network, offline, on a CPU.

:func:`quickstart` trains the same small ARNAS network (5 cells, C=4: Accurate, Reduction, Accurate,
Reduction, Robust) twice on scikit-learn's digits (embedded in scikit-learn, so no network and no
files are needed): once with PGD adversarial training (recipe ``cpu_digits``) and once without
adversarial examples, with the same recipe otherwise. It then attacks both on the digits test split
(297 images) with FGSM and PGD-20, runs the sanity checks against gradient masking on both, and
writes both run folders, the curves and a report, so that the effect of adversarial training is
visible in a few minutes on a laptop.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from arnas_zoo.atomic import atomic_write_json, atomic_write_text
from arnas_zoo.devices import describe_device, resolve_device
from arnas_zoo.progress import Progress
from arnas_zoo.provenance import environment

__all__ = ["EXPECTED", "EXPECTED_TOLERANCE", "QuickstartResult", "quickstart"]

QUICKSTART_MODEL = {"in_channels": 1, "input_size": 16, "num_classes": 10, "init_channels": 4, "layers": 5}
VAL_ROWS = 200  # the last 200 digits training rows select the best epoch; the 297 test rows are reported
#: What the quick start printed at seed 0 on CPU (docs/training.md), and how far another torch/CPU may land.
EXPECTED: dict[str, dict[str, float]] = {
    "adversarial": {"clean": 0.889, "fgsm": 0.599, "pgd": 0.461},
    "standard": {"clean": 0.946, "fgsm": 0.024, "pgd": 0.0},
}
EXPECTED_TOLERANCE = 0.06


@dataclass
class QuickstartResult:
    """Accuracies of both networks (fractions in [0, 1]), their checks, timings, and where the files are."""

    out_dir: Path
    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    checks: dict[str, list[str]] = field(default_factory=dict)  # failed check names per network
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def table(self) -> str:
        lines = [f"{'training':<13}{'clean':>8}{'FGSM':>8}{'PGD-20':>8}   sanity checks"]
        for name, row in self.rows.items():
            failed = self.checks.get(name, [])
            verdict = "all passed" if not failed else "FAILED: " + ", ".join(failed)
            lines.append(
                f"{name:<13}" + "".join(f"{100 * row[k]:>7.1f}%" for k in ("clean", "fgsm", "pgd")) + f"   {verdict}"
            )
        return "\n".join(lines)

    def expected(self) -> str:
        tol = 100 * EXPECTED_TOLERANCE
        parts = []
        for name in ("adversarial", "standard"):
            row = EXPECTED[name]
            parts.append(f"{name} {100 * row['clean']:.1f}/{100 * row['fgsm']:.1f}/{100 * row['pgd']:.1f}%")
        return (
            f"expected at seed 0 (clean/FGSM/PGD-20, within about +-{tol:.0f} points across torch versions and CPUs): "
            + "; ".join(parts)
        )

    def next_commands(self) -> list[str]:
        best = self.out_dir / "adversarial" / "best"
        return [
            f"arnas-zoo eval {best} --attacks fgsm,pgd20,aa --n 297      # evaluate it yourself (AutoAttack too)",
            f"arnas-zoo export onnx {best} -o {best / 'model.onnx'}      # deploy it (needs the [onnx] extra)",
            f"arnas-zoo check {best / 'model.onnx'} --source {best}      # is the ONNX file as robust as the source?",
            "arnas-zoo pretrained                                      # the zoo's trained models",
        ]


def quickstart(
    out_dir: str | Path = "runs/quickstart",
    *,
    epochs: int | None = None,
    device: str = "auto",
    progress: bool | Progress = True,
    seed: int = 0,
    pgd_steps: int = 20,
    train_n: int | None = None,
    test_n: int | None = None,
    checks: bool = True,
) -> QuickstartResult:
    """Train the small ARNAS network with and without PGD adversarial training on digits; attack both.

    Writes ``<out_dir>/adversarial`` and ``<out_dir>/standard`` run folders (their ``best/`` subfolder
    is a checkpoint folder whose ``metrics.json`` holds the test evaluation) and ``<out_dir>/report.md``
    / ``report.json``. An existing ``out_dir`` is replaced run by run (the quick start is short, so it
    is not resumable). ``epochs`` overrides the recipe's 10 epochs; ``train_n``/``test_n`` keep the
    first training/test images only (smoke tests).
    """
    from arnas_zoo.data import load_dataset, split_train_val
    from arnas_zoo.training import get_recipe

    report = Progress.of(progress)
    start = time.perf_counter()
    out_dir = Path(out_dir)
    dev = resolve_device(device)
    train_split, val_split = split_train_val(load_dataset("digits", "train"), VAL_ROWS)
    test = load_dataset("digits", "test", n=test_n).to(dev)
    overrides: dict[str, Any] = {"seed": seed, "train_n": train_n}
    if epochs is not None:
        overrides["epochs"] = epochs
    adversarial = get_recipe("cpu_digits", **overrides)
    # a network trained without adversarial examples is selected by clean accuracy (its robust
    # accuracy is ~0 at every epoch, so robust selection would keep the untrained first epoch)
    standard = adversarial.replace(method="standard", name="cpu_digits_standard", select_by="clean")
    result = QuickstartResult(out_dir)
    attacks = ("fgsm", f"pgd{pgd_steps}")
    for kind, recipe in (("adversarial", adversarial), ("standard", standard)):
        _train_and_attack(result, kind, recipe, (train_split, val_split, test), attacks, dev, report, checks)
    result.seconds = time.perf_counter() - start
    result.settings = {
        "model": "arnas " + json.dumps(QUICKSTART_MODEL),
        "train": f"digits train rows 0-{min(len(train_split), train_n or len(train_split)) - 1}, "
        f"validation rows {len(train_split)}-{len(train_split) + VAL_ROWS - 1} (model selection)",
        "test": f"digits test split, first n={len(test)} (scikit-learn rows from 1500)",
        "recipe": adversarial.to_dict(),
        "attacks": f"FGSM eps {adversarial.eps}; PGD-{pgd_steps} eps {adversarial.eps} step {adversarial.eps / 4:.4g} "
        "(eps/4), uniform random start, 1 restart; l_inf. Robust accuracy: correct on clean AND adversarial input",
        "checks": "sanity checks against gradient masking (Carlini et al. 2019) on the first 128 test points"
        if checks
        else "sanity checks not run",
        "device": describe_device(dev),
        "seed": seed,
        **environment(),
    }
    _write_report(result)
    return result


def _train_and_attack(
    result: QuickstartResult,
    kind: str,
    recipe: Any,
    splits: tuple[Any, Any, Any],
    attacks: tuple[str, str],
    dev: torch.device,
    report: Progress,
    checks: bool,
) -> None:
    """Train one of the two networks from the seed's initial weights, then attack its best checkpoint."""
    from arnas_zoo.checkpoint import load_folder, read_metrics
    from arnas_zoo.evaluate import evaluate
    from arnas_zoo.models import build_model
    from arnas_zoo.registry import get_config
    from arnas_zoo.training import train

    train_split, val_split, test = splits
    run_dir = result.out_dir / kind
    if run_dir.exists():
        shutil.rmtree(run_dir)
    report.write(f"quickstart: training the {kind} network ({recipe.epochs} epochs, recipe {recipe.name})")
    t0 = time.perf_counter()
    torch.manual_seed(recipe.seed)  # both networks start from the same initial weights
    outcome = train(
        build_model(get_config("arnas", **QUICKSTART_MODEL)),
        recipe,
        train_split,
        val_split,
        run_dir,
        device=dev,
        progress=report,
        run_name=f"arnas_c4l5_digits_{kind}",
    )
    result.phases[f"train {kind}"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = load_folder(outcome.best_dir, device=dev)
    evaluation = evaluate(
        model,
        test,
        attacks,
        eps=recipe.eps,
        device=dev,
        seed=recipe.seed,
        checks=checks,
        progress=report,
        model_info={"name": model.config.name, "source": str(outcome.best_dir)},
    )
    metrics = evaluation.to_metrics()
    metrics["training"] = (read_metrics(outcome.best_dir) or {}).get("training", {})
    atomic_write_json(outcome.best_dir / "metrics.json", metrics)
    result.phases[f"evaluate {kind}"] = time.perf_counter() - t0
    result.rows[kind] = {
        "clean": evaluation.clean_accuracy,
        "fgsm": evaluation.result(attacks[0]).robust_accuracy,
        "pgd": evaluation.result(attacks[1]).robust_accuracy,
    }
    result.checks[kind] = evaluation.failed_checks if checks else ["not run"]


def _write_report(result: QuickstartResult) -> None:
    s = result.settings
    phases = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in result.phases.items())
    text = "\n".join(
        [
            "# arnas-zoo quick start",
            "",
            "The same small ARNAS network trained with PGD adversarial training and without adversarial examples.",
            "",
            "```",
            result.table(),
            "```",
            "",
            result.expected(),
            "",
            f"- model: {s['model']}",
            f"- training data: {s['train']}",
            f"- evaluated on: {s['test']}",
            f"- attacks: {s['attacks']}",
            f"- {s['checks']}",
            "- recipe: `cpu_digits` (see adversarial/recipe.json); the standard run uses method=standard and "
            "selects its best epoch by clean validation accuracy",
            f"- device: {s['device']}; seed {s['seed']}; versions {s['versions']}",
            f"- time: {result.seconds:.0f} s ({phases})",
            f"- curves: {result.out_dir / 'adversarial' / 'curves.png'}, {result.out_dir / 'standard' / 'curves.png'}",
            "",
            "Next:",
            "",
            "```",
            *result.next_commands(),
            "```",
            "",
        ]
    )
    atomic_write_text(result.out_dir / "report.md", text)
    atomic_write_json(
        result.out_dir / "report.json",
        {
            "rows": result.rows,
            "checks": result.checks,
            "phases": result.phases,
            "settings": s,
            "seconds": result.seconds,
        },
    )
