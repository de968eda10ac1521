"""The op vocabulary: every op a genotype may name, as ``name -> factory(C, stride, affine)``.

The DARTS primitives (Liu et al., 2019) and RobNet's ops (Guo et al., 2020). ``affine`` is True in
evaluation networks and False in search supernets (and in RobNet cells). Every op keeps the channel
count ``C``; at ``stride=2`` it halves the spatial size.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from arnas_zoo.cpuflags import has_amx_bf16
from arnas_zoo.errors import ConfigError
from arnas_zoo.fastconv import DepthwiseConv2d
from arnas_zoo.primitives import (  # noqa: F401  (re-exported: the vocabulary's names live with their factories)
    ARNAS_PRIMITIVES,
    DARTS_PRIMITIVES,
    PARAMETER_FREE_OPS,
    POOLING_OPS,
    ROBNET_PRIMITIVES,
    SPACE_OPS,
)
from arnas_zoo.subsample import phases, takes_phases

OpFactory = Callable[[int, int, bool], nn.Module]


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )

    def forward_after_relu(self, x: torch.Tensor) -> torch.Tensor:
        """``self(x)`` given ``x = relu(input)`` (see :func:`after_relu`)."""
        for module in list(self)[1:]:
            x = module(x)
        return x


#: How a separable block (depthwise KxK then pointwise 1x1) computes: ``auto`` (the default: as one dense
#: KxK convolution with the composed weight ``pointwise[o, c] * depthwise[c]`` under CPU bf16 autocast on a
#: CPU with AMX, as two convolutions otherwise), ``dense`` (always composed), ``plain`` (never). On an AMX
#: CPU oneDNN's bf16 depthwise kernels ran at 2-6% of the fp32 peak while its dense bf16 convolutions run
#: on the matrix unit: the composed convolution does 5-7x the multiply-adds and still ran 1.03-6.5x faster
#: per block (``benchmarks/bench_dense_sepconv.py``). In fp32 it pays only for some dilated shapes, and on
#: CPUs without AMX it is not measured, so ``auto`` keeps those on the two-convolution path (fp32:
#: bit-identical to every earlier result).
SEPCONV_ENV = "ARNAS_ZOO_SEPCONV"
SEPCONV_MODES = ("auto", "dense", "plain")
_SEPCONV_PLAIN: contextvars.ContextVar[bool] = contextvars.ContextVar("arnas_zoo_sepconv_plain", default=False)


def sepconv_mode() -> str:
    """The separable-convolution mode of :data:`SEPCONV_ENV` (``plain`` inside :func:`modules_per_op`)."""
    if _SEPCONV_PLAIN.get():
        return "plain"
    value = os.environ.get(SEPCONV_ENV, "auto")
    if value not in SEPCONV_MODES:
        raise ConfigError(f"{SEPCONV_ENV}: expected one of {list(SEPCONV_MODES)}, got {value!r}")
    return value


def _composes(x: torch.Tensor) -> bool:
    chosen = sepconv_mode()
    if chosen == "plain" or torch.onnx.is_in_onnx_export() or torch.jit.is_tracing():
        return False
    if chosen == "dense":
        return True
    return (
        x.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
        and has_amx_bf16()
    )


class DilConv(nn.Sequential):
    """ReLU, depthwise (dilated) conv, pointwise conv, BN.

    Computes what ``nn.Sequential`` would (:attr:`sequential_function`: BatchNorm folding may swap its
    pointwise convolution and BatchNorm), either as the four modules in turn or, per :data:`SEPCONV_ENV`,
    with the two convolutions composed into one dense convolution: ``pointwise(depthwise(x))`` is
    ``conv(x, W)`` with ``W[o, c] = pointwise[o, c] * depthwise[c]``, as there is nothing between them.
    The gradients reach both weights through the product.
    """

    sequential_function = True

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int, affine: bool = True
    ):
        super().__init__(
            nn.ReLU(inplace=False),
            DepthwiseConv2d(
                c_in, c_in, kernel, stride=stride, padding=padding, dilation=dilation, groups=c_in, bias=False
            ),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_after_relu(self[0](x))

    def forward_after_relu(self, x: torch.Tensor) -> torch.Tensor:
        """``self(x)`` given ``x = relu(input)`` (see :func:`after_relu`)."""
        depthwise, pointwise, norm = self[1], self[2], self[3]
        if (
            _composes(x)
            and isinstance(depthwise, nn.Conv2d)
            and isinstance(depthwise.padding, tuple)
            and type(pointwise) is nn.Conv2d  # also the copy that BatchNorm folding swaps in
            and pointwise.stride == (1, 1)
            and pointwise.padding == (0, 0)
        ):
            weight = pointwise.weight * depthwise.weight.transpose(0, 1)
            y = F.conv2d(x, weight, pointwise.bias, depthwise.stride, depthwise.padding, depthwise.dilation)
            return norm(y)
        return norm(pointwise(depthwise(x)))


class SepConv(nn.Sequential):
    """Two stacked depthwise-separable blocks; only the first one strides (DARTS' sep_conv)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            DilConv(c_in, c_in, kernel, stride, padding, 1, affine),
            DilConv(c_in, c_out, kernel, 1, padding, 1, affine),
        )

    def forward_after_relu(self, x: torch.Tensor) -> torch.Tensor:
        """``self(x)`` given ``x = relu(input)`` (see :func:`after_relu`)."""
        first, second = self[0], self[1]
        assert isinstance(first, DilConv)
        return second(first.forward_after_relu(x))


