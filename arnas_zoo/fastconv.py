"""A dilated depthwise convolution whose backward is fast on CPU: space-to-batch.

oneDNN's backward of a *dilated* depthwise convolution costs tens of times its forward on CPU, and
ARNAS' Robust cells are built of them. A dilation-``d`` convolution is an ordinary (undilated)
convolution on each of the ``d x d`` interleaved sub-images of the padded input:

    out[d*u + a, d*v + b] = sum_ij w[i, j] * xp[d*(u+i) + a, d*(v+j) + b] = conv(xp[a::d, b::d], w)[u, v]

so the ``d*d`` sub-images are stacked along the batch, convolved once without dilation, and
interleaved back. At ``stride == d`` only the sub-image (0, 0) is needed (the DARTS reduction
cells' ``dil_conv`` at stride 2). Other strides use the plain convolution.

Which one runs: ``ARNAS_ZOO_DILATED`` = ``plain`` (the default: bit-identical to every earlier result),
``s2b`` (always space-to-batch where it applies), ``auto`` (per shape, the faster of the two: the first
call with a new shape, layout and dtype times both (forward and backward; forward only under
``no_grad`` / ``inference_mode``), and the choice is kept for the process; :func:`choices` lists
them). The numerics equal the plain convolution's to float32 rounding (tests/test_fastconv.py);
summation order differs, so results are not bit-identical.

Independently, ``ARNAS_ZOO_DWGRAD=flip`` (default ``native``) gives every stride-1 depthwise
convolution that runs the plain way (dilated or not) a backward whose input gradient is a forward
convolution with the flipped kernel (:class:`_FlipGrad`): oneDNN's backward-data kernel for
depthwise convolutions is several times slower than its forward here, and attacks need only input
gradients. Same numerics caveat as space-to-batch.

By default (``ARNAS_ZOO_DW_WGRAD=auto``; ``native`` turns it off) the *weight* gradients of stride-1
dilated depthwise convolutions on CPU come from :mod:`arnas_zoo.dw_wgrad` (dilation to phases), which
oneDNN runs 4-5x faster than its dilated kernel; ``windows`` adds 5x5 as 3x3 windows. Inside the training
step (:func:`training_routes`) the dilated ones also take the flipped-kernel input gradient.

On a channels_last input the sub-images are gathered and scattered in NHWC order (one copy each
way); reshaping through the logical NCHW view instead cost three copies each way and made
space-to-batch slower than the plain convolution inside a network.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from arnas_zoo import dw_wgrad

MODES = ("plain", "s2b", "auto")
_CHOICES: dict[tuple, str] = {}


def mode() -> str:
    value = os.environ.get("ARNAS_ZOO_DILATED", "plain")
    return value if value in MODES else "plain"


def applies(kernel: int, stride: int, dilation: int, groups: int, channels: int) -> bool:
    return dilation > 1 and groups == channels and (stride == 1 or stride == dilation)


def dilated_depthwise_s2b(
    x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int, dilation: int
) -> torch.Tensor:
    """``F.conv2d(x, weight, stride=stride, padding=padding, dilation=dilation, groups=C)`` by space-to-batch."""
    n, c, h, w = x.shape
    d, k = dilation, weight.shape[-1]
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    h_out = (h + 2 * padding - d * (k - 1) - 1) // stride + 1
    w_out = (w + 2 * padding - d * (k - 1) - 1) // stride + 1
    if stride == d:  # only the (0, 0) sub-image is read
        xp = F.pad(x, (padding, padding, padding, padding))[:, :, ::d, ::d]
        out = F.conv2d(xp, weight, groups=c)[:, :, :h_out, :w_out]
        return out.contiguous(memory_format=torch.channels_last) if channels_last else out  # no-op when it is
    hp, wp = h + 2 * padding, w + 2 * padding
    hq, wq = -(-hp // d), -(-wp // d)  # ceil: pad the far sides to a multiple of d
    xp = F.pad(x, (padding, padding + wq * d - wp, padding, padding + hq * d - hp))
    if channels_last:  # work on the NHWC memory directly: one copy in, one out
        return _s2b_nhwc(xp, weight, n, c, d, hq, wq, h_out, w_out)
    sub = xp.reshape(n, c, hq, d, wq, d).permute(0, 3, 5, 1, 2, 4).reshape(n * d * d, c, hq, wq)
    out = F.conv2d(sub, weight, groups=c)  # (n*d*d, c, hq-k+1, wq-k+1)
    ho, wo = out.shape[-2:]
    out = out.reshape(n, d, d, c, ho, wo).permute(0, 3, 4, 1, 5, 2).reshape(n, c, ho * d, wo * d)
    return out[:, :, :h_out, :w_out]


def _s2b_nhwc(
    xp: torch.Tensor, weight: torch.Tensor, n: int, c: int, d: int, hq: int, wq: int, h_out: int, w_out: int
) -> torch.Tensor:
    """Space-to-batch on a channels_last tensor, its sub-images gathered and scattered in NHWC order."""
    nhwc = xp.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)  # a view of the NHWC memory
    sub = nhwc.reshape(n, hq, d, wq, d, c).permute(0, 2, 4, 1, 3, 5).reshape(n * d * d, hq, wq, c)
    out = F.conv2d(sub.permute(0, 3, 1, 2), weight, groups=c)  # a channels_last view in, channels_last out
    ho, wo = out.shape[-2:]
    out_nhwc = out.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
    grid = out_nhwc.reshape(n, d, d, ho, wo, c).permute(0, 3, 1, 4, 2, 5).reshape(n, ho * d, wo * d, c)
    return grid[:, :h_out, :w_out].permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


#: ``ARNAS_ZOO_DWGRAD`` when the environment does not set it: ``native`` everywhere except inside
#: :func:`training_routes` (the training step and its attack), which makes it ``dilated``.
_DWGRAD_DEFAULT: contextvars.ContextVar[str] = contextvars.ContextVar("arnas_zoo_dwgrad_default", default="native")


@contextlib.contextmanager
def training_routes() -> Iterator[None]:
    """Within: dilated depthwise convolutions take the flipped-kernel input gradient unless
    ``ARNAS_ZOO_DWGRAD`` says otherwise. oneDNN runs a dilated depthwise convolution's backward-data on
    its generic kernel, 10-40x slower than the same convolution forward (docs/performance.md).
    Evaluation stays outside, so that re-running a card's attacks takes the gradients it was made with."""
    token = _DWGRAD_DEFAULT.set("dilated")
    try:
        yield
    finally:
        _DWGRAD_DEFAULT.reset(token)


