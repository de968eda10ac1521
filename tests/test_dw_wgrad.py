"""Depthwise weight gradients by phases and 3x3 windows equal oneDNN's own, and are computed only when wanted."""

from __future__ import annotations

import os
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from arnas_zoo import dw_wgrad
from arnas_zoo.fastconv import DepthwiseConv2d


def _native(x: torch.Tensor, grad: torch.Tensor, k: int, p: int, d: int) -> torch.Tensor:
    c = x.shape[1]
    weight = x.new_empty(c, 1, k, k)
    return torch.ops.aten.convolution_backward(
        grad, x, weight, None, [1, 1], [p, p], [d, d], False, [0, 0], c, [False, True, False]
    )[1]


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 3),
    c=st.integers(1, 6),
    half_h=st.integers(2, 7),
    half_w=st.integers(2, 7),
    k=st.sampled_from([3, 5]),
    d=st.sampled_from([1, 2]),
    channels_last=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_weight_gradient_equals_onednn_in_float64(n, c, half_h, half_w, k, d, channels_last, seed) -> None:  # type: ignore[no-untyped-def]
    """Both rewrites are exact: in float64 they agree with the plain kernel to 1e-12 relative."""
    p = d * (k - 1) // 2
    with mock.patch.dict(os.environ, {dw_wgrad.ENV: "windows"}):  # both rewrites
        if not dw_wgrad.applies(k, p, d, 2 * half_h, 2 * half_w):
            assert k == 3 and d == 1  # the only case left to oneDNN: its own fast kernel
            return
        _check_float64(n, c, half_h, half_w, k, d, p, channels_last, seed)


def _check_float64(n, c, half_h, half_w, k, d, p, channels_last, seed) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    x = torch.randn(n, c, 2 * half_h, 2 * half_w, dtype=torch.float64)
    grad = torch.randn(n, c, 2 * half_h, 2 * half_w, dtype=torch.float64)
    if channels_last:
        x, grad = x.contiguous(memory_format=torch.channels_last), grad.contiguous(memory_format=torch.channels_last)
    ours, plain = dw_wgrad.weight_grad(x, grad, k, p, d), _native(x, grad, k, p, d)
    assert ours.shape == plain.shape == (c, 1, k, k)
    assert torch.allclose(ours, plain, rtol=1e-12, atol=1e-12 * float(plain.abs().max()))


