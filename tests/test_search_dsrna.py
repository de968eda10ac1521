"""DSRNA's robustness objectives in the search: the Jacobian metric against autograd, the certified
objective's gradient and eps rule, and tiny end-to-end searches that resume exactly after a kill."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from arnas_zoo.genotype import Genotype
from arnas_zoo.registry import create_model
from arnas_zoo.runs import RunInterrupted, read_state
from search.arnas.config import SearchConfig, load_config
from search.arnas.objectives import CertifiedMargin, JacobianNorm, jacobian_row_norms, make_objective
from search.arnas.run import STATE_FILE, run_search
from search.arnas.supernet import Supernet

MICRO = {
    "layers": 3,
    "nodes": 2,
    "init_channels": 4,
    "resize": 8,
    "n_images": 64,
    "batch_size": 8,
    "epochs": 2,
    "steps_per_epoch": 2,
    "eval_n": 0,
}


def _small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 5 * 5, 4)).double()


@pytest.mark.parametrize("q", [1.0, 2.0])
def test_exact_jacobian_rows_match_autograd(q: float) -> None:
    net = _small_net()
    x = torch.rand(3, 1, 5, 5, dtype=torch.float64)
    ours = jacobian_row_norms(net, x, q=q, estimator="exact")
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: net(v[None])[0], x[i]).flatten(1)  # (K, D)
        assert float(ours[i].detach()) == pytest.approx(float(jac.norm(p=q, dim=1).mean()), rel=1e-10)


def test_projection_estimate_matches_the_frobenius_norm_within_its_error() -> None:
    net = _small_net()
    x = torch.rand(2, 1, 5, 5, dtype=torch.float64)
    torch.manual_seed(1)
    estimate = jacobian_row_norms(net, x, q=2.0, estimator="projection", projections=4000)
    for i in range(2):
        jac = torch.autograd.functional.jacobian(lambda v: net(v[None])[0], x[i]).flatten(1)
        exact = float(jac.norm() / 2.0)  # ||J||_F / sqrt(K), K = 4
        # C * ||v^T J||^2 has relative std about sqrt(2 / (C + 2)) ~ 0.6 per projection; 4000 of them: ~1%
        assert float(estimate[i].detach()) == pytest.approx(exact, rel=0.05)


def _supernet(cfg: SearchConfig) -> Supernet:
    torch.manual_seed(2)
    return Supernet(cfg.search_space(num_classes=10, in_channels=1, input_size=8))


def test_objectives_are_differentiable_in_the_architecture_and_weights() -> None:
    cfg = load_config("dsrna-cb-tiny").replace(**{k: MICRO[k] for k in ("layers", "nodes", "init_channels")})
    net = _supernet(cfg).train()
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    for name in ("jacobian", "certified", "combined"):
        objective = make_objective(name, config=cfg)
        prepared = objective.prepare(net, x, y, None)
        loss, _ = objective.loss(net, prepared)
        grads = torch.autograd.grad(loss, [*net.arch_parameters(), *net.weight_parameters()], allow_unused=True)
        assert torch.isfinite(loss) and any(g is not None and g.abs().sum() > 0 for g in grads[:3]), name


def test_certified_objective_falls_as_the_bounds_rise_and_eps_tracks_the_gap() -> None:
    cfg = load_config("dsrna-cb-tiny").replace(**{k: MICRO[k] for k in ("layers", "nodes", "init_channels")})
    net = _supernet(cfg).eval()
    x = torch.rand(8, 1, 8, 8)
    y = net(x).argmax(1)
    objective = CertifiedMargin(eps_init=0.05, eps_max=0.1, gap_target=1e-4)
    small = objective.loss(net, (x, y, 1e-5))[0]
    large = objective.loss(net, (x, y, 1e-2))[0]
    assert small.item() < large.item()  # tighter bounds (smaller eps), larger lower bounds, lower loss
    epsilons = []
    for _ in range(6):
        objective.prepare(net, x, y, None)
        epsilons.append(objective.eps)
    # gaps far above the target: eps falls, by at most 8x a step
    assert epsilons == sorted(epsilons, reverse=True) and epsilons[-1] < 0.05 / 8 and epsilons[0] >= 0.05 / 8
    assert objective.last_gap > 1e-4
    growing = CertifiedMargin(eps_init=0.001, eps_max=0.002, gap_target=1e6, factor=1.5)
    for _ in range(3):
        growing.prepare(net, x, y, None)
    assert growing.eps == 0.002  # gaps below the target: eps grows by `factor`, up to eps_max
    restored = CertifiedMargin(eps_init=0.05, eps_max=0.1)
    restored.load_state(json.loads(json.dumps(objective.state())))
    assert restored.eps == objective.eps
    assert JacobianNorm().state() == {}


@pytest.mark.parametrize(
    ("objective", "strategy"),
    [
        ("jacobian", "weighted_sum"),
        ("jacobian", "mgda"),
        ("certified", "weighted_sum"),
        ("certified", "mgda"),
        ("combined", "weighted_sum"),
    ],
)
def test_tiny_dsrna_search_runs_and_resumes_exactly(
    shared_data: Path, tmp_path: Path, objective: str, strategy: str
) -> None:
    cfg = load_config(f"dsrna-{'cb' if objective != 'jacobian' else 'jacobian'}-tiny").replace(
        data_dir=str(shared_data), robust_objective=objective, strategy=strategy, **MICRO
    )
    full = run_search(cfg, tmp_path / "full", progress=False, plots=objective == "certified")
    records = [json.loads(line) for line in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and records[0]["weights_trained_on"] == "clean images"
    assert all(len(r[f"step_val_{objective}_loss"]) == 2 for r in records)
    with pytest.raises(RunInterrupted):
        run_search(cfg, tmp_path / "killed", progress=False, plots=False, stop_after_steps=3)
    resumed = run_search(cfg, tmp_path / "killed", progress=False, plots=False, resume=True)
    assert resumed["arch_digest"] == full["arch_digest"]
    a, meta_a = read_state(tmp_path / "full" / STATE_FILE)
    b, meta_b = read_state(tmp_path / "killed" / STATE_FILE)
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("model/", "a_opt/")))
    genotype = Genotype.load(tmp_path / "full" / "genotype.json")
    assert genotype.space == "darts"
    create_model("darts_v2", genotype=genotype, in_channels=1, input_size=8, init_channels=4, layers=5)
    if objective == "certified":
        assert (tmp_path / "full" / "plots" / "objectives.png").stat().st_size > 1000
        assert records[-1]["objective_state"]["eps"] < cfg.cert_eps_init  # vacuous at the start: eps fell


# ---- the objectives measure the function being trained: batch statistics of the clean batch, held -------
def _held_reference(net: Supernet, x: torch.Tensor) -> Supernet:
    """A copy of the train-mode ``net`` as plain eval-mode PyTorch: each BatchNorm's running statistics set
    to the statistics it normalised ``x`` with (captured by hooks), so every sample is its own function."""
    import copy

    probe, ref = copy.deepcopy(net), copy.deepcopy(net)  # the original's running statistics stay untouched
    seen: dict[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    probe_bns = [m for m in probe.modules() if isinstance(m, nn.BatchNorm2d)]
    hooks = [
        m.register_forward_hook(
            lambda mod, inp, out: seen.setdefault(mod, []).append(
                (inp[0].mean((0, 2, 3)).detach(), inp[0].var((0, 2, 3), unbiased=False).detach())
            )
        )
        for m in probe_bns
    ]
    with torch.no_grad():
        probe(x)
    for h in hooks:
        h.remove()
    for mod, ref_mod in zip(probe_bns, (m for m in ref.modules() if isinstance(m, nn.BatchNorm2d))):
        stats = seen.get(mod)
        assert stats is not None and len(stats) == 1, mod  # each layer runs once per pass
        ref_mod.running_mean.copy_(stats[0][0])
        ref_mod.running_var.copy_(stats[0][1])
    return ref.eval()


def _double_supernet(nodes: int = 2) -> Supernet:
    cfg = load_config("dsrna-jacobian-tiny").replace(layers=3, nodes=nodes, init_channels=4)
    return _supernet(cfg).double().train()


@pytest.mark.parametrize("q", [1.0, 2.0])
def test_jacobian_objective_is_the_per_sample_jacobian_with_batch_statistics_held(q: float) -> None:
    net = _double_supernet()
    x = torch.rand(6, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ref = _held_reference(net, x)
    running = [b.clone() for b in net.buffers()]
    ours = jacobian_row_norms(net, x, q=q, estimator="exact").detach()
    assert all(torch.equal(a, b) for a, b in zip(running, net.buffers()))  # no running statistics touched
    for i in range(len(x)):
        jac = torch.autograd.functional.jacobian(lambda v: ref(v[None])[0], x[i]).flatten(1)  # (K, D)
        assert float(ours[i]) == pytest.approx(float(jac.norm(p=q, dim=1).mean()), rel=1e-4)
    net.recomputed_cells = 3  # activation recomputation: the same function, the same objective
    again = jacobian_row_norms(net, x, q=q, estimator="exact")
    again.sum().backward()
    assert torch.allclose(again.detach(), ours, rtol=1e-12)
    # the old objective (a logit's batch sum, differentiated through live batch statistics) is ~0 here
    xg = x.clone().requires_grad_(True)
    (live,) = torch.autograd.grad(net(xg)[:, 0].sum(), xg)
    assert float(live.flatten(1).norm(p=q, dim=1).mean()) < 1e-3 * float(ours.mean())


def test_jacobian_objective_architecture_gradient_matches_finite_differences() -> None:
    net = _double_supernet()
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    alpha = net.alphas["normal"]
    direction = torch.randn(alpha.shape, dtype=alpha.dtype, generator=torch.Generator().manual_seed(5))

    def objective() -> torch.Tensor:
        return jacobian_row_norms(net, x, q=2.0).mean()

    (grad,) = torch.autograd.grad(objective(), [alpha])
    h = 1e-5
    with torch.no_grad():
        alpha.add_(h * direction)
    up = float(objective().detach())
    with torch.no_grad():
        alpha.sub_(2 * h * direction)
    down = float(objective().detach())
    with torch.no_grad():
        alpha.add_(h * direction)
    assert float((grad * direction).sum()) == pytest.approx((up - down) / (2 * h), rel=1e-4)
    assert float(grad.abs().sum()) > 1e-3


def _vertices(x: torch.Tensor, eps: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` random vertices per point of the box ``[x - eps, x + eps]`` within [0, 1]."""
    signs = torch.randint(0, 2, (n, *x.shape), generator=generator, dtype=torch.int64).to(x.dtype) * 2 - 1
    return (x + eps * signs).clamp(0, 1)


