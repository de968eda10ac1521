"""What ``arnas-zoo train`` runs: a registry architecture, a dataset by name, a recipe by name."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from arnas_zoo.progress import Progress
from arnas_zoo.training.loop import TrainResult, train
from arnas_zoo.training.recipe import Recipe, get_recipe


def parse_model_overrides(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"init_channels": "8", "filter_multipliers": "[1, 2, 2]"}`` -> typed values (JSON where it parses)."""
    parsed: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        try:
            parsed[key] = json.loads(value) if isinstance(value, str) else value
        except (ValueError, RecursionError):
            parsed[key] = value
    return parsed


def run_training(
    arch: str,
    recipe: str | Recipe = "arnas",
    dataset: str = "digits",
    *,
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    train_split: str = "train",
    val_rows: int = 1000,
    selection_rows: int = 0,
    recipe_overrides: Mapping[str, Any] | None = None,
    model_overrides: Mapping[str, Any] | None = None,
    resume: bool = False,
    previous: bool = False,
    device: str | torch.device = "auto",
    progress: bool | Progress = True,
    name: str | None = None,
    eval_attacks: Sequence[str] | None = ("fgsm", "pgd20"),
    eval_n: int | None = 1000,
    init_from: str | Path | None = None,
) -> TrainResult:
    """Train ``arch`` (a registry name, a searched genotype JSON or a config.json) on ``dataset``'s train split.

    The model's input channels/size and classes follow the dataset; ``model_overrides`` values may be
    JSON text (``"8"``, ``"[1, 2, 2]"``). The last ``val_rows`` training rows are held out for model
    selection (0: none). At the end the best checkpoint is evaluated with ``eval_attacks`` on the first
    ``eval_n`` points of the test split (the validation rows when the test split is not on disk).
    ``train_split`` names the rows trained on (``train_full`` for all 60k MNIST images, ``train_mix`` for
    the 50k CIFAR-10 mix, whose last 1000 rows are the genuine validation rows).

    ``selection_rows`` splits selection from reporting (the protocol no decision touches): the
    ``selection_rows`` rows before the last ``val_rows`` choose the epoch and stop early, and the last
    ``val_rows`` rows are read once, by the final evaluation of the chosen checkpoint. Without it (0)
    the last ``val_rows`` rows do both, as in the zoo's earlier runs; ``metrics.json`` records which
    rows each role read and whether they are disjoint.

    ``init_from`` (anything :func:`arnas_zoo.load` accepts: a registry name, a checkpoint folder, a Hub
    repo) starts from those weights instead of random ones, with a fresh optimizer and learning-rate
    schedule (a warm restart, e.g. more epochs for a model whose cosine schedule has ended). Its
    architecture must equal ``arch``'s; where it came from (and its weights' digest) is written into
    the run's model config, so ``--resume`` needs the same ``init_from``.
    """
    from arnas_zoo.data import dataset_info, load_dataset
    from arnas_zoo.errors import DataNotFoundError
    from arnas_zoo.registry import resolve_config

    info = dataset_info(dataset)
    config = resolve_config(
        arch,
        in_channels=info.in_channels,
        input_size=info.input_size,
        num_classes=info.num_classes,
        **parse_model_overrides(model_overrides),
    )
    the_recipe = get_recipe(recipe, **dict(recipe_overrides or {}))
    data = load_dataset(dataset, train_split, data_dir=data_dir, selection_rows=selection_rows)
    train_rows, val_split, reporting = _protocol_splits(data, val_rows, selection_rows)
    test_data = None
    if eval_attacks:
        try:  # the dataset's test split when it exists here; else the held-out reporting rows (said in metrics.json)
            test_data = load_dataset(dataset, "test", data_dir=data_dir, n=eval_n)
        except DataNotFoundError:
            test_data = reporting.first(eval_n) if reporting is not None else None
    torch.manual_seed(the_recipe.seed)  # the initial weights depend on the recipe's seed only
    model: Any = config if init_from is None else initial_model(config, init_from)
    return train(
        model,
        the_recipe,
        train_rows,
        val_split,
        out_dir,
        resume=resume,
        previous=previous,
        device=device,
        progress=progress,
        run_name=name or config.name,
        test_data=test_data,
        eval_attacks=tuple(eval_attacks or ()),
    )