def test_shapes_the_rewrites_do_not_cover_are_refused(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(dw_wgrad.ENV, "windows")
    assert not dw_wgrad.applies(3, 1, 1, 8, 8)  # oneDNN's fast kernel already
    assert not dw_wgrad.applies(7, 3, 1, 8, 8)
    assert not dw_wgrad.applies(5, 2, 2, 8, 8)  # not "same" padding
    assert not dw_wgrad.applies(3, 2, 2, 7, 8)  # a side not divisible by the dilation
    assert not dw_wgrad.applies(5, 3, 1, 8, 8)  # undilated 5x5 without "same" padding
    assert dw_wgrad.applies(5, 4, 2, 8, 8) and dw_wgrad.applies(3, 2, 2, 16, 16) and dw_wgrad.applies(5, 2, 1, 5, 7)


def test_modes_choose_which_rewrites_run(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(dw_wgrad.ENV, "auto")  # the default: the phases, not the windows
    assert dw_wgrad.applies(5, 4, 2, 8, 8) and not dw_wgrad.applies(5, 2, 1, 8, 8)
    monkeypatch.setenv(dw_wgrad.ENV, "native")
    assert not dw_wgrad.applies(5, 4, 2, 8, 8) and not dw_wgrad.applies(5, 2, 1, 8, 8)
    monkeypatch.setenv(dw_wgrad.ENV, "no-such-mode")  # an unknown value is the default, not an error
    assert dw_wgrad.mode() == "auto"


@pytest.mark.parametrize("k,d", [(5, 1), (3, 2), (5, 2), (3, 1)])  # under "windows": every rewrite
@pytest.mark.parametrize("channels_last", [False, True])
def test_module_gradients_equal_the_plain_ones_in_fp32(k: int, d: int, channels_last: bool, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The module's output, input gradient and weight gradient under the default route, against
    ``ARNAS_ZOO_DW_WGRAD=native``: the issue's bound, 1e-5 relative, in fp32."""
    torch.manual_seed(k * 10 + d)
    conv = DepthwiseConv2d(6, 6, k, padding=d * (k - 1) // 2, dilation=d, groups=6, bias=False)
    x = torch.randn(4, 6, 12, 12)
    if channels_last:
        conv, x = conv.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    g = torch.randn(4, 6, 12, 12)
    results = {}
    for route in ("native", "windows"):
        monkeypatch.setenv(dw_wgrad.ENV, route)
        conv.zero_grad()
        xi = x.clone().requires_grad_()
        out = conv(xi)
        out.backward(g)
        assert conv.weight.grad is not None and xi.grad is not None
        results[route] = (out.detach(), xi.grad.clone(), conv.weight.grad.clone())
    (out_n, gx_n, gw_n), (out_a, gx_a, gw_a) = results["native"], results["windows"]
    assert torch.equal(out_n, out_a)  # the forward is the plain convolution either way
    assert torch.equal(gx_n, gx_a)  # the input gradient stays oneDNN's
    assert torch.allclose(gw_a, gw_n, rtol=1e-5, atol=1e-5 * float(gw_n.abs().max()))


class _Counting:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.calls += 1
        return self.real(*args, **kwargs)


@pytest.fixture
def counted(monkeypatch):  # type: ignore[no-untyped-def]
    counter = _Counting()
    counter.real = dw_wgrad.weight_grad  # type: ignore[attr-defined]
    monkeypatch.setattr(dw_wgrad, "weight_grad", counter)
    monkeypatch.setenv(dw_wgrad.ENV, "auto")
    return counter


def test_weight_gradient_is_skipped_when_only_the_input_gradient_is_asked_for(counted) -> None:  # type: ignore[no-untyped-def]
    """An attack's ``autograd.grad`` w.r.t. the input must not pay for the weight gradient (oneDNN's own
    backward skips it too), even though the weight requires a gradient."""
    conv = DepthwiseConv2d(4, 4, 5, padding=4, dilation=2, groups=4, bias=False)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    (gx,) = torch.autograd.grad(conv(x).square().sum(), x)
    assert gx is not None and counted.calls == 0
    assert conv.weight.grad is None
    conv(x).square().sum().backward()
    assert counted.calls == 1 and conv.weight.grad is not None
    gx2, gw = torch.autograd.grad(conv(x).square().sum(), [x, conv.weight])
    assert counted.calls == 2 and torch.allclose(gx2, gx)


def test_frozen_weights_and_autocast_and_no_grad_take_the_plain_convolution(counted) -> None:  # type: ignore[no-untyped-def]
    conv = DepthwiseConv2d(4, 4, 5, padding=4, dilation=2, groups=4, bias=False)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    assert conv(x).grad_fn.name() == "_FlipGradBackward"
    conv.weight.requires_grad_(False)  # as attacks freeze them
    assert "Convolution" in conv(x).grad_fn.name()
    conv.weight.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert "Convolution" in conv(x).grad_fn.name()
    with torch.no_grad():
        assert conv(x).grad_fn is None
    assert counted.calls == 0


def test_double_backward_matches_the_plain_convolution(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A backward that builds a graph (the Jacobian penalty, second-order search) differentiates through
    oneDNN's own kernels: its second-order gradients are the plain convolution's."""
    torch.manual_seed(0)
    conv = DepthwiseConv2d(3, 3, 5, padding=4, dilation=2, groups=3, bias=False).double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    grads = {}
    for route in ("native", "windows"):
        monkeypatch.setenv(dw_wgrad.ENV, route)
        xi = x.clone().requires_grad_()
        (gx,) = torch.autograd.grad(conv(xi).pow(3).sum(), xi, create_graph=True)
        (gw,) = torch.autograd.grad(gx.square().sum(), conv.weight)
        grads[route] = gw
    assert torch.allclose(grads["windows"], grads["native"], rtol=1e-10)


def test_networks_train_the_same_under_both_routes(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """ARNAS (dilated and 5x5 separable convolutions): logits equal, parameter gradients to 1e-5 relative."""
    from arnas_zoo import create_model

    torch.manual_seed(0)
    model = create_model("arnas", in_channels=1, input_size=16, init_channels=4, layers=5, auxiliary=False).train()
    convs = [m for m in model.modules() if isinstance(m, DepthwiseConv2d)]
    assert any(m.dilation[0] > 1 for m in convs) and any(m.kernel_size[0] == 5 for m in convs)
    model = model.to(memory_format=torch.channels_last)
    x = torch.rand(4, 1, 16, 16).contiguous(memory_format=torch.channels_last)
    y = torch.tensor([0, 1, 2, 3])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    runs = {}
    for route in ("native", "auto", "windows"):
        monkeypatch.setenv(dw_wgrad.ENV, route)
        model.load_state_dict(state)  # the same BatchNorm statistics before each forward
        model.zero_grad()
        logits = model(x)
        F.cross_entropy(logits, y).backward()
        runs[route] = (logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    for route in ("auto", "windows"):
        assert torch.equal(runs["native"][0], runs[route][0])
        for name, plain in runs["native"][1].items():
            ours = runs[route][1][name]
            assert torch.allclose(ours, plain, rtol=1e-5, atol=1e-5 * max(float(plain.abs().max()), 1e-12)), name


def test_training_step_flips_dilated_input_gradients_and_nothing_else_does(monkeypatch, flip_spy) -> None:  # type: ignore[no-untyped-def]
    """The dilated flip is the training step's default only: evaluation keeps oneDNN's input gradients
    (so a card's attacks re-run as made), and ``ARNAS_ZOO_DWGRAD`` overrides both."""
    from types import SimpleNamespace

    from arnas_zoo.fastconv import flip_enabled, training_routes
    from arnas_zoo.training import get_recipe, step

    monkeypatch.delenv("ARNAS_ZOO_DWGRAD", raising=False)
    assert not flip_enabled(2) and not flip_enabled(1)
    with training_routes():
        assert flip_enabled(2) and not flip_enabled(1)
    assert not flip_enabled(2)  # restored on exit

    monkeypatch.setattr(step, "pgd", flip_spy.spy)
    x, y = torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.long)
    recipe = get_recipe("cpu_cifar10")
    models = SimpleNamespace(attack_net=None)
    for env, expected in ((None, True), ("native", False)):
        if env:
            monkeypatch.setenv("ARNAS_ZOO_DWGRAD", env)
        with pytest.raises(flip_spy.Stop):
            step.train_step(models, None, recipe, x, y, None, recipe.eps, None)  # type: ignore[arg-type]
        assert flip_spy.seen[-1] is expected
    monkeypatch.setenv("ARNAS_ZOO_DWGRAD", "flip")
    with training_routes():
        assert flip_enabled(1)
