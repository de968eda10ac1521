"""How close the authors' finite-difference Hessian-vector product (DARTS' ``r = 0.01 / ||v||``) comes to the
exact second-order architecture gradient on the tiny presets' supernet shapes.

For each shape, in float64 and training mode: the architecture gradient ``t`` of the natural loss from
``search.bilevel.Architect`` with ``hvp_r = 0.01`` (the papers' radius) and ``1e-6``, against the exact
hypergradient by double backprop (as ``tests/test_search_bilevel.py``), on the same batches, at several
seeds: cosine and ratio of norms.

    python benchmarks/bench_hvp_radius.py --json benchmarks/results/hvp_radius_tiny.json
"""

from __future__ import annotations

import argparse
import json
import platform

import torch
import torch.nn.functional as F

from search.arnas.bilevel import Architect
from search.arnas.config import load_config
from search.arnas.objectives import PgdCrossEntropy
from search.arnas.supernet import Supernet


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.flatten() for t in tensors])


def measure(preset: str, in_channels: int, seed: int, batch: int) -> dict[str, float]:
    cfg = load_config(preset)
    torch.manual_seed(seed)
    size = cfg.resize or 32
    model = Supernet(cfg.search_space(num_classes=10, in_channels=in_channels, input_size=size)).double().train()
    gen = torch.Generator().manual_seed(seed + 100)
    train = (torch.rand(batch, in_channels, size, size, generator=gen, dtype=torch.float64),
             torch.randint(0, 10, (batch,), generator=gen))  # fmt: skip
    val = (torch.rand(batch, in_channels, size, size, generator=gen, dtype=torch.float64),
           torch.randint(0, 10, (batch,), generator=gen))  # fmt: skip
    alphas, weights = model.arch_parameters(), model.weight_parameters()
    names = [n for n, _ in model.named_weight_parameters()]
    eta, wd = cfg.w_lr, cfg.w_weight_decay
    # the exact hypergradient d/da L_val(w - eta (grad_w L_train(w, a) + wd w), a), by double backprop
    g = torch.autograd.grad(F.cross_entropy(model(train[0]), train[1]), weights, create_graph=True)
    unrolled = {n: w - eta * (gi + wd * w) for n, w, gi in zip(names, weights, g)}
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    out = torch.func.functional_call(model, {**dict(model.named_parameters()), **unrolled, **buffers}, (val[0],))
    exact = _flat(list(torch.autograd.grad(F.cross_entropy(out, val[1]), alphas))).detach()
    row = {}
    for r in (0.01, 1e-6):
        state = {k: v.clone() for k, v in model.state_dict().items()}
        opt = torch.optim.SGD(weights, lr=eta, momentum=0.9, weight_decay=wd)
        architect = Architect(model, opt, PgdCrossEntropy(0.0, 0.0, 0), order="second", hvp_r=r)
        t = _flat(architect.gradients(train, val, val, eta)[0]).detach()
        model.load_state_dict(state)
        row[f"cosine_r{r:g}"] = float(t @ exact / (t.norm() * exact.norm()))
        row[f"norm_ratio_r{r:g}"] = float(t.norm() / exact.norm())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {}
    for preset, channels in (("tiny", 3), ("dsrna-jacobian-tiny", 1)):
        rows = [measure(preset, channels, seed, args.batch) for seed in range(args.seeds)]
        results[preset] = rows
        print(preset, rows, flush=True)
    out = {
        "what": "cosine and norm ratio of the second-order architecture gradient (natural loss, finite-difference "
        "HVP at hvp_r 0.01 and 1e-6) to the exact hypergradient by double backprop; float64, random inputs, "
        "untrained supernet, train mode",
        "batch": args.batch,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "results": results,
    }
    text = json.dumps(out, indent=1) + "\n"
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
