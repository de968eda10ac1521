"""Attacks with known answers: analytic worst cases on linear models, orderings on a trained CNN,
agreement with torchattacks' PGD and with the AutoAttack reference code called directly."""

from __future__ import annotations

import pytest
import torch
from eval_helpers import TinyCNN, trained_tiny_cnn
from torch import nn

from arnas_zoo.attacks import (
    FGSM,
    PGD20,
    PassCounter,
    autoattack,
    fgsm,
    pgd,
    square,
    transfer_attack,
)
from arnas_zoo.data import load_dataset
from arnas_zoo.errors import ConfigError, InputRangeError


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def _linear_two_class(seed: int = 0, shape: tuple[int, ...] = (1, 4, 4)) -> tuple[nn.Module, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    layer = nn.Linear(int(torch.tensor(shape).prod()), 2)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen))
        layer.bias.zero_()
    model = nn.Sequential(nn.Flatten(), layer)
    x = 0.3 + 0.4 * torch.rand((6, *shape), generator=gen)  # interior: the eps-ball never meets 0 or 1
    return model.eval(), x


def _margin(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(x)
    return logits.gather(1, y[:, None]).squeeze(1) - logits.gather(1, (1 - y)[:, None]).squeeze(1)


@pytest.mark.parametrize("loss", ["ce", "cw"])
def test_linf_pgd_reaches_the_analytic_worst_case_of_a_linear_model(loss: str) -> None:
    model, x = _linear_two_class()
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    eps = 0.1
    # the loss only depends on the margin, so the optimum moves every pixel by eps against it
    w = model[1].weight.detach()
    direction = (w[1 - y] - w[y]).view_as(x)
    expected = x + eps * direction.sign()
    x_adv = pgd(
        model, x, y, eps=eps, step_size=eps / 4, steps=20, loss=loss, generator=torch.Generator().manual_seed(1)
    )
    assert torch.allclose(x_adv, expected, atol=1e-6)
    with torch.no_grad():
        drop = _margin(model, x, y) - _margin(model, x_adv, y)
    assert torch.allclose(drop, eps * direction.flatten(1).abs().sum(1), rtol=1e-4)


def test_l2_pgd_reaches_the_analytic_worst_case_of_a_linear_model() -> None:
    model, x = _linear_two_class(seed=3)
    y = torch.tensor([1, 0, 1, 0, 1, 0])
    eps = 0.2
    w = model[1].weight.detach()
    direction = (w[1 - y] - w[y]).view_as(x)
    unit = direction / direction.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    x_adv = pgd(
        model, x, y, eps=eps, step_size=eps / 4, steps=60, norm="l2", generator=torch.Generator().manual_seed(2)
    )
    assert torch.allclose(x_adv, x + eps * unit, atol=1e-5)
    assert ((x_adv - x).flatten(1).norm(dim=1) <= eps + 1e-5).all()
    with torch.no_grad():
        drop = _margin(model, x, y) - _margin(model, x_adv, y)
    assert torch.allclose(drop, eps * direction.flatten(1).norm(dim=1), rtol=1e-4)


def test_fgsm_is_one_exact_signed_step() -> None:
    model, x = _linear_two_class(seed=5)
    y = torch.zeros(6, dtype=torch.long)
    w = model[1].weight.detach()
    expected = x + 0.05 * (w[1] - w[0]).view(1, *x.shape[1:]).sign()
    assert torch.allclose(fgsm(model, x, y, eps=0.05), expected, atol=1e-7)
    assert torch.allclose(FGSM(model, x, y, eps=0.05), expected, atol=1e-7)


@pytest.fixture(scope="module")
def digits_batch() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_dataset("digits", "test", n=128)
    return data.x, data.y


def test_stronger_attacks_lower_accuracy_on_a_trained_model(digits_batch) -> None:
    model = trained_tiny_cnn()
    x, y = digits_batch
    eps = 0.1
    clean = _accuracy(model, x, y)
    acc_fgsm = _accuracy(model, fgsm(model, x, y, eps=eps), y)
    acc_pgd = _accuracy(
        model, pgd(model, x, y, eps=eps, step_size=eps / 4, steps=20, generator=torch.Generator().manual_seed(0)), y
    )
    assert clean > 0.85, "the tiny model did not train"
    assert acc_pgd <= acc_fgsm < clean
    assert acc_pgd < 0.5 * clean
    # more restarts never raise the accuracy: the first restart is identical, later ones only add hits
    one = pgd(model, x, y, eps=0.05, step_size=0.01, steps=5, generator=torch.Generator().manual_seed(4))
    three = pgd(model, x, y, eps=0.05, step_size=0.01, steps=5, restarts=3, generator=torch.Generator().manual_seed(4))
    assert _accuracy(model, three, y) <= _accuracy(model, one, y)


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.5)])
def test_examples_stay_in_the_ball_and_the_box(digits_batch, norm: str, eps: float) -> None:
    model = trained_tiny_cnn()
    x, y = digits_batch
    for loss in ("ce", "cw"):
        x_adv = pgd(model, x, y, eps=eps, step_size=eps / 3, steps=5, norm=norm, loss=loss, restarts=2)
        delta = (x_adv - x).flatten(1)
        size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
        assert (size <= eps + 1e-6).all() and x_adv.min() >= 0 and x_adv.max() <= 1


