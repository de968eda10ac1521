"""Register one training run's best checkpoint in the zoo and evaluate it: copy, pin, evaluate, card.

    python scripts/zoo_add.py runs/pushed-resnet18-w16 resnet18.mnist_linf_cpu_w16_pushed \\
        --description "..." --attacks pgd20,pgd100-cw,aa --n 200
    python scripts/zoo_add.py runs/zoo/resnet18_w27 resnet18.cifar10_linf_cpu_w27_mix --description "..." \\
        --reports runs/zoo/resnet18_w27/best.eval1000.json runs/zoo/resnet18_w27/best.aa1000.json \\
        --hub-folder runs/zoo/resnet18_w27-zoo --repo-id ORG/resnet18.cifar10_linf_cpu_w27_mix

For models outside a leaderboard (another recipe or size). The run folder's ``best/`` is copied to
``arnas_zoo/pretrained/NAME/`` (auxiliary head stripped) with its training record (recipe settings,
selected epoch, wall time, hardware), the registry entry is added with every file pinned, and the
checkpoint is evaluated like ``scripts/evaluate_zoo.py`` does (the report becomes its
``metrics.json``; ``MODEL_CARD.md`` is regenerated).

``--reports`` uses evaluations that already ran (``arnas-zoo eval --json`` of the run's ``best/``, e.g. the
PGD rows and a sharded AutoAttack) instead of evaluating again: they are merged (``arnas-zoo merge``) once
the run's checkpoint reproduces their clean outcomes on their points, before anything is copied. ``--hub-folder``
is for weights over the bundled caps (``tests/test_zoo_models.py``): the entry's folder and its Hub-ready
copy (``DIR/hub``, with the model card, to review) are written there instead of into the package, nothing
is registered, and the two commands that publish that copy (``export hub --reuse``) and register it are
printed: a Hub entry is pinned to the commit its upload makes. ``--index`` adds a ``--reports`` entry to
another registry file (its folder and ``MODEL_CARD.md`` beside it), e.g. to try the bundled path on a copy.
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
    parser.add_argument("--reports", nargs="+", type=Path, default=None, help="merge these reports, don't evaluate")
    parser.add_argument("--split", default="test", help="with --reports: the split they were run on [test]")
    parser.add_argument("--hub-folder", type=Path, default=None, help="build a Hub folder here instead of bundling")
    parser.add_argument("--repo-id", default=None, help="with --hub-folder: the Hub repository, org/name")
    parser.add_argument("--goals", default=None, help="goal lines for the card, e.g. clean=0.75,autoattack=0.40")
    parser.add_argument(
        "--index", type=Path, default=INDEX, help="with --reports: the registry to add to; the bundled folder and "
        "MODEL_CARD.md go beside it unless it is the package's [arnas_zoo/pretrained/index.json]",
    )  # fmt: skip
    args = parser.parse_args()
    args.index = args.index.resolve()
    if args.index != INDEX and args.reports is None:
        parser.error("--index other than the package's needs --reports (evaluating loads the package's entries)")
    if args.hub_folder is not None and (args.reports is None or args.repo_id is None):
        parser.error("--hub-folder needs --reports (its evaluations) and --repo-id")
    if args.goals:
        from arnas_zoo.errors import ConfigError
        from arnas_zoo.pretrained import parse_goals

        try:
            parse_goals(args.goals)  # before hours of work, not after
        except ConfigError as exc:
            parser.error(str(exc))

    from evaluate_zoo import evaluate_entry
    from zoo_from_leaderboard import copy_run

    from arnas_zoo.atomic import atomic_write_json
    from arnas_zoo.checkpoint import read_config
    from arnas_zoo.pretrained import index_entry, read_index, register, unregister

    source = args.run / "best"
    if not (source / "model.safetensors").is_file():
        parser.error(f"{source}: no checkpoint (is the run finished?)")
    names = {e.name for e in read_index(args.index)}
    if args.supersedes and args.supersedes not in names:
        parser.error(f"--supersedes: no registry entry named {args.supersedes}")
    config = read_config(source)
    dataset = json.loads((source / "metrics.json").read_text())["training"]["train_data"]["dataset"]
    target = args.hub_folder or args.index.parent / args.name
    # merged and verified against the run's checkpoint before anything is copied: a refusal leaves nothing
    metrics = merged_metrics(source, args.name, args.reports, args.split) if args.reports is not None else None
    training = copy_run(source, target, str(config.name), dataset, args.replace, args.threads)
    if metrics is not None:
        atomic_write_json(target / "metrics.json", {**metrics, "training": training})
        if args.hub_folder is not None:
            return hub_folder(target, args)
        return add_entry(target, args)
    atomic_write_json(target / "metrics.json", {"training": training})
    # evaluate with the entry registered in this process only: the index gains it (pins final) once the
    # report exists, so an interrupted evaluation never leaves a half-registered model behind
    unregister(args.name)
    register(index_entry(target, args.name, description=args.description))
    evaluate_entry(args.name, args.n, [a for a in args.attacks.split(",") if a], args.seed)
    return add_entry(target, args)


def add_entry(target: Path, args: argparse.Namespace) -> int:
    """Add (or replace) the bundled entry of ``target`` in the index, every file pinned; regenerate the card."""
    from dataclasses import replace

    from arnas_zoo.pretrained import index_entry, parse_goals, read_index, write_index
    from export.card import render_zoo_card

    entries = [e for e in read_index(args.index) if e.name != args.name]
    if args.supersedes:
        entries = [replace(e, superseded_by=args.name) if e.name == args.supersedes else e for e in entries]
    entry = index_entry(target, args.name, description=args.description)
    if args.goals:
        entry = replace(entry, goals=parse_goals(args.goals))
    write_index(args.index, [*entries, entry])
    card = REPO / "MODEL_CARD.md" if args.index == INDEX else args.index.parent / "MODEL_CARD.md"
    card.write_text(render_zoo_card(read_index(args.index)))
    return 0


def merged_metrics(folder: Path, name: str, reports: list[Path], split: str) -> dict:
    """The reports merged into one ``metrics.json``, after the checkpoint in ``folder`` gave their clean
    outcomes point for point (the copy loses its auxiliary head, which does not change the logits), with
    the protocol record (the run's selection rows against the reports' points) when the run recorded one."""
    from arnas_zoo.checkpoint import load_folder, read_metrics
    from arnas_zoo.evaluate.merge import merge_files, reporting_protocol

    merged = merge_files(reports, load_folder(folder), split=split)
    merged.model = {"name": name, "source": f"registry:{name}"}
    print(merged.format_table(), flush=True)
    recorded = (read_metrics(folder) or {}).get("protocol")
    if not isinstance(recorded, dict):  # the run recorded no selection rows: the card says bias is possible
        print("no selection rows recorded by the run: no protocol record")
        return merged.to_metrics()
    protocol = reporting_protocol(recorded.get("selection"), merged.data)
    chosen = (recorded.get("selection") or {}).get("indices")
    print(f"selection rows: {chosen}; disjoint from the reported rows: {protocol['disjoint']}")
    return {**merged.to_metrics(), "protocol": protocol}


def hub_folder(folder: Path, args: argparse.Namespace) -> int:
    """Write the Hub-ready copy of ``folder`` (model card included) and say how to publish and register it."""
    from export.hub_publish import build_hub_folder

    out = build_hub_folder(folder, folder / "hub", repo_id=args.repo_id)
    print(f"Hub-ready folder: {out} ({', '.join(sorted(p.name for p in out.iterdir()))})")
    print("publish it (needs a Hub token), then register the commit it prints:")
    print(f"  arnas-zoo export hub {folder} --repo-id {args.repo_id} --reuse --tag v1.0")
    print(
        f"  arnas-zoo export register {folder} --name {args.name} --repo-id {args.repo_id} --revision COMMIT "
        f"--description {json.dumps(args.description)}"
        + (f" --goals {args.goals}" if args.goals else "")
        + f" --index {args.index.relative_to(REPO) if args.index.is_relative_to(REPO) else args.index}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
