"""A robust-architecture leaderboard: every registry architecture at one reduced size, one recipe, one budget.

:func:`run_leaderboard` plans, per architecture, a ``train`` job (:mod:`arnas_zoo.jobs`, the project's
training code) and a ``leaderboard-eval`` job (clean, PGD and AutoAttack on the same first ``n``
evaluation points of every model). Jobs are keyed by their settings, so running the same command again
continues where the last run stopped: finished jobs are skipped and a half-trained model resumes from
its saved state. :func:`write_table` turns the results into ``docs/leaderboard.md`` and a plot of robust
accuracy against parameters and FLOPs.

A run folder is scratch (git-ignored, lost with a checkout); the zoo is not. A model registered from a
board (``scripts/zoo_from_leaderboard.py``) carries the board's settings in its ``metrics.json``
(:func:`signature`), so its row comes from the registry wherever the run folder lacks it, and
``run`` does not train it again unless asked: the board continues where the last machine stopped.

The sizes are far below the papers' (C=4, 5 cells for the cell networks on a 2-core CPU), so ranks here
may differ from the papers'; the table says so.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arnas_zoo.errors import ConfigError
from arnas_zoo.figures import tiers, wilson_interval
from arnas_zoo.jobs import Job, read_result, run_jobs
from arnas_zoo.safe_json import read_json_object

#: The common reduced size of each architecture (cell networks: C=4, 5 cells; reduction cells kept in place).
REDUCED_SIZES: dict[str, dict[str, Any]] = {
    "arnas": {"init_channels": 4, "layers": 5},
    "darts_v2": {"init_channels": 4, "layers": 5},
    "resnet18": {"init_channels": 8},
    "darts_v1": {"init_channels": 4, "layers": 5},
    "pdarts": {"init_channels": 4, "layers": 5},
    "advrush": {"init_channels": 4, "layers": 5},
    "racl": {"init_channels": 4, "layers": 5},
    "robnet_large": {"init_channels": 4, "layers": 5},
    # RobNet-free has one cell per layer: keep its normal and reduction cells at the same relative places
    "robnet_free": {"init_channels": 4, "layers": 5, "cell_types": ["cell0", "cell6", "cell7", "cell13", "cell14"]},
    "wrn34_10": {"init_channels": 8, "layers": 10},  # WRN-10 at width 8: the WRN family at this budget
    "arnas_cpu_s0": {"init_channels": 4, "layers": 5},  # this project's own searched cells
}


@dataclass(frozen=True)
class Board:
    """One leaderboard: a dataset, its training rows and recipe, and the evaluation every model gets."""

    dataset: str
    train_split: str
    recipe: str
    eps: float
    eval_n: int = 200
    attacks: tuple[str, ...] = ("pgd20", "pgd100-cw", "aa")
    recipe_overrides: dict[str, Any] = field(default_factory=dict)
    seed: int = 0


BOARDS: dict[str, Board] = {
    "mnist": Board("mnist", "train_full", "cpu_mnist_full", 0.3),
    "cifar10": Board("cifar10", "train_mix", "cpu_cifar10", 8 / 255),
}


def _train_job(board: Board, arch: str) -> Job:
    return Job(
        "train",
        {
            "arch": arch,
            "recipe": board.recipe,
            "dataset": board.dataset,
            "train_split": board.train_split,
            "val_rows": 1000,
            "recipe_overrides": dict(board.recipe_overrides, seed=board.seed),
            "model_overrides": REDUCED_SIZES[arch],
            "out": f"train/{arch}",
            "name": f"{arch}_{board.dataset}_leaderboard",
            "eval_attacks": [],
        },
    )


def _eval_job(board: Board, arch: str) -> Job:
    return Job(
        "leaderboard-eval",
        {
            "folder": f"train/{arch}/best",
            "dataset": board.dataset,
            "n": board.eval_n,
            "attacks": list(board.attacks),
            "eps": board.eps,
            "seed": board.seed,
            "train": _train_job(board, arch).key,  # a retrained model is a new evaluation
        },
    )


def eval_inputs(args: dict[str, Any], run_dir: Path) -> list[Path]:
    """The files a ``leaderboard-eval`` result depends on: the trained model's config and weights, and the
    data file of the board's evaluation points (the test split, or offline the train file whose last rows
    stand in for it)."""
    from arnas_zoo.data.load import data_files

    folder = Path(run_dir) / args["folder"]
    data = data_files(args["dataset"], "test") or data_files(args["dataset"], "train")
    return [folder / "config.json", folder / "model.safetensors", *data]


def run_eval_job(args: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Job kind ``leaderboard-eval``: the report of one trained model on the board's points, with its size."""
    from arnas_zoo.checkpoint import load_folder
    from arnas_zoo.data import evaluation_data
    from arnas_zoo.evaluate import evaluate
    from arnas_zoo.introspect import compute_stats

    folder = Path(run_dir) / args["folder"]
    model = load_folder(folder)
    data = evaluation_data(args["dataset"], n=int(args["n"]))
    report = evaluate(
        model,
        data,
        list(args["attacks"]),
        eps=float(args["eps"]),
        seed=int(args["seed"]),
        progress=False,
        checks=True,
        model_info={"name": folder.parent.name, "source": str(folder)},
    )
    metrics = report.to_metrics()
    metrics["stats"] = compute_stats(model.config)
    return metrics


