"""MGDA weight of ARNAS Eq. (3)-(5): closed form vs brute force, edge cases, descent property."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from arnas_zoo.errors import ConfigError
from search.arnas.mgda import combine, mgda_weight


def brute_force_gamma(t: torch.Tensor, t_hat: torch.Tensor, grid: int = 200_001) -> float:
    gammas = torch.linspace(0, 1, grid, dtype=torch.float64)
    t, t_hat = t.double(), t_hat.double()
    points = gammas[:, None] * t[None] + (1 - gammas[:, None]) * t_hat[None]
    return float(gammas[points.pow(2).sum(1).argmin()])


@pytest.mark.parametrize("seed", range(12))
def test_matches_brute_force_minimum_of_eq3(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    dim = 3 + seed
    t = torch.randn(dim, generator=g)
    # mix in correlated pairs so that interior optima occur as well as clipped ones
    t_hat = 0.7 * t + torch.randn(dim, generator=g) * (0.2 + seed / 6)
    gamma = mgda_weight(t, t_hat)
    brute = brute_force_gamma(t, t_hat)
    value = lambda c: float((c * t.double() + (1 - c) * t_hat.double()).pow(2).sum())  # noqa: E731
    assert abs(gamma - brute) < 1e-4 or value(gamma) <= value(brute) + 1e-9


def test_orthogonal_equal_norm_gives_half() -> None:
    t = torch.tensor([3.0, 0.0, 0.0])
    t_hat = torch.tensor([0.0, 3.0, 0.0])
    assert mgda_weight(t, t_hat) == pytest.approx(0.5)


def test_orthogonal_unequal_norm_weights_the_smaller_gradient_more() -> None:
    # min-norm point of [t, t_hat] for orthogonal vectors: gamma = |t_hat|^2 / (|t|^2 + |t_hat|^2)
    t = torch.tensor([1.0, 0.0])
    t_hat = torch.tensor([0.0, 2.0])
    assert mgda_weight(t, t_hat) == pytest.approx(4.0 / 5.0)


def test_dominating_gradients_clip_to_the_ends() -> None:
    t = torch.tensor([1.0, 1.0])
    # t_hat is a long multiple of t: the min-norm point is t itself (gamma 1)
    assert mgda_weight(t, 5 * t) == 1.0
    # t is the long one: the min-norm point is t_hat (gamma 0)
    assert mgda_weight(5 * t, t) == 0.0
    # t_hat's projection onto t is beyond t: clipped to 1
    assert mgda_weight(torch.tensor([1.0, 0.0]), torch.tensor([3.0, 0.5])) == 1.0


def test_equal_gradients_are_defined() -> None:
    t = torch.tensor([0.3, -1.2, 2.0])
    assert mgda_weight(t, t.clone()) == 0.5
    assert mgda_weight(torch.zeros(4), torch.zeros(4)) == 0.5
    out = combine([t], [t.clone()])
    assert torch.allclose(out.direction[0], t)
    assert not any(math.isnan(float(v)) for v in out.direction[0])


@pytest.mark.parametrize("seed", range(20))
def test_combined_direction_descends_both_objectives(seed: int) -> None:
    g = torch.Generator().manual_seed(100 + seed)
    t = torch.randn(10, generator=g, dtype=torch.float64)
    t_hat = torch.randn(10, generator=g, dtype=torch.float64) + 0.5 * t
    d = combine([t], [t_hat]).direction[0]
    # Pareto-stationary iff 0 is in the convex hull (opposite directions); random vectors are not
    assert float(d.norm()) > 1e-9
    # the min-norm point d satisfies d.t >= |d|^2 and d.t_hat >= |d|^2 (KKT), hence a common descent direction
    assert float(d @ t) >= float(d @ d) - 1e-9
    assert float(d @ t_hat) >= float(d @ d) - 1e-9
    assert float(d @ t) > 0 and float(d @ t_hat) > 0


def test_pareto_stationary_gives_zero_direction() -> None:
    t = torch.tensor([1.0, 2.0])
    d = combine([t], [-t]).direction[0]
    assert torch.allclose(d, torch.zeros(2))


def test_one_gamma_for_all_tensors_uses_concatenated_gradients() -> None:
    g = torch.Generator().manual_seed(5)
    t = [torch.randn(14, 7, generator=g) for _ in range(3)]
    t_hat = [torch.randn(14, 7, generator=g) for _ in range(3)]
    out = combine(t, t_hat)
    flat_gamma = mgda_weight(torch.cat([x.flatten() for x in t]), torch.cat([x.flatten() for x in t_hat]))
    assert out.gamma == pytest.approx(flat_gamma)
    per_tensor = [mgda_weight(a.flatten(), b.flatten()) for a, b in zip(t, t_hat)]
    assert not np.allclose(per_tensor, flat_gamma)  # a per-tensor gamma would differ
    for d, a, b in zip(out.direction, t, t_hat):
        assert torch.allclose(d, out.gamma * a + (1 - out.gamma) * b)


def test_weighted_sum_is_eq2() -> None:
    t, t_hat = [torch.tensor([1.0, 2.0])], [torch.tensor([0.5, -1.0])]
    out = combine(t, t_hat, "weighted_sum")
    assert torch.allclose(out.direction[0], torch.tensor([1.5, 1.0]))
    assert math.isnan(out.gamma)
    with pytest.raises(ConfigError, match="strategy"):
        combine(t, t_hat, "average")


@pytest.mark.parametrize("seed", range(20))
def test_gamma_is_zero_exactly_when_the_cosine_reaches_the_norm_ratio(seed: int) -> None:
    # docs/search.md: gamma = 0  <=>  cos(t, t_hat) >= ||t_hat|| / ||t||  (the paper's lambda = 0.1 regime)
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(16, generator=g, dtype=torch.float64)
    t_hat = (0.3 * t + torch.randn(16, generator=g, dtype=torch.float64)) * (0.05 + 0.1 * seed)
    out = combine([t], [t_hat], "mgda")
    assert math.isclose(out.norm_ratio, float(t_hat.norm() / t.norm()), rel_tol=1e-12)
    if abs(out.cosine - out.norm_ratio) > 1e-9:
        assert (out.gamma == 0.0) == (out.cosine > out.norm_ratio), (out.cosine, out.norm_ratio, out.gamma)


def test_normalized_mgda_weighs_directions_not_scales() -> None:
    # a short t_hat at 45 degrees to a long t: plain MGDA picks t_hat (gamma 0); two unit vectors are
    # equally long, so Eq. 4 on them gives gamma = (1 - u.v) / (2 - 2 u.v) = 0.5 whatever the angle
    t = torch.tensor([10.0, 0.0, 0.0])
    t_hat = torch.tensor([0.5, 0.5, 0.0])
    assert combine([t], [t_hat], "mgda").gamma == 0.0
    normalized = combine([t], [t_hat], "mgda_normalized")
    assert math.isclose(normalized.gamma, 0.5, rel_tol=1e-9)
    d = normalized.direction[0]
    unit_t, unit_h = t / t.norm(), t_hat / t_hat.norm()
    # the direction is the min-norm point of the unit vectors' segment: equal inner products with both
    assert math.isclose(float(d @ unit_t), float(d @ unit_h), rel_tol=1e-6)
