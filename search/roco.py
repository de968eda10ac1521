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

Why one module of ~580 lines: the transfer set, the candidate job and the NSGA-II run share
RocoConfig and the run folder's layout.
"""

from __future__ import annotations

import csv
import hmac
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arnas_zoo.atomic import atomic_write_json, replacing
from arnas_zoo.checkpoint import sha256_file
from arnas_zoo.errors import ConfigError, UntrustedFileError
from arnas_zoo.macro import MacroGenotype, bits_per_phase
from arnas_zoo.safe_json import read_json, read_json_object
from search.nsga import block_crossover, block_mutation, evolve, knee
from search.presets import config_from_dict, with_overrides

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RocoConfig:
    name: str = "roco"
    dataset: str = "cifar10"
    data_dir: str | None = None
    val_rows: int = 1000
    phases: int = 3
    nodes: int = 6
    init_channels: int = 16
    objectives: int = 3  # 3: clean error, transfer error, FLOPs; 2: clean error, FLOPs
    population: int = 40
    generations: int = 20
    mutation_prob: float = 0.02  # per bit on average; an offspring's flips all fall in one phase
    crossover_prob: float = 0.9
    seed: int = 0
    # candidate training (paper: 25 epochs) through arnas_zoo.training, clean ("standard")
    train_epochs: float = 25.0
    train_n: int | None = None
    batch_size: int = 128
    lr: float = 0.025
    # transfer set (paper Table I: l_0 and l_inf thresholds 1, 3, 5, 10)
    source_archs: tuple[str, ...] = ("resnet18", "darts_v2")
    source_epochs: float = 10.0
    source_width: int = 16
    transfer_from: int = 1000  # validation rows attacked
    linf_eps: tuple[float, ...] = (1 / 255, 3 / 255, 5 / 255, 10 / 255)
    l0_pixels: tuple[int, ...] = (1, 3, 5, 10)
    l0_trials: int = 100
    # reporting
    pgd_n: int = 500  # white-box PGD-20 on this many test points for every candidate
    pgd_eps: float = 8 / 255
    top_k: int = 3

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RocoConfig:
        return config_from_dict(cls, data, "roco", tuple_keys=("source_archs", "linf_eps", "l0_pixels"))

    def with_overrides(self, pairs: list[str] | tuple[str, ...]) -> RocoConfig:
        return with_overrides(self, pairs)

    def validate(self) -> None:
        if self.objectives not in (2, 3):
            raise ConfigError(f"objectives: expected 2 or 3, got {self.objectives}")
        if self.population < 2 or self.generations < 1:
            raise ConfigError("population >= 2 and generations >= 1 expected")
        if not 2 <= self.nodes <= 12 or not 1 <= self.phases <= 8:
            raise ConfigError(f"nodes in [2, 12] and phases in [1, 8] expected, got {self.nodes}, {self.phases}")

    @property
    def n_bits(self) -> int:
        return self.phases * bits_per_phase(self.nodes)


PRESETS: dict[str, RocoConfig] = {
    # the paper's Table II: 3 phases x 6 nodes, population 40, 20 generations, 25 training epochs
    "roco": RocoConfig(),
    "roco-2obj": RocoConfig(name="roco-2obj", objectives=2),
    # minutes on 2 CPU cores: the embedded digits (16x16), 3 phases x 4 nodes, population 8, 4 generations
    "roco-tiny": RocoConfig(
        name="roco-tiny",
        dataset="digits",
        val_rows=300,
        nodes=4,
        init_channels=8,
        population=8,
        generations=4,
        mutation_prob=0.05,
        train_epochs=5.0,
        batch_size=64,
        lr=0.05,
        source_archs=("resnet18", "darts_v2"),
        source_epochs=3.0,
        source_width=8,
        transfer_from=300,
        linf_eps=(0.05, 0.1, 0.2, 0.3),
        l0_pixels=(3, 10, 20, 40),
        l0_trials=30,
        pgd_n=297,
        pgd_eps=0.1,
    ),
}
PRESETS["roco-tiny-2obj"] = replace(PRESETS["roco-tiny"], name="roco-tiny-2obj", objectives=2)


# ---- the transfer set --------------------------------------------------------------------------------
def _train(
    arch: str, overrides: dict[str, Any], config: RocoConfig, out: Path, epochs: float, checkpoint: str = "best"
) -> Any:
    from arnas_zoo.hub import load
    from arnas_zoo.training import run_training

    recipe = {
        "method": "standard",
        "epochs": max(1, int(round(epochs))),
        "batch_size": config.batch_size,
        "lr": config.lr,
        "schedule": "cosine",
        "weight_decay": 5e-4,
        "select_by": "clean",
        "val_steps": 1,  # candidates train clean; the validation attack is not used
        "cutout": 0,
        "flip": config.dataset != "digits" and config.dataset != "mnist",
        "crop_padding": 1 if config.dataset in ("digits", "mnist") else 4,
    }
    if config.train_n:
        recipe["train_n"] = config.train_n
    resume = (out / "train_state.safetensors").is_file()
    result = run_training(
        arch,
        "cpu_digits",
        config.dataset,
        out_dir=out,
        data_dir=config.data_dir,
        val_rows=config.val_rows,
        recipe_overrides=recipe,
        model_overrides=overrides,
        resume=resume,
        device="cpu" if not torch.cuda.is_available() else "auto",
        progress=False,
        eval_attacks=None,
        eval_n=None,
    )
    return load(str(result.best_dir if checkpoint == "best" else result.last_dir), device="cpu"), result


def _validation_rows(config: RocoConfig) -> tuple[torch.Tensor, torch.Tensor]:
    from arnas_zoo.data import load_dataset, split_train_val

    data = load_dataset(config.dataset, "train", data_dir=config.data_dir)
    _, val = split_train_val(data, config.val_rows)
    return val.x[: config.transfer_from], val.y[: config.transfer_from]


def l0_random_search(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, pixels: int, trials: int, gen: torch.Generator
) -> torch.Tensor:
    """Per image: up to ``trials`` random sets of ``pixels`` pixels set to 0 or 1 (all channels); the first
    that fools ``model`` is kept, else the image is returned unchanged."""
    model.eval()
    n, c, h, w = x.shape
    out = x.clone()
    fooled = torch.zeros(n, dtype=torch.bool)
    with torch.no_grad():
        for _ in range(trials):
            todo = (~fooled).nonzero().flatten()
            if len(todo) == 0:
                break
            cand = x[todo].clone()
            for row in range(len(todo)):
                where = torch.randperm(h * w, generator=gen)[:pixels]
                values = torch.randint(0, 2, (pixels,), generator=gen).float()
                flat = cand[row].view(c, h * w)
                flat[:, where] = values
            hit = model(cand).argmax(1) != y[todo]
            out[todo[hit]] = cand[hit]
            fooled[todo[hit]] = True
    return out


def build_transfer_set(config: RocoConfig, out: Path) -> dict[str, Any]:
    """Train the source models, craft and keep the successful examples, split in halves; idempotent."""
    from arnas_zoo.attacks import pgd

    npz, meta_path = out / "transfer_set.npz", out / "transfer_set.json"
    if npz.is_file() and meta_path.is_file():
        reason = _transfer_set_problem(npz, meta_path)
        if reason is None:
            meta: dict[str, Any] = read_json_object(meta_path, what="transfer set record")
            return meta
        log.warning("%s: %s; building the transfer set again", out, reason)
    x, y = _validation_rows(config)
    xs, ys, tags, provenance = [], [], [], []
    for s, arch in enumerate(config.source_archs):
        overrides: dict[str, Any] = {"init_channels": config.source_width}
        if arch != "resnet18":
            overrides.update(layers=5, auxiliary=False)
        model, result = _train(arch, overrides, config, out / "sources" / arch, config.source_epochs)
        model.eval()
        clean_acc = float((model(x).argmax(1) == y).double().mean())
        for eps in config.linf_eps:
            gen = torch.Generator().manual_seed(config.seed * 1000 + s * 100 + int(eps * 1000))
            adv = pgd(model, x, y, eps=eps, step_size=eps / 4, steps=10, generator=gen)
            hit = model(adv).argmax(1) != y
            xs.append(adv[hit])
            ys.append(y[hit])
            tags += [f"{arch}/linf-pgd10/{eps:.4g}"] * int(hit.sum())
            provenance.append({"source": arch, "attack": "pgd10", "norm": "linf", "eps": eps, "kept": int(hit.sum())})
        for k in config.l0_pixels:
            gen = torch.Generator().manual_seed(config.seed * 1000 + s * 100 + 50 + k)
            adv = l0_random_search(model, x, y, k, config.l0_trials, gen)
            hit = model(adv).argmax(1) != y
            xs.append(adv[hit])
            ys.append(y[hit])
            tags += [f"{arch}/l0-random/{k}"] * int(hit.sum())
            provenance.append(
                {
                    "source": arch,
                    "attack": "l0 random search",
                    "pixels": k,
                    "trials": config.l0_trials,
                    "kept": int(hit.sum()),
                }
            )
        provenance.append(
            {
                "source": arch,
                "clean_accuracy_on_attacked_rows": clean_acc,
                "trained": str(result.best_dir.relative_to(out)),
            }
        )
    x_all, y_all = torch.cat(xs), torch.cat(ys)
    perm = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(config.seed + 7))
    half = np.zeros(len(x_all), dtype=np.uint8)
    half[perm[len(x_all) // 2 :].numpy()] = 1  # 0: search half, 1: held out
    with replacing(npz) as tmp:
        np.savez_compressed(tmp, x=x_all.numpy(), y=y_all.numpy(), half=half, tag=np.array(tags))
    digest = sha256_file(npz)
    meta = {
        "sha256": digest,
        "signature": _sign(digest),
        "n": len(x_all),
        "search_half": int((half == 0).sum()),
        "held_out_half": int((half == 1).sum()),
        "attacked": f"{config.dataset} validation rows (last {config.val_rows} train rows), first {len(x)}",
        "seed": config.seed,
        "provenance": provenance,
    }
    atomic_write_json(meta_path, meta)
    return meta


def _transfer_set_problem(npz: Path, meta_path: Path) -> str | None:
    """Why a saved transfer set cannot be reused (unreadable record, or an npz other than the one recorded)."""
    try:
        meta = read_json_object(meta_path, max_bytes=16 * 1024 * 1024, what="transfer set record")
    except UntrustedFileError as exc:
        return str(exc).split(": ", 1)[-1]
    digest = sha256_file(npz)
    if meta.get("sha256") != digest:
        return "transfer_set.npz is not the file its record names (changed, corrupted, or from an older version)"
    if not isinstance(meta.get("signature"), str) or not hmac.compare_digest(meta["signature"], _sign(digest)):
        return "its record is not signed with this user's job key (edited together with the npz?)"
    return None


def _sign(digest: str) -> str:
    """The transfer set's sha256 signed with the job layer's key (as job results are)."""
    from arnas_zoo.jobs import signing_key

    return hmac.new(signing_key(), f"transfer-set:{digest}".encode(), "sha256").hexdigest()


def transfer_inputs(args: dict[str, Any], run_dir: Path) -> list[Path]:
    """A candidate's result depends on the transfer set it was scored on."""
    return [Path(run_dir) / "transfer_set.npz"]


def _transfer(out: Path) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    with np.load(out / "transfer_set.npz") as data:
        return torch.from_numpy(data["x"]), torch.from_numpy(data["y"]), data["half"]


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

    register_kind("roco-candidate", "search.roco:candidate_job", inputs="search.roco:transfer_inputs")


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
