"""NSGA-II over the cell genotypes of the ARNAS and DARTS spaces: the evolutionary counterpart of the
differentiable search, on the same space (issue 16, "beyond the paper").

**Encoding.** A cell is 4 nodes; a node is two edges, each an op (one of the 7 DARTS ops without
``none``) and an input (node k reads states 0..k+1: the two cell inputs and earlier nodes), i.e. genes
``[op, input, op, input]`` per node. The ARNAS space has three cells (``accurate``, ``robust``,
``reduce``: 48 genes), the DARTS space two (``normal``, ``reduce``: 32 genes). Every node concatenates
into the cell output, as in the discretized DARTS/ARNAS genotypes. A repair makes a node's two inputs
distinct (the discretization never picks one input twice), so every gene vector is a valid genotype.

**Search.** pymoo's NSGA-II (:func:`search.nsga.evolve`), with a crossover that inherits whole nodes and
an integer random-reset mutation; three objectives, all minimised: clean validation error and PGD
validation error after a short *adversarial* training of the candidate (PGD-k, the project's training
code), and multiply-adds. Candidates are content-keyed jobs, so a killed run resumes without retraining.

**Comparison.** ``compare`` names genotypes (registry names such as ``arnas``/``darts_v2``, or genotype
JSON files from ``python -m search run``) that are trained and scored by the very same candidate job;
the front, the table and the plots show them beside the evolved candidates, with how many front members
dominate each. Outputs: ``candidates.csv/json``, ``front.json``, ``genotypes/front_*.json`` (builder-
ready), the knee and the top-k, ``plots/front_2d.png`` and ``plots/front_3d.png``.
"""

from __future__ import annotations

import csv
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arnas_zoo.atomic import atomic_write_json
from arnas_zoo.errors import ConfigError
from arnas_zoo.genotype import Genotype

from ..nsga import block_crossover, evolve, knee, reset_mutation
from .config import CELLS, DEFAULT_COMPARE, GENES_PER_NODE, NODES, OPS, EvolveConfig


# ---- genes <-> genotype ------------------------------------------------------------------------------
def gene_bounds(space: str) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive (low, high) of every gene: ops 0..6, node k's inputs 0..k+1."""
    high = []
    for _ in CELLS[space]:
        for k in range(NODES):
            high += [len(OPS) - 1, k + 1, len(OPS) - 1, k + 1]
    return np.zeros(len(high), dtype=np.int64), np.array(high, dtype=np.int64)


def repair(genes: np.ndarray, space: str) -> np.ndarray:
    """Make each node's two inputs distinct (the second moves to the next state, cyclically)."""
    out = np.array(genes, dtype=np.int64, copy=True)
    flat = out.reshape(-1, out.shape[-1])
    for c in range(len(CELLS[space])):
        for k in range(NODES):
            at = (c * NODES + k) * GENES_PER_NODE
            same = flat[:, at + 1] == flat[:, at + 3]
            flat[same, at + 3] = (flat[same, at + 1] + 1) % (k + 2)
    return flat.reshape(out.shape)


def to_genotype(genes: Any, space: str, name: str | None = None) -> Genotype:
    """The genotype of a gene vector (validated: bad genes raise :class:`arnas_zoo.errors.GenotypeError`)."""
    genes = [int(g) for g in genes]
    if len(genes) != len(CELLS[space]) * NODES * GENES_PER_NODE:
        raise ConfigError(f"{space} genes: expected {len(CELLS[space]) * NODES * GENES_PER_NODE}, got {len(genes)}")
    cells = {}
    for c, cell in enumerate(CELLS[space]):
        nodes = []
        for k in range(NODES):
            op0, in0, op1, in1 = genes[(c * NODES + k) * GENES_PER_NODE : (c * NODES + k + 1) * GENES_PER_NODE]
            if not (0 <= op0 < len(OPS) and 0 <= op1 < len(OPS)):
                raise ConfigError(f"{space} genes, cell {cell} node {k}: op index out of 0..{len(OPS) - 1}")
            nodes.append([[OPS[op0], in0], [OPS[op1], in1]])
        cells[cell] = {"nodes": nodes, "concat": list(range(2, 2 + NODES))}
    return Genotype.from_dict({"schema": "arnas-zoo/genotype@1", "space": space, "name": name, "cells": cells})


def key_of(genes: Any) -> str:
    return "".join(str(int(g)) for g in genes)