def test_targeted_pgd_reaches_the_target(digits_batch) -> None:
    model = trained_tiny_cnn()
    x, y = digits_batch
    target = (y + 1) % 10
    x_adv = pgd(model, x, y, eps=0.3, step_size=0.03, steps=30, targeted=True, target=target)
    with torch.no_grad():
        hit = (model(x_adv).argmax(1) == target).float().mean().item()
    assert hit > 0.9
    with pytest.raises(ConfigError, match="target"):
        pgd(model, x, y, eps=0.1, step_size=0.01, steps=1, targeted=True)


def test_training_flag_and_parameters_are_restored(digits_batch) -> None:
    model = TinyCNN()
    x, y = digits_batch
    model.train()
    model.head.weight.requires_grad_(False)
    pgd(model, x[:8], y[:8], eps=0.03, step_size=0.01, steps=2)
    assert model.training and not model.head.weight.requires_grad
    assert all(p.requires_grad for n, p in model.named_parameters() if n != "head.weight")
    assert all(p.grad is None for p in model.parameters())

    class Boom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(256, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    boom = Boom().train()
    with pytest.raises(RuntimeError, match="boom"):
        pgd(boom, x[:2], y[:2], eps=0.03, step_size=0.01, steps=1)
    assert boom.training and boom.lin.weight.requires_grad


def test_inputs_outside_unit_range_are_rejected(digits_batch) -> None:
    model = trained_tiny_cnn()
    x, y = digits_batch
    with pytest.raises(InputRangeError, match=r"\[0, 1\]"):
        pgd(model, x * 255, y, eps=0.03, step_size=0.01, steps=1)
    with pytest.raises(InputRangeError):
        fgsm(model, (x - 0.5)[:4], y[:4], eps=0.03)
    with pytest.raises(InputRangeError, match="NCHW"):
        fgsm(model, x[0], y[:1], eps=0.03)
    with pytest.raises(ConfigError, match="norm"):
        pgd(model, x, y, eps=0.03, step_size=0.01, steps=1, norm="l1")  # type: ignore[arg-type]


def test_generator_makes_attacks_reproducible_and_counter_counts(digits_batch) -> None:
    model = trained_tiny_cnn()
    x, y = digits_batch
    kw = dict(eps=0.05, step_size=0.01, steps=3)
    a = pgd(model, x, y, generator=torch.Generator().manual_seed(7), **kw)
    b = pgd(model, x, y, generator=torch.Generator().manual_seed(7), **kw)
    c = pgd(model, x, y, generator=torch.Generator().manual_seed(8), **kw)
    assert torch.equal(a, b) and not torch.equal(a, c)
    counter = PassCounter()
    pgd(model, x, y, counter=counter, **kw)
    assert counter.snapshot() == (3 * len(x), 3 * len(x))
    counter.reset()
    PGD20(model, x[:10], y[:10], counter=counter)
    assert counter.snapshot() == (200, 200)


def test_pgd_agrees_with_torchattacks(digits_batch) -> None:
    torchattacks = pytest.importorskip("torchattacks")
    model = trained_tiny_cnn()
    x, y = digits_batch
    eps, alpha, steps = 0.06, 0.015, 10
    ours = pgd(model, x, y, eps=eps, step_size=alpha, steps=steps, start="none", channels_last=False)
    theirs = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)(x, y)
    # same maths and memory layout without a random start: identical up to float rounding of the projection
    assert (ours - theirs).abs().max().item() < 1e-5
    assert _accuracy(model, ours, y) == _accuracy(model, theirs, y)
    # with random starts, the accuracies agree within sampling noise
    ours_rs = _accuracy(
        model, pgd(model, x, y, eps=eps, step_size=alpha, steps=steps, generator=torch.Generator().manual_seed(0)), y
    )
    theirs_rs = _accuracy(model, torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps)(x, y), y)
    assert abs(ours_rs - theirs_rs) <= 0.06


