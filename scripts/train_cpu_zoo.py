"""Train the zoo's first (reduced-width, CPU) models with one identical recipe and budget per dataset.

    python scripts/train_cpu_zoo.py mnist   # ARNAS, DARTS_V2, ResNet-18 (reduced) on mnist/train.npz
    python scripts/train_cpu_zoo.py cifar10 # ARNAS, DARTS_V2 (reduced) on cifar10/train.npz
    python scripts/train_cpu_zoo.py mnist resnet18_w8_mnist   # one model only (run several in parallel)

Runs are resumable: rerun the same command after a kill and every model continues where it stopped
(finished models are skipped). Run folders go to ``runs/zoo/<name>``; evaluation is a separate step
(``scripts/eval_cpu_zoo.py``). Data: the npz subsets of ``../shared/data`` (see its README).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from arnas_zoo import create_model
from arnas_zoo.training import STATE_FILE, get_recipe, load_train_state, train

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
if not SHARED.is_dir():
    SHARED = Path("/work/shared/data")

# Reduced widths for a 2-core CPU (the paper's networks are C=64/36 with 20 cells).
MODELS = {
    "mnist": [
        ("arnas_c4l5_mnist", "arnas", dict(init_channels=4, layers=5)),
        ("darts_v2_c4l5_mnist", "darts_v2", dict(init_channels=4, layers=5)),
        ("resnet18_w8_mnist", "resnet18", dict(init_channels=8)),
    ],
    "cifar10": [
        ("arnas_c4l5_cifar10", "arnas", dict(init_channels=4, layers=5)),
        ("darts_v2_c4l5_cifar10", "darts_v2", dict(init_channels=4, layers=5)),
    ],
}
RECIPE = {"mnist": "cpu_mnist", "cifar10": "cpu_cifar10"}
VAL_ROWS = 1000  # the last 1000 rows of each train.npz are the validation split


@dataclass
class Split:
    x: torch.Tensor
    y: torch.Tensor
    info: dict

    def describe(self) -> dict:
        return self.info


def load_split(dataset: str) -> tuple[Split, Split]:
    path = SHARED / dataset / "train.npz"
    with np.load(path, allow_pickle=False) as archive:
        x = torch.from_numpy(np.ascontiguousarray(archive["x"].transpose(0, 3, 1, 2))).float().div_(255)
        y = torch.from_numpy(archive["y"].astype(np.int64))
        idx = archive["idx"]
    n = len(y) - VAL_ROWS
    common = {
        "dataset": dataset,
        "source": str(path.relative_to(SHARED.parent.parent)) if SHARED.parent.parent in path.parents else str(path),
    }
    train_split = Split(
        x[:n],
        y[:n],
        dict(
            common,
            split=f"train rows 0-{n - 1}",
            n=n,
            official_indices=f"{idx[0]}..{idx[n - 1]} (head of official order)",
        ),
    )
    val_split = Split(
        x[n:], y[n:], dict(common, split=f"train rows {n}-{len(y) - 1} (validation, last {VAL_ROWS})", n=VAL_ROWS)
    )
    return train_split, val_split


def main(dataset: str, only: str | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)  # the machine is shared; one thread per process avoids oversubscription
    train_split, val_split = load_split(dataset)
    recipe = get_recipe(RECIPE[dataset])
    shape = tuple(train_split.x.shape[1:])
    for run_name, arch, overrides in MODELS[dataset]:
        if only is not None and only != run_name:
            continue
        out = ROOT / "runs" / "zoo" / run_name
        resume = (out / STATE_FILE).exists()
        if resume and load_train_state(out / STATE_FILE)[1].get("finished"):
            logging.info("%s: finished already", run_name)
            continue
        torch.manual_seed(recipe.seed)
        model = create_model(arch, in_channels=shape[0], input_size=shape[1], **overrides)
        logging.info("%s: training (%s)", run_name, "resume" if resume else "new")
        result = train(
            model, recipe, train_split, val_split, out, resume=resume, device="cpu", progress=False, run_name=run_name
        )
        logging.info("%s: done, best %s", run_name, json.dumps(result.best))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