def flip_enabled(dilation: int = 2) -> bool:
    """Whether a stride-1 depthwise convolution of this dilation takes the :class:`_FlipGrad` input gradient:
    ``ARNAS_ZOO_DWGRAD`` = ``flip`` (all), ``dilated`` (dilated ones only) or ``native`` (none); unset, the
    default of the context (:func:`training_routes`)."""
    value = os.environ.get("ARNAS_ZOO_DWGRAD")
    if not value:  # dynamo does not trace a context variable: a compiled step keeps the plain input gradient
        value = "native" if torch.compiler.is_compiling() else _DWGRAD_DEFAULT.get()
    return value == "flip" or (value == "dilated" and dilation > 1)


def _will_run(node: object) -> bool:
    """Whether autograd's engine will run ``node`` in the backward pass under way (a private torch API that
    ``torch.autograd.graph.register_multi_grad_hook`` uses; without it, assume it will)."""
    ask = getattr(torch._C, "_will_engine_execute_node", None)
    return True if ask is None else bool(ask(node))


class _FlipGrad(torch.autograd.Function):
    """A stride-1 depthwise convolution with its own backward: the input gradient as a *forward*
    depthwise convolution (``flip``), and/or the weight gradient by :mod:`arnas_zoo.dw_wgrad`'s rewrites
    (``fast_weight``); whichever is not asked for is oneDNN's own.

    For stride 1 the input gradient of ``conv(x, w, padding=p, dilation=d)`` is
    ``conv(g, flip(w), padding=d*(k-1)-p, dilation=d)``: the same kind of call as the forward, which
    oneDNN runs 2-12x faster on an AVX-512 CPU than its own backward-data kernel for depthwise
    convolutions in channels_last (5x5 at 48 channels, 16x16: 0.46 vs about 5.8 ms at batch 32).
    ``node`` is the autograd node of the weight's view: the weight gradient is computed only when this
    backward pass will use it (an attack's ``autograd.grad`` w.r.t. the input, or a search's w.r.t. the
    architecture, skips it, as oneDNN's own backward does). A backward that builds a graph
    (``create_graph=True``) takes oneDNN's differentiable kernels. Numerically the plain gradients to
    float32 rounding (tests/test_fastconv.py, tests/test_dw_wgrad.py), not bit-identical.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, padding: int, dilation: int, flip: bool, node):  # type: ignore[no-untyped-def]
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.dilation, ctx.flip, ctx.node = padding, dilation, flip, node
        return F.conv2d(x, weight, None, 1, padding, dilation, weight.shape[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[no-untyped-def]
        x, weight = ctx.saved_tensors
        p, d, c, k = ctx.padding, ctx.dilation, weight.shape[0], weight.shape[-1]
        want_x = ctx.needs_input_grad[0]
        want_w = ctx.needs_input_grad[1] and (ctx.node is None or _will_run(ctx.node))
        fast_w = ctx.node is not None and not torch.is_grad_enabled()  # no graph of the backward is being built
        grad_x = grad_w = None
        if want_x and ctx.flip:
            if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
                grad = grad.contiguous(memory_format=torch.channels_last)  # the layout oneDNN's own backward takes
            grad_x = F.conv2d(grad, weight.flip(-1, -2), None, 1, d * (k - 1) - p, d, c)
        if want_w and fast_w:
            grad_w = dw_wgrad.weight_grad(x, grad, k, p, d)
        native = (want_x and grad_x is None, want_w and grad_w is None, False)
        if any(native):
            gx, gw, _ = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [1, 1], [p, p], [d, d], False, [0, 0], c, list(native)
            )
            grad_x = gx if native[0] else grad_x
            grad_w = gw if native[1] else grad_w
        return grad_x, grad_w, None, None, None, None


def choices() -> dict[tuple, str]:
    """``ARNAS_ZOO_DILATED=auto``'s measured choices so far: (shape, stride, dilation, layout, dtype) -> name."""
    return dict(_CHOICES)


