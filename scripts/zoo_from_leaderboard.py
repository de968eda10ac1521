"""Register leaderboard models in the zoo: copy, attach the leaderboard's evaluation, pin, regenerate the card.

    python scripts/zoo_from_leaderboard.py mnist arnas --suffix 60k --supersedes arnas=arnas.mnist_linf_cpu_c4l5

For each architecture whose training and evaluation jobs are finished in ``runs/leaderboard-BOARD``:
copy its best checkpoint (``config.json``, ``model.safetensors``; a cell network's auxiliary head,
training only, stripped) to ``arnas_zoo/pretrained/NAME/`` with NAME
``<arch>.<dataset>_linf_<size>_<suffix>``; write ``metrics.json`` = the leaderboard's evaluation report
of that very checkpoint (clean, attacks, sanity checks, the points it used) plus the training record
(split, recipe, selected epoch, wall time, threads, host); add the index entry with every file's
sha256 and regenerate ``MODEL_CARD.md``. Nothing is re-evaluated: the figures are the ones
the leaderboard measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
INDEX = REPO / "arnas_zoo" / "pretrained" / "index.json"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def copy_run(source: Path, target: Path, arch: str, dataset: str, replace: bool, threads: str) -> dict:
    """Copy the checkpoint folder ``source`` (a run's ``best/``) into the zoo folder ``target``, the
    auxiliary head stripped; return its training record, completed from the run folder."""
    from arnas_zoo.atomic import atomic_write_json
    from arnas_zoo.checkpoint import strip_auxiliary_head
    from arnas_zoo.leaderboard import train_minutes

    if target.exists() and not replace:
        raise SystemExit(f"{target} exists; pass --replace to overwrite")
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "model.safetensors", target / "model.safetensors")
    config = json.loads((source / "config.json").read_text())
    config["extra"] = dict(config.get("extra") or {}, arch_name=arch, dataset=dataset)
    atomic_write_json(target / "config.json", config)
    strip_auxiliary_head(target)  # training only, and most of a small cell network's weights
    recipe = json.loads((source.parent / "recipe.json").read_text())
    training = json.loads((source / "metrics.json").read_text()).get("training", {})
    training.update(
        {
            "recipe_settings": {
                k: recipe[k]
                for k in (
                    "method",
                    "epochs",
                    "batch_size",
                    "eps",
                    "step_size",
                    "steps",
                    "start",
                    "lr",
                    "schedule",
                    "seed",
                    "bf16_cpu",
                )
                if k in recipe
            },  # fmt: skip
            "seconds": round(60 * (train_minutes(source.parent / "log.jsonl") or 0.0), 1),
            "hardware": f"{_cpu_model()}, {os.cpu_count()} cores; {threads}",
        }
    )
    if config["extra"].get("init_from"):  # a warm restart (train --init-from): the weights it started from
        training["init_from"] = config["extra"]["init_from"]
    return training


def register(board_name: str, arch: str, run_dir: Path, suffix: str, replace: bool, supersedes: str | None) -> str:
    from arnas_zoo.atomic import atomic_write_json
    from arnas_zoo.leaderboard import BOARDS, REDUCED_SIZES, finished, signature
    from arnas_zoo.pretrained import index_entry, read_index, write_index

    board = BOARDS[board_name]
    done = finished(board, run_dir, arch)
    if done is None:
        raise SystemExit(f"{arch}: training or evaluation not finished in {run_dir}")
    train, report = done
    size = REDUCED_SIZES[arch]
    if arch in ("resnet18", "wrn34_10"):  # width (and depth) of the hand-made networks; cells: C and cell count
        tag = f"w{size['init_channels']}" + (f"d{size['layers']}" if "layers" in size else "")
    else:
        tag = f"c{size['init_channels']}l{size['layers']}"
    name = f"{arch}.{board.dataset}_linf_cpu_{tag}_{suffix}"
    target = REPO / "arnas_zoo" / "pretrained" / name
    threads = "1 thread, the machine shared with other jobs"
    training = copy_run(run_dir / train["best_dir"], target, arch, board.dataset, replace, threads)
    training["leaderboard"] = signature(board, arch)  # its row on the board comes from here once registered
    metrics = {k: v for k, v in report.items() if k != "stats"}
    metrics["model"] = {"name": name, "source": f"registry:{name}"}
    metrics["training"] = training
    atomic_write_json(target / "metrics.json", metrics)
    reduced = ", ".join(f"{k}={v}" for k, v in size.items() if k != "cell_types")
    rows = training["train_data"]["n"]
    description = (
        f"{arch} at a reduced size ({reduced}; CPU budget), PGD-3 adversarially trained on {rows} {board.dataset} "
        f"training rows (split {board.train_split}, its last 1000 rows held out), l_inf eps {board.eps:.4g}; "
        f"the {board_name} leaderboard's recipe ({board.recipe})."
    )
    if "train_mix" in board.train_split:  # no offline test split: the reported rows are the validation rows
        chosen_on = training["selection"]["val_n"]
        description += (
            f" Figures on genuine validation rows; its epoch was selected on the first {chosen_on} of them "
            "(selection bias possible)."
        )
    entries = [e for e in read_index(INDEX) if e.name != name]
    if supersedes:
        from dataclasses import replace as with_changes

        entries = [with_changes(e, superseded_by=name) if e.name == supersedes else e for e in entries]
    entry = index_entry(target, name, description=description, data="")
    write_index(INDEX, [*entries, entry])
    return name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("board")
    parser.add_argument("archs", nargs="+")
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--suffix", default="60k")
    parser.add_argument("--replace", action="store_true")
    parser.add_argument("--supersedes", nargs="*", default=[], help="ARCH=OLD_NAME: mark an older entry superseded")
    args = parser.parse_args()
    run_dir = Path(args.run_dir or REPO / "runs" / f"leaderboard-{args.board}")
    if any("=" not in pair for pair in args.supersedes):
        parser.error("--supersedes takes ARCH=OLD_NAME pairs")
    old = dict(pair.split("=", 1) for pair in args.supersedes)
    from arnas_zoo.pretrained import read_index

    unknown = sorted(set(old.values()) - {e.name for e in read_index(INDEX)})
    if unknown:
        parser.error(f"--supersedes: no registry entries named {unknown}")
    for arch in args.archs:
        print(register(args.board, arch, run_dir, args.suffix, args.replace, old.get(arch)))
    from export.card import render_zoo_card

    (REPO / "MODEL_CARD.md").write_text(render_zoo_card(read_index(INDEX)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
