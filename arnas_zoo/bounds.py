"""Certified bounds for any network of the zoo: interval bound propagation (IBP) and CROWN backward bounds.

A :class:`Bounded` value (elementwise lower and upper bounds of a tensor) flows through a model's own
``forward``: every torch call that receives one dispatches to :meth:`Bounded.__torch_function__`,
which bounds the op and, with a :class:`Tape` attached, records it. So no network is re-implemented
for bounding (cells, the search supernet's mixed edges, ResNets, the Normalize layer: whatever the
builders make), and an op without a bound rule raises :class:`BoundsError` naming it.

Rules, for ``x`` in ``[l, u]`` with centre ``c = (l + u) / 2`` and radius ``r = (u - l) / 2``:

- **affine ops** (convolutions, depthwise and dilated ones included; linear layers; BatchNorm in eval
  mode; average and adaptive pooling; padding; slicing; concatenation; sums and products with
  constants, such as the supernet's softmax edge weights; the Normalize layer): the centre goes
  through the op, the radius through the op with absolute weights and no bias. Exact for one affine
  op, sound for any composition.
- **BatchNorm in training mode** (the supernet during search; DSRNA Eq. 2, 6-7): the statistics of the
  clean batch, recorded by a plain forward pass and held constant
  (:class:`arnas_zoo.batchstats.HeldBatchStats`), make it a per-channel affine map, so the bounds are of
  the function the supernet computes on each clean point's neighbourhood. Running statistics are never
  updated by a bound pass.
- **monotone ops** (ReLU, max pooling): the op on ``l`` and on ``u``.

``method="crown"`` records the graph with the IBP bounds of every node and carries linear bounds of the
margins backward to the input (:mod:`arnas_zoo.crown`). The ReLUs' pre-activation bounds are IBP's
(CROWN-IBP, Zhang et al., ICLR 2020): full CROWN would run one backward pass per hidden neuron. The
reported margin bound is the elementwise maximum of CROWN's and IBP's (both sound).

Threat models: ``linf``, the box ``[x - eps, x + eps]`` within ``[0, 1]``; ``l2``, that box for IBP (it
holds the ball) and the dual norm ``eps * ||A||_2`` for CROWN. Not a library: auto_LiRPA 0.3 does not
import against torch 2.x, and convex-adversarial bounds only ``nn.Sequential`` stacks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from arnas_zoo.batchstats import HeldBatchStats
from arnas_zoo.crown import Node, Tape, crown_lower
from arnas_zoo.errors import ArnasZooError, ConfigError

__all__ = [
    "METHODS",
    "Bounded",
    "BoundsError",
    "certified",
    "certified_radius",
    "input_bounds",
    "logit_bounds",
    "margin_bounds",
    "margin_spec",
]

METHODS = ("ibp", "crown")
NORMS = ("linf", "l2")


class BoundsError(ArnasZooError, ValueError):
    """The network contains an op the bound propagation has no rule for (named in the message)."""


# ---- the bounded value ---------------------------------------------------------------------------
def _is_b(x: Any) -> bool:
    return isinstance(x, Bounded)


class Bounded:
    """Elementwise bounds ``lower <= x <= upper`` of a tensor, usable as a model's input."""

    __slots__ = ("lower", "upper", "tape", "node")

    def __init__(self, lower: torch.Tensor, upper: torch.Tensor, tape: Tape | None = None, node: int = -1):
        self.lower, self.upper, self.tape, self.node = lower, upper, tape, node

    # tensor-like attributes the models read
    @property
    def shape(self) -> torch.Size:
        return self.lower.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.lower.dtype

    @property
    def device(self) -> torch.device:
        return self.lower.device

    @property
    def ndim(self) -> int:
        return self.lower.ndim

    def dim(self) -> int:
        return self.lower.dim()

    def size(self, dim: int | None = None) -> Any:
        return self.lower.size() if dim is None else self.lower.size(dim)

    def numel(self) -> int:
        return self.lower.numel()

    def is_contiguous(self, memory_format: torch.memory_format = torch.contiguous_format) -> bool:
        return self.lower.is_contiguous(memory_format=memory_format)

    @property
    def center(self) -> torch.Tensor:
        return (self.lower + self.upper) / 2

    @property
    def radius(self) -> torch.Tensor:
        return (self.upper - self.lower) / 2

    def __repr__(self) -> str:
        return f"Bounded(shape={tuple(self.shape)}, width max {float((self.upper - self.lower).max()):.3g})"

    # layout and dtype: the bounds follow
    def contiguous(self, memory_format: torch.memory_format = torch.contiguous_format) -> Bounded:
        return _same(self, lambda t: t.contiguous(memory_format=memory_format))

    def to(self, *args: Any, **kwargs: Any) -> Bounded:
        return _same(self, lambda t: t.to(*args, **kwargs))

    # arithmetic (the left operand is bounded; torch routes `tensor op bounded` to __torch_function__)
    def __add__(self, other: Any) -> Bounded:
        return _add(self, other)

    __radd__ = __add__

    def __sub__(self, other: Any) -> Bounded:
        return _add(self, _neg(other))

    def __rsub__(self, other: Any) -> Bounded:
        return _add(_neg(self), other)

    def __neg__(self) -> Bounded:
        return _neg(self)

    def __mul__(self, other: Any) -> Bounded:
        return _mul(self, other)

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> Bounded:
        if _is_b(other):
            raise BoundsError("cannot bound a division by a bounded value")
        return _mul(self, 1.0 / other)

    def __getitem__(self, index: Any) -> Bounded:
        return _affine(lambda x: x[index], None, [self])

    def mul(self, other: Any) -> Bounded:
        return _mul(self, other)

    def add(self, other: Any, alpha: float = 1.0) -> Bounded:
        return _add(self, _mul(other, alpha) if alpha != 1.0 else other)

    def sub(self, other: Any) -> Bounded:
        return _add(self, _neg(other))

    def div(self, other: Any) -> Bounded:
        return self.__truediv__(other)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Bounded:
        return _affine(lambda x: x.flatten(start_dim, end_dim), None, [self])

    def view(self, *shape: Any) -> Bounded:
        return _affine(lambda x: x.reshape(*shape), None, [self])

    reshape = view

    def sum(self, *args: Any, **kwargs: Any) -> Bounded:
        return _affine(lambda x: x.sum(*args, **kwargs), None, [self])

    def mean(self, *args: Any, **kwargs: Any) -> Bounded:
        return _affine(lambda x: x.mean(*args, **kwargs), None, [self])

    def relu(self) -> Bounded:
        return _monotone(torch.relu, self, "relu")

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func)).strip("_")
        rule = _RULES.get(name)
        if rule is None:
            raise BoundsError(
                f"no bound rule for torch op {name!r}; bound propagation covers conv, linear, BatchNorm, ReLU, "
                "pooling, padding, slicing, concatenation and affine arithmetic"
            )
        return rule(*args, **kwargs)


