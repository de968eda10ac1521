"""RoCo-NAS (Geraeinejad et al., 2021): NSGA-II over NSGA-Net macro genotypes for clean error, FLOPs
and error on a fixed transferred adversarial set.

1. **Transfer set** (:func:`build_transfer_set`, paper Sec. III-B, Table I): before the search, a few
   source networks of other architectures are trained (through the project's training code), and
   adversarial examples are crafted on them from validation rows with l_inf PGD at several eps and a
   few-pixel l_0 random search (``k`` pixels set to 0 or 1; the paper uses the one-pixel attack's
   differential evolution: ours is a cheaper black-box search with the same threat model). Only
   examples that fool their source are kept. Stored as ``transfer_set.npz`` with ``transfer_set.json``
   (sources, attacks, eps, seeds, counts) and split by a seeded permutation: half scores candidates
   during the search, half is held out for reporting.
2. **Search** (:func:`run_roco`): pymoo's NSGA-II (non-dominated sorting, crowding distance, elitism)
   through its ask/tell interface; binary genes; a crossover that inherits whole phases from either
   parent; bit-flip mutation of one phase at a time (the paper's rule); duplicate elimination.
   Objectives: clean validation error and search-half transfer error after a short clean training of
   each candidate, and FLOPs (``roco``); or clean error and FLOPs (``objectives=2``, the ablation).
   Each candidate is a job (:mod:`arnas_zoo.jobs`; its training is :func:`arnas_zoo.training.run_training`).
3. **Resume without pickle**: every evaluation is a content-keyed job result, and pymoo's choices
   depend only on the seed and the objective values, so a resumed run replays the generations from
   the seed with the stored results (no training repeated) and continues; each generation's
   population and objectives are also written as ``generations/gen_XXX.npz`` (plain arrays).
4. **Outputs**: ``candidates.csv/json`` (every evaluated genotype with its objectives and held-out
   transfer and white-box PGD accuracies), ``front.json`` and ``genotypes/front_*.json`` (the
   non-dominated set, builder-ready), the knee and the top-k by clean accuracy, ``plots/front_2d.png``
   and ``plots/front_3d.png``.

The settings live in :mod:`search.roco.config`, the transfer set in :mod:`search.roco.transfer`.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arnas_zoo.atomic import atomic_write_json
from arnas_zoo.errors import ConfigError
from arnas_zoo.macro import MacroGenotype, bits_per_phase
from arnas_zoo.safe_json import read_json

from ..nsga import block_crossover, block_mutation, evolve, knee
from .config import RocoConfig
from .transfer import _train, _transfer, build_transfer_set

log = logging.getLogger(__name__)


# ---- candidates (jobs) -------------------------------------------------------------------------------
def candidate_job(args: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Job kind ``roco-candidate``: train a macro genotype briefly, score every objective and report."""
    from arnas_zoo.attacks import pgd
    from arnas_zoo.data import evaluation_data
    from arnas_zoo.stats import count_ops

    config = RocoConfig.from_dict(args["config"])
    run_dir = Path(run_dir)
    genotype = MacroGenotype.from_bits(args["bits"], config.phases, config.nodes, name=f"macro-{args['key']}")
    folder = run_dir / "candidates" / args["key"]
    folder.mkdir(parents=True, exist_ok=True)
    path = genotype.save(folder / "genotype.json")
    started = time.perf_counter()
    # the last epoch, not the best: no epoch is chosen on the validation rows the clean objective reads
    model, result = _train(
        str(path), {"init_channels": config.init_channels}, config, folder / "train", config.train_epochs, "last"
    )
    model.eval()
    trained = time.perf_counter()
    val_clean = float(result.history[-1]["val_clean_acc"])
    x, y, half = _transfer(run_dir)
    with torch.no_grad():
        right = torch.cat([model(x[i : i + 512]).argmax(1) == y[i : i + 512] for i in range(0, len(x), 512)])
    search_acc = float(right[torch.from_numpy(half == 0)].double().mean())
    held_acc = float(right[torch.from_numpy(half == 1)].double().mean())
    c, h, w = x.shape[1:]
    macs, _ = count_ops(model, (int(c), int(h), int(w)))
    test = evaluation_data(config.dataset, n=config.pgd_n, data_dir=config.data_dir, device="cpu")
    tx, ty = test.x, test.y
    clean = model(tx).argmax(1) == ty
    adv = pgd(
        model,
        tx,
        ty,
        eps=config.pgd_eps,
        step_size=config.pgd_eps / 4,
        steps=20,
        generator=torch.Generator().manual_seed(config.seed),
    )
    robust = clean & (model(adv).argmax(1) == ty)
    return {
        "bits": list(args["bits"]),
        "clean_error": 1.0 - val_clean,
        "transfer_error": 1.0 - search_acc,
        "flops": int(macs),
        "heldout_transfer_accuracy": held_acc,
        "test_clean_accuracy": float(clean.double().mean()),
        "test_pgd20_accuracy": float(robust.double().mean()),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(trained - started, 2),
        "score_seconds": round(time.perf_counter() - trained, 2),
    }


