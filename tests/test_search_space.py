"""Search space, supernet and discretisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arnas_zoo.errors import ConfigError, GenotypeError
from arnas_zoo.genotype import Genotype
from arnas_zoo.ops import ARNAS_PRIMITIVES, DARTS_PRIMITIVES
from arnas_zoo.registry import create_model
from search.arnas.discretize import discretize, discretize_cell
from search.arnas.space import SearchSpace
from search.arnas.supernet import Supernet


def test_paper_space_layout() -> None:
    space = SearchSpace()
    assert space.layer_cell_types() == [
        "accurate",
        "accurate",
        "reduce",
        "accurate",
        "accurate",
        "reduce",
        "robust",
        "robust",
    ]
    assert space.layer_channels() == [24, 24, 48, 48, 48, 48, 48, 48]  # doubled at the 1st reduction, kept at the 2nd
    assert space.num_edges == 14 and space.primitives == ARNAS_PRIMITIVES and len(space.primitives) == 7
    assert space.cell_types == ("accurate", "robust", "reduce")


def test_paper_supernet_parameter_groups() -> None:
    model = Supernet(SearchSpace(), generator=torch.Generator().manual_seed(0))
    alphas = model.arch_parameters()
    assert [tuple(a.shape) for a in alphas] == [(14, 7)] * 3
    assert set(model.arch_names) == {"accurate", "robust", "reduce"}
    assert all(float(a.detach().abs().max()) < 1e-2 for a in alphas)  # 1e-3 * randn
    arch_ids = {id(a) for a in alphas}
    weights = model.weight_parameters()
    assert not arch_ids & {id(p) for p in weights}
    assert len(weights) + len(alphas) == len(list(model.parameters()))
    # mixed ops have non-affine BN everywhere; pools are followed by one
    cell_bns = [m for m in model.cells.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert cell_bns and all(not bn.affine for bn in cell_bns)
    edge = model.cells[0].edges[0]
    pool = edge.ops[ARNAS_PRIMITIVES.index("max_pool_3x3")]
    assert isinstance(pool, torch.nn.Sequential) and isinstance(pool[1], torch.nn.BatchNorm2d)


@pytest.mark.parametrize("placement", ["A-A-R", "R-A-A", "A-R-A", "A-A-A"])
def test_forward_backward_every_placement(placement: str) -> None:
    space = SearchSpace(placement=placement, layers=5, init_channels=2, input_size=8)
    model = Supernet(space)
    x = torch.rand(2, 3, 8, 8)
    logits = model(x)
    assert logits.shape == (2, 10)
    logits.logsumexp(1).sum().backward()
    for name, a in zip(model.arch_names, model.arch_parameters()):
        assert a.grad is not None and float(a.grad.abs().sum()) > 0, name
    assert all(p.grad is not None for p in model.weight_parameters())
    expected = {"A": "accurate", "R": "robust"}
    assert set(model.arch_names) == {expected[c] for c in placement.split("-")} | {"reduce"}


@pytest.mark.parametrize("filters,channels", [("1-2-3", [4, 8, 8, 12, 12]), ("1-2-4", [4, 8, 8, 16, 16])])
def test_filter_settings(filters: str, channels: list[int]) -> None:
    space = SearchSpace(filters=filters, layers=5, init_channels=4, input_size=8)
    assert space.layer_channels() == channels
    assert Supernet(space)(torch.rand(2, 3, 8, 8)).shape == (2, 10)


def test_darts_space() -> None:
    space = SearchSpace.darts(layers=5, init_channels=4, input_size=8)
    model = Supernet(space)
    assert set(model.arch_names) == {"normal", "reduce"}
    assert model.primitives == DARTS_PRIMITIVES
    model(torch.rand(2, 3, 8, 8)).sum().backward()
    g = model.genotype()
    assert g.space == "darts" and set(g.cells) == {"normal", "reduce"}
    assert "none" not in {op for c in g.cells.values() for op in c.ops()}


def test_bad_spaces_are_rejected() -> None:
    with pytest.raises(ConfigError, match="placement"):
        SearchSpace(placement="A-B-R")
    with pytest.raises(ConfigError, match="placement"):
        SearchSpace(space="darts", placement="A-A-R")
    with pytest.raises(ConfigError, match="filters"):
        SearchSpace(filters="1-2")


def _hand_weights() -> np.ndarray:
    """A cell whose intended discretisation is known: row e = edge e, columns = ARNAS_PRIMITIVES."""
    w = np.full((14, 7), 0.1)
    ops = {name: i for i, name in enumerate(ARNAS_PRIMITIVES)}
    # node 0 (edges 0, 1): both inputs kept
    w[0, ops["sep_conv_3x3"]] = 0.5
    w[1, ops["skip_connect"]] = 0.4
    # node 1 (edges 2, 3, 4 = inputs 0, 1, n0): keep inputs 0 and n0
    w[2, ops["dil_conv_5x5"]] = 0.6
    w[3, ops["max_pool_3x3"]] = 0.3
    w[4, ops["sep_conv_5x5"]] = 0.7
    # node 2 (edges 5..8 = inputs 0, 1, n0, n1): keep 1 and n1
    w[6, ops["avg_pool_3x3"]] = 0.9
    w[8, ops["dil_conv_3x3"]] = 0.8
    w[7, ops["sep_conv_3x3"]] = 0.2
    # node 3 (edges 9..13 = inputs 0, 1, n0, n1, n2): keep n2 and 0
    w[13, ops["dil_conv_3x3"]] = 0.95
    w[9, ops["skip_connect"]] = 0.85
    w[12, ops["sep_conv_5x5"]] = 0.5
    return w


def test_discretize_hand_made_cell() -> None:
    cell = discretize_cell(_hand_weights(), ARNAS_PRIMITIVES, nodes=4)
    assert cell == {
        "nodes": [
            [["sep_conv_3x3", 0], ["skip_connect", 1]],
            [["dil_conv_5x5", 0], ["sep_conv_5x5", 2]],
            [["avg_pool_3x3", 1], ["dil_conv_3x3", 3]],
            [["skip_connect", 0], ["dil_conv_3x3", 4]],
        ],
        "concat": [2, 3, 4, 5],
    }


def test_discretize_ignores_none_for_strength_and_op() -> None:
    w = np.full((5, 8), 0.05)  # 2 nodes: edges 0,1 (node 0) and 2,3,4 (node 1)
    none = DARTS_PRIMITIVES.index("none")
    w[:, none] = 0.9  # 'none' dominates everywhere but must never be picked or rank an edge
    w[0, DARTS_PRIMITIVES.index("sep_conv_3x3")] = 0.3
    w[1, DARTS_PRIMITIVES.index("max_pool_3x3")] = 0.2
    w[2, DARTS_PRIMITIVES.index("dil_conv_3x3")] = 0.1
    w[4, DARTS_PRIMITIVES.index("skip_connect")] = 0.25
    cell = discretize_cell(w, DARTS_PRIMITIVES, nodes=2)
    assert cell["nodes"] == [
        [["sep_conv_3x3", 0], ["max_pool_3x3", 1]],
        [["dil_conv_3x3", 0], ["skip_connect", 2]],
    ]


def test_discretize_rejects_wrong_shapes() -> None:
    with pytest.raises(ConfigError, match="expected shape"):
        discretize_cell(np.zeros((13, 7)), ARNAS_PRIMITIVES, nodes=4)


def test_genotype_builds_with_the_zoo() -> None:
    space = SearchSpace()
    weights = {"accurate": _hand_weights(), "robust": _hand_weights()[::-1].copy(), "reduce": _hand_weights()}
    g = discretize(weights, ARNAS_PRIMITIVES, space, name="hand")
    assert g.space == "arnas" and set(g.cells) == {"accurate", "robust", "reduce"}
    again = Genotype.from_json(g.to_json())
    assert again == g
    model = create_model("arnas", genotype=g, init_channels=4, layers=5, auxiliary=False).eval()
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 10)


def test_supernet_genotype_follows_the_alphas() -> None:
    space = SearchSpace(layers=5, init_channels=4)
    model = Supernet(space)
    with torch.no_grad():
        for a in model.arch_parameters():
            a.zero_()
        model.alphas["robust"][:, ARNAS_PRIMITIVES.index("dil_conv_5x5")] = 3.0
        model.alphas["accurate"][:, ARNAS_PRIMITIVES.index("sep_conv_3x3")] = 3.0
    g = model.genotype()
    assert set(g.cell("robust").ops()) == {"dil_conv_5x5"}
    assert set(g.cell("accurate").ops()) == {"sep_conv_3x3"}
    with pytest.raises(GenotypeError):
        g.cell("normal")


@pytest.mark.parametrize("setting", [{"recompute": True}, {"recompute_cells": 2}])
def test_recomputed_cells_give_the_same_logits_gradients_and_running_statistics(
    setting: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from search.arnas.supernet import SearchCell

    space = SearchSpace(layers=5, init_channels=4, input_size=8)
    runs, calls = {}, {}
    forward, counts = SearchCell.forward, {}  # the recomputation in the backward fires no module hooks

    def counted(cell: SearchCell, *args: torch.Tensor) -> torch.Tensor:
        counts[id(cell)] = counts.get(id(cell), 0) + 1
        return forward(cell, *args)

    monkeypatch.setattr(SearchCell, "forward", counted)
    for name, kwargs in (("plain", {}), ("recomputed", setting)):
        counts.clear()
        torch.manual_seed(0)  # the same weight initialisation in both
        model = Supernet(space, generator=torch.Generator().manual_seed(0), **kwargs).train()
        x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1)).requires_grad_()
        logits = model(x)
        torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
        grads = [p.grad.clone() for p in model.parameters()]
        runs[name] = (logits.detach(), x.grad.clone(), grads, [b.clone() for b in model.buffers()])
        calls[name] = [counts.get(id(cell), 0) for cell in model.cells]
    (l0, x0, g0, b0), (l1, x1, g1, b1) = runs["plain"], runs["recomputed"]
    assert torch.allclose(l0, l1, atol=1e-6) and torch.allclose(x0, x1, atol=1e-6)
    assert len(g0) == len(g1) and all(torch.allclose(a, b, atol=1e-5) for a, b in zip(g0, g1))
    # the backward's second forward did not move the running statistics again
    assert all(torch.equal(a, b) for a, b in zip(b0, b1))
    # a recomputed cell runs its forward twice (once more in the backward), the others once
    k = 5 if setting.get("recompute") else setting["recompute_cells"]
    assert calls["plain"] == [1] * 5 and calls["recomputed"] == [2] * k + [1] * (5 - k)
    with pytest.raises(ValueError, match="recompute_cells"):
        Supernet(space, recompute_cells=-1)


def test_ops_that_begin_with_relu_run_from_a_shared_relu() -> None:
    from arnas_zoo.ops import after_relu, create_op

    x = torch.randn(2, 6, 8, 8, generator=torch.Generator().manual_seed(0))
    starts_with_relu = set()
    for name in DARTS_PRIMITIVES:
        for stride in (1, 2):
            op = create_op(name, 6, stride, affine=False).train()
            tail = after_relu(op)
            if tail is None:
                continue
            starts_with_relu.add((name, stride))
            assert torch.equal(tail(torch.relu(x)), op(x)), (name, stride)
    convs = {n for n in DARTS_PRIMITIVES if "conv" in n}
    assert starts_with_relu == {(n, s) for n in convs for s in (1, 2)} | {("skip_connect", 2)}


def test_shared_relu_keeps_the_supernets_logits_and_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    """One ReLU per state instead of one per (edge, op): identical logits, gradients to accumulation order."""
    import search.arnas.supernet as supernet

    monkeypatch.setattr(supernet, "FUSED_SUM", False)  # the same summation in both: logits bitwise equal
    space = SearchSpace(layers=5, init_channels=4, input_size=8)
    runs = {}
    for shared in (True, False):
        torch.manual_seed(0)
        monkeypatch.setattr(supernet, "SHARE_RELU", shared)
        model = Supernet(space, generator=torch.Generator().manual_seed(0)).train()
        assert all(cell.shares_relu == shared for cell in model.cells)
        x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1)).requires_grad_()
        logits = model(x)
        torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
        runs[shared] = (logits.detach(), x.grad.clone(), [p.grad.clone() for p in model.parameters()])
    (l0, x0, g0), (l1, x1, g1) = runs[True], runs[False]
    assert torch.equal(l0, l1)

    def close(a: torch.Tensor, b: torch.Tensor) -> bool:  # float32 sums in another order
        return bool((a - b).abs().max() <= 1e-5 * b.abs().max() + 1e-12)

    assert close(x0, x1) and len(g0) == len(g1) and all(close(a, b) for a, b in zip(g0, g1))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "mixed"])
def test_fused_weighted_sum_gradients_and_double_backward(layout: str) -> None:
    from search.arnas.supernet import _WeightedSum

    gen = torch.Generator().manual_seed(0)
    w = torch.rand(3, dtype=torch.float64, generator=gen).requires_grad_()
    ys = [torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=gen) for _ in range(3)]
    if layout != "contiguous":
        ys = [
            y.contiguous(memory_format=torch.channels_last) if layout == "channels_last" or k else y
            for k, y in enumerate(ys)
        ]
    ys = [y.requires_grad_() for y in ys]
    plain = sum(wk * y for wk, y in zip(w, ys))
    assert torch.allclose(_WeightedSum.apply(w, *ys), plain)
    assert torch.autograd.gradcheck(lambda w, *ys: _WeightedSum.apply(w, *ys), (w, *ys))
    assert torch.autograd.gradgradcheck(lambda w, *ys: _WeightedSum.apply(w, *ys), (w, *ys))


def test_fused_sum_keeps_the_supernets_logits_and_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    import search.arnas.supernet as supernet

    space = SearchSpace(layers=5, init_channels=4, input_size=8)
    runs = {}
    for fused in (True, False):
        monkeypatch.setattr(supernet, "FUSED_SUM", fused)
        torch.manual_seed(0)
        model = Supernet(space, generator=torch.Generator().manual_seed(0)).train()
        model = model.to(memory_format=torch.channels_last)
        assert all(m.fused_sum == fused for m in model.modules() if isinstance(m, supernet.MixedOp))
        x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1)).requires_grad_()
        logits = model(x.contiguous(memory_format=torch.channels_last))
        torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
        runs[fused] = (logits.detach(), x.grad.clone(), [p.grad.clone() for p in model.parameters()])
    for a, b in zip(runs[True][:2] + tuple(runs[True][2]), runs[False][:2] + tuple(runs[False][2])):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max() + 1e-12
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.arch_parameters())  # compared above


def test_recomputed_cells_survive_a_double_backward_with_the_same_gradients() -> None:
    """DSRNA's Jacobian objective backpropagates through an input gradient (create_graph): the
    recomputed cells run their forward once per backward, and neither run may write to BatchNorm
    buffers that the kept graph has saved."""
    space = SearchSpace(layers=5, init_channels=4, input_size=8)
    results = {}
    for k in (0, 2):
        torch.manual_seed(0)
        model = Supernet(space, generator=torch.Generator().manual_seed(0), recompute_cells=k).train()
        x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1)).requires_grad_()
        loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3]))
        (gx,) = torch.autograd.grad(loss, x, create_graph=True)
        alphas = list(model.alphas.values())
        arch = torch.autograd.grad(gx.pow(2).sum(), alphas)
        results[k] = ([a.clone() for a in arch], [b.clone() for b in model.buffers()])
    (a0, b0), (a1, b1) = results[0], results[2]
    assert all(float(a.abs().max()) > 0 for a in a0)  # the second-order path reaches the alphas
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(a0, a1))
    assert all(torch.equal(a, b) for a, b in zip(b0, b1))
