"""Weight gradients of depthwise convolutions by the CPU kernels that are fast: undilated, at most 3x3.

oneDNN (as PyTorch 2.x ships it) has a fast backward-weights kernel for undilated 3x3 depthwise
convolutions only. A *dilated* one falls to a GEMM-based fallback (``x64:gemm:jit`` in
``ONEDNN_VERBOSE``), and an undilated 5x5 to the generic direct kernel. Measured in one training step of
the zoo's 20-cell ARNAS at C=16 (batch 64, one thread, AVX2), those calls took 1.86 s of the 3.49 s that
all its convolutions took (docs/performance.md). The same gradient, by two exact rewrites:

- **Dilation ``d`` to ``d*d`` phases.** With "same" padding ``p = d*(k-1)/2`` and sides divisible by
  ``d``, ``dW[i, j] = sum_{h,w} xp[h + d*i, w + d*j] * g[h, w]`` splits ``h = d*h' + r``, ``w = d*w' + s``
  into ``sum_{r,s} sum_{h',w'} xp_rs[h' + i, w' + j] * g_rs[h', w']``: the undilated weight gradient of the
  phases ``xp[r::d, s::d]`` and ``g[r::d, s::d]`` stacked along the batch (the space-to-batch identity of
  :mod:`arnas_zoo.fastconv`, applied to the gradient).
- **5x5 as four 3x3 windows.** ``dW[oi + a, oj + b]`` for ``a, b < 3`` is the 3x3 weight gradient of the
  window ``xp[oi : oi + H + 2, oj : oj + W + 2]`` (no padding); windows at offsets 0 and 2 in each
  direction cover the 25 taps (the overlapping row and column are taken once).

Both are sums of the same products in another order: equal to the plain gradient to float rounding,
not bit-identical (tests/test_dw_wgrad.py). ``ARNAS_ZOO_DW_WGRAD`` = ``auto`` (the default) takes the
phases for dilated convolutions, ``windows`` the 5x5 windows as well (opt-in: in the networks they were
0.97-1.01x, docs/performance.md), ``native`` neither;
:class:`arnas_zoo.fastconv.DepthwiseConv2d` takes it by default where :func:`applies` (CPU, fp32/fp64,
stride 1, no autocast), and only when the weight's gradient is wanted in that backward pass.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

ENV = "ARNAS_ZOO_DW_WGRAD"
MODES = ("auto", "windows", "native")


def mode() -> str:
    """``auto`` (the default: the phases for dilated convolutions), ``windows`` (the 5x5 windows too) or
    ``native`` (oneDNN's kernels everywhere)."""
    value = os.environ.get(ENV, "auto").strip().lower()
    return value if value in MODES else "auto"


def applies(kernel: int, padding: int, dilation: int, height: int, width: int) -> bool:
    """Whether a stride-1 depthwise ``kernel x kernel`` convolution's weight gradient takes a rewrite
    under :func:`mode` (``native``: never).

    Dilated 3x3 and 5x5 with "same" padding on sides divisible by the dilation take the phases (then,
    under ``windows``, the 5x5 windows); undilated 5x5 takes the windows under ``windows`` only; undilated
    3x3 already has oneDNN's fast kernel.
    """
    chosen = mode()
    if kernel not in (3, 5) or chosen == "native":
        return False
    if dilation == 1:
        return kernel == 5 and padding == 2 and chosen == "windows"
    return (
        dilation * (kernel - 1) % 2 == 0
        and padding == dilation * (kernel - 1) // 2
        and height % dilation == 0
        and width % dilation == 0
    )


def _phases(t: torch.Tensor, d: int) -> torch.Tensor:
    """``(n, c, h, w) -> (d*d*n, c, h/d, w/d)``: the ``d*d`` interleaved sub-images along the batch, in the
    memory format ``t`` has (one copy)."""
    n, c, h, w = t.shape
    if t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        nhwc = t.permute(0, 2, 3, 1).reshape(n, h // d, d, w // d, d, c)
        return nhwc.permute(2, 4, 0, 1, 3, 5).reshape(d * d * n, h // d, w // d, c).permute(0, 3, 1, 2)
    return t.reshape(n, c, h // d, d, w // d, d).permute(3, 5, 0, 1, 2, 4).reshape(d * d * n, c, h // d, w // d)


def _undilated(xp: torch.Tensor, grad: torch.Tensor, kernel: int) -> torch.Tensor:
    """Weight gradient of an unpadded, undilated, stride-1 depthwise convolution of ``xp`` (sides
    ``grad``'s plus ``kernel - 1``); 5x5 by four 3x3 windows under the ``windows`` mode."""
    c = grad.shape[1]

    def plain(inp: torch.Tensor, k: int) -> torch.Tensor:
        weight = grad.new_empty(c, 1, k, k)
        return torch.ops.aten.convolution_backward(
            grad, inp, weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], c, [False, True, False]
        )[1]

    if kernel != 5 or mode() != "windows":
        return plain(xp, kernel)
    h, w = grad.shape[-2:]
    out = grad.new_empty(c, 1, 5, 5)
    for oi in (0, 2):
        for oj in (0, 2):
            out[:, :, oi : oi + 3, oj : oj + 3] = plain(xp[:, :, oi : oi + h + 2, oj : oj + w + 2], 3)
    return out


def weight_grad(x: torch.Tensor, grad: torch.Tensor, kernel: int, padding: int, dilation: int) -> torch.Tensor:
    """The weight gradient of ``F.conv2d(x, w, padding=padding, dilation=dilation, groups=C)`` at stride 1
    for the output gradient ``grad``, where :func:`applies`; shape ``(C, 1, kernel, kernel)``."""
    xp = F.pad(x, (padding, padding, padding, padding))
    if dilation == 1:
        return _undilated(xp, grad, kernel)
    return _undilated(_phases(xp, dilation), _phases(grad, dilation), kernel)
