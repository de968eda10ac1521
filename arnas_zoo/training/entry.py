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
    val_rows: int = 1000,
    recipe_overrides: Mapping[str, Any] | None = None,
    model_overrides: Mapping[str, Any] | None = None,
    resume: bool = False,
    previous: bool = False,
    device: str | torch.device = "auto",
    progress: bool | Progress = True,
    name: str | None = None,
    eval_attacks: Sequence[str] | None = ("fgsm", "pgd20"),
    eval_n: int | None = 1000,
) -> TrainResult:
    """Train registry architecture ``arch`` on ``dataset``'s train split.

    The model's input channels/size and classes follow the dataset; ``model_overrides`` values may be
    JSON text (``"8"``, ``"[1, 2, 2]"``). The last ``val_rows`` training rows are held out for model
    selection (0: none). At the end the best checkpoint is evaluated with ``eval_attacks`` on the first
    ``eval_n`` points of the test split (the validation rows when the test split is not on disk).
    """
    from arnas_zoo.data import dataset_info, load_dataset, split_train_val
    from arnas_zoo.errors import ConfigError, DataNotFoundError
    from arnas_zoo.registry import get_config

    info = dataset_info(dataset)
    config = get_config(
        arch,
        in_channels=info.in_channels,
        input_size=info.input_size,
        num_classes=info.num_classes,
        **parse_model_overrides(model_overrides),
    )
    the_recipe = get_recipe(recipe, **dict(recipe_overrides or {}))
    data = load_dataset(dataset, "train", data_dir=data_dir)
    if val_rows < 0 or val_rows >= len(data):
        raise ConfigError(f"val_rows: expected 0 <= val_rows < {len(data)} (the training rows), got {val_rows}")
    train_split, val_split = split_train_val(data, val_rows) if val_rows else (data, None)
    test_data = None
    if eval_attacks:
        try:  # the dataset's test split when it exists here; else the validation rows (said in metrics.json)
            test_data = load_dataset(dataset, "test", data_dir=data_dir, n=eval_n)
        except DataNotFoundError:
            test_data = val_split.first(eval_n) if val_split is not None else None
    torch.manual_seed(the_recipe.seed)  # the initial weights depend on the recipe's seed only
    return train(
        config,
        the_recipe,
        train_split,
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
