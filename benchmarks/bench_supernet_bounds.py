"""How informative DSRNA's certified bounds are inside the search supernet, by depth and eps.

For each supernet shape (cells x nodes per cell) this measures, on the same MNIST images (14x14, as the
``dsrna-*-tiny`` presets), the mean gap between the upper and lower bounds of the margins ``z_y - z_j``
and the mean lower bound, for IBP and CROWN, at a grid of eps: at initialisation and after a few
clean SGD steps of the weights (architecture uniform). The supernet is in training mode and its
BatchNorm layers use the clean batch's statistics, held (DSRNA Eq. 2; ``arnas_zoo.batchstats``).
A bound is informative where the gap is of the order of the margins themselves (a few logits).

    python benchmarks/bench_supernet_bounds.py --json benchmarks/results/supernet_bounds_mnist14.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from arnas_zoo.bounds import margin_bounds
from search.arnas.config import load_config
from search.arnas.data import load_search_data
from search.arnas.supernet import Supernet

SHAPES = ((3, 1), (3, 2), (3, 4), (4, 4))
EPS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1)


def _train(net: Supernet, x: torch.Tensor, y: torch.Tensor, steps: int, batch: int) -> float:
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.025, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    loss = torch.zeros(())
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss)


def _measure(net: Supernet, x: torch.Tensor, y: torch.Tensor) -> list[dict[str, float | str]]:
    rows: list[dict[str, float | str]] = []
    for method in ("ibp", "crown"):
        for eps in EPS:
            start = time.perf_counter()
            with torch.no_grad():
                lower, upper = margin_bounds(net, x, y, eps, method=method, upper=True)
            rows.append(
                {
                    "method": method,
                    "eps": eps,
                    "mean_gap": float((upper - lower).mean()),
                    "mean_lower": float(lower.mean()),
                    "certified_fraction": float((lower > 0).all(1).double().mean()),
                    "seconds": round(time.perf_counter() - start, 2),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--n", type=int, default=32, help="points bounded")
    parser.add_argument("--train-steps", type=int, default=100)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = load_config("dsrna-cb-tiny")
    data = load_search_data("mnist", args.data_dir, 1024 + args.n, 1024 / (1024 + args.n), torch.device("cpu"), 14)
    x, y = data.x_val[: args.n], data.y_val[: args.n]
    results = []
    for layers, nodes in SHAPES:
        torch.manual_seed(0)
        cfg = base.replace(layers=layers, nodes=nodes)
        net = Supernet(cfg.search_space(num_classes=10, in_channels=1, input_size=14)).train()
        entry = {"layers": layers, "nodes": nodes, "init_channels": cfg.init_channels}
        entry["at_init"] = _measure(net, x, y)
        entry["train_loss"] = _train(net, data.x_train, data.y_train, args.train_steps, 32)
        with torch.no_grad():
            entry["clean_accuracy_after_training"] = float((net(x).argmax(1) == y).double().mean())
        entry["after_training"] = _measure(net, x, y)
        results.append(entry)
        best = min(r["mean_gap"] for r in entry["after_training"] if r["eps"] == 1e-4)
        print(f"{layers} cells x {nodes} nodes: smallest mean gap at eps 1e-4 after training {best:.3g}", flush=True)
    out = {
        "what": "mean margin gap (upper - lower) and lower bound of a dsrna-cb-tiny-shaped supernet, train mode, "
        "clean-batch statistics held",
        "data": f"{data.description}; bounded: the first {args.n} architecture-half rows",
        "train_steps": args.train_steps,
        "threads": 1,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "results": results,
    }
    text = json.dumps(out, indent=1) + "\n"
    if args.json:
        args.json.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
