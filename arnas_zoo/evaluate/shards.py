"""Evaluation split by points into jobs (:mod:`arnas_zoo.jobs`), merged into one ``metrics.json``.

AutoAttack on 10,000 points is hours on one device but splits by point: each shard is a run of whole
batches (``shard_size`` a multiple of ``batch_size``), and every batch draws its random starts from
``(seed, global batch index)`` (:func:`~arnas_zoo.evaluate.runner.batch_generator`), so a shard computes
for its points exactly what a single run computes for them. The merge concatenates the per-point
outcomes in order, recomputes every figure from the counts (per-attack accuracies, the per-point
worst case), and runs the sanity checks on the merged results, so the merged report equals a
single-process ``evaluate`` on the same points (figures, per-point outcomes and checks; timings and
creation time aside: ``tests/test_jobs.py``).

    report = evaluate_sharded("runs/mnist/best", dataset="mnist", n=10_000, attacks=["aa"], eps=0.3,
                              run_dir="runs/mnist-aa", shard_size=500, backend="ray", address="auto")
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

from arnas_zoo.errors import ConfigError
from arnas_zoo.evaluate.report import AttackResult, EvaluationReport, fraction, pack_mask, unpack_mask
from arnas_zoo.jobs import Job, run_jobs
from arnas_zoo.jobs_help import help_jobs
from arnas_zoo.progress import Progress


def _data(args: dict[str, Any], device: Any) -> Any:
    from arnas_zoo.data import evaluation_data

    return evaluation_data(
        args["dataset"],
        split=args.get("split", "test"),
        data_dir=args.get("data_dir"),
        n=args.get("n"),
        val_size=args.get("val_size"),
        device=device,
    )


def shard_inputs(args: dict[str, Any], run_dir: Path) -> list[Path]:
    """The files a shard's result depends on: a model folder's config and weights (a registry entry is
    pinned by sha256 already, and a Hub commit is immutable), and the data files its points come from
    (the test split, or the train split whose last rows stand in for it offline)."""
    from arnas_zoo.checkpoint import CONFIG_FILE, WEIGHTS_FILE
    from arnas_zoo.data.load import data_files
    from arnas_zoo.sources import resolve

    source = resolve(args["model"])
    model = [source.path / CONFIG_FILE, source.path / WEIGHTS_FILE] if source.kind == "folder" and source.path else []
    split = args.get("split", "test")
    data = data_files(args["dataset"], split, args.get("data_dir"))
    if not data and split == "test" and args.get("val_size") is None:  # offline CIFAR-10: the train file's rows
        data = data_files(args["dataset"], "train", args.get("data_dir"))
    return model + data


def run_shard(args: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Job kind ``evaluate-shard``: clean and every attack on points ``[start, stop)`` of the data."""
    from arnas_zoo.attacks import attack_mode
    from arnas_zoo.devices import resolve_device
    from arnas_zoo.evaluate.runner import _checked_inputs, check_model_fits, correct_mask, run_attack
    from arnas_zoo.hub import load

    device = resolve_device(args.get("device", "auto"))
    model = load(args["model"], device=device)
    data = _data(args, device)
    shard = data.subset(args["start"], args["stop"])
    batch = int(args["batch_size"])
    specs = _checked_inputs(model, shard, args["attacks"], args["norm"], batch)
    check_model_fits(model, shard)
    with attack_mode(model):
        clean = correct_mask(model, shard.x, shard.y, batch).cpu()
    results = []
    for spec in specs:
        r = run_attack(
            model,
            shard,
            spec,
            clean,
            eps=args["eps"],
            norm=args["norm"],
            batch_size=batch,
            seed=args["seed"],
            progress=Progress(enabled=False),
            batch_offset=args["start"] // batch,
        )
        row = r.to_dict()  # with the per-point correct_bits the merge concatenates
        row["forward_passes"] = r.forward_passes_per_image * max(len(shard), 1)
        row["backward_passes"] = r.backward_passes_per_image * max(len(shard), 1)
        results.append(row)
    return {
        "start": args["start"],
        "stop": args["stop"],
        "n": len(shard),
        "clean_bits": pack_mask(clean),
        "results": results,
    }


