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
from search.config import SearchConfig, load_config
from search.objectives import CertifiedMargin, JacobianNorm, jacobian_row_norms, make_objective
from search.run import STATE_FILE, run_search
from search.supernet import Supernet

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
        assert float(estimate[i]) == pytest.approx(exact, rel=0.05)


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
    assert float(small) < float(large)  # tighter bounds (smaller eps), larger lower bounds, lower loss
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
