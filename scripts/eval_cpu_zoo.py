"""Evaluate a zoo run's best checkpoint: clean accuracy, PGD and AutoAttack, as many points as time allows.

    python scripts/eval_cpu_zoo.py arnas_c4l5_mnist --pgd-until 10:50 --aa-until 11:05

MNIST runs: clean accuracy on the complete MNIST test set (mnist/test.npz, 10,000 images), PGD-100
(eps 0.3, step 0.01, uniform random start, 1 restart) and AutoAttack standard (eps 0.3) on the first
test images, in chunks, until the given UTC times. CIFAR-10 runs: the validation split (last 1000 rows
of cifar10/train.npz), PGD-20 (eps 8/255, step 2/255) and AutoAttack standard (eps 8/255).
Progress is kept in ``runs/zoo/<name>/eval_progress.json`` (rerun to continue); the result goes to
``metrics.json`` of ``runs/zoo/<name>/best`` and is copied with the weights to ``arnas_zoo/pretrained/<name>``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import re
import shutil
from pathlib import Path

import torch

from arnas_zoo import __version__
from arnas_zoo.attacks import autoattack, pgd
from arnas_zoo.checkpoint import atomic_write_json, load_folder, read_metrics, save_folder
from arnas_zoo.data import load_npz, split_train_val

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
if not SHARED.is_dir():
    SHARED = Path("/work/shared/data")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _until(hhmm: str) -> dt.datetime:
    h, m = (int(v) for v in hhmm.split(":"))
    return _now().replace(hour=h, minute=m, second=0, microsecond=0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("--pgd-until", default="10:55")
    parser.add_argument("--aa-until", default="11:08")
    parser.add_argument("--chunk", type=int, default=100)
    parser.add_argument("--aa-chunk", type=int, default=25)
    parser.add_argument("--max-pgd", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = ROOT / "runs" / "zoo" / args.name
    dataset = "mnist" if args.name.endswith("_mnist") else "cifar10"
    if dataset == "mnist":
        data = load_npz(SHARED / "mnist" / "test.npz")
        eps, step, steps, split_note = 0.3, 0.01, 100, "mnist test split (complete official test set)"
    else:
        _, data = split_train_val(load_npz(SHARED / "cifar10" / "train.npz"), 1000)
        eps, step, steps, split_note = 8 / 255, 2 / 255, 20, "cifar10 train.npz rows 4551-5550 (validation: last 1000 rows)"
    model = load_folder(run / "best").to(memory_format=torch.channels_last)
    progress_path = run / "eval_progress.json"
    state = json.loads(progress_path.read_text()) if progress_path.exists() else {}
    if "clean_correct" not in state:
        with torch.no_grad():
            correct = torch.cat([model(x.contiguous(memory_format=torch.channels_last)).argmax(1) == y
                                 for x, y in data.batches(500)])
        state["clean_correct"] = correct.int().tolist()
        atomic_write_json(progress_path, state)
    clean_correct = torch.tensor(state["clean_correct"], dtype=torch.bool)
    state.setdefault("pgd_correct", [])
    state.setdefault("aa_correct", [])
    limit = len(data) if args.max_pgd is None else min(args.max_pgd, len(data))
    while len(state["pgd_correct"]) < limit and _now() < _until(args.pgd_until):
        start = len(state["pgd_correct"])
        x, y = data.x[start:start + args.chunk], data.y[start:start + args.chunk]
        gen = torch.Generator().manual_seed(start)  # one seed per chunk: reproducible, resumable
        x_adv = pgd(model, x, y, eps=eps, step_size=step, steps=steps, generator=gen)
        with torch.no_grad():
            ok = (model(x_adv).argmax(1) == y) & clean_correct[start:start + len(y)]
        state["pgd_correct"] += ok.int().tolist()
        atomic_write_json(progress_path, state)
        print(f"{_now():%H:%M:%S} {args.name} PGD-{steps}: {len(state['pgd_correct'])} points, "
              f"{sum(state['pgd_correct']) / len(state['pgd_correct']):.4f}", flush=True)
    while len(state["aa_correct"]) < len(state["pgd_correct"]) and _now() < _until(args.aa_until):
        start = len(state["aa_correct"])
        x, y = data.x[start:start + args.aa_chunk], data.y[start:start + args.aa_chunk]
        x_adv = autoattack(model, x, y, eps=eps, version="standard", seed=0)
        with torch.no_grad():
            ok = (model(x_adv).argmax(1) == y) & clean_correct[start:start + len(y)]
        state["aa_correct"] += ok.int().tolist()
        atomic_write_json(progress_path, state)
        print(f"{_now():%H:%M:%S} {args.name} AA: {len(state['aa_correct'])} points, "
              f"{sum(state['aa_correct']) / len(state['aa_correct']):.4f}", flush=True)

    def acc(values: list[int]) -> float | None:
        return sum(values) / len(values) if values else None

    n_pgd, n_aa = len(state["pgd_correct"]), len(state["aa_correct"])
    device = f"cpu ({platform.processor() or platform.machine()}), 1 thread, shared 2-core machine"
    evaluation = {
        "data": {"dataset": dataset, "split": split_note, "source": data.source, "n_total": len(data)},
        "clean": {"accuracy": acc(state["clean_correct"]), "n": len(data), "points": f"all {len(data)}"},
        "pgd": {"robust_accuracy": acc(state["pgd_correct"]), "n": n_pgd, "points": f"first {n_pgd}",
                "norm": "linf", "eps": eps, "steps": steps, "step_size": step, "restarts": 1,
                "random_start": "uniform", "seed": "torch.Generator seeded with each 100-point chunk's first row",
                "clean_accuracy_same_points": acc(state["clean_correct"][:n_pgd])},
        "autoattack": {"robust_accuracy": acc(state["aa_correct"]), "n": n_aa, "points": f"first {n_aa}",
                       "version": "standard (APGD-CE, APGD-T, FAB-T, Square)", "norm": "linf", "eps": eps,
                       "implementation": "pyautoattack (reference)", "seed": 0,
                       "clean_accuracy_same_points": acc(state["clean_correct"][:n_aa]),
                       "pgd_robust_accuracy_same_points": acc(state["pgd_correct"][:n_aa]),
                       "worst_case_pgd_or_aa_same_points": acc([p & a for p, a in zip(state["pgd_correct"],
                                                                                       state["aa_correct"])])},
        "robust_means": "correct on the clean image and on the adversarial image",
        "device": device, "package_version": __version__, "date": f"{_now():%Y-%m-%d}",
    }
    metrics = dict(read_metrics(run / "best") or {})
    metrics["evaluation"] = evaluation
    metrics["dataset"] = dataset  # top level, where arnas_zoo.pretrained.spec_line looks
    model = load_folder(run / "best")
    arch = re.match(r"(.+?)_(c\d+l\d+|w\d+)_", args.name).group(1)  # arnas_c4l5_mnist -> arnas
    config = model.config.replace(extra={**dict(model.config.extra), "arch_name": arch, "dataset": dataset})
    save_folder(model, run / "best", metrics=metrics, config=config)
    target = ROOT / "arnas_zoo" / "pretrained" / args.name
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors", "metrics.json"):
        shutil.copyfile(run / "best" / name, target / name)
    print(json.dumps({k: evaluation[k] for k in ("clean", "pgd", "autoattack")}, indent=1))


if __name__ == "__main__":
    main()
