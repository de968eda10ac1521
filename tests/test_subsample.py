"""arnas_zoo.subsample: strided picks with one backward node give the slices' values and gradients."""

from __future__ import annotations

import pytest
import torch

from arnas_zoo import subsample
from arnas_zoo.ops import FactorizedReduce, PointwiseConv2d
from arnas_zoo.registry import create_model
from arnas_zoo.subsample import phases


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    ("size", "stride", "offsets"),
    [
        ((8, 8), 2, ((0, 0), (1, 1))),
        ((7, 9), 2, ((0, 0),)),
        ((9, 6), 3, ((2, 1), (0, 0), (1, 2))),
        ((1, 1), 2, ((0, 0),)),
    ],
)
def test_values_and_gradients_equal_the_slices(size, stride, offsets, channels_last) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    x = torch.randn(3, 5, *size, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    picked = phases(a, stride, offsets)
    assert picked[0].grad_fn is not None and type(picked[0].grad_fn).__name__ == "_PhasesBackward"
    sliced = [b[:, :, i::stride, j::stride] for i, j in offsets]
    weights = [torch.randn(p.shape, dtype=torch.float64) for p in sliced]
    for p, s in zip(picked, sliced):
        assert torch.equal(p, s)
        assert p.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    sum((p * w).sum() for p, w in zip(picked, weights)).backward()  # type: ignore[union-attr]
    sum((s * w).sum() for s, w in zip(sliced, weights)).backward()  # type: ignore[union-attr]
    assert torch.equal(a.grad, b.grad)  # type: ignore[arg-type]
    assert torch.autograd.gradgradcheck(lambda t: phases(t, stride, offsets), (x[:1, :2].clone().requires_grad_(),))


def test_plain_slices_where_no_node_belongs() -> None:
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    with torch.no_grad():
        (p,) = phases(x, 2, ((1, 1),))
    assert p.grad_fn is None and not p.is_contiguous()  # a view, as the slice is
    (q,) = phases(x.detach(), 2, ((0, 0),))
    assert q._base is not None  # no gradient wanted: the plain view
    with pytest.raises(ValueError, match="distinct"):
        phases(x, 2, ((0, 0), (0, 0)))
    with pytest.raises(ValueError, match="within the stride"):
        phases(x, 2, ((2, 0),))


def _grads(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    x = x.clone().requires_grad_()
    model.zero_grad(set_to_none=True)
    out = model(x)
    out.backward(torch.ones_like(out).mul_(0.1).cumsum_(-1))
    return out.detach(), x.grad.clone(), [p.grad.clone() for p in model.parameters() if p.grad is not None]  # type: ignore[union-attr]


@pytest.mark.parametrize("channels_last", [False, True])
def test_factorized_reduce_and_strided_pointwise_are_bit_identical_to_the_slices(channels_last, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """fp32: the same convolutions run on the same contiguous pixels, so values and every gradient are equal."""
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(4, 16, 8, 8).contiguous(memory_format=fmt)
    for module in (FactorizedReduce(16, 8).train(), PointwiseConv2d(16, 8, stride=2)):
        module = module.to(memory_format=fmt)
        fast = _grads(module, x)
        monkeypatch.setenv(subsample.ENV, "slices")  # the opt-out switch: autograd's slices as before
        plain = _grads(module, x)
        monkeypatch.delenv(subsample.ENV)
        assert torch.equal(fast[0], plain[0]) and torch.equal(fast[1], plain[1])
        assert len(fast[2]) == len(plain[2]) > 0 and all(torch.equal(f, p) for f, p in zip(fast[2], plain[2]))


def test_a_network_trains_the_same_with_and_without_the_node(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """ARNAS with two reduction cells (FactorizedReduce preprocessing and stride-2 skips): logits, input and
    parameter gradients equal to the slices' route."""
    torch.manual_seed(0)
    model = create_model("arnas", init_channels=4, layers=5).train()
    x = torch.rand(2, 3, 32, 32)
    seen = []
    monkeypatch.setattr(subsample._Phases, "apply", _spy(subsample._Phases.apply, seen))
    fast = _grads(model, x)
    assert seen  # the node was used
    monkeypatch.setenv(subsample.ENV, "slices")
    count = len(seen)
    plain = _grads(model, x)
    assert len(seen) == count  # the switch turned the node off
    assert torch.equal(fast[0], plain[0]) and torch.equal(fast[1], plain[1])
    assert all(torch.equal(f, p) for f, p in zip(fast[2], plain[2]))


def _spy(apply, seen):  # type: ignore[no-untyped-def]
    def spied(*args):  # type: ignore[no-untyped-def]
        seen.append(args[1:])
        return apply(*args)

    return spied
