"""The bi-level step: PGD, exact second-order hypergradient, parameter isolation, objectives."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from arnas_zoo.errors import ConfigError
from search.attack import pgd_linf
from search.bilevel import Architect, weight_step
from search.objectives import PgdCrossEntropy, RobustnessObjective, available_objectives, make_objective, register_objective
from search.space import SearchSpace
from search.supernet import Supernet


def _tiny(dtype: torch.dtype = torch.float32) -> Supernet:
    torch.manual_seed(0)
    model = Supernet(SearchSpace(layers=5, init_channels=2, input_size=8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # larger alphas make the architecture gradients less degenerate
        for a in model.arch_parameters():
            a.normal_(0, 0.5)
    return model.to(dtype)


def _batch(n: int = 4, seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 8, 8, generator=g, dtype=dtype), torch.randint(0, 10, (n,), generator=g)


def test_pgd_stays_in_the_ball_and_leaves_the_model_alone() -> None:
    model = _tiny().train()
    x, y = _batch(6)
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    for bn in ("eval", "batch"):
        x_adv = pgd_linf(model, x, y, eps=8 / 255, step_size=2 / 255, steps=3, bn=bn)
        assert float((x_adv - x).abs().max()) <= 8 / 255 + 1e-6
        assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
        assert float((x_adv - x).abs().max()) > 1 / 255
        assert model.training
        for k, v in model.state_dict().items():
            assert torch.equal(v, buffers[k]), k
        assert all(p.grad is None for p in model.parameters())
    with torch.no_grad():
        model.eval()
        clean = F.cross_entropy(model(x), y)
        adv = F.cross_entropy(model(pgd_linf(model, x, y, eps=8 / 255, step_size=2 / 255, steps=5)), y)
    assert adv > clean


def _exact_unrolled_hypergradient(model: Supernet, train, val, eta: float, wd: float) -> list[torch.Tensor]:
    """d/da L_val(w - eta (grad_w L_train(w, a) + wd w), a), by double backprop (no finite differences)."""
    weights, alphas = model.weight_parameters(), model.arch_parameters()
    names = [n for n, _ in model.named_weight_parameters()]
    g = torch.autograd.grad(F.cross_entropy(model(train[0]), train[1]), weights, create_graph=True)
    unrolled = {n: w - eta * (gi + wd * w) for n, w, gi in zip(names, weights, g)}
    params = {**dict(model.named_parameters()), **unrolled}
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    out = torch.func.functional_call(model, {**params, **buffers}, (val[0],))
    return list(torch.autograd.grad(F.cross_entropy(out, val[1]), alphas))


def test_second_order_step_matches_exact_hypergradient() -> None:
    model = _tiny(torch.float64).train()
    train, val = _batch(4, 1, torch.float64), _batch(4, 2, torch.float64)
    eta, wd = 0.05, 3e-4
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=eta, momentum=0.9, weight_decay=wd)
    architect = Architect(model, w_opt, PgdCrossEntropy(0.0, 0.0, 0), order="second", lam=1.0)
    weights_before = [p.detach().clone() for p in model.weight_parameters()]
    buffers_before = {k: v.clone() for k, v in model.named_buffers()}
    t, t_hat, _ = architect.gradients(train, val, (val[0], val[1]), eta)
    exact = _exact_unrolled_hypergradient(model, train, val, eta, wd)
    flat_t = torch.cat([x.flatten() for x in t])
    flat_exact = torch.cat([x.flatten() for x in exact])
    rel = float((flat_t - flat_exact).norm() / flat_exact.norm())
    assert rel < 1e-3, rel
    # the implicit term matters: the first-order gradient is measurably different
    first = Architect(model, w_opt, PgdCrossEntropy(0.0, 0.0, 0), order="first").gradients(train, val, (val[0], val[1]), eta)[0]
    assert float((torch.cat([x.flatten() for x in first]) - flat_exact).norm() / flat_exact.norm()) > 10 * rel
    # PGD with 0 steps is the clean batch, so with lambda 1 both objectives coincide
    assert torch.allclose(flat_t, torch.cat([x.flatten() for x in t_hat]))
    for p, b in zip(model.weight_parameters(), weights_before):
        assert torch.equal(p, b)
    for k, v in model.named_buffers():
        assert torch.equal(v, buffers_before[k]), k


def test_arch_step_moves_only_alphas_and_weight_step_only_weights() -> None:
    model = _tiny().train()
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.1, momentum=0.9)
    objective = PgdCrossEntropy(8 / 255, 2 / 255, 1)
    architect = Architect(model, w_opt, objective, order="second", lr=0.01)
    train, val = _batch(4, 1), _batch(4, 2)
    alphas0 = [a.detach().clone() for a in model.arch_parameters()]
    weights0 = [p.detach().clone() for p in model.weight_parameters()]
    info = architect.step(train, val, objective.prepare(model, *val), eta=0.1)
    assert 0.0 <= info.gamma <= 1.0 and info.t_norm > 0 and info.t_hat_norm > 0
    assert all(not torch.equal(a, b) for a, b in zip(model.arch_parameters(), alphas0))
    assert all(torch.equal(p, b) for p, b in zip(model.weight_parameters(), weights0))
    alphas1 = [a.detach().clone() for a in model.arch_parameters()]
    weight_step(model, w_opt, *train)
    assert all(torch.equal(a, b) for a, b in zip(model.arch_parameters(), alphas1))
    assert any(not torch.equal(p, b) for p, b in zip(model.weight_parameters(), weights0))


def test_mgda_step_direction_is_gamma_combination() -> None:
    model = _tiny().train()
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.1, momentum=0.9)
    objective = PgdCrossEntropy(8 / 255, 2 / 255, 1)
    # plain SGD with lr 1 on the architecture: the update is exactly minus the direction
    architect = Architect(model, w_opt, objective, order="first", lam=0.1)
    architect.optimizer = torch.optim.SGD(model.arch_parameters(), lr=1.0)
    train, val = _batch(4, 1), _batch(4, 2)
    prepared = objective.prepare(model, *val)
    t, t_hat, _ = architect.gradients(train, val, prepared, eta=0.1)
    before = [a.detach().clone() for a in model.arch_parameters()]
    info = architect.step(train, val, prepared, eta=0.1)
    for a, b, ti, hi in zip(model.arch_parameters(), before, t, t_hat):
        expected = b - (info.gamma * ti + (1 - info.gamma) * hi)
        assert torch.allclose(a, expected, atol=1e-6)


class NoisyCrossEntropy(RobustnessObjective):
    """A toy robustness metric: cross-entropy under fixed Gaussian input noise."""

    name = "noisy_ce"

    def __init__(self) -> None:
        self.calls = 0

    def prepare(self, model, x, y):
        self.calls += 1
        return (x + 0.1 * torch.randn_like(x)).clamp(0, 1), y

    def loss(self, model, prepared):
        logits = model(prepared[0])
        return F.cross_entropy(logits, prepared[1]), logits


def test_robustness_objective_is_pluggable() -> None:
    instance = NoisyCrossEntropy()
    register_objective("noisy_ce_test", lambda config, autocast=None: instance, replace=True)
    assert "noisy_ce_test" in available_objectives() and "pgd_ce" in available_objectives()
    objective = make_objective("noisy_ce_test", config=None)
    model = _tiny().train()
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.1)
    architect = Architect(model, w_opt, objective, order="first")
    val = _batch(4, 2)
    info = architect.step(_batch(4, 1), val, objective.prepare(model, *val), eta=0.1)
    assert instance.calls == 1 and info.robust_loss > 0
    with pytest.raises(ConfigError, match="already registered"):
        register_objective("noisy_ce_test", lambda config, autocast=None: instance)
    with pytest.raises(ConfigError, match="unknown"):
        make_objective("dsrna_bound", config=None)