def _register() -> None:
    from arnas_zoo.jobs import register_kind

    register_kind("roco-candidate", f"{__name__}:candidate_job", inputs=f"{__package__}.transfer:transfer_inputs")


# ---- NSGA-II with pymoo ------------------------------------------------------------------------------
def phase_crossover(phases: int, per_phase: int, prob: float) -> Any:
    """A pymoo crossover: each child takes every phase whole from one of its two parents."""
    return block_crossover(phases, per_phase, prob)


def _algorithm(config: RocoConfig) -> Any:
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.problem import Problem
    from pymoo.operators.sampling.rnd import BinaryRandomSampling
    from pymoo.termination import get_termination

    problem = Problem(n_var=config.n_bits, n_obj=config.objectives, xl=0, xu=1, vtype=bool)
    algorithm = NSGA2(
        pop_size=config.population,
        sampling=BinaryRandomSampling(),
        crossover=phase_crossover(config.phases, bits_per_phase(config.nodes), config.crossover_prob),
        mutation=block_mutation(config.phases, bits_per_phase(config.nodes), config.mutation_prob),
        eliminate_duplicates=True,
    )
    algorithm.setup(problem, termination=get_termination("n_gen", config.generations), seed=config.seed)
    return algorithm


def objectives(row: dict[str, Any], n: int) -> list[float]:
    values = [row["clean_error"], row["transfer_error"], float(row["flops"])]
    return values if n == 3 else [values[0], values[2]]


def run_roco(
    config: RocoConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    backend: str = "local",
    address: str | None = None,
    max_parallel: int | None = None,
    progress: Any = True,
    plots: bool = True,
    stop_after_generations: int | None = None,
) -> dict[str, Any]:
    """The whole search; ``stop_after_generations`` (a testing aid) stops like a kill after that many."""
    from arnas_zoo.jobs import Job
    from arnas_zoo.progress import Progress
    from arnas_zoo.runs.folder import claim_run_folder
    from arnas_zoo.runs.lock import RunFolderLock

    config.validate()
    with RunFolderLock(out_dir, "RoCo-NAS search"):  # one writer, from the config check to the last result
        out = claim_run_folder(out_dir, config.to_dict(), "RoCo-NAS search", resume)
        report = Progress.of(progress)
        report.write("transfer set: training the sources and crafting (once)")
        transfer = build_transfer_set(config, out)
        _register()
        algorithm = _algorithm(config)

        def job_for(x: np.ndarray, generation: int) -> Job:
            bits = [int(b) for b in x]
            key = "".join(map(str, bits))
            args = {"config": config.to_dict(), "bits": bits, "key": key}
            return Job("roco-candidate", args, label=f"gen {generation}")

        evaluated = evolve(
            algorithm,
            out,
            job_for=job_for,
            objectives=lambda row: objectives(row, config.objectives),
            generations=config.generations,
            report=report,
            backend=backend,
            address=address,
            max_parallel=max_parallel,
            stop_after_generations=stop_after_generations,
        )
        if evaluated is None:
            return {"stopped_after_generations": stop_after_generations}
        return finish(config, out, algorithm, evaluated, transfer, plots=plots)


def _front_keys(algorithm: Any) -> list[str]:
    return ["".join(map(str, x.astype(np.uint8).tolist())) for x in algorithm.opt.get("X")]