def _faster(x: torch.Tensor, conv: nn.Conv2d, stride: int, padding: int, dilation: int, repeats: int = 3) -> str:
    """Time plain and space-to-batch (forward + backward, alternating, best of ``repeats``) on a copy of ``x``."""
    import time

    backward = _needs_backward()
    probe = x.detach().clone().requires_grad_(backward)
    weight = conv.weight.detach().clone().requires_grad_(backward)
    runs = {
        "plain": lambda: F.conv2d(probe, weight, None, stride, padding, dilation, conv.groups),
        "s2b": lambda: dilated_depthwise_s2b(probe, weight, stride, padding, dilation),
    }
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            out = run()
            if backward:
                out.sum().backward()
            best[name] = min(best[name], time.perf_counter() - start)
    return min(best, key=lambda name: best[name])


def _needs_backward() -> bool:
    """Whether this forward can be differentiated (inference mode and no_grad time the forward only)."""
    return torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


#: Which depthwise convolutions run in fp32 inside CPU bf16 autocast: ``big`` (dilated or kernel >= 5,
#: whose bf16 oneDNN kernels ran 2-6x below their fp32 ones on a Sapphire Rapids core: ARNAS C=16 trains
#: 1.26x faster in bf16 with it), ``1`` (all), ``0`` (the default, none: autocast's choice, bf16). Opt-in:
#: in a bf16 search supernet the mixed fp32/bf16 sums moved the second-order architecture gradient of one
#: seed below the bf16 test's cosine bound (0.57 < 0.6), and on CPUs without AMX it is not measured. Where
#: separable blocks are composed into one dense convolution (:data:`arnas_zoo.ops.SEPCONV_ENV`: by default under
#: bf16 on AMX CPUs, and faster there than this) no depthwise module runs, so this has no effect.
DW_FP32_ENV = "ARNAS_ZOO_DW_FP32"


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state-dict keys) that runs dilated depthwise convolutions by
    space-to-batch when ``ARNAS_ZOO_DILATED=s2b`` (or ``auto`` and measured faster for the shape), and
    stride-1 depthwise convolutions with the flipped-kernel input gradient when
    ``ARNAS_ZOO_DWGRAD=flip``; ONNX export and every other case use the plain one. Under CPU bf16
    autocast the large and dilated ones compute in fp32 (:data:`DW_FP32_ENV`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rule = os.environ.get(DW_FP32_ENV, "0")
        slow = rule == "1" or (rule == "big" and (self.dilation[0] > 1 or self.kernel_size[0] >= 5))
        if slow and x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return self._forward(x.float())
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        stride, dilation, padding = self.stride[0], self.dilation[0], self.padding
        chosen = mode()
        if (
            chosen != "plain"
            and isinstance(padding, tuple)
            and padding[0] == padding[1]
            and self.stride[0] == self.stride[1]
            and self.dilation[0] == self.dilation[1]
            and self.bias is None
            and applies(self.kernel_size[0], stride, dilation, self.groups, self.in_channels)
            and self.in_channels == self.out_channels
            and not torch.onnx.is_in_onnx_export()
            and not torch.jit.is_tracing()
        ):
            if chosen == "auto":
                layout = "channels_last" if x.is_contiguous(memory_format=torch.channels_last) else "nchw"
                key = (tuple(x.shape), self.kernel_size[0], stride, dilation, layout, str(x.dtype), x.device.type,
                       _needs_backward())  # fmt: skip
                if key not in _CHOICES:
                    _CHOICES[key] = _faster(x, self, stride, int(padding[0]), dilation)
                chosen = _CHOICES[key]
            if chosen == "s2b":
                return dilated_depthwise_s2b(x, self.weight, stride, int(padding[0]), dilation)
        # tensor subclasses (the certified bounds' Bounded) dispatch the convolution themselves
        plain = type(x) is torch.Tensor
        flip, fast_weight = plain and self._flips(x), plain and self._fast_weight_grad(x)
        if flip or fast_weight:
            weight = self.weight.view_as(self.weight) if fast_weight else self.weight  # a node to ask about
            node = weight.grad_fn if fast_weight else None
            return _FlipGrad.apply(x, weight, int(self.padding[0]), self.dilation[0], flip, node)
        return super().forward(x)

    def _fast_weight_grad(self, x: torch.Tensor) -> bool:
        """Whether this call's weight gradient takes :mod:`arnas_zoo.dw_wgrad`'s route (CPU, fp32/fp64, no
        autocast, stride 1, a shape it covers, a weight that wants a gradient)."""
        return (
            x.device.type == "cpu"
            and x.dim() == 4
            and x.dtype in (torch.float32, torch.float64)
            and self.weight.dtype == x.dtype
            and self.weight.requires_grad
            and torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu")
            and self._plain_stride1_depthwise()
            and dw_wgrad.applies(self.kernel_size[0], int(self.padding[0]), self.dilation[0], x.shape[2], x.shape[3])
            and not torch.compiler.is_compiling()
        )

    def _plain_stride1_depthwise(self) -> bool:
        padding = self.padding
        return (
            self.stride == (1, 1)
            and isinstance(padding, tuple)
            and padding[0] == padding[1]
            and self.kernel_size[0] == self.kernel_size[1]
            and self.dilation[0] == self.dilation[1]
            and self.groups == self.in_channels == self.out_channels
            and self.bias is None
            and self.padding_mode == "zeros"
            and not torch.onnx.is_in_onnx_export()
            and not torch.jit.is_tracing()
        )

    def _flips(self, x: torch.Tensor) -> bool:
        return (
            flip_enabled(self.dilation[0])
            and torch.is_grad_enabled()
            and self._plain_stride1_depthwise()
            and self.padding[0] <= self.dilation[0] * (self.kernel_size[0] - 1)  # type: ignore[operator]
        )
