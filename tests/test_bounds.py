"""Certified bounds (arnas_zoo.bounds): soundness against sampled and PGD-found points, exactness on linear
models, CROWN never looser than IBP, certified <= PGD <= clean, and clear refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from arnas_zoo import create_model
from arnas_zoo.attacks import pgd
from arnas_zoo.bounds import BoundsError, certified, certified_radius, logit_bounds, margin_bounds, margin_spec
from arnas_zoo.genotype import Genotype
from arnas_zoo.models.base import Normalize
from arnas_zoo.ops import OPS

TOL = 2e-5  # float32 rounding of two bound computations


def _every_op_genotype() -> Genotype:
    """A DARTS-space genotype whose cells use every DARTS op (RobNet's res_sep_conv: the robnet fixture)."""
    normal = [
        [["sep_conv_3x3", 0], ["sep_conv_5x5", 1]],
        [["dil_conv_3x3", 0], ["dil_conv_5x5", 2]],
        [["max_pool_3x3", 1], ["avg_pool_3x3", 2]],
        [["skip_connect", 3], ["none", 4]],
    ]
    reduce = [
        [["max_pool_3x3", 0], ["skip_connect", 1]],
        [["avg_pool_3x3", 0], ["dil_conv_3x3", 2]],
        [["sep_conv_3x3", 1], ["skip_connect", 2]],
        [["sep_conv_5x5", 0], ["dil_conv_5x5", 3]],
    ]
    cells = {
        "normal": {"nodes": normal, "concat": [2, 3, 4, 5]},
        "reduce": {"nodes": reduce, "concat": [2, 3, 4, 5]},
    }
    return Genotype.from_dict({"schema": "arnas-zoo/genotype@1", "space": "darts", "name": "every-op", "cells": cells})


def _calibrated(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Random BN statistics make every logit equal; calibrate them on the inputs, then eval mode."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


def _sample_ball(x: torch.Tensor, eps: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` points per image in the l_inf ball within [0, 1], half of them at the corners."""
    noise = torch.rand((n, *x.shape), generator=generator) * 2 - 1
    noise[: n // 2] = noise[: n // 2].sign()
    return (x.unsqueeze(0) + eps * noise).clamp(0, 1)


@pytest.fixture(scope="module", params=["darts-every-op", "robnet_large", "resnet18"])
def every_op_model(request: pytest.FixtureRequest) -> nn.Module:
    torch.manual_seed(0)
    if request.param == "darts-every-op":
        ops = {e.op for cell in _every_op_genotype().cells.values() for node in cell.nodes for e in node}
        assert ops | {"res_sep_conv_3x3"} == set(OPS)
        model = create_model(
            "darts_v2", genotype=_every_op_genotype(), in_channels=1, input_size=8, init_channels=4, layers=3
        )
    else:
        model = create_model(request.param, in_channels=1, input_size=8, init_channels=4, layers=3)
    return _calibrated(model, torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(1)))


class _Margin(nn.Module):
    """Logits ``(m, -m)`` for the margin ``m = rows . model(v)``: CE on label 0 pushes the margin down."""

    def __init__(self, model: nn.Module, rows: torch.Tensor):
        super().__init__()
        self.model, self.rows = model, rows

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        m = (self.model(v) * self.rows).sum(1, keepdim=True)
        return torch.cat([m, -m], dim=1)


@pytest.mark.parametrize("eps", [0.003, 0.03])
def test_ibp_and_crown_contain_every_sampled_and_pgd_point(every_op_model: nn.Module, eps: float) -> None:
    model = every_op_model
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(4, 1, 8, 8, generator=gen)
    y = model(x).argmax(1)
    box = logit_bounds(model, x, eps)
    crown = margin_bounds(model, x, y, eps, method="crown")
    ibp = margin_bounds(model, x, y, eps, method="ibp")
    assert isinstance(crown, torch.Tensor) and isinstance(ibp, torch.Tensor)
    spec = margin_spec(y, 10)
    # 2,500 random points per image (10,000 in all), half of them corners of the box
    with torch.no_grad():
        points = _sample_ball(x, eps, 2500, gen)
        logits = model(points.flatten(0, 1)).view(2500, 4, 10)
    assert (logits >= box.lower - TOL).all() and (logits <= box.upper + TOL).all()
    margins = torch.einsum("bsk,nbk->nbs", spec, logits)
    assert (margins >= crown - TOL).all() and (margins >= ibp - TOL).all()
    # PGD towards every wrong class's margin finds points the bounds must still contain
    for j in range(9):
        target_rows = spec[:, j]
        adv = pgd(
            _Margin(model, target_rows), x, torch.zeros(4, dtype=torch.long), eps=eps, step_size=eps / 4, steps=20
        )
        with torch.no_grad():
            found = (model(adv) * target_rows).sum(1)
        assert (found >= crown[:, j] - TOL).all()


def test_crown_is_never_looser_than_ibp_and_much_tighter_on_a_deep_net(every_op_model: nn.Module) -> None:
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    y = every_op_model(x).argmax(1)
    for eps in (0.0, 1e-3, 1e-2, 0.1):
        ibp = margin_bounds(every_op_model, x, y, eps, method="ibp")
        crown = margin_bounds(every_op_model, x, y, eps, method="crown")
        assert (crown >= ibp).all()
    assert float((crown - ibp).mean().detach()) > 0  # at eps 0.1 the linear relaxation helps


def test_bounds_are_exact_on_a_linear_model() -> None:
    torch.manual_seed(4)
    model = nn.Sequential(
        Normalize((0.5,), (0.25,)),
        nn.Conv2d(1, 3, 3, padding=1),
        nn.AvgPool2d(2),
        nn.Conv2d(3, 2, 3, padding=1, groups=1, dilation=1),
        nn.Flatten(),
        nn.Linear(2 * 4 * 4, 5),
    )
    x = torch.rand(3, 1, 8, 8) * 0.5 + 0.25  # eps 0.1 stays inside [0, 1]: the box is the full ball
    y = torch.tensor([0, 3, 4])
    eps = 0.1
    # the margins are linear: z_y - z_j = a . x + b, so their minimum over the box is a . x - eps |a|_1 + b
    spec = margin_spec(y, 5)
    xi = x.clone().requires_grad_(True)
    exact = torch.zeros(3, 4)
    for j in range(4):
        out = (model(xi) * spec[:, j]).sum()
        (a,) = torch.autograd.grad(out, xi)
        with torch.no_grad():
            exact[:, j] = (model(x) * spec[:, j]).sum(1) - eps * a.flatten(1).abs().sum(1)
    crown = margin_bounds(model, x, y, eps, method="crown")
    assert torch.allclose(crown, exact, atol=1e-4)
    # IBP is exact for one affine layer, and loose for a composition
    single = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    box = logit_bounds(single, x, eps)
    w, b = single[1].weight, single[1].bias
    with torch.no_grad():
        mid = x.flatten(1) @ w.T + b
        assert torch.allclose(box.lower, mid - eps * w.abs().sum(1), atol=1e-5)
    assert (margin_bounds(model, x, y, eps, method="ibp") < crown - 1e-3).any()


def test_l2_crown_is_sound_and_tighter_than_the_box() -> None:
    torch.manual_seed(5)
    model = _calibrated(
        create_model("arnas", in_channels=1, input_size=8, init_channels=4, layers=3), torch.rand(32, 1, 8, 8)
    )
    x = torch.rand(2, 1, 8, 8) * 0.5 + 0.25
    y = model(x).argmax(1)
    eps = 0.05
    l2 = margin_bounds(model, x, y, eps, norm="l2", method="crown")
    linf = margin_bounds(model, x, y, eps, norm="linf", method="crown")
    assert (l2 >= linf - TOL).all()  # the l2 ball lies inside the l_inf box of the same radius
    gen = torch.Generator().manual_seed(6)
    d = torch.randn((2000, *x.shape), generator=gen)
    d = d / d.flatten(2).norm(dim=-1).view(2000, 2, 1, 1, 1) * eps  # on the sphere
    with torch.no_grad():
        logits = model((x.unsqueeze(0) + d).flatten(0, 1)).view(2000, 2, 10)
    margins = torch.einsum("bsk,nbk->nbs", margin_spec(y, 10), logits)
    assert (margins >= l2 - TOL).all()


def test_supernet_bounds_are_sound_and_differentiable_in_the_architecture() -> None:
    from search.arnas.config import SearchConfig
    from search.arnas.supernet import Supernet

    cfg = SearchConfig(space="darts", placement="N-N-N", filters="1-2-4", layers=3, init_channels=4)
    torch.manual_seed(7)
    net = Supernet(cfg.search_space(num_classes=10, in_channels=1, input_size=8))
    net.train()  # batch statistics, as in the search: the clean batch's, held constant (DSRNA Eq. 2)
    x = torch.rand(8, 1, 8, 8)
    y = torch.randint(0, 10, (8,))
    running = [b.clone() for b in net.buffers()]
    lower = margin_bounds(net, x, y, 0.01, method="ibp")
    assert all(torch.equal(a, b) for a, b in zip(running, net.buffers()))  # running statistics untouched
    (grad,) = torch.autograd.grad(lower.mean(), [net.alphas["normal"]])
    assert grad.abs().sum() > 0
    crown = margin_bounds(net, x, y, 0.01, method="crown")
    assert (crown >= lower - TOL).all()
    # soundness of the mixed edges, with running statistics (eval mode)
    _calibrated(net, x)
    box = logit_bounds(net, x, 0.01)
    with torch.no_grad():
        for _ in range(50):
            z = net((x + (torch.rand_like(x) * 2 - 1) * 0.01).clamp(0, 1))
            assert (z >= box.lower - TOL).all() and (z <= box.upper + TOL).all()


def test_train_mode_batchnorm_uses_the_clean_batch_statistics_as_constants() -> None:
    bn = nn.BatchNorm2d(2, affine=False).train()
    x = torch.rand(5, 2, 3, 3) * 0.8
    eps = 0.05  # the box is clipped at 0, so its centres are not x: the statistics must still be x's
    box = logit_bounds(nn.Sequential(bn, nn.Flatten()), x, eps)
    mean = x.mean((0, 2, 3)).view(1, 2, 1, 1)
    std = torch.sqrt(x.var((0, 2, 3), unbiased=False).view(1, 2, 1, 1) + bn.eps)
    assert torch.allclose(box.lower, (((x - eps).clamp(min=0) - mean) / std).flatten(1), atol=1e-5)
    assert torch.allclose(box.upper, ((x + eps - mean) / std).flatten(1), atol=1e-5)
    assert bn.num_batches_tracked == 0 and torch.equal(bn.running_mean, torch.zeros(2))


def test_certified_is_at_most_pgd_robust_at_most_clean(every_op_model: nn.Module) -> None:
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(8))
    y = every_op_model(x).argmax(1)
    y[::4] = (y[::4] + 1) % 10  # some points misclassified
    eps = 0.002
    clean = every_op_model(x).argmax(1) == y
    adv = pgd(every_op_model, x, y, eps=eps, step_size=eps / 4, steps=20)
    robust = clean & (every_op_model(adv).argmax(1) == y)
    for method in ("ibp", "crown"):
        cert = certified(every_op_model, x, y, eps, method=method)
        assert (cert <= robust).all() and (robust <= clean).all()
    radius = certified_radius(every_op_model, x, y, method="crown", eps_max=0.05, steps=10)
    assert (radius[~clean] == 0).all()
    again = certified(every_op_model, x, y, 0.0, method="crown")
    assert (radius[again] >= 0).all()
    inside = radius > 0
    # certified below the radius, by construction of the bisection (same batch: a sub-batch may round
    # a near-zero margin differently)
    assert again[inside].all() and clean[inside].all()


def test_unsupported_ops_and_bad_arguments_are_refused() -> None:
    class Squares(nn.Module):
        def forward(self, v: torch.Tensor) -> torch.Tensor:
            return torch.tanh(v).flatten(1)

    with pytest.raises(BoundsError, match="no bound rule for torch op 'tanh'"):
        logit_bounds(Squares(), torch.rand(1, 1, 2, 2), 0.1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(ValueError, match="norm"):
        margin_bounds(model, torch.rand(1, 1, 2, 2), torch.tensor([0]), 0.1, norm="l3")
    with pytest.raises(ValueError, match="eps"):
        margin_bounds(model, torch.rand(1, 1, 2, 2), torch.tensor([0]), float("nan"))


def test_certify_command_reports_accuracy_radius_and_json(tmp_path) -> None:
    import json

    from click.testing import CliRunner

    from arnas_zoo.checkpoint import save_folder
    from arnas_zoo.cli import main

    torch.manual_seed(9)
    model = create_model("arnas", in_channels=1, input_size=16, init_channels=4, layers=3, eps=0.05)
    folder = save_folder(_calibrated(model, torch.rand(32, 1, 16, 16)), tmp_path / "tiny")
    out = tmp_path / "cert.json"
    result = CliRunner().invoke(
        main, ["certify", str(folder), "--dataset", "digits", "--n", "6", "--json", str(out), "-q"]
    )
    assert result.exit_code == 0, result.output
    assert "certified (crown, linf eps 0.05)" in result.output and "mean certified radius" in result.output
    report = json.loads(out.read_text())
    assert report["n"] == 6 and report["method"] == "crown" and report["data"]["indices"]
    assert 0 <= report["certified_accuracy"] <= report["clean_accuracy"] <= 1
    assert report["mean_certified_radius"] >= 0 and report["radius_search"]["scale"] == "log"
    refused = CliRunner().invoke(main, ["certify", str(tmp_path / "model.onnx"), "--dataset", "digits"])
    assert refused.exit_code == 2 and "not ONNX" in refused.output
    bad = CliRunner().invoke(main, ["certify", str(folder), "--dataset", "digits", "--method", "lp"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