def finish(
    config: RocoConfig,
    out: Path,
    algorithm: Any,
    evaluated: dict[str, dict[str, Any]],
    transfer: dict[str, Any],
    *,
    plots: bool = True,
) -> dict[str, Any]:

    front = _front_keys(algorithm)
    table = []
    for key, r in evaluated.items():
        table.append({"key": key, "on_front": key in front, **{k: v for k, v in r.items() if k != "bits"}})
    table.sort(key=lambda r: (not r["on_front"], r["clean_error"]))
    atomic_write_json(out / "candidates.json", table)
    columns = [
        "key",
        "generation",
        "on_front",
        "clean_error",
        "transfer_error",
        "flops",
        "parameters",
        "heldout_transfer_accuracy",
        "test_clean_accuracy",
        "test_pgd20_accuracy",
    ]
    with (out / "candidates.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows([[r[c] for c in columns] for r in table])
    front_rows = [r for r in table if r["on_front"]]
    F = np.array([objectives(evaluated[r["key"]], config.objectives) for r in front_rows])
    k = knee(F) if len(F) else -1
    folder = out / "genotypes"
    folder.mkdir(exist_ok=True)
    exported = []
    for i, r in enumerate(front_rows):
        g = MacroGenotype.from_bits(
            [int(c) for c in r["key"]], config.phases, config.nodes, name=f"{config.name}-seed{config.seed}-front{i}"
        )
        g = replace(
            g,
            notes=(
                f"RoCo-NAS {config.name} front member {i}: clean error {r['clean_error']:.4f}, "
                f"transfer error {r['transfer_error']:.4f}, {r['flops']} MACs"
            ),
        )
        exported.append(str(g.save(folder / f"front_{i}.json").relative_to(out)))
    top = sorted(front_rows, key=lambda r: r["clean_error"])[: config.top_k]
    summary = {
        "config": config.name,
        "objectives": ["clean_error", "transfer_error", "flops"]
        if config.objectives == 3
        else ["clean_error", "flops"],
        "evaluated": len(table),
        "front": front_rows,
        "knee": front_rows[k]["key"] if k >= 0 else None,
        "top_k": [r["key"] for r in top],
        "transfer_set": {key: transfer[key] for key in ("n", "search_half", "held_out_half")},
        "front_mean_heldout_transfer_accuracy": float(np.mean([r["heldout_transfer_accuracy"] for r in front_rows])),
        "top_k_mean_heldout_transfer_accuracy": float(np.mean([r["heldout_transfer_accuracy"] for r in top])),
        "top_k_mean_test_pgd20_accuracy": float(np.mean([r["test_pgd20_accuracy"] for r in top])),
        "genotypes": exported,
    }
    atomic_write_json(out / "front.json", summary)
    if plots:
        _plots(table, out, config)
    return summary


def _plots(table: list[dict[str, Any]], out: Path, config: RocoConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = out / "plots"
    folder.mkdir(exist_ok=True)
    front = [r for r in table if r["on_front"]]
    rest = [r for r in table if not r["on_front"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in (
        (axes[0], "clean_error", "clean validation error"),
        (axes[1], "transfer_error", "transfer-set error (search half)"),
    ):
        ax.scatter([r["flops"] / 1e6 for r in rest], [r[key] for r in rest], s=12, c="0.6", label="evaluated")
        ax.scatter([r["flops"] / 1e6 for r in front], [r[key] for r in front], s=22, c="C3", label="front")
        ax.set(xlabel="MMACs", ylabel=label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"RoCo-NAS {config.name}: {len(table)} candidates, {config.objectives} objectives")
    fig.tight_layout()
    fig.savefig(folder / "front_2d.png", dpi=120)
    plt.close(fig)
    fig = plt.figure(figsize=(6, 5))
    ax3 = fig.add_subplot(projection="3d")
    for rows, color in ((rest, "0.6"), (front, "C3")):
        ax3.scatter(
            [r["clean_error"] for r in rows],
            [r["transfer_error"] for r in rows],
            [r["flops"] / 1e6 for r in rows],
            c=color,
            s=14,
        )
    ax3.set_xlabel("clean error")
    ax3.set_ylabel("transfer error")
    ax3.set_zlabel("MMACs")
    fig.tight_layout()
    fig.savefig(folder / "front_3d.png", dpi=120)
    plt.close(fig)


def matched_flops(run: str | Path, baseline: str | Path) -> dict[str, Any]:
    """Paper Table V's comparison: each front member of ``run`` against the ``baseline`` front member of
    nearest FLOPs (white-box PGD-20 and clean test accuracy differences), from two finished run folders."""
    fronts = []
    for folder in (run, baseline):
        table = Path(folder) / "candidates.json"
        if not table.is_file():
            raise ConfigError(f"{folder}: no candidates.json; finish (or --resume) that RoCo-NAS run first")
        rows = read_json(table, what="RoCo-NAS candidate table")
        if not isinstance(rows, list) or not all(isinstance(r, dict) and "on_front" in r for r in rows):
            raise ConfigError(f"{table}: expected the list of candidates a RoCo-NAS run writes")
        fronts.append([r for r in rows if r["on_front"]])
        if not fronts[-1]:
            raise ConfigError(f"{table}: no front member to compare")
    pairs = []
    for r in sorted(fronts[0], key=lambda r: r["flops"]):
        match = min(fronts[1], key=lambda q: (abs(q["flops"] - r["flops"]), q["key"]))
        pairs.append(
            {
                "key": r["key"],
                "flops": r["flops"],
                "baseline_key": match["key"],
                "baseline_flops": match["flops"],
                "pgd20_difference": r["test_pgd20_accuracy"] - match["test_pgd20_accuracy"],
                "clean_difference": r["test_clean_accuracy"] - match["test_clean_accuracy"],
            }
        )
    diffs = [p["pgd20_difference"] for p in pairs]
    return {
        "run": str(run),
        "baseline": str(baseline),
        "pairs": pairs,
        "mean_pgd20_difference": float(np.mean(diffs)) if diffs else None,
        "pairs_better": sum(d > 0 for d in diffs),
        "pairs_worse": sum(d < 0 for d in diffs),
    }