def initial_model(config: Any, init_from: str | Path) -> Any:
    """A model of ``config`` holding the weights of ``init_from``; its config records where they came from.

    Raises :class:`~arnas_zoo.errors.ConfigError` when the two architectures differ (a different genotype,
    width, depth, input or class count): a warm start must continue the same network.
    """
    import hashlib

    from arnas_zoo.errors import ConfigError
    from arnas_zoo.hub import load
    from arnas_zoo.models import build_model
    from arnas_zoo.runs.state import load_module

    start = load(init_from)
    ours, theirs = config.to_dict(), start.config.to_dict()
    ignored = {"name", "extra", "threat_model", "eps", "drop_path_prob"}  # labels and training-time settings
    differ = sorted(k for k in ours if k not in ignored and ours[k] != theirs.get(k))
    if differ:
        shown = "; ".join(f"{k}: {theirs.get(k)!r} there, {ours[k]!r} here" for k in differ[:3])
        raise ConfigError(f"init_from {str(init_from)!r}: its architecture differs from the run's ({shown})")
    net = build_model(config)
    weights = start.state_dict()
    load_module(net, weights, f"init_from {str(init_from)!r}")  # strict; a misfit is one CheckpointError line
    digest = hashlib.sha256()
    for key in sorted(weights):
        digest.update(key.encode())
        digest.update(weights[key].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    origin = {"spec": str(init_from), "name": start.config.name, "weights_digest": digest.hexdigest()}
    net.config = config.replace(extra={**dict(config.extra), "init_from": origin})
    return net


def _protocol_splits(data: Any, val_rows: int, selection_rows: int) -> tuple[Any, Any, Any]:
    """``(training rows, rows that choose the epoch, rows reported on)`` from the end of the train split."""
    from arnas_zoo.data import split_train_val
    from arnas_zoo.errors import ConfigError

    if val_rows < 0 or val_rows >= len(data):
        raise ConfigError(f"val_rows: expected 0 <= val_rows < {len(data)} (the training rows), got {val_rows}")
    if selection_rows < 0 or (selection_rows and (not val_rows or selection_rows + val_rows >= len(data))):
        raise ConfigError(
            f"selection_rows: expected 0, or 0 < selection_rows < {len(data) - val_rows} with val_rows > 0 "
            f"(the selection rows come before the {val_rows} reporting rows), got {selection_rows}"
        )
    train_rows, val_split = split_train_val(data, val_rows) if val_rows else (data, None)
    reporting = val_split
    if selection_rows and val_split is not None:  # reporting = the last val_rows; selection = the rows before
        train_rows, val_split = split_train_val(train_rows, selection_rows)
    return train_rows, val_split, reporting


def run_training_job(args: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Job kind ``train`` (:mod:`arnas_zoo.jobs`): :func:`run_training` into ``run_dir / args["out"]``.

    Resumes a half-finished run folder (a worker killed mid-training loses only the steps since the last
    saved state). Returns the best checkpoint's folder (relative to ``run_dir``) and its metrics.
    """
    from arnas_zoo.runs.state import read_state
    from arnas_zoo.training.loop import STATE_FILE

    out = Path(run_dir) / args["out"]
    resume = (out / STATE_FILE).is_file()
    if resume:
        read_state(out / STATE_FILE)  # a damaged state fails the job (retried) instead of being ignored
    result = run_training(
        args["arch"],
        args.get("recipe", "arnas"),
        args.get("dataset", "digits"),
        out_dir=out,
        data_dir=args.get("data_dir"),
        train_split=args.get("train_split", "train"),
        val_rows=int(args.get("val_rows", 1000)),
        selection_rows=int(args.get("selection_rows", 0)),
        recipe_overrides=args.get("recipe_overrides"),
        model_overrides=args.get("model_overrides"),
        resume=resume,
        device=args.get("device", "auto"),
        progress=False,
        name=args.get("name"),
        eval_attacks=args.get("eval_attacks", ("fgsm", "pgd20")),
        eval_n=args.get("eval_n", 1000),
        init_from=args.get("init_from"),
    )
    metrics_path = Path(result.best_dir) / "metrics.json"
    from arnas_zoo.safe_json import read_json

    metrics = read_json(metrics_path, what="metrics") if metrics_path.is_file() else {}
    return {
        "best_dir": str(Path(result.best_dir).relative_to(run_dir)),
        "best": _jsonable(result.best),
        "metrics": metrics,
    }


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
