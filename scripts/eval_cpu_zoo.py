"""Evaluate a bundled zoo checkpoint: clean accuracy, PGD and AutoAttack, as many points as time allows.

    python scripts/eval_cpu_zoo.py arnas.mnist_linf_cpu_c4l5 --threads 1
    python scripts/eval_cpu_zoo.py darts_v2.mnist_linf_cpu_c4l5 --aa-until 13:40 --max-aa 500

MNIST checkpoints: clean accuracy and PGD-100 (eps 0.3, step 0.01, uniform random start, 1 restart) on
the complete MNIST test set (mnist/test.npz, 10,000 images), AutoAttack standard (eps 0.3) on the first
test images. CIFAR-10 checkpoints: the validation split (last 1000 rows of cifar10/train.npz), PGD-20
(eps 8/255, step 2/255) and AutoAttack standard (eps 8/255). Both attacks work in chunks; the chunks'
per-point results are kept in ``runs/zoo_eval/<name>/eval_progress.json`` (rerun to continue, or stop at
a ``--*-until HH:MM`` UTC deadline). Only ``metrics.json`` of ``arnas_zoo/pretrained/<folder>`` is
rewritten (its ``training`` section kept); the weights are loaded against the registry's pinned sha256
and checked unchanged afterwards.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
from pathlib import Path

import torch

from arnas_zoo import __version__
from arnas_zoo.attacks import autoattack, pgd
from arnas_zoo.checkpoint import WEIGHTS_FILE, atomic_write_json, load_folder, read_metrics, sha256_file
from arnas_zoo.data import load_npz, split_train_val
from arnas_zoo.pretrained import get_pretrained

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
if not SHARED.is_dir():
    SHARED = Path("/work/shared/data")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _until(hhmm: str | None) -> dt.datetime:
    if hhmm is None:
        return dt.datetime.max.replace(tzinfo=dt.timezone.utc)
    h, m = (int(v) for v in hhmm.split(":"))
    return _now().replace(hour=h, minute=m, second=0, microsecond=0)


def _acc(values: list[int]) -> float | None:
    return sum(values) / len(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name", help="registry name of a bundled checkpoint, e.g. arnas.mnist_linf_cpu_c4l5")
    parser.add_argument("--pgd-until", default=None, help="UTC HH:MM after which no new PGD chunk starts")
    parser.add_argument("--aa-until", default=None, help="UTC HH:MM after which no new AutoAttack chunk starts")
    parser.add_argument("--chunk", type=int, default=100)
    parser.add_argument("--aa-chunk", type=int, default=25)
    parser.add_argument("--max-pgd", type=int, default=None)
    parser.add_argument("--max-aa", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = get_pretrained(args.name)
    folder = ROOT / "arnas_zoo" / "pretrained" / spec.folder
    run = ROOT / "runs" / "zoo_eval" / spec.name
    run.mkdir(parents=True, exist_ok=True)
    if spec.dataset == "mnist":
        data = load_npz(SHARED / "mnist" / "test.npz")
        source = "shared/data/mnist/test.npz"
        eps, step, steps, split_note = 0.3, 0.01, 100, "mnist test split (complete official test set)"
    else:
        _, data = split_train_val(load_npz(SHARED / "cifar10" / "train.npz"), 1000)
        source = "shared/data/cifar10/train.npz"
        eps, step, steps, split_note = (
            8 / 255,
            2 / 255,
            20,
            "cifar10 train.npz rows 4551-5550 (validation: last 1000 rows)",
        )
    model = load_folder(folder, expected_sha256=spec.sha256).to(memory_format=torch.channels_last)
    assert not model.training
    progress_path = run / "eval_progress.json"
    # what the kept per-point results depend on: reusing them for other weights or settings would be silent
    identity = {
        "sha256": spec.sha256,
        "eps": eps,
        "steps": steps,
        "step_size": step,
        "n_total": len(data),
        "chunk": args.chunk,
        "aa_chunk": args.aa_chunk,
    }
    state = json.loads(progress_path.read_text()) if progress_path.exists() else {"identity": identity}
    if state.get("identity") != identity:
        raise SystemExit(
            f"{progress_path} was made with {state.get('identity')}, this run is {identity}; "
            "delete it to start over, or rerun with the settings it was made with"
        )
    if "clean_correct" not in state:
        with torch.no_grad():
            correct = torch.cat(
                [model(x.contiguous(memory_format=torch.channels_last)).argmax(1) == y for x, y in data.batches(500)]
            )
        state["clean_correct"] = correct.int().tolist()
        atomic_write_json(progress_path, state)
    clean_correct = torch.tensor(state["clean_correct"], dtype=torch.bool)
    state.setdefault("pgd_correct", [])
    state.setdefault("aa_correct", [])
    pgd_limit = len(data) if args.max_pgd is None else min(args.max_pgd, len(data))
    while len(state["pgd_correct"]) < pgd_limit and _now() < _until(args.pgd_until):
        start = len(state["pgd_correct"])
        x, y = data.x[start : start + args.chunk], data.y[start : start + args.chunk]
        gen = torch.Generator().manual_seed(start)  # one seed per chunk: reproducible, resumable
        x_adv = pgd(model, x, y, eps=eps, step_size=step, steps=steps, generator=gen)
        with torch.no_grad():
            ok = (model(x_adv).argmax(1) == y) & clean_correct[start : start + len(y)]
        state["pgd_correct"] += ok.int().tolist()
        atomic_write_json(progress_path, state)
        print(
            f"{_now():%H:%M:%S} {spec.name} PGD-{steps}: {len(state['pgd_correct'])} points, "
            f"{_acc(state['pgd_correct']):.4f}",
            flush=True,
        )
    aa_limit = len(state["pgd_correct"]) if args.max_aa is None else min(args.max_aa, len(state["pgd_correct"]))
    while len(state["aa_correct"]) < aa_limit and _now() < _until(args.aa_until):
        start = len(state["aa_correct"])
        end = min(start + args.aa_chunk, aa_limit)
        x, y = data.x[start:end], data.y[start:end]
        x_adv = autoattack(model, x, y, eps=eps, version="standard", seed=0)
        with torch.no_grad():
            ok = (model(x_adv).argmax(1) == y) & clean_correct[start:end]
        state["aa_correct"] += ok.int().tolist()
        atomic_write_json(progress_path, state)
        print(
            f"{_now():%H:%M:%S} {spec.name} AA: {len(state['aa_correct'])} points, {_acc(state['aa_correct']):.4f}",
            flush=True,
        )

    n_pgd, n_aa = len(state["pgd_correct"]), len(state["aa_correct"])
    device = f"cpu ({platform.processor() or platform.machine()}), {args.threads} thread(s), shared 2-core machine"
    evaluation = {
        "data": {"dataset": spec.dataset, "split": split_note, "source": source, "n_total": len(data)},
        "clean": {"accuracy": _acc(state["clean_correct"]), "n": len(data), "points": f"all {len(data)}"},
        "pgd": {
            "robust_accuracy": _acc(state["pgd_correct"]),
            "n": n_pgd,
            "points": f"all {n_pgd}" if n_pgd == len(data) else f"first {n_pgd}",
            "norm": "linf",
            "eps": eps,
            "steps": steps,
            "step_size": step,
            "restarts": 1,
            "random_start": "uniform",
            "seed": f"torch.Generator seeded with each {args.chunk}-point chunk's first row",
            "clean_accuracy_same_points": _acc(state["clean_correct"][:n_pgd]),
        },
        "autoattack": {
            "robust_accuracy": _acc(state["aa_correct"]),
            "n": n_aa,
            "points": f"all {n_aa}" if n_aa == len(data) else f"first {n_aa}",
            "version": "standard (APGD-CE, APGD-T, FAB-T, Square)",
            "norm": "linf",
            "eps": eps,
            "implementation": "pyautoattack (reference)",
            "seed": 0,
            "clean_accuracy_same_points": _acc(state["clean_correct"][:n_aa]),
            "pgd_robust_accuracy_same_points": _acc(state["pgd_correct"][:n_aa]),
            "worst_case_pgd_or_aa_same_points": _acc(
                [p & a for p, a in zip(state["pgd_correct"], state["aa_correct"])]
            ),
        },
        "robust_means": "correct on the clean image and on the adversarial image",
        "device": device,
        "package_version": __version__,
        "date": f"{_now():%Y-%m-%d}",
    }
    metrics = dict(read_metrics(folder) or {})
    metrics["evaluation"] = evaluation
    metrics["dataset"] = spec.dataset  # top level, where arnas_zoo.pretrained.spec_line looks
    atomic_write_json(folder / "metrics.json", metrics)
    if sha256_file(folder / WEIGHTS_FILE) != spec.sha256:
        raise SystemExit(f"{folder / WEIGHTS_FILE} changed during evaluation: sha256 no longer matches the registry")
    print(json.dumps({k: evaluation[k] for k in ("clean", "pgd", "autoattack")}, indent=1))


if __name__ == "__main__":
    main()
