"""Separable blocks computed as one composed dense convolution (``ARNAS_ZOO_SEPCONV``) equal the two-convolution
path: outputs and every gradient in fp32, BatchNorm folding, the FLOP count, and the mode switch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from arnas_zoo import create_model, ops
from arnas_zoo.attacks.batchnorm import _foldable_pairs, folded_batchnorm
from arnas_zoo.errors import ConfigError
from arnas_zoo.ops import SEPCONV_ENV, DilConv, SepConv, modules_per_op, sepconv_mode
from arnas_zoo.stats import count_ops


def _init(op: nn.Module) -> nn.Module:
    """``op`` with non-trivial BatchNorm affine parameters and running statistics."""
    torch.manual_seed(0)
    for m in op.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    return op


def _run(op: nn.Module, x: torch.Tensor, mode: str, monkeypatch: pytest.MonkeyPatch) -> tuple[torch.Tensor, list]:
    monkeypatch.setenv(SEPCONV_ENV, mode)
    op.zero_grad()
    xi = x.clone().requires_grad_()
    out = op(xi)
    out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape))
    return out.detach(), [xi.grad] + [p.grad.clone() for p in op.parameters()]


@pytest.mark.parametrize("kernel,dilation,stride", [(3, 1, 1), (5, 1, 1), (3, 2, 1), (5, 2, 2), (3, 1, 2)])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_composed_equals_two_convolutions_fp32(kernel, dilation, stride, channels_last, training, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(1)
    padding = dilation * (kernel - 1) // 2
    op = _init(DilConv(6, 10, kernel, stride, padding, dilation, affine=True))
    op.train(training)
    x = torch.randn(3, 6, 11, 11)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    plain, plain_grads = _run(op, x, "plain", monkeypatch)
    dense, dense_grads = _run(op, x, "dense", monkeypatch)
    assert plain.shape == dense.shape
    assert torch.allclose(plain, dense, rtol=1e-5, atol=1e-5 * plain.abs().max().item())
    assert len(plain_grads) == 1 + 4  # input, depthwise, pointwise, BatchNorm weight and bias
    for a, b in zip(plain_grads, dense_grads, strict=True):
        assert b is not None
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * a.abs().max().item())


def test_sep_conv_and_its_shared_relu_tail_compose(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(2)
    op = _init(SepConv(8, 8, 3, 1, 1, affine=True))
    x = torch.randn(2, 8, 9, 9)
    results = {}
    for mode in ("plain", "dense"):
        monkeypatch.setenv(SEPCONV_ENV, mode)
        results[mode] = (op(x), op.forward_after_relu(x.relu()))
    for a, b in zip(results["plain"], results["dense"], strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_folding_applies_to_the_composed_path(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """BatchNorm folding swaps the pointwise convolution and its BatchNorm; the composed path must use the swap."""
    torch.manual_seed(3)
    op = _init(DilConv(4, 4, 3, 1, 2, 2, affine=True))
    op.eval()
    assert len(_foldable_pairs(op)) == 1  # pointwise -> BatchNorm, although DilConv overrides forward
    x = torch.randn(2, 4, 8, 8)
    monkeypatch.setenv(SEPCONV_ENV, "plain")
    expected = op(x)
    monkeypatch.setenv(SEPCONV_ENV, "dense")
    with folded_batchnorm(op) as folded:
        assert isinstance(folded[3], nn.Identity)
        assert folded[2].bias is not None
        got = folded(x)
    assert torch.allclose(expected, got, rtol=1e-5, atol=1e-5)
    assert isinstance(op[3], nn.BatchNorm2d)  # restored


def test_auto_composes_only_under_cpu_bf16_autocast_with_amx(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """``auto`` (the default) keeps fp32 bit-identical to the two-convolution path and composes under bf16
    on a CPU with AMX (pretended here, so that the test runs everywhere: the numerics do not depend on it)."""
    monkeypatch.setattr(ops, "has_amx_bf16", lambda: True)
    monkeypatch.delenv(SEPCONV_ENV, raising=False)
    assert sepconv_mode() == "auto"
    torch.manual_seed(4)
    op = _init(DilConv(8, 8, 5, 1, 4, 2, affine=True))
    op.eval()
    x = torch.randn(2, 8, 12, 12)
    calls: list[tuple[int, ...]] = []
    # the depthwise module runs only when the block is not composed
    op[1].register_forward_hook(lambda m, i, o: calls.append(tuple(o.shape)))
    monkeypatch.setenv(SEPCONV_ENV, "plain")
    plain = op(x)
    monkeypatch.delenv(SEPCONV_ENV)
    assert torch.equal(op(x), plain)  # fp32: the same kernels, bit for bit
    assert len(calls) == 2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        composed = op(x)
    assert len(calls) == 2  # composed: the depthwise module did not run
    assert composed.dtype == torch.bfloat16
    # bf16 rounding only: within a few bf16 ulps of the fp32 function
    assert (composed.float() - plain).abs().max() <= 0.03 * plain.abs().max()
    with modules_per_op(), torch.autocast("cpu", dtype=torch.bfloat16):
        op(x)
    assert len(calls) == 3
    monkeypatch.setattr(ops, "has_amx_bf16", lambda: False)  # not measured without AMX: two convolutions
    with torch.autocast("cpu", dtype=torch.bfloat16):
        op(x)
    assert len(calls) == 4


def test_flop_count_is_the_same_in_every_mode(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    model = create_model("arnas", init_channels=4, layers=5).eval()
    counts = {}
    for mode in ("plain", "dense"):
        monkeypatch.setenv(SEPCONV_ENV, mode)
        counts[mode] = count_ops(model, (3, 32, 32))
    assert counts["plain"] == counts["dense"]
    assert counts["plain"][0] > 0


def test_network_logits_and_gradients_agree_across_modes(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(5)
    model = create_model("arnas", init_channels=4, layers=5, input_size=16, in_channels=1).train()
    x = torch.rand(4, 1, 16, 16)
    grads = {}
    for mode in ("plain", "dense"):
        monkeypatch.setenv(SEPCONV_ENV, mode)
        model.zero_grad()
        logits = model(x)
        logits = logits[0] if isinstance(logits, tuple) else logits
        logits.square().sum().backward()
        grads[mode] = (logits.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None])
    (la, ga), (lb, gb) = grads["plain"], grads["dense"]
    assert torch.allclose(la, lb, rtol=1e-5, atol=1e-5 * la.abs().max().item())
    assert len(ga) == len(gb) > 0
    for a, b in zip(ga, gb, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * max(a.abs().max().item(), 1e-3))


def test_a_bad_mode_is_a_clear_error(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(SEPCONV_ENV, "fast")
    with pytest.raises(ConfigError, match="ARNAS_ZOO_SEPCONV"):
        sepconv_mode()


@pytest.mark.parametrize("bf16", [False, True])
def test_the_mode_checks_do_not_break_a_compiled_graph(bf16: bool) -> None:
    """``torch.compile`` traces the forward: the CPU-flag and mode checks must not split it into pieces."""
    import contextlib

    import torch._dynamo

    torch._dynamo.reset()
    model = create_model("arnas", init_channels=4, layers=5, input_size=16, in_channels=1).train()

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            return model(x)[0]

    explained = torch._dynamo.explain(forward)(torch.rand(2, 1, 16, 16))
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
    assert explained.graph_count == 1