def _compare_with_reference(digits_batch, version: str, attacks, norm: str, eps: float, n: int) -> None:  # type: ignore[no-untyped-def]
    reference = pytest.importorskip("pyautoattack")
    model = trained_tiny_cnn()
    x, y = digits_batch[0][:n], digits_batch[1][:n]
    ours = _accuracy(model, autoattack(model, x, y, eps=eps, norm=norm, version=version, attacks=attacks, seed=0), y)
    direct = reference.AutoAttack(
        model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, version=version, attacks=attacks, seed=0, device="cpu"
    )
    if version == "custom":
        direct.apgd.n_restarts = 1
    direct.verbose = False
    x_direct, _ = direct.run_standard_evaluation(x, y, batch_size=len(x))
    assert ours == _accuracy(model, x_direct, y), (version, norm)
    assert ours < _accuracy(model, x, y)


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.5)])
def test_apgd_ce_wrapper_equals_the_reference_called_directly(digits_batch, norm: str, eps: float) -> None:
    _compare_with_reference(digits_batch, "custom", ["apgd-ce"], norm, eps, n=16)


@pytest.mark.slow
def test_standard_autoattack_wrapper_equals_the_reference_called_directly(digits_batch) -> None:
    # standard AA runs APGD-T and FAB-T over 9 targets and Square with 5000 queries on the survivors
    _compare_with_reference(digits_batch, "standard", None, "linf", 0.03, n=16)


def test_square_and_transfer(digits_batch) -> None:
    model = trained_tiny_cnn()
    x, y = digits_batch[0][:16], digits_batch[1][:16]
    counter = PassCounter()
    x_sq = square(model, x, y, eps=0.1, n_queries=100, counter=counter)
    assert counter.backward == 0 and counter.forward > len(x)  # score-based: queries only
    assert (x_sq - x).abs().max() <= 0.1 + 1e-6
    assert _accuracy(model, x_sq, y) < _accuracy(model, x, y)
    other = TinyCNN()
    x_tr, correct = transfer_attack(other, model, x, y, eps=0.1)
    assert correct.shape == (16,) and (x_tr - x).abs().max() <= 0.1 + 1e-6


def test_counting_wrapper_keeps_the_model_mode(digits_batch) -> None:
    model = trained_tiny_cnn()
    x, y = digits_batch
    counter = PassCounter()
    from arnas_zoo.attacks import CountingModel

    pgd(CountingModel(model, counter), x[:4], y[:4], eps=0.03, step_size=0.01, steps=1)
    assert not model.training and counter.forward == 4


def _with_running_stats(model: torch.nn.Module) -> torch.nn.Module:
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, 3, 32, 32))
    return model.eval()


def test_folded_batchnorm_keeps_the_function_and_its_input_gradient() -> None:
    from arnas_zoo.attacks import folded_batchnorm
    from arnas_zoo.registry import create_model

    model = _with_running_stats(create_model("arnas", init_channels=4, layers=5))
    n_bn = lambda m: sum(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())  # noqa: E731
    before = n_bn(model)
    x = torch.rand(4, 3, 32, 32)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya = model(xa)
    (ga,) = torch.autograd.grad(ya.logsumexp(1).sum(), xa)
    with folded_batchnorm(model) as folded:
        assert n_bn(folded) < before  # pairs were folded (FactorizedReduce's BN stays)
        yb = folded(xb)
        (gb,) = torch.autograd.grad(yb.logsumexp(1).sum(), xb)
    assert torch.allclose(ya, yb, atol=1e-5)
    assert torch.allclose(ga, gb, atol=1e-6 * float(ga.abs().max()) + 1e-9)
    assert n_bn(model) == before  # restored
    assert torch.equal(model(x), ya.detach())


def test_folded_batchnorm_leaves_batch_statistics_alone_and_restores_on_error() -> None:
    from arnas_zoo.attacks import folded_batchnorm
    from arnas_zoo.registry import create_model

    model = create_model("arnas", init_channels=4, layers=5).train()  # BN uses batch statistics
    names = [type(m).__name__ for m in model.modules()]
    with folded_batchnorm(model):
        assert [type(m).__name__ for m in model.modules()] == names
    model.eval()
    try:
        with folded_batchnorm(model):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert [type(m).__name__ for m in model.modules()] == names


def test_pgd_with_and_without_folding_agree() -> None:
    from arnas_zoo.attacks import pgd
    from arnas_zoo.registry import create_model

    model = _with_running_stats(create_model("darts_v2", init_channels=4, layers=5))
    x, y = torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))
    runs = [
        pgd(model, x, y, eps=8 / 255, step_size=2 / 255, steps=5, start="none", fold_bn=fold) for fold in (True, False)
    ]
    # sign gradients may flip on float-rounding ties; nearly every pixel must follow the same path
    assert (runs[0] - runs[1]).abs().gt(1e-6).float().mean() < 0.01


def test_pgd_does_not_touch_the_global_random_state() -> None:
    from arnas_zoo.attacks import pgd
    from arnas_zoo.registry import create_model

    model = _with_running_stats(create_model("arnas", init_channels=4, layers=5))
    x, y = torch.rand(4, 3, 32, 32), torch.randint(0, 10, (4,))
    state = torch.get_rng_state()
    pgd(model, x, y, eps=8 / 255, step_size=2 / 255, steps=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), state)