def _same(b: Bounded, op: Callable[[torch.Tensor], torch.Tensor]) -> Bounded:
    return Bounded(op(b.lower), op(b.upper), b.tape, b.node)


def _tape_of(values: Sequence[Any]) -> Tape | None:
    return next((v.tape for v in values if _is_b(v) and v.tape is not None), None)


def _affine(
    fn: Callable[..., torch.Tensor], abs_fn: Callable[..., torch.Tensor] | None, inputs: list[Bounded]
) -> Bounded:
    """An affine op of the bounded ``inputs`` (constants closed over by ``fn``); ``abs_fn`` maps radii
    (the op with absolute weights, no bias; ``None``: the op itself is linear with non-negative weights)."""
    centre = fn(*[b.center for b in inputs])
    radius = (abs_fn or fn)(*[b.radius for b in inputs])
    out = Bounded(centre - radius, centre + radius)
    tape = _tape_of(inputs)
    if tape is not None:
        out.tape = tape
        out.node = tape.add(Node("affine", tuple(b.node for b in inputs), out.lower, out.upper, fn))
    return out


def _monotone(op: Callable[[torch.Tensor], torch.Tensor], b: Bounded, kind: str) -> Bounded:
    out = Bounded(op(b.lower), op(b.upper))
    if b.tape is not None:
        out.tape = b.tape
        out.node = b.tape.add(Node(kind, (b.node,), out.lower, out.upper))
    return out