# ---- candidates (jobs) -------------------------------------------------------------------------------
def _recipe(config: EvolveConfig) -> dict[str, Any]:
    small = config.dataset in ("digits", "mnist")
    recipe: dict[str, Any] = {
        "method": "pgd",
        "epochs": max(1, int(round(config.train_epochs))),
        "batch_size": config.batch_size,
        "lr": config.lr,
        "schedule": "cosine",
        "weight_decay": 5e-4,
        "eps": config.eps,
        "step_size": config.step_size,
        "steps": config.steps,
        "start": "uniform",
        "eps_warmup_epochs": 1.0 if config.train_epochs > 1 else 0.0,
        "val_steps": config.val_steps,
        "val_step_size": config.eps / 4,
        "val_n": config.val_n,
        "select_by": "robust",
        "cutout": 0,
        "flip": not small,
        "crop_padding": 1 if small else 4,
        "seed": config.seed,
    }
    if config.train_n:
        recipe["train_n"] = config.train_n
    return recipe


def candidate_job(args: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Job kind ``evolve-candidate``: adversarially train one cell genotype briefly and score it."""
    from arnas_zoo.attacks import pgd
    from arnas_zoo.data import evaluation_data
    from arnas_zoo.hub import load
    from arnas_zoo.stats import count_ops
    from arnas_zoo.training import run_training

    config = EvolveConfig.from_dict(args["config"])
    folder = Path(run_dir) / "candidates" / args["key"]
    folder.mkdir(parents=True, exist_ok=True)
    path = Genotype.from_dict(args["genotype"]).save(folder / "genotype.json")
    started = time.perf_counter()
    result = run_training(
        str(path),
        "cpu_digits",
        config.dataset,
        out_dir=folder / "train",
        data_dir=config.data_dir,
        val_rows=config.val_rows,
        recipe_overrides=_recipe(config),
        model_overrides={"init_channels": config.init_channels, "layers": config.layers},
        resume=(folder / "train" / "train_state.safetensors").is_file(),
        device="cpu" if not torch.cuda.is_available() else "auto",
        progress=False,
        eval_attacks=None,
    )
    trained = time.perf_counter()
    # the last epoch, not the best: no epoch is chosen on the validation rows the objectives read, so an
    # objective is one reading of those rows, not the best of several
    model = load(str(result.last_dir), device="cpu").eval()
    selection = result.history[-1]
    test = evaluation_data(config.dataset, n=config.pgd_n, data_dir=config.data_dir)
    c, h, w = test.x.shape[1:]
    macs, _ = count_ops(model, (int(c), int(h), int(w)))
    with torch.no_grad():
        clean = model(test.x).argmax(1) == test.y
    adv = pgd(model, test.x, test.y, eps=config.eps, step_size=config.eps / 4, steps=20,
              generator=torch.Generator().manual_seed(config.seed))  # fmt: skip
    with torch.no_grad():
        robust = clean & (model(adv).argmax(1) == test.y)
    return {
        "genotype": args["genotype"],
        "clean_error": 1.0 - float(selection["val_clean_acc"]),
        "pgd_error": 1.0 - float(selection["val_robust_acc"]),
        "macs": int(macs),
        "parameters": sum(p.numel() for p in model.parameters()),
        "test_clean_accuracy": float(clean.double().mean()),
        "test_pgd20_accuracy": float(robust.double().mean()),
        "train_seconds": round(trained - started, 2),
        "score_seconds": round(time.perf_counter() - trained, 2),
    }


def objectives(row: dict[str, Any]) -> list[float]:
    return [row["clean_error"], row["pgd_error"], float(row["macs"])]


def _register() -> None:
    from arnas_zoo.jobs import register_kind

    register_kind("evolve-candidate", f"{__name__}:candidate_job")


def _algorithm(config: EvolveConfig) -> Any:
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.problem import Problem
    from pymoo.core.repair import Repair
    from pymoo.operators.sampling.rnd import IntegerRandomSampling
    from pymoo.termination import get_termination

    class DistinctInputs(Repair):
        def _do(self, _problem: Any, X: np.ndarray, **kwargs: Any) -> np.ndarray:
            return repair(X, config.space)

    low, high = gene_bounds(config.space)
    problem = Problem(n_var=config.n_genes, n_obj=3, xl=low, xu=high, vtype=int)
    algorithm = NSGA2(
        pop_size=config.population,
        sampling=IntegerRandomSampling(),
        crossover=block_crossover(config.n_genes // GENES_PER_NODE, GENES_PER_NODE, config.crossover_prob),
        mutation=reset_mutation(config.mutation_prob),
        repair=DistinctInputs(),
        eliminate_duplicates=True,
    )
    algorithm.setup(problem, termination=get_termination("n_gen", config.generations), seed=config.seed)
    return algorithm


def _compare_genotype(target: str) -> Genotype:
    from arnas_zoo.registry import get_config, is_registered

    if is_registered(target):
        genotype = get_config(target).genotype
        if genotype is None:
            raise ConfigError(f"compare: {target!r} is not a cell architecture")
        return genotype
    return Genotype.load(target)


def run_evolve(
    config: EvolveConfig,
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
    """The whole search, then the ``compare`` genotypes through the same candidate job; resumable."""
    from arnas_zoo.jobs import Job, run_jobs
    from arnas_zoo.progress import Progress
    from arnas_zoo.runs.folder import claim_run_folder
    from arnas_zoo.runs.lock import RunFolderLock

    config.validate()
    targets = config.compare if config.compare is not None else DEFAULT_COMPARE[config.space]
    compare = {target: _compare_genotype(target) for target in targets}
    for target, genotype in compare.items():
        if genotype.space != config.space:
            raise ConfigError(f"compare: {target!r} is a {genotype.space} genotype; this search is over {config.space}")
    with RunFolderLock(out_dir, "evolutionary cell search"):  # one writer, from the config check to the last result
        out = claim_run_folder(out_dir, config.to_dict(), "evolutionary cell search", resume)
        report = Progress.of(progress)
        _register()

        def job_for(x: np.ndarray, generation: int) -> Job:
            genotype = to_genotype(x, config.space, name=f"{config.name}-{key_of(x)}").to_dict()
            args = {"config": config.to_dict(), "genotype": genotype, "key": key_of(x)}
            return Job("evolve-candidate", args, label=f"gen {generation}")

        evaluated = evolve(
            _algorithm(config),
            out,
            job_for=job_for,
            objectives=objectives,
            generations=config.generations,
            report=report,
            backend=backend,
            address=address,
            max_parallel=max_parallel,
            stop_after_generations=stop_after_generations,
        )
        if evaluated is None:
            return {"stopped_after_generations": stop_after_generations}
        refs = [
            Job("evolve-candidate", {"config": {**config.to_dict(), "seed": seed}, "genotype": g.to_dict(),
                                     "key": f"ref-{t}-seed{seed}"}, label="compare")
            for t, g in compare.items()
            for seed in range(config.seed, config.seed + config.compare_seeds)
        ]  # fmt: skip
        done = run_jobs(refs, out, backend=backend, address=address, max_parallel=max_parallel, progress=report)
        references = {job.args["key"]: done.results[job.key] for job in refs}
        return finish(config, out, evaluated, references, plots=plots)


def _dominates(a: list[float], b: list[float]) -> bool:
    """Pareto dominance (all objectives minimised): a is nowhere worse and somewhere better than b."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def finish(
    config: EvolveConfig,
    out: Path,
    evaluated: dict[str, dict[str, Any]],
    references: dict[str, dict[str, Any]],
    *,
    plots: bool = True,
) -> dict[str, Any]:
    """The table of every candidate, the non-dominated set exported as genotypes, and the comparison."""

    keys = list(evaluated)
    F = np.array([objectives(evaluated[k]) for k in keys])
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    # the front over every candidate evaluated (not only the last population), by pymoo's sorting
    front_keys = [keys[i] for i in NonDominatedSorting().do(F, only_non_dominated_front=True)]
    columns = ["key", "generation", "on_front", "clean_error", "pgd_error", "macs", "parameters",
               "test_clean_accuracy", "test_pgd20_accuracy", "train_seconds"]  # fmt: skip
    table = [{"key": k, "on_front": k in front_keys, **evaluated[k]} for k in keys]
    table += [{"key": k, "on_front": False, "generation": "compare", **r} for k, r in references.items()]
    table.sort(key=lambda r: (not r["on_front"], r["clean_error"]))
    atomic_write_json(out / "candidates.json", table)
    with (out / "candidates.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows([[r.get(c) for c in columns] for r in table])
    front = [r for r in table if r["on_front"]]
    folder = out / "genotypes"
    folder.mkdir(exist_ok=True)
    exported = []
    for i, r in enumerate(front):
        genotype = replace(
            Genotype.from_dict(r["genotype"]),
            name=f"{config.name}-seed{config.seed}-front{i}",
            notes=f"NSGA-II front member {i}: clean error {r['clean_error']:.4f}, PGD error {r['pgd_error']:.4f}, "
            f"{r['macs']} MACs ({config.dataset}, C={config.init_channels}, {config.layers} cells)",
        )
        exported.append(str(genotype.save(folder / f"front_{i}.json").relative_to(out)))
    front_F = np.array([objectives(r) for r in front])
    top = sorted(front, key=lambda r: r["pgd_error"])[: config.top_k]
    comparison = _comparison(references, front)
    summary = {
        "config": config.name,
        "space": config.space,
        "objectives": ["clean_error", "pgd_error", "macs"],
        "rows": {
            "objectives": f"the last {config.val_rows} {config.dataset} train rows (validation), last epoch: they "
            "choose the front",
            "reported": f"the first {config.pgd_n} {config.dataset} test rows (no decision reads them): "
            "test_clean_accuracy, test_pgd20_accuracy and the comparison",
        },
        "evaluated": len(evaluated),
        "front": [{k: v for k, v in r.items() if k != "genotype"} for r in front],
        "knee": front[knee(front_F)]["key"] if front else None,
        "top_k_by_pgd_error": [r["key"] for r in top],
        "top_k_mean_test_pgd20_accuracy": float(np.mean([r["test_pgd20_accuracy"] for r in top])) if top else None,
        "compare": comparison,
        "genotypes": exported,
    }
    atomic_write_json(out / "front.json", summary)
    if plots:
        _plots(table, out, config)
    return summary


def _heldout(row: dict[str, Any]) -> list[float]:
    """The held-out point of a candidate: test errors (rows no decision read) and MACs, all minimised."""
    return [1.0 - row["test_clean_accuracy"], 1.0 - row["test_pgd20_accuracy"], float(row["macs"])]


def _comparison(references: dict[str, dict[str, Any]], front: list[dict[str, Any]]) -> dict[str, Any]:
    """Each compared genotype over its training seeds, on held-out figures only.

    The front was chosen on the validation rows, as the best of many noisy draws there, so validation
    figures would flatter it against a genotype trained once. The test rows chose nothing: front
    members (one training each) and the compared genotype (mean over its seeds) meet there.
    """
    grouped: dict[str, list[dict[str, Any]]] = {}
    for key, row in references.items():
        grouped.setdefault(key.rsplit("-seed", 1)[0], []).append(row)
    out: dict[str, Any] = {}
    for key, rows in grouped.items():
        clean = [r["test_clean_accuracy"] for r in rows]
        robust = [r["test_pgd20_accuracy"] for r in rows]
        mean = {"test_clean_accuracy": float(np.mean(clean)), "test_pgd20_accuracy": float(np.mean(robust)),
                "macs": rows[0]["macs"]}  # fmt: skip
        out[key] = {
            "seeds": len(rows),
            "test_clean_accuracy": clean,
            "test_pgd20_accuracy": robust,
            "mean_test_clean_accuracy": mean["test_clean_accuracy"],
            "mean_test_pgd20_accuracy": mean["test_pgd20_accuracy"],
            "seed_spread_test_pgd20": float(np.max(robust) - np.min(robust)),
            "macs": rows[0]["macs"],
            "dominated_by_front_members_heldout": sum(_dominates(_heldout(f), _heldout(mean)) for f in front),
            "front_members": len(front),
        }
    return out


def _plots(table: list[dict[str, Any]], out: Path, config: EvolveConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out / "plots").mkdir(exist_ok=True)
    groups = [
        ([r for r in table if r["generation"] != "compare" and not r["on_front"]], dict(s=12, c="0.6"), "evaluated"),
        ([r for r in table if r["on_front"]], dict(s=22, c="C3"), "NSGA-II front"),
        ([r for r in table if r["generation"] == "compare"], dict(s=120, c="C0", marker="*"), "compared genotypes"),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in ((axes[0], "clean_error", "clean validation error"), (axes[1], "pgd_error", "PGD error")):
        for rows, style, name in groups:
            ax.scatter([r["macs"] / 1e6 for r in rows], [r[key] for r in rows], label=name, **style)
        for r in groups[2][0]:
            ax.annotate(r["key"].removeprefix("ref-").rsplit("-seed", 1)[0], (r["macs"] / 1e6, r[key]), fontsize=8)
        ax.set(xlabel="MMACs", ylabel=label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"NSGA-II over {config.space} cells ({config.name}): {len(table)} candidates")
    fig.tight_layout()
    fig.savefig(out / "plots" / "front_2d.png", dpi=120)
    plt.close(fig)
    fig = plt.figure(figsize=(6, 5))
    ax3 = fig.add_subplot(projection="3d")
    for rows, style, name in groups:
        ax3.scatter([r["clean_error"] for r in rows], [r["pgd_error"] for r in rows],
                    [r["macs"] / 1e6 for r in rows], label=name, **style)  # fmt: skip
    ax3.set(xlabel="clean error", ylabel="PGD error", zlabel="MMACs")
    ax3.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "plots" / "front_3d.png", dpi=120)
    plt.close(fig)
