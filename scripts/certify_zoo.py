"""Certify bundled zoo checkpoints and record the figures in their metrics.json (and the zoo card).

    python scripts/certify_zoo.py arnas.mnist_linf_cpu_c4l5 --eps 0.1,0.3 --n 100 --method crown
    python scripts/certify_zoo.py --repin      # recompute every bundled entry's metrics pin from disk

For each registry name and eps: :func:`arnas_zoo.evaluate.certify.certify` on the first ``--n`` points of
the entry's evaluation data (the MNIST test set), and its report is stored under ``certification`` in
the folder's ``metrics.json`` (one entry per method and eps, replacing an older one). The weights and
config.json are not touched; the metrics pin in ``arnas_zoo/pretrained/index.json`` and ``MODEL_CARD.md``
are regenerated.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from arnas_zoo.threads import apply_thread_policy

apply_thread_policy()

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
INDEX = REPO / "arnas_zoo" / "pretrained" / "index.json"


def repin() -> None:
    from arnas_zoo.checkpoint import METRICS_FILE, sha256_file
    from arnas_zoo.pretrained import read_index, write_index

    entries = []
    for e in read_index(INDEX):
        if e.folder is not None and e.bundled_path().is_dir():
            e = replace(e, metrics_sha256=sha256_file(e.bundled_path() / METRICS_FILE))
        entries.append(e)
    write_index(INDEX, entries)
    from export.card import render_zoo_card

    (REPO / "MODEL_CARD.md").write_text(render_zoo_card(read_index(INDEX)))


def certify_entry(name: str, eps_values: list[float], n: int, method: str, radius_steps: int) -> None:
    from arnas_zoo.atomic import atomic_write_json
    from arnas_zoo.checkpoint import METRICS_FILE, load_folder
    from arnas_zoo.data import evaluation_data
    from arnas_zoo.evaluate.certify import certify
    from arnas_zoo.pretrained import get_pretrained

    spec = get_pretrained(name)
    folder = spec.bundled_path()
    model = load_folder(folder, expected_sha256=spec.pins())
    data = evaluation_data(spec.dataset, n=n)
    for eps in eps_values:
        report = certify(model, data, eps=eps, method=method, radius_steps=radius_steps, progress=True,
                         model_info={"name": name, "source": f"registry:{name}"})  # fmt: skip
        print(report.format_table(), flush=True)
        metrics = json.loads((folder / METRICS_FILE).read_text())
        kept = [c for c in metrics.get("certification", []) if (c["method"], c["eps"]) != (method, float(eps))]
        metrics["certification"] = sorted([*kept, report.to_dict()], key=lambda c: (c["method"], c["eps"]))
        atomic_write_json(folder / METRICS_FILE, metrics)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*")
    parser.add_argument("--eps", default="0.1,0.3")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--method", default="crown", choices=["ibp", "crown"])
    parser.add_argument("--radius-steps", type=int, default=10)
    parser.add_argument("--repin", action="store_true")
    args = parser.parse_args()
    for name in args.names:
        certify_entry(name, [float(e) for e in args.eps.split(",")], args.n, args.method, args.radius_steps)
    if args.repin:
        repin()
    return 0


if __name__ == "__main__":
    sys.exit(main())
