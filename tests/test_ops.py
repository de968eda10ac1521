"""The op vocabulary's own guarantees (beyond building every registry network, see test_network.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from arnas_zoo.ops import FactorizedReduce, PointwiseConv2d


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("size", [7, 8])
def test_pointwise_conv_equals_a_strided_1x1_conv(stride: int, size: int) -> None:
    torch.manual_seed(0)
    ours = PointwiseConv2d(3, 5, stride=stride, bias=True).double()
    reference = nn.Conv2d(3, 5, 1, stride=stride, bias=True).double()
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, size, size, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    out, out_ref = ours(x), reference(x_ref)
    assert out.shape == out_ref.shape
    torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-12)
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    out_ref.backward(grad_out)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad, rtol=1e-12, atol=1e-12)


def test_factorized_reduce_trains_in_channels_last_at_small_widths() -> None:
    """torch 2.14.1's strided 1x1 channels_last kernel hangs or crashes in backward at 3-4 channels on
    AVX2 CPUs; FactorizedReduce must not reach it. A subprocess with a timeout, since a hang is the failure."""
    code = textwrap.dedent(
        """
        import torch
        from arnas_zoo.ops import FactorizedReduce
        torch.manual_seed(0)
        for c in (2, 3, 4):
            op = FactorizedReduce(c, 2 * c).to(memory_format=torch.channels_last)
            for _ in range(20):
                x = torch.rand(32, c, 16, 16).contiguous(memory_format=torch.channels_last).requires_grad_(True)
                op(x).square().sum().backward()
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_factorized_reduce_keeps_its_parameter_names() -> None:
    # bundled checkpoints were saved with nn.Conv2d here: the state dict must not change
    assert sorted(FactorizedReduce(4, 8).state_dict()) == [
        "bn.bias",
        "bn.num_batches_tracked",
        "bn.running_mean",
        "bn.running_var",
        "bn.weight",
        "conv_1.weight",
        "conv_2.weight",
    ]