@pytest.mark.parametrize("method", ["ibp", "crown"])
def test_certified_bounds_contain_the_train_mode_function_on_the_ball_and_its_vertices(method: str) -> None:
    from arnas_zoo.bounds import logit_bounds, margin_bounds, margin_spec

    net = _double_supernet(nodes=1)
    gen = torch.Generator().manual_seed(6)
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64, generator=gen)
    y = torch.randint(0, 10, (4,), generator=gen)
    ref = _held_reference(net, x)
    eps = 1e-3
    lower = margin_bounds(net, x, y, eps, method=method).detach()
    box = logit_bounds(net, x, eps)
    inside = (x + (torch.rand((250, *x.shape), generator=gen, dtype=x.dtype) * 2 - 1) * eps).clamp(0, 1)
    points = torch.cat([inside, _vertices(x, eps, 250, gen)])  # 1000 sampled points and 1000 vertices
    with torch.no_grad():
        logits = torch.stack([ref(p) for p in points])  # (S, N, K)
    tol = 1e-8 * box.upper.detach().abs().max().item()
    assert (logits >= box.lower - tol).all() and (logits <= box.upper + tol).all()
    margins = torch.einsum("nsk,bnk->bns", margin_spec(y, 10).to(x.dtype), logits)
    assert (margins >= lower - tol).all()
    # bounds of the ball, not of a self-normalising function: the gap closes at eps 0 and grows about
    # linearly with eps (about 10x a decade; with the centres' own statistics it grew 2-3x a decade here)
    gaps = []
    for e in (0.0, 1e-5, 1e-4, 1e-3):
        lo, up = margin_bounds(net, x, y, e, method=method, upper=True)
        gaps.append(float((up - lo).detach().mean()))
    assert abs(gaps[0]) < 1e-9 and all(b > 5 * a > 0 for a, b in zip(gaps[1:], gaps[2:]))
