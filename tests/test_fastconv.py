"""The space-to-batch dilated depthwise convolution equals the plain one, forward and backward (fp32)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from arnas_zoo.fastconv import dilated_depthwise_s2b


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 3),
    c=st.integers(1, 6),
    h=st.integers(5, 13),
    w=st.integers(5, 13),
    k=st.sampled_from([3, 5]),
    d=st.sampled_from([2, 3]),
    stride_is_d=st.booleans(),
    channels_last=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_forward_and_backward_equal_the_plain_convolution(n, c, h, w, k, d, stride_is_d, channels_last, seed) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    stride, padding = (d if stride_is_d else 1), d * (k - 1) // 2
    x = torch.randn(n, c, h, w)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(c, 1, k, k)
    xa, wa = x.clone().requires_grad_(), weight.clone().requires_grad_()
    xb, wb = x.clone().requires_grad_(), weight.clone().requires_grad_()
    a = F.conv2d(xa, wa, stride=stride, padding=padding, dilation=d, groups=c)
    b = dilated_depthwise_s2b(xb, wb, stride, padding, d)
    assert a.shape == b.shape
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():  # unambiguously NHWC (C > 1)
        assert b.is_contiguous(memory_format=torch.channels_last)  # the layout is kept
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(a)
    a.backward(g)
    b.backward(g)
    assert torch.allclose(xa.grad, xb.grad, atol=1e-5, rtol=1e-5)
    assert torch.allclose(wa.grad, wb.grad, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("arch,channels_last", [("arnas", False), ("darts_v2", False), ("arnas", True)])
def test_networks_give_the_same_logits_and_gradients_with_the_fast_path(
    arch: str, channels_last: bool, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from arnas_zoo import create_model
    from arnas_zoo.fastconv import DepthwiseConv2d, choices

    torch.manual_seed(0)
    model = create_model(arch, in_channels=1, input_size=16, init_channels=4, layers=5, auxiliary=False).eval()
    assert any(m.dilation[0] > 1 for m in model.modules() if isinstance(m, DepthwiseConv2d))  # the path applies
    x = torch.rand(4, 1, 16, 16)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    out = {}
    for mode in ("plain", "s2b", "auto"):
        monkeypatch.setenv("ARNAS_ZOO_DILATED", mode)
        xi = x.clone().requires_grad_()
        model.zero_grad()
        logits = model(xi)
        logits.sum().backward()
        out[mode] = (logits.detach(), xi.grad, [p.grad.clone() for p in model.parameters() if p.grad is not None])
    for fast in ("s2b", "auto"):
        assert torch.allclose(out["plain"][0], out[fast][0], atol=1e-5)
        assert torch.allclose(out["plain"][1], out[fast][1], atol=1e-5)
        for ga, gb in zip(out["plain"][2], out[fast][2]):
            assert torch.allclose(ga, gb, atol=1e-4, rtol=1e-4)
    layout = "channels_last" if channels_last else "nchw"
    measured = [name for key, name in choices().items() if key[4] == layout]
    assert measured and set(measured) <= {"plain", "s2b"}  # auto measured this layout's shapes and chose


def test_auto_mode_runs_under_inference_mode_and_equals_plain(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from arnas_zoo import create_model
    from arnas_zoo.fastconv import choices

    torch.manual_seed(0)
    model = create_model("arnas", in_channels=1, input_size=16, init_channels=4, layers=5, auxiliary=False).eval()
    x = torch.rand(3, 1, 16, 16)
    with torch.inference_mode():
        plain = model(x)
        monkeypatch.setenv("ARNAS_ZOO_DILATED", "auto")
        fast = model(x)  # the timing probe must not ask an inference tensor for gradients
    assert torch.allclose(plain, fast, atol=1e-5)
    assert any(key[-1] is False for key in choices())  # forward-only choices are kept apart


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 3),
    c=st.integers(1, 6),
    h=st.integers(3, 13),
    w=st.integers(3, 13),
    k=st.sampled_from([1, 3, 5]),
    d=st.sampled_from([1, 2, 3]),
    padding_kind=st.sampled_from(["same", "zero", "one"]),
    channels_last=st.booleans(),
    need=st.sampled_from(["both", "input", "weight"]),
    seed=st.integers(0, 1000),
)
def test_flipped_kernel_backward_equals_the_plain_one(  # type: ignore[no-untyped-def]
    n, c, h, w, k, d, padding_kind, channels_last, need, seed
) -> None:
    """``ARNAS_ZOO_DWGRAD=flip``: the stride-1 depthwise convolution's output, input gradient and weight
    gradient equal the plain ones (fp32 rounding), for any padding up to ``d*(k-1)`` and both layouts."""
    from arnas_zoo.fastconv import DepthwiseConv2d

    padding = {"same": d * (k - 1) // 2, "zero": 0, "one": min(1, d * (k - 1))}[padding_kind]
    if h + 2 * padding < d * (k - 1) + 1 or w + 2 * padding < d * (k - 1) + 1:
        return  # no output pixel
    torch.manual_seed(seed)
    conv = DepthwiseConv2d(c, c, k, padding=padding, dilation=d, groups=c, bias=False)
    x = torch.randn(n, c, h, w)
    if channels_last:
        x, conv = x.contiguous(memory_format=torch.channels_last), conv.to(memory_format=torch.channels_last)
    results = []
    for mode in ("native", "flip"):
        with pytest.MonkeyPatch.context() as env:
            env.setenv("ARNAS_ZOO_DWGRAD", mode)
            env.setenv("ARNAS_ZOO_DILATED", "plain")
            xi = x.clone().requires_grad_(need != "weight")
            conv.weight.requires_grad_(need != "input")
            assert conv._flips(xi) == (mode == "flip")
            out = conv(xi)
            wanted = [t for t in (xi, conv.weight) if t.requires_grad]
            g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
            results.append((out.detach(), torch.autograd.grad(out, wanted, g)))
    conv.weight.requires_grad_(True)
    assert torch.allclose(results[0][0], results[1][0], atol=1e-5, rtol=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4, rtol=1e-5)


def test_flipped_backward_in_a_network_keeps_logits_and_gradients(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from arnas_zoo import create_model
    from arnas_zoo.fastconv import DepthwiseConv2d

    torch.manual_seed(0)
    model = create_model("arnas", in_channels=1, input_size=16, init_channels=4, layers=5, auxiliary=False).eval()
    model, x = model.to(memory_format=torch.channels_last), torch.rand(4, 1, 16, 16)
    x = x.contiguous(memory_format=torch.channels_last)
    out = {}
    for mode in ("native", "flip"):
        monkeypatch.setenv("ARNAS_ZOO_DWGRAD", mode)
        flipping = [m for m in model.modules() if isinstance(m, DepthwiseConv2d) and m._flips(x)]
        assert bool(flipping) == (mode == "flip")
        xi = x.clone().requires_grad_()
        model.zero_grad()
        logits = model(xi)
        logits.sum().backward()
        out[mode] = (logits.detach(), xi.grad, [p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert torch.equal(out["native"][0], out["flip"][0])  # the forward is the same call
    assert torch.allclose(out["native"][1], out["flip"][1], atol=1e-5)
    for ga, gb in zip(out["native"][2], out["flip"][2]):
        assert torch.allclose(ga, gb, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kernel, dilation, fp32", [(5, 1, True), (3, 2, True), (3, 1, False)])
def test_big_depthwise_convolutions_compute_in_fp32_under_bf16_autocast(monkeypatch, kernel, dilation, fp32) -> None:  # type: ignore[no-untyped-def]
    from arnas_zoo.fastconv import DW_FP32_ENV, DepthwiseConv2d

    torch.manual_seed(0)
    conv = DepthwiseConv2d(8, 8, kernel, padding=dilation * (kernel // 2), dilation=dilation, groups=8, bias=False)
    x = torch.randn(2, 8, 12, 12, requires_grad=True)
    exact = F.conv2d(x, conv.weight, padding=dilation * (kernel // 2), dilation=dilation, groups=8)
    (g_exact,) = torch.autograd.grad(exact.square().sum(), x)
    for rule in ("big", "0"):  # "0" is the default
        monkeypatch.setenv(DW_FP32_ENV, rule)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv(x)
        (g,) = torch.autograd.grad(out.float().square().sum(), x)
        if rule == "big" and fp32:  # fp32 inside autocast: the plain convolution's values, fp32 out
            assert out.dtype == torch.float32
            torch.testing.assert_close(out, exact, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(g, g_exact, rtol=1e-5, atol=1e-5)
        else:  # autocast's own choice: bf16, within bf16 rounding of the exact values
            assert out.dtype == torch.bfloat16
            torch.testing.assert_close(out.float(), exact, rtol=0.05, atol=0.05)