def test_folding_skips_sequential_subclasses_with_their_own_forward() -> None:
    """A third-party Sequential subclass that reorders its children must be attacked as it computes."""
    from arnas_zoo.attacks import folded_batchnorm

    class Reordered(torch.nn.Sequential):
        def forward(self, x):  # BN first, then the conv: folding "conv -> BN" would change the function
            return self[0](self[1](x) + 1.0)

    torch.manual_seed(0)
    model = Reordered(torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.BatchNorm2d(3))
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    model.eval()
    x = torch.rand(2, 3, 8, 8)
    reference = model(x)
    with folded_batchnorm(model):
        assert isinstance(model[1], torch.nn.BatchNorm2d)  # left alone
        assert torch.equal(model(x), reference)


@pytest.mark.parametrize("bn", ["eval", "batch"])
def test_bn_modes_attack_the_named_function_and_keep_running_statistics(bn: str) -> None:
    from arnas_zoo.attacks import pgd
    from arnas_zoo.registry import create_model

    model = _with_running_stats(create_model("arnas", init_channels=4, layers=5)).train()
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    x, y = torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))
    x_adv = pgd(model, x, y, eps=8 / 255, step_size=2 / 255, steps=3, bn=bn, generator=torch.Generator().manual_seed(0))
    assert model.training and all(p.requires_grad for p in model.parameters())
    for name, value in model.named_buffers():
        assert torch.equal(value, buffers[name]), name  # attack batches never reach the running statistics
    # the examples raise the loss of the function they were crafted on
    from arnas_zoo.attacks import bn_mode

    with bn_mode(model, bn), torch.no_grad():
        before = torch.nn.functional.cross_entropy(model(x), y)
        after = torch.nn.functional.cross_entropy(model(x_adv), y)
    assert after > before


@pytest.mark.parametrize("start", ["uniform", "normal", "none"])
def test_starts_and_the_kl_loss(start: str) -> None:
    from arnas_zoo.attacks import pgd

    model = trained_tiny_cnn()
    x, y = load_dataset("digits", "test", n=32).x, load_dataset("digits", "test", n=32).y
    only_start = pgd(
        model,
        x,
        y,
        eps=0.1,
        step_size=0.03,
        steps=0,
        start=start,
        sigma=0.001,
        generator=torch.Generator().manual_seed(0),
    )
    size = float((only_start - x).abs().max())
    assert {"uniform": 0.05 < size <= 0.1 + 1e-6, "normal": 0 < size < 0.01, "none": size == 0}[start]
    kl_adv = pgd(
        model,
        x,
        y,
        eps=0.1,
        step_size=0.03,
        steps=3,
        start=start,
        loss="kl",
        generator=torch.Generator().manual_seed(0),
    )
    assert 0.05 < float((kl_adv - x).abs().max()) <= 0.1 + 1e-6


def test_non_finite_radii_are_refused() -> None:
    from arnas_zoo.attacks import pgd

    model = trained_tiny_cnn()
    x, y = load_dataset("digits", "test", n=4).x, load_dataset("digits", "test", n=4).y
    for eps in (float("nan"), float("inf"), -0.1):
        with pytest.raises(ConfigError, match="eps"):
            pgd(model, x, y, eps=eps, step_size=0.01, steps=1)
    with pytest.raises(ConfigError, match="labels"):
        pgd(model, x, y.float(), eps=0.1, step_size=0.01, steps=1)


def test_scratch_running_stats_leave_buffers_unwritten_and_re_enter() -> None:
    from arnas_zoo.attacks.batchnorm import ScratchRunningStats

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).train()
    bn = model[1]
    originals = [bn.running_mean, bn.running_var, bn.num_batches_tracked]
    before = [t.clone() for t in originals]
    x = torch.rand(2, 3, 6, 6)
    plain = model(x)  # moves the real statistics once
    moved = [t.clone() for t in originals]
    versions = [t._version for t in originals]
    assert not torch.equal(moved[0], before[0])
    scratch = ScratchRunningStats(model)
    for _ in range(2):  # entered twice, as a graph backpropagated twice recomputes twice
        with scratch:
            assert bn.running_mean is not originals[0]
            assert torch.allclose(model(x), plain)  # batch statistics: the same output
        assert all(a is b for a, b in zip([bn.running_mean, bn.running_var, bn.num_batches_tracked], originals))
    assert all(torch.equal(t, m) for t, m in zip(originals, moved))
    assert [t._version for t in originals] == versions  # not written since the plain forward
    model.eval()
    with scratch:  # eval-mode BatchNorm reads its statistics and is left alone
        assert bn.running_mean is originals[0]
