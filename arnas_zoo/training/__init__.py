"""Adversarial training: PGD-k (Madry), FGSM with random start ("fast"), TRADES, standard.

- :mod:`~arnas_zoo.training.recipe`: :class:`Recipe` and the named presets (:data:`RECIPES`)
- :mod:`~arnas_zoo.training.step`: one optimizer step (the recipe's loss)
- :mod:`~arnas_zoo.training.loop`: :func:`train`, the run folder, on top of :mod:`arnas_zoo.runs`
- :mod:`~arnas_zoo.training.plots`: training curves
- :mod:`~arnas_zoo.training.entry`: :func:`run_training`, what ``arnas-zoo train`` runs
"""

from arnas_zoo.runs.augment import augment
from arnas_zoo.training.entry import run_training
from arnas_zoo.training.loop import STATE_FILE, TrainingInterrupted, TrainingRun, TrainResult, train
from arnas_zoo.training.recipe import RECIPES, Recipe, get_recipe, list_recipes
from arnas_zoo.training.step import train_step

__all__ = [
    "RECIPES",
    "STATE_FILE",
    "Recipe",
    "TrainResult",
    "TrainingInterrupted",
    "TrainingRun",
    "augment",
    "get_recipe",
    "list_recipes",
    "run_training",
    "train",
    "train_step",
]