def _neg(x: Any) -> Any:
    return _mul(x, -1.0) if _is_b(x) else -x


def _add(a: Any, b: Any) -> Bounded:
    if _is_b(a) and _is_b(b):
        return _affine(lambda x, y: x + y, lambda x, y: x + y, [a, b])
    box, const = (a, b) if _is_b(a) else (b, a)
    return _affine(lambda x: x + const, lambda r: r, [box])


def _mul(a: Any, b: Any) -> Bounded:
    if _is_b(a) and _is_b(b):
        raise BoundsError("cannot bound a product of two bounded values")
    box, const = (a, b) if _is_b(a) else (b, a)
    if isinstance(const, torch.Tensor):
        magnitude = const.abs()
        return _affine(lambda x: x * const, lambda r: r * magnitude, [box])
    return _affine(lambda x: x * const, lambda r: r * abs(float(const)), [box])


def _sub_rule(a: Any, b: Any, alpha: float = 1.0) -> Bounded:
    return _add(a, _neg(_mul(b, alpha) if alpha != 1.0 else b))


def _div_rule(a: Any, b: Any) -> Bounded:
    if _is_b(b):
        raise BoundsError("cannot bound a division by a bounded value")
    return _mul(a, 1.0 / b)


def _conv2d(x: Bounded, weight: torch.Tensor, bias: torch.Tensor | None = None, *args: Any, **kw: Any) -> Bounded:
    magnitude = weight.abs()
    return _affine(
        lambda t: F.conv2d(t, weight, bias, *args, **kw), lambda r: F.conv2d(r, magnitude, None, *args, **kw), [x]
    )


def _linear(x: Bounded, weight: torch.Tensor, bias: torch.Tensor | None = None) -> Bounded:
    magnitude = weight.abs()
    return _affine(lambda t: F.linear(t, weight, bias), lambda r: F.linear(r, magnitude), [x])