def plan_jobs(board: Board, archs: Sequence[str]) -> list[Job]:
    unknown = [a for a in archs if a not in REDUCED_SIZES]
    if unknown:
        raise ConfigError(f"leaderboard: no reduced size for {unknown}; expected some of {list(REDUCED_SIZES)}")
    jobs: list[Job] = []
    for arch in archs:  # train, then evaluate, one architecture at a time: partial boards are useful early
        jobs += [_train_job(board, arch), _eval_job(board, arch)]
    return jobs


def run_leaderboard(
    board: Board,
    run_dir: str | Path,
    archs: Sequence[str] | None = None,
    *,
    retrain_registered: bool = False,
    **backend: Any,
) -> list[dict[str, Any]]:
    """Train and evaluate ``archs`` (default: every one of :data:`REDUCED_SIZES`) into ``run_dir``; resumable.

    Architectures with a registered model of this board (:func:`registered`) are skipped unless
    ``retrain_registered``: their row comes from the zoo.
    """
    run_dir = Path(run_dir)
    archs = list(archs or REDUCED_SIZES)
    zoo_rows = registered(board)
    todo = archs if retrain_registered else [a for a in archs if a not in zoo_rows]
    if todo:
        run_jobs(plan_jobs(board, todo), run_dir, **backend)
    return rows(board, run_dir, archs, zoo_rows=zoo_rows)


def signature(board: Board, arch: str) -> dict[str, Any]:
    """What makes a row of ``board`` comparable: data, recipe, seed, size, evaluation points and attacks."""
    return {
        "dataset": board.dataset,
        "train_split": board.train_split,
        "recipe": board.recipe,
        "recipe_overrides": dict(board.recipe_overrides),
        "seed": board.seed,
        "arch": arch,
        "size": dict(REDUCED_SIZES[arch]),
        "eval_n": board.eval_n,
        "eps": board.eps,
        "attacks": list(board.attacks),
    }


