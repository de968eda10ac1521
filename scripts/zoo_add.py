"""Register one training run's best checkpoint in the zoo and evaluate it: copy, pin, evaluate, card.

    python scripts/zoo_add.py runs/pushed-resnet18-w16 resnet18.mnist_linf_cpu_w16_pushed \\
        --description "..." --attacks pgd20,pgd100-cw,aa --n 200

For models outside a leaderboard (another recipe or size). The run folder's ``best/`` is copied to
``arnas_zoo/pretrained/NAME/`` (auxiliary head stripped) with its training record (recipe settings,
selected epoch, wall time, hardware), the registry entry is added with every file pinned, and the
checkpoint is evaluated like ``scripts/evaluate_zoo.py`` does (the report becomes its
``metrics.json``; ``MODEL_CARD.md`` is regenerated).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]
INDEX = REPO / "arnas_zoo" / "pretrained" / "index.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a training run folder (with best/, recipe.json, log.jsonl)")
    parser.add_argument("name")
    parser.add_argument("--description", required=True)
    parser.add_argument("--threads", default="1 thread, the machine shared with other jobs")
    parser.add_argument("--attacks", default="pgd20,pgd100-cw,aa")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--supersedes", default=None, help="an older entry this one replaces")
    parser.add_argument("--replace", action="store_true")
    args = parser.parse_args()

    from dataclasses import replace

    from evaluate_zoo import evaluate_entry
    from zoo_from_leaderboard import copy_run

    from arnas_zoo.atomic import atomic_write_json
    from arnas_zoo.checkpoint import read_config
    from arnas_zoo.pretrained import index_entry, read_index, register, unregister, write_index
    from export.card import render_zoo_card

    source = args.run / "best"
    if not (source / "model.safetensors").is_file():
        parser.error(f"{source}: no checkpoint (is the run finished?)")
    names = {e.name for e in read_index(INDEX)}
    if args.supersedes and args.supersedes not in names:
        parser.error(f"--supersedes: no registry entry named {args.supersedes}")
    config = read_config(source)
    dataset = json.loads((source / "metrics.json").read_text())["training"]["train_data"]["dataset"]
    target = INDEX.parent / args.name
    training = copy_run(source, target, str(config.name), dataset, args.replace, args.threads)
    atomic_write_json(target / "metrics.json", {"training": training})
    # evaluate with the entry registered in this process only: the index gains it (pins final) once the
    # report exists, so an interrupted evaluation never leaves a half-registered model behind
    unregister(args.name)
    register(index_entry(target, args.name, description=args.description))
    evaluate_entry(args.name, args.n, [a for a in args.attacks.split(",") if a], args.seed)
    entries = [e for e in read_index(INDEX) if e.name != args.name]
    if args.supersedes:
        entries = [replace(e, superseded_by=args.name) if e.name == args.supersedes else e for e in entries]
    write_index(INDEX, [*entries, index_entry(target, args.name, description=args.description)])
    (REPO / "MODEL_CARD.md").write_text(render_zoo_card(read_index(INDEX)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
