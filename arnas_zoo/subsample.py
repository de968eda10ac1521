"""Strided pixel picks (``x[:, :, i::s, j::s]``) whose backward writes each input-gradient pixel once.

A 1x1 convolution at stride 2 reads one pixel in four, and :class:`arnas_zoo.ops.FactorizedReduce` reads
two such grids (offsets (0, 0) and (1, 1)). Written as slices, autograd differentiates every slice on its
own: a ``SliceBackward`` per sliced dimension, each allocating a zero tensor of the full size and copying
the gradient into it, and then a sum of the two branches' full-size gradients. For FactorizedReduce that is
six zero-filled tensors and an addition, up to 16 MiB each, for a gradient that has one value per pixel; at
batch 64 and 64 channels on 32x32 its input gradient took 38.5 ms on an AVX2 core, against 12.8 ms with
:func:`phases` (``benchmarks/bench_subsample.py``, docs/performance.md). :func:`phases` picks all the
grids in one node, and its backward writes the gradient once: the picked grids' gradients into their
pixels, zeros into the others.

The values are the slices', and so are the gradients (bit-identical: the same convolutions run on the same
contiguous copies; ``tests/test_subsample.py``). Where a custom autograd node does not belong (ONNX export,
tracing, ``torch.compile``, tensor subclasses such as the certified bounds' ``Bounded``, no gradient
wanted) the plain slices run, and ``ARNAS_ZOO_SUBSAMPLE=slices`` makes them run everywhere.
"""

from __future__ import annotations

import os

import torch

__all__ = ["ENV", "phases", "takes_phases"]

#: ``phases`` (the default: one node) or ``slices`` (autograd's slices, as before 2026-12-08)
ENV = "ARNAS_ZOO_SUBSAMPLE"


def _layout(x: torch.Tensor) -> torch.memory_format:
    cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


class _Phases(torch.autograd.Function):
    """``tuple(x[:, :, i::s, j::s] for (i, j) in offsets)`` as contiguous tensors in ``x``'s layout."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, stride: int, offsets: tuple[tuple[int, int], ...]):  # type: ignore[no-untyped-def]
        layout = _layout(x)
        ctx.shape, ctx.layout, ctx.stride, ctx.offsets = x.shape, layout, stride, offsets
        return tuple(x[:, :, i::stride, j::stride].contiguous(memory_format=layout) for i, j in offsets)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):  # type: ignore[no-untyped-def]
        s = ctx.stride
        grad_x = torch.empty(ctx.shape, dtype=grads[0].dtype, device=grads[0].device, memory_format=ctx.layout)
        picked = dict(zip(ctx.offsets, grads))
        for i in range(s):
            for j in range(s):
                grid = grad_x[:, :, i::s, j::s]
                if (i, j) in picked:
                    grid.copy_(picked[(i, j)])
                elif grid.numel():
                    grid.zero_()
        return grad_x, None, None


def takes_phases(x: torch.Tensor) -> bool:
    """Whether :func:`phases` builds its own node for ``x`` (a plain CPU or CUDA tensor whose gradient is
    wanted, outside export, tracing and compilation, unless ``ARNAS_ZOO_SUBSAMPLE=slices``); otherwise it
    returns plain slices."""
    return (
        type(x) is torch.Tensor
        and x.dim() == 4
        and x.requires_grad
        and torch.is_grad_enabled()
        and not torch.onnx.is_in_onnx_export()
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
        and os.environ.get(ENV, "phases") != "slices"
    )


def phases(x: torch.Tensor, stride: int, offsets: tuple[tuple[int, int], ...]) -> tuple[torch.Tensor, ...]:
    """The grids ``x[:, :, i::stride, j::stride]`` for each ``(i, j)`` in ``offsets`` (distinct, each below
    ``stride``), with one backward node that writes ``x``'s gradient in a single pass."""
    if len(set(offsets)) != len(offsets) or any(not (0 <= i < stride and 0 <= j < stride) for i, j in offsets):
        raise ValueError(f"offsets must be distinct and within the stride {stride}: {offsets}")
    if not takes_phases(x):
        return tuple(x[:, :, i::stride, j::stride] for i, j in offsets)
    return _Phases.apply(x, stride, offsets)