def _batch_norm(
    x: Bounded,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Bounded:
    if training or running_mean is None or running_var is None:
        raise BoundsError(
            "batch-statistics BatchNorm has no bound of its own: bound the model through margin_bounds or "
            "logit_bounds, which hold the clean batch's statistics (arnas_zoo.batchstats.HeldBatchStats)"
        )
    mean, var = running_mean, running_var
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale + (bias if bias is not None else 0.0)
    view = (1, -1, *([1] * (x.ndim - 2)))
    s, t = scale.view(view), shift.view(view)
    magnitude = s.abs()
    return _affine(lambda v: v * s + t, lambda r: r * magnitude, [x])


def _max_pool2d(x: Bounded, *args: Any, **kwargs: Any) -> Bounded:
    if kwargs.get("return_indices") or (len(args) >= 6 and args[5]):
        raise BoundsError("cannot bound max_pool2d with return_indices=True")
    return _monotone(lambda t: F.max_pool2d(t, *args, **kwargs), x, "box")


def _relu(x: Bounded, inplace: bool = False) -> Bounded:
    return _monotone(torch.relu, x, "relu")


def _cat(values: Sequence[Any], dim: int = 0) -> Bounded:
    bounded = [v for v in values if _is_b(v)]
    positions = [i for i, v in enumerate(values) if _is_b(v)]

    def build(parts: Sequence[torch.Tensor], radius: bool) -> torch.Tensor:
        it = iter(parts)
        merged = [next(it) if i in positions else (torch.zeros_like(v) if radius else v) for i, v in enumerate(values)]
        return torch.cat(merged, dim)

    return _affine(lambda *xs: build(xs, False), lambda *rs: build(rs, True), bounded)


def _pad(x: Bounded, pad: Sequence[int], mode: str = "constant", value: float | None = None) -> Bounded:
    if mode != "constant":
        raise BoundsError(f"cannot bound F.pad with mode={mode!r} (only constant padding)")
    return _affine(lambda t: F.pad(t, pad, mode, value), lambda r: F.pad(r, pad, mode, 0.0), [x])


def _pool(op: Callable[..., torch.Tensor]) -> Callable[..., Bounded]:
    return lambda x, *args, **kwargs: _affine(lambda t: op(t, *args, **kwargs), None, [x])


def _method(name: str) -> Callable[..., Any]:
    return lambda x, *args, **kwargs: getattr(x, name)(*args, **kwargs)


_RULES: dict[str, Callable[..., Any]] = {
    "conv2d": _conv2d,
    "linear": _linear,
    "batch_norm": _batch_norm,
    "relu": _relu,
    "max_pool2d": _max_pool2d,
    "max_pool2d_with_indices": _max_pool2d,
    "avg_pool2d": _pool(F.avg_pool2d),
    "adaptive_avg_pool2d": _pool(F.adaptive_avg_pool2d),
    "pad": _pad,
    "cat": _cat,
    "add": lambda a, b, alpha=1.0: _add(a, _mul(b, alpha) if alpha != 1.0 else b),
    "radd": lambda a, b: _add(a, b),
    "sub": _sub_rule,
    "rsub": lambda a, b: _add(_neg(a), b),
    "mul": _mul,
    "rmul": _mul,
    "div": _div_rule,
    "truediv": _div_rule,
    "neg": _neg,
    "flatten": _method("flatten"),
    "getitem": lambda x, index: x[index],
    "contiguous": _method("contiguous"),
    "reshape": _method("reshape"),
    "view": _method("view"),
    "sum": _method("sum"),
    "mean": _method("mean"),
    "identity": lambda x: x,
}


# ---- the threat model and the margins --------------------------------------------------------------
def _check(eps: float, norm: str, method: str) -> None:
    if norm not in NORMS:
        raise ConfigError(f"norm: expected one of {list(NORMS)}, got {norm!r}")
    if method not in METHODS:
        raise ConfigError(f"method: expected one of {list(METHODS)}, got {method!r}")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise ConfigError(f"eps: expected a finite radius >= 0, got {eps!r}")


def input_bounds(x: torch.Tensor, eps: float | torch.Tensor) -> Bounded:
    """The box ``[x - eps, x + eps]`` intersected with ``[0, 1]`` (per-sample ``eps``: a (N,) tensor)."""
    if isinstance(eps, torch.Tensor):
        eps = eps.view(-1, *([1] * (x.ndim - 1)))
    return Bounded((x - eps).clamp(min=0.0), (x + eps).clamp(max=1.0))


def margin_spec(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(N, K-1, K)`` rows ``e_y - e_j`` for every ``j != y``: the margins ``z_y - z_j``."""
    eye = torch.eye(num_classes, device=y.device)
    rows = eye[y].unsqueeze(1) - eye.unsqueeze(0)  # (N, K, K): row j = e_y - e_j
    keep = ~F.one_hot(y, num_classes).bool()
    return rows[keep].view(len(y), num_classes - 1, num_classes)


def _run(model: nn.Module, box: Bounded, x: torch.Tensor) -> Bounded:
    with HeldBatchStats(model) as held:
        if held.holds_any:  # batch-statistics BatchNorm: the clean batch's, held (DSRNA Eq. 2, 6-7)
            held.record(x)
        out = model(box)
    if not _is_b(out):
        raise BoundsError(f"{type(model).__name__} returned {type(out).__name__}, not bounded logits")
    return out


def logit_bounds(model: nn.Module, x: torch.Tensor, eps: float | torch.Tensor) -> Bounded:
    """IBP bounds of the logits over the l_inf box of radius ``eps`` around ``x`` (within [0, 1])."""
    return _run(model, input_bounds(x, eps), x)


def margin_bounds(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float | torch.Tensor,
    *,
    norm: str = "linf",
    method: str = "ibp",
    upper: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Lower bounds ``(N, K-1)`` of the margins ``z_y - z_j`` over the threat model (and upper bounds with
    ``upper=True``). A margin bound > 0 for every ``j`` certifies the prediction ``y`` at ``x``.

    The model keeps its mode: eval mode bounds the evaluation network; train mode (the search)
    normalises with the statistics of the clean batch ``x``, held constant (DSRNA Eq. 2).
    Differentiable with respect to the parameters (and the supernet's architecture), so it can be an
    objective.
    """
    _check(float(eps) if not isinstance(eps, torch.Tensor) else 0.0, norm, method)
    tape = Tape() if method == "crown" else None
    box = input_bounds(x, eps)
    if tape is not None:
        box.tape, box.node = tape, tape.add(Node("input", (), box.lower, box.upper))
    logits = _run(model, box, x)
    k = logits.shape[1]
    spec = margin_spec(y, k).to(logits.lower.dtype)
    lower = _ibp_margins(logits, spec, lower=True)
    up = _ibp_margins(logits, spec, lower=False) if upper else None
    if tape is not None:
        lower = torch.maximum(lower, crown_lower(tape, logits.node, spec, x, eps, norm))
        if upper:
            assert up is not None
            up = torch.minimum(up, -crown_lower(tape, logits.node, -spec, x, eps, norm))
    return (lower, up) if upper else lower  # type: ignore[return-value]


def _ibp_margins(logits: Bounded, spec: torch.Tensor, lower: bool) -> torch.Tensor:
    c, r = logits.center.unsqueeze(1), logits.radius.unsqueeze(1)
    mid = (spec * c).sum(-1)
    spread = (spec.abs() * r).sum(-1)
    return mid - spread if lower else mid + spread


# ---- certification -----------------------------------------------------------------------------------
@torch.no_grad()
def certified(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, norm: str = "linf", method: str = "ibp"
) -> torch.Tensor:
    """``(N,)`` bool: the prediction ``y`` is certified for every input within ``eps`` of ``x``."""
    if len(y) == 0:
        return torch.zeros(0, dtype=torch.bool, device=x.device)
    lower = margin_bounds(model, x, y, eps, norm=norm, method=method)
    assert isinstance(lower, torch.Tensor)
    return (lower > 0).all(dim=1)


@torch.no_grad()
def certified_radius(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str = "linf",
    method: str = "ibp",
    eps_max: float = 1.0,
    steps: int = 16,
    eps_min_ratio: float = 1e-6,
) -> torch.Tensor:
    """``(N,)`` the largest certified radius per point, by bisection (0 when ``y`` is not the prediction).

    The bisection runs on a log scale over ``[eps_max * eps_min_ratio, eps_max]``: the radii bounds certify
    for networks not trained for it are orders of magnitude below the attack radius, and a linear bisection
    would round them all to 0. A point not certified at the lower end gets 0; the result is within a factor
    ``(1 / eps_min_ratio) ** (1 / 2**steps)`` below the largest radius the method certifies (bounds grow
    with eps, so bisection is valid).
    """
    _check(eps_max, norm, method)
    if not 0 < eps_min_ratio < 1:
        raise ConfigError(f"eps_min_ratio: expected a ratio in (0, 1), got {eps_min_ratio}")
    floor = eps_max * eps_min_ratio
    lo = torch.full((len(x),), math.log(floor), dtype=torch.float64, device=x.device)
    hi = torch.full_like(lo, math.log(eps_max))
    ok_floor = _certified_at(model, x, y, lo.exp(), norm, method)
    ok_top = _certified_at(model, x, y, hi.exp(), norm, method)
    for _ in range(steps):
        mid = (lo + hi) / 2
        ok = _certified_at(model, x, y, mid.exp(), norm, method)
        lo = torch.where(ok, mid, lo)
        hi = torch.where(ok, hi, mid)
    radius = torch.where(ok_top, torch.full_like(lo, eps_max), lo.exp())
    return torch.where(ok_floor, radius, torch.zeros_like(radius))


def _certified_at(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor, norm: str, method: str) -> Any:
    lower = margin_bounds(model, x, y, eps.to(x.dtype), norm=norm, method=method)
    assert isinstance(lower, torch.Tensor)
    return (lower > 0).all(dim=1)