def registered(board: Board) -> dict[str, tuple[str, dict[str, Any]]]:
    """``arch -> (zoo name, metrics)`` of the bundled zoo models trained and evaluated exactly as ``board``.

    A model counts only when the signature in its ``metrics.json`` (``training.leaderboard``) equals
    :func:`signature` and its report covers the board's points and attacks; superseded entries do not.
    """
    from arnas_zoo.pretrained import list_pretrained

    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for spec in list_pretrained():
        if spec.folder is None or spec.superseded_by or spec.arch not in REDUCED_SIZES:
            continue
        path = spec.bundled_path() / "metrics.json"
        metrics = read_json_object(path, what="metrics") if path.is_file() else {}
        stamp = dict(metrics.get("training") or {}).get("leaderboard")
        if stamp != signature(board, spec.arch):
            continue
        attacks = [r["attack"] for r in metrics.get("results", [])]
        if metrics.get("data", {}).get("n") == board.eval_n and attacks == list(board.attacks):
            found[spec.arch] = (spec.name, metrics)
    return found


def finished(board: Board, run_dir: str | Path, arch: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(training result, evaluation report)`` of ``arch`` when both jobs are done in ``run_dir``, else None."""
    train = read_result(Path(run_dir), _train_job(board, arch))
    report = read_result(Path(run_dir), _eval_job(board, arch))
    return None if train is None or report is None else (train, report)


def rows(
    board: Board,
    run_dir: str | Path,
    archs: Sequence[str] | None = None,
    *,
    zoo: bool = True,
    zoo_rows: dict[str, tuple[str, dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """One row per architecture whose evaluation is finished, best worst-case accuracy first.

    A row comes from ``run_dir`` when both its jobs are finished there, else (``zoo``) from a registered
    model of this board (``zoo_rows``: :func:`registered`'s answer, when the caller has it already);
    ``weights`` names the zoo entry holding the row's weights.
    """
    out = []
    if not zoo:
        zoo_rows = {}
    elif zoo_rows is None:
        zoo_rows = registered(board)
    for arch in archs or REDUCED_SIZES:
        done = finished(board, run_dir, arch)
        if done is not None:
            train, metrics = done
            epoch = train["best"].get("epoch")
            minutes = train_minutes(Path(run_dir) / "train" / arch / "log.jsonl")
            weights = _zoo_name_of(Path(run_dir) / train["best_dir"], zoo_rows.get(arch, (None, {}))[0])
        elif arch in zoo_rows:
            weights, metrics = zoo_rows[arch]
            epoch = metrics["training"].get("epoch")
            minutes = float(metrics["training"]["seconds"]) / 60 if "seconds" in metrics["training"] else None
        else:
            continue
        stats = metrics.get("stats") or _stats(weights)
        row: dict[str, Any] = {
            "arch": arch,
            "size": REDUCED_SIZES[arch],
            "params": stats["params"],
            "macs": stats["macs"],
            "clean": metrics["clean_accuracy"],
            "worst_case": metrics["worst_case_accuracy"],
            "checks_failed": metrics["failed_checks"],
            "n": metrics["data"]["n"],
            "epoch": epoch,
            "train_minutes": minutes,
            "weights": weights,
        }
        for result in metrics["results"]:
            row[result["attack"]] = result["robust_accuracy"]
        out.append(row)
    return sorted(out, key=lambda r: (-r["worst_case"], -r["clean"]))


def _zoo_name_of(folder: Path, name: str | None) -> str | None:
    """``name`` when that zoo entry holds the very weights in ``folder``, else None: the same file
    (sha256), or the same tensors less the auxiliary head that registration strips."""
    import torch
    from safetensors.torch import load_file

    from arnas_zoo.checkpoint import WEIGHTS_FILE, sha256_file
    from arnas_zoo.pretrained import get_pretrained

    weights = folder / WEIGHTS_FILE
    if name is None or not weights.is_file():
        return None
    spec = get_pretrained(name)
    if sha256_file(weights) == spec.sha256:
        return name
    if spec.folder is None:
        return None
    zoo = load_file(str(spec.bundled_path() / WEIGHTS_FILE))
    ours = {k: v for k, v in load_file(str(weights)).items() if not k.startswith("auxiliary_head.")}
    same = zoo.keys() == ours.keys() and all(torch.equal(zoo[k], ours[k]) for k in zoo)
    return name if same else None


def _stats(name: str | None) -> dict[str, Any]:
    """Parameters and MACs of a registered model: the registry's stored counts, else counted from its config."""
    from arnas_zoo.checkpoint import read_config
    from arnas_zoo.introspect import compute_stats
    from arnas_zoo.pretrained import get_pretrained

    assert name is not None
    spec = get_pretrained(name)
    if spec.params is not None and spec.macs is not None:
        return {"params": spec.params, "macs": spec.macs}
    return compute_stats(read_config(spec.bundled_path()))


#: The most of a training log that is read to sum its epochs' seconds (a log of 200 epochs is ~100 KB).
MAX_LOG_BYTES = 64 * 1024 * 1024


def train_minutes(log: Path) -> float | None:
    """Wall minutes of training summed over the epochs of a run's ``log.jsonl`` (None without a log)."""
    if not log.is_file():
        return None
    from arnas_zoo.safe_json import parse_json

    total = 0.0
    with open(log, "rb") as fh:
        for line in fh.read(MAX_LOG_BYTES).splitlines():
            record = parse_json(line, where=str(log), what="log line") if line.strip() else {}
            total += float(record.get("seconds", 0.0)) if isinstance(record, dict) else 0.0
    return total / 60


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def render_table(board: Board, table: Sequence[dict[str, Any]], plot: str | None = None) -> str:
    """``docs/leaderboard.md``: the settings, one row per architecture, and the reduced-scale caveat."""
    lines = [
        f"# Robust-architecture leaderboard: {board.dataset}",
        "",
        "Generated by `arnas-zoo leaderboard run` (rerun it to continue or refresh). Every architecture is",
        "trained from scratch by the same recipe and budget at one reduced size, and evaluated on the same",
        "points with the same attacks. **These are reduced-scale figures: ranks may differ from the papers'.**",
        "",
        f"- training: `{board.dataset}` split `{board.train_split}` (last 1,000 rows held out for model selection), "
        f"recipe `{board.recipe}`{f' {board.recipe_overrides}' if board.recipe_overrides else ''}, seed {board.seed}; "
        "train min: wall minutes of training on one thread of a 2-core CPU shared with other jobs",
        f"- evaluation: first {board.eval_n} evaluation points (`arnas_zoo.data.evaluation_data`), l_inf eps "
        f"{board.eps:.4g}, attacks {', '.join(board.attacks)} (pgd: step eps/4, random start, 1 restart; "
        "aa: the reference AutoAttack, standard version); robust = correct on the clean and on the adversarial input",
        "- worst case: a point counts only if it survives every attack; in brackets its 95% Wilson interval "
        f"on the {board.eval_n} points",
        "- tier: rows are grouped, not numbered: a row stays in the tier of the best row above it while their "
        "worst-case intervals overlap, so rows of one tier are not told apart by this evaluation",
        "- weights: the zoo entry (`arnas_zoo.load(NAME)`) holding the row's very checkpoint and report",
        "",
    ]
    if board.dataset == "cifar10":  # offline, CIFAR-10's reported points are validation rows
        caveat = (
            "- offline there is no CIFAR-10 test split: the evaluation points are the first genuine validation "
            "rows (official indices from 40017), the rows that also selected each model's epoch "
            "(selection bias possible)"
        )
        lines.insert(-1, caveat)
    attacks = list(board.attacks)
    head = ["tier", "architecture", "size", "params", "MMACs", "clean", *attacks, "worst case", "best epoch",
            "train min", "checks", "weights"]  # fmt: skip
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for tier, row in zip(tiers([(r["worst_case"], r["n"]) for r in table]), table):
        size = ", ".join(f"{k}={v}" for k, v in row["size"].items() if k != "cell_types")
        cells = [
            str(tier),
            row["arch"],
            size,
            f"{row['params']:,}",
            f"{row['macs'] / 1e6:.2f}",
            _pct(row["clean"]),
            *(_pct(row.get(a)) for a in attacks),
            f"{_pct(row['worst_case'])} ({', '.join(_pct(b) for b in wilson_interval(row['worst_case'], row['n']))})",
            str(row["epoch"]),
            "-" if row.get("train_minutes") is None else f"{row['train_minutes']:.0f}",
            "ok" if not row["checks_failed"] else "FAILED: " + ", ".join(row["checks_failed"]),
            f"`{row['weights']}`" if row.get("weights") else "run folder only",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    missing = [a for a in REDUCED_SIZES if a not in {r["arch"] for r in table}]
    if missing:
        lines += ["", f"Not finished yet: {', '.join(missing)}."]
    if plot:
        lines += ["", f"![robust accuracy against parameters and MACs]({plot})"]
    return "\n".join(lines) + "\n"


def spread_labels(xs: Sequence[float], ys: Sequence[float], dx: float, gap: float) -> list[float]:
    """Heights for the labels of points (``xs``, ``ys``): each label starts at its point's height and is
    moved up just enough that labels less than ``dx`` apart in x are at least ``gap`` apart in height."""
    placed: list[tuple[float, float]] = []
    heights = [0.0] * len(ys)
    for i in sorted(range(len(ys)), key=lambda k: ys[k]):
        height = ys[i]
        while clash := [h for x, h in placed if abs(x - xs[i]) < dx and abs(h - height) < gap]:
            height = max(clash) + gap
        placed.append((xs[i], height))
        heights[i] = height
    return heights


def plot_table(table: Sequence[dict[str, Any]], path: str | Path, title: str) -> Path:
    """Worst-case robust accuracy against parameters and against MACs (log x), one labelled point per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, label in ((axes[0], "params", "parameters"), (axes[1], "macs", "multiply-adds per image")):
        for row in table:
            ax.scatter(row[key], 100 * row["worst_case"], color="tab:red")
            ax.scatter(row[key], 100 * row["clean"], color="tab:blue", marker="x")
        # labels of nearby points would print over each other: stack them (log x, so spacing in log10)
        span = [100 * row[k] for row in table for k in ("worst_case", "clean")]
        gap = 0.045 * (max(span) - min(span) + 10) if span else 1.0
        logs = [math.log10(max(row[key], 1)) for row in table]
        heights = spread_labels(logs, [100 * row["worst_case"] for row in table], dx=0.25, gap=gap)
        for row, height in zip(table, heights, strict=True):
            moved = height > 100 * row["worst_case"] + 1e-9
            ax.annotate(row["arch"], (row[key], 100 * row["worst_case"]), xytext=(row[key] * 1.06, height),
                        textcoords="data", fontsize=8, va="center",
                        arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6} if moved else None)  # fmt: skip
        ax.set_xscale("log")
        # at least a factor of 4 around the points, and labels only at 1, 2, 5 x 10^k in engineering
        # notation (matplotlib labels every minor tick of a narrow log range, and they overlap)
        values = [row[key] for row in table if row[key]]
        if values:
            lo, hi = min(values), max(values)
            pad = max(2.0, (4 * lo / hi) ** 0.5)
            ax.set_xlim(lo / pad, hi * pad)
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_locator(ticker.LogLocator(subs="auto"))
        ax.xaxis.set_major_formatter(ticker.EngFormatter(sep=""))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%): x clean, o worst case")
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_table(board: Board, run_dir: str | Path, out: str | Path, plot: str | Path | None = None) -> str:
    """Write the markdown table (and the plot) of the finished rows of ``run_dir``; returns the markdown."""
    table = rows(board, run_dir)
    out = Path(out)
    plot_ref = None
    if plot is not None and table:
        plot_path = plot_table(table, plot, f"{board.dataset} leaderboard (reduced scale, n={board.eval_n})")
        plot_ref = os.path.relpath(Path(plot_path).resolve(), out.resolve().parent)
    text = render_table(board, table, plot_ref)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text