def shard_jobs(
    model: str,
    *,
    dataset: str,
    n_points: int,
    attacks: list[str],
    eps: float,
    norm: str = "linf",
    batch_size: int = 128,
    seed: int = 0,
    shard_size: int | None = None,
    split: str = "test",
    data_dir: str | None = None,
    n: int | None = None,
    val_size: int | None = None,
    device: str = "auto",
    gpus: float = 0.0,
) -> list[Job]:
    """The jobs of a sharded evaluation of ``n_points`` points (``shard_size`` rounded to whole batches)."""
    size = shard_size or n_points
    size = max(batch_size, (size // batch_size) * batch_size)
    common = {
        "model": model,
        "dataset": dataset,
        "split": split,
        "data_dir": data_dir,
        "n": n,
        "val_size": val_size,
        "attacks": list(attacks),
        "eps": eps,
        "norm": norm,
        "batch_size": batch_size,
        "seed": seed,
        "device": device,
    }
    return [
        Job(
            "evaluate-shard",
            {**common, "start": start, "stop": min(start + size, n_points)},
            gpus=gpus,
            label=f"points {start}-{min(start + size, n_points) - 1}",
        )
        for start in range(0, n_points, size)
    ]


def _covering(shards: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The shards in order; every point covered exactly once, else a ConfigError naming the gap."""
    shards = sorted(shards, key=lambda s: s["start"])
    expected = 0
    for s in shards:
        if s["start"] != expected:
            raise ConfigError(f"shards: points {expected}-{s['start'] - 1} are missing")
        expected = s["stop"]
    if expected != n:
        raise ConfigError(f"shards: they cover {expected} of {n} points")
    return shards


def _merged_result(i: int, shards: list[dict[str, Any]], clean: torch.Tensor) -> AttackResult:
    """Attack ``i`` over all shards: per-point outcomes concatenated, costs summed."""
    correct = torch.cat([unpack_mask(s["results"][i]["correct_bits"], s["n"]) for s in shards])
    robust = correct & clean
    n = len(clean)
    first = shards[0]["results"][i]
    skip = ("correct_bits", "robust_bits", "forward_passes", "backward_passes")  # robust_bits: older shard files
    fields = {k: v for k, v in first.items() if k not in skip}
    fields.update(
        n=n,
        robust_accuracy=fraction(robust),
        adversarial_accuracy=fraction(correct),
        seconds=sum(s["results"][i]["seconds"] for s in shards),
        forward_passes_per_image=sum(s["results"][i]["forward_passes"] for s in shards) / max(n, 1),
        backward_passes_per_image=sum(s["results"][i]["backward_passes"] for s in shards) / max(n, 1),
        max_perturbation=max(s["results"][i]["max_perturbation"] for s in shards),
        out_of_box=max(s["results"][i]["out_of_box"] for s in shards),
    )
    return AttackResult(**fields, correct=correct, robust=robust)


def merge_shards(
    shards: list[dict[str, Any]],
    model: Any,
    data: Any,
    *,
    eps: float,
    norm: str,
    batch_size: int,
    seed: int,
    checks: bool = True,
    check_n: int = 128,
    model_info: dict[str, Any] | None = None,
    device: Any = "cpu",
) -> EvaluationReport:
    """One report from the shards' per-point outcomes (the sanity checks run here, on the merged results)."""
    from arnas_zoo.devices import resolve_device
    from arnas_zoo.evaluate.runner import assemble_report

    shards = _covering(shards, len(data))
    clean = torch.cat([unpack_mask(s["clean_bits"], s["n"]) for s in shards])
    results = [_merged_result(i, shards, clean) for i in range(len(shards[0]["results"]))]
    return assemble_report(
        model, data, clean, results, eps=eps, norm=norm, batch_size=batch_size, seed=seed, checks=checks,
        check_n=check_n, model_info=model_info, device=resolve_device(device),
        seconds=sum(r.seconds for r in results),
    )  # fmt: skip


def evaluate_sharded(
    model: str,
    *,
    dataset: str,
    attacks: list[str],
    eps: float,
    run_dir: str | Path,
    norm: str = "linf",
    n: int | None = None,
    split: str = "test",
    data_dir: str | None = None,
    val_size: int | None = None,
    batch_size: int = 128,
    seed: int = 0,
    shard_size: int | None = None,
    backend: str = "local",
    address: str | None = None,
    max_parallel: int | None = None,
    device: str = "auto",
    checks: bool = True,
    check_n: int = 128,
    progress: bool | Progress = True,
    model_info: dict[str, Any] | None = None,
) -> EvaluationReport:
    """:func:`~arnas_zoo.evaluate.evaluate` of a loadable model (folder, Hub id, pretrained name), split
    into jobs of ``shard_size`` points run by ``backend``; resumable in ``run_dir``."""
    from arnas_zoo.hub import load

    where = {"dataset": dataset, "split": split, "data_dir": data_dir, "n": n, "val_size": val_size}
    data, jobs = _plan(model, where, attacks, eps, norm, batch_size, seed, shard_size, device)
    done = run_jobs(jobs, run_dir, backend=backend, address=address, max_parallel=max_parallel, progress=progress)
    loaded = load(model, device="cpu")
    return merge_shards(
        [done.results[j.key] for j in jobs],
        loaded,
        data,
        eps=eps,
        norm=norm,
        batch_size=batch_size,
        seed=seed,
        checks=checks,
        check_n=check_n,
        model_info=model_info,
        device="cpu" if device == "auto" else device,
    )


def _plan(
    model: str,
    where: dict[str, Any],
    attacks: list[str],
    eps: float,
    norm: str,
    batch_size: int,
    seed: int,
    shard_size: int | None,
    device: str,
) -> tuple[Any, list[Job]]:
    """The points (``where``: dataset, split, data_dir, n, val_size) and the jobs that evaluate them."""
    data = _data(where, "cpu")
    gpus = 1.0 if device.startswith("cuda") else 0.0
    jobs = shard_jobs(
        model, n_points=len(data), attacks=attacks, eps=eps, norm=norm, batch_size=batch_size, seed=seed,
        shard_size=shard_size, device=device, gpus=gpus, **where,
    )  # fmt: skip
    return data, jobs


def help_sharded(model: str, **options: Any) -> tuple[int, int]:
    """Help an :func:`evaluate_sharded` run with the same ``options`` (its keyword arguments, defaults
    included) in ``run_dir`` (local backend, another process, e.g. on another core): run the shards nobody
    has finished or holds, then return (shards run here, shards in all). The run takes these shards'
    results and writes the report; a helper writes none. The options must be the run's, or the jobs differ
    and nothing is shared; those that only concern the report (checks, backend, ...) are ignored."""
    a = inspect.signature(evaluate_sharded).bind(model, **options)
    a.apply_defaults()
    kw = a.arguments
    where = {k: kw[k] for k in ("dataset", "split", "data_dir", "n", "val_size")}
    plan = (kw["attacks"], kw["eps"], kw["norm"], kw["batch_size"], kw["seed"], kw["shard_size"], kw["device"])
    _, jobs = _plan(model, where, *plan)
    return help_jobs(jobs, kw["run_dir"], progress=kw["progress"]).ran, len(jobs)
