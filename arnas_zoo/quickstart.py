"""The quick start: adversarial versus standard training of a small ARNAS network, offline, on a CPU.

:func:`quickstart` trains the same small ARNAS network (5 cells, C=4: Accurate, Reduction, Accurate,
Reduction, Robust) twice on scikit-learn's digits (embedded in scikit-learn, so no network and no
files are needed): once with PGD adversarial training (recipe ``cpu_digits``) and once without
adversarial examples, with the same recipe otherwise. It then attacks both on the digits test split
(297 images) with FGSM and PGD and writes both checkpoint folders and a short report, so that the
effect of adversarial training is visible in two minutes on a laptop.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from arnas_zoo.checkpoint import atomic_write_json, atomic_write_text
from arnas_zoo.registry import create_model
from arnas_zoo.training import evaluate_folder, get_recipe, train

__all__ = ["QuickstartResult", "quickstart"]

QUICKSTART_MODEL = dict(in_channels=1, input_size=16, num_classes=10, init_channels=4, layers=5)
VAL_ROWS = 200  # the last 200 digits training rows select the best epoch; the 297 test rows are reported


@dataclass
class QuickstartResult:
    """Accuracies of both networks (fractions in [0, 1]) and where their folders and the report are."""

    out_dir: Path
    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def table(self) -> str:
        lines = [f"{'training':<13}{'clean':>8}{'FGSM':>8}{'PGD':>8}"]
        for name, row in self.rows.items():
            lines.append(f"{name:<13}" + "".join(f"{100 * row[k]:>7.1f}%" for k in ("clean", "fgsm", "pgd")))
        return "\n".join(lines)


def quickstart(
    out_dir: str | Path = "runs/quickstart",
    *,
    epochs: int | None = None,
    device: str = "auto",
    progress: bool = True,
    seed: int = 0,
    pgd_steps: int = 20,
    train_n: int | None = None,
    test_n: int | None = None,
) -> QuickstartResult:
    """Train the small ARNAS network with and without PGD adversarial training on digits; attack both.

    Writes ``<out_dir>/adversarial`` and ``<out_dir>/standard`` run folders (their ``best/`` subfolder
    is a checkpoint folder with the test metrics in ``metrics.json``) and ``<out_dir>/report.md`` /
    ``report.json``. An existing ``out_dir`` is replaced run by run (the quick start is not resumable:
    it is short). ``epochs`` overrides the recipe's 10 epochs; ``train_n``/``test_n`` keep the first
    training/test images only (smoke tests).
    """
    from arnas_zoo.data import load_dataset, split_train_val

    start = time.perf_counter()
    out_dir = Path(out_dir)
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    train_all = load_dataset("digits", "train")
    train_split, val_split = split_train_val(train_all, VAL_ROWS)
    test = load_dataset("digits", "test", n=test_n).to(dev)
    overrides: dict[str, Any] = {"seed": seed, "train_n": train_n}
    if epochs is not None:
        overrides["epochs"] = epochs
    adversarial = get_recipe("cpu_digits", **overrides)
    # a network trained without adversarial examples is selected by clean accuracy (its robust
    # accuracy is ~0 at every epoch, so robust selection would keep the untrained first epoch)
    standard = adversarial.replace(method="standard", name="cpu_digits_standard", select_by="clean")
    recipes = {"adversarial": adversarial, "standard": standard}
    result = QuickstartResult(out_dir)
    for kind, recipe in recipes.items():
        run_dir = out_dir / kind
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        torch.manual_seed(seed)  # both networks start from the same initial weights
        model = create_model("arnas", **QUICKSTART_MODEL)
        outcome = train(
            model,
            recipe,
            train_split,
            val_split,
            run_dir,
            device=dev,
            progress=progress,
            run_name=f"arnas_c4l5_digits_{kind}",
        )
        metrics = evaluate_folder(
            outcome.best_dir, test, attacks=("fgsm", f"pgd{pgd_steps}"), eps=adversarial.eps, device=dev, seed=seed
        )
        by_name = {r["attack"]: r for r in metrics["results"]}
        result.rows[kind] = {
            "clean": metrics["clean_accuracy"],
            "fgsm": by_name["fgsm"]["robust_accuracy"],
            "pgd": by_name[f"pgd{pgd_steps}"]["robust_accuracy"],
        }
    result.seconds = time.perf_counter() - start
    result.settings = {
        "model": "arnas " + json.dumps(QUICKSTART_MODEL),
        "train": f"digits train rows 0-{min(len(train_split), train_n or len(train_split)) - 1}, "
        f"validation rows {len(train_split)}-{len(train_all) - 1}",
        "test": f"digits test split, first n={len(test)} (scikit-learn rows from 1500)",
        "recipe": adversarial.to_dict(),
        "attacks": f"arnas_zoo.evaluate: FGSM eps {adversarial.eps}; PGD-{pgd_steps} eps {adversarial.eps} step "
        f"{adversarial.eps / 4:.4g} (eps/4), uniform random start, 1 restart; l_inf",
        "device": f"{dev} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "seed": seed,
    }
    _write_report(result)
    return result


def _write_report(result: QuickstartResult) -> None:
    s = result.settings
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
            f"- model: {s['model']}",
            f"- training data: {s['train']}",
            f"- evaluated on: {s['test']}",
            f"- attacks: {s['attacks']}",
            "- recipe: `cpu_digits` (see adversarial/recipe.json); the standard run uses method=standard and "
            "selects its best epoch by clean validation accuracy",
            f"- device: {s['device']}; seed {s['seed']}; wall time {result.seconds:.0f} s",
            f"- checkpoint folders: {result.out_dir / 'adversarial' / 'best'}, {result.out_dir / 'standard' / 'best'}",
            "",
        ]
    )
    atomic_write_text(result.out_dir / "report.md", text)
    atomic_write_json(result.out_dir / "report.json", {"rows": result.rows, "settings": s, "seconds": result.seconds})