class PointwiseConv2d(nn.Conv2d):
    """A 1x1 convolution without padding; at stride ``s`` it reads every ``s``-th pixel, then convolves.

    The same function and parameters (``weight``, ``bias``) as ``nn.Conv2d(c_in, c_out, 1, stride=s)``:
    a 1x1 kernel at stride ``s`` only ever sees the pixels of the subsampled grid. It exists because
    torch 2.14's oneDNN kernel for *strided* 1x1 convolutions in channels_last hangs or crashes in
    backward for 2-4 input channels on AVX2 CPUs (seen with torch 2.14.1: FactorizedReduce at C=4,
    ResNet shortcuts at width 4); subsampling first keeps every convolution at stride 1.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, bias: bool = False, **factory: Any):
        super().__init__(c_in, c_out, 1, stride=stride, bias=bias, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sy, sx = self.stride
        if sy > 1 and sy == sx:
            (x,) = phases(x, sy, ((0, 0),))  # one backward node that writes the input gradient once
        elif sy > 1 or sx > 1:
            x = x[:, :, ::sy, ::sx]
        return F.conv2d(x, self.weight, self.bias)


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    """The 'none' op: zeros of the output shape."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halves the spatial size with two offset 1x1 stride-2 convs whose outputs are concatenated.

    When a gradient is wanted (and the sides are even), the two grids are picked by one autograd node
    (:func:`arnas_zoo.subsample.phases`) and the convolutions run on ``conv_1``/``conv_2``'s parameters
    directly, so forward hooks on those two submodules do not fire then; values and gradients are the
    modules' own, bit for bit."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        if c_out % 2:
            raise ConfigError(f"FactorizedReduce needs an even channel count, got {c_out}; use an even init_channels")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = PointwiseConv2d(c_in, c_out // 2, stride=2)
        self.conv_2 = PointwiseConv2d(c_in, c_out // 2, stride=2)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_after_relu(self.relu(x))

    def forward_after_relu(self, x: torch.Tensor) -> torch.Tensor:
        """``self(x)`` given ``x = relu(input)`` (see :func:`after_relu`)."""
        if not (x.shape[-2] % 2 or x.shape[-1] % 2) and takes_phases(x):
            # both grids picked by one node whose backward writes the input gradient once (arnas_zoo.subsample);
            # the same convolutions on the same pixels as below, so the same values and gradients
            even, odd = phases(x, 2, ((0, 0), (1, 1)))
            a = F.conv2d(even, self.conv_1.weight, self.conv_1.bias)
            return self.bn(torch.cat([a, F.conv2d(odd, self.conv_2.weight, self.conv_2.bias)], dim=1))
        a = self.conv_1(x)
        shifted = x[:, :, 1:, 1:]
        if x.shape[-2] % 2 or x.shape[-1] % 2:
            # odd sizes (down to 1x1): a zero row/column keeps the offset branch as large as the other;
            # a 1x1 conv without bias maps the zeros to zeros
            shifted = nn.functional.pad(shifted, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))
        b = self.conv_2(shifted)
        return self.bn(torch.cat([a, b], dim=1))


class ResSepConv(nn.Module):
    """RobNet's '11' edge: a separable conv plus an identity (or FactorizedReduce) shortcut."""

    def __init__(self, c: int, stride: int, affine: bool):
        super().__init__()
        self.conv = SepConv(c, c, 3, stride, 1, affine)
        self.shortcut = Identity() if stride == 1 else FactorizedReduce(c, c, affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.shortcut(x)


def after_relu(op: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``f`` with ``op(x) == f(relu(x))`` when ``op`` begins with a ReLU (DilConv, SepConv, FactorizedReduce,
    ReLUConvBN), else None.

    A search supernet applies every candidate op of an edge to the same input, and every edge leaving a
    state to that state: four of the seven ARNAS ops begin with ``relu(x)``, so a cell computed up to
    sixteen ReLUs of each state and kept each output for its convolution's backward. With ``f`` the
    cell computes ``relu`` once per state; the values are identical, and autograd keeps one tensor.
    Evaluation networks do the same (:class:`arnas_zoo.models.cells.Cell`): there a state feeds up to
    three such ops, and each cell's output is the input of the next two cells' preprocessing.
    """
    # exact types: a subclass may override forward, and then the tail would not be its function
    if type(op) is FactorizedReduce:
        first: nn.Module = op.relu
    elif type(op) is SepConv:
        first = op[0][0]  # type: ignore[index]
    elif type(op) in (DilConv, ReLUConvBN):
        first = op[0]  # type: ignore[index]  # narrowed by the exact type
    else:
        return None
    if not isinstance(first, nn.ReLU) or first.inplace:
        return None
    tail: Callable[[torch.Tensor], torch.Tensor] = op.forward_after_relu  # type: ignore[assignment]
    return tail


_RELU_PER_OP: contextvars.ContextVar[bool] = contextvars.ContextVar("arnas_zoo_relu_per_op", default=False)


def shared_relu() -> bool:
    """Whether evaluation cells compute ``relu`` once per state (the default) or once per op.

    Once per op under ``ARNAS_ZOO_SHARED_RELU=0`` or inside :func:`relu_per_op`. The same function either
    way (values identical; gradients equal up to the order of float sums); the switch exists to compare
    the two and as an escape hatch.
    """
    if _RELU_PER_OP.get():
        return False
    value = os.environ.get("ARNAS_ZOO_SHARED_RELU", "1")
    if value not in ("0", "1"):
        raise ConfigError(f"ARNAS_ZOO_SHARED_RELU: expected 0 or 1, got {value!r}")
    return value == "1"


@contextlib.contextmanager
def modules_per_op() -> Iterator[None]:
    """Within the block every op runs each of its modules in turn: its own leading ReLU
    (:func:`relu_per_op`) and separable blocks as two convolutions (:data:`SEPCONV_ENV`), for what
    observes modules as they run (the FLOP hooks of :func:`arnas_zoo.stats.count_ops`)."""
    token = _SEPCONV_PLAIN.set(True)
    try:
        with relu_per_op():
            yield
    finally:
        _SEPCONV_PLAIN.reset(token)


@contextlib.contextmanager
def relu_per_op() -> Iterator[None]:
    """Within the block, every op applies its own leading ``nn.ReLU`` module, as the authors' networks do.

    For what counts modules as they run: the ARNAS paper's FLOP convention charges each ReLU module its
    elements (:func:`arnas_zoo.stats.count_ops`).
    """
    token = _RELU_PER_OP.set(True)
    try:
        yield
    finally:
        _RELU_PER_OP.reset(token)


def _skip(c: int, stride: int, affine: bool) -> nn.Module:
    return Identity() if stride == 1 else FactorizedReduce(c, c, affine)


OPS: dict[str, OpFactory] = {
    "none": lambda c, stride, affine: Zero(stride),
    "max_pool_3x3": lambda c, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "avg_pool_3x3": lambda c, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    "skip_connect": _skip,
    "sep_conv_3x3": lambda c, stride, affine: SepConv(c, c, 3, stride, 1, affine),
    "sep_conv_5x5": lambda c, stride, affine: SepConv(c, c, 5, stride, 2, affine),
    "dil_conv_3x3": lambda c, stride, affine: DilConv(c, c, 3, stride, 2, 2, affine),
    "dil_conv_5x5": lambda c, stride, affine: DilConv(c, c, 5, stride, 4, 2, affine),
    "res_sep_conv_3x3": lambda c, stride, affine: ResSepConv(c, stride, affine),
}

assert all(op in OPS for space in SPACE_OPS.values() for op in space), "every vocabulary op needs a factory"


def create_op(name: str, channels: int, stride: int, affine: bool) -> nn.Module:
    """Build op ``name`` for ``channels`` channels at ``stride`` (1 or 2)."""
    try:
        factory = OPS[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}; expected one of {sorted(OPS)}") from None
    return factory(channels, stride, affine)
