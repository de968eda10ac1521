"""Evaluate bundled zoo checkpoints with arnas_zoo.evaluate and re-pin them in the registry.

    python scripts/evaluate_zoo.py arnas.mnist_linf_cpu_c4l5 --n 200 --attacks fgsm,pgd20,pgd100,aa
    python scripts/evaluate_zoo.py --all --n 200

For each registry name: load the bundled folder (every pinned sha256 checked), evaluate it on the first
``--n`` evaluation points of its dataset (:func:`arnas_zoo.data.evaluation_data`: the MNIST test set;
CIFAR-10's validation rows offline) at the eps it was trained for, with the sanity checks, and write
the report as the folder's ``metrics.json`` (its training record kept). The weights and config.json
are not touched; the registry entry's metrics pin is updated in ``arnas_zoo/pretrained/index.json``
and ``MODEL_CARD.md`` is regenerated. Progress lines go to stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from arnas_zoo.threads import apply_thread_policy

apply_thread_policy()

REPO = Path(__file__).resolve().parents[1]
INDEX = REPO / "arnas_zoo" / "pretrained" / "index.json"


def evaluate_entry(name: str, n: int, attacks: list[str], seed: int) -> None:
    from dataclasses import replace

    from arnas_zoo.atomic import atomic_write_json
    from arnas_zoo.checkpoint import METRICS_FILE, load_folder, read_metrics, sha256_file
    from arnas_zoo.data import evaluation_data
    from arnas_zoo.evaluate import evaluate
    from arnas_zoo.pretrained import get_pretrained, read_index, write_index

    spec = get_pretrained(name)
    folder = spec.bundled_path()
    model = load_folder(folder, expected_sha256=spec.pins())
    data = evaluation_data(spec.dataset, n=n)
    report = evaluate(model, data, attacks, eps=spec.eps, seed=seed, progress=True, checks=True,
                      model_info={"name": name, "source": f"registry:{name}"})  # fmt: skip
    metrics = report.to_metrics()
    previous = read_metrics(folder) or {}
    if "training" in previous:
        metrics["training"] = previous["training"]
    atomic_write_json(folder / METRICS_FILE, metrics)
    entries = [replace(e, metrics_sha256=sha256_file(folder / METRICS_FILE)) if e.name == name else e
               for e in read_index(INDEX)]  # fmt: skip
    write_index(INDEX, entries)
    print(report.format_table(), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="registry names of bundled checkpoints")
    parser.add_argument("--all", action="store_true", help="every bundled entry")
    parser.add_argument("--n", type=int, default=200, help="first n evaluation points")
    parser.add_argument("--attacks", default="fgsm,pgd20,pgd100,aa")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from arnas_zoo.pretrained import list_pretrained

    names = [s.name for s in list_pretrained() if s.folder is not None] if args.all else args.names
    for name in names:
        evaluate_entry(name, args.n, [a for a in args.attacks.split(",") if a], args.seed)
    from arnas_zoo.pretrained import read_index
    from export.card import render_zoo_card

    (REPO / "MODEL_CARD.md").write_text(render_zoo_card(read_index(INDEX)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
