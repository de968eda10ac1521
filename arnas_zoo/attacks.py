"""Adversarial attacks: FGSM and PGD (own, batched), AutoAttack and Square (reference implementation).

Every attack takes a model that maps float NCHW images in [0, 1] to logits, a batch ``x`` (checked to
lie in [0, 1]) with labels ``y``, and returns adversarial images of the same shape inside the
eps-ball around ``x`` and inside [0, 1]. While attacking, the model is put in eval mode (batch norm
uses its running statistics, so every sample is attacked independently of the others in its batch);
its training flag and its parameters' ``requires_grad`` flags are restored afterwards, also when the
attack raises. Gradients are taken with respect to the input only: nothing is accumulated in the
parameters' ``.grad``.

Forward and backward passes can be counted with a :class:`PassCounter` (``counter=``): the counts are
per image (a batch of 32 forwarded once adds 32), so "passes per image" is ``count / len(x)``.

Example::

    from arnas_zoo.attacks import pgd, PGD20
    x_adv = pgd(model, x, y, eps=8/255, step_size=2/255, steps=20)
    x_adv = PGD20(model, x, y)                      # the ARNAS paper's PGD-20 (step 2/255, random start)
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from arnas_zoo.errors import ConfigError, InputRangeError

__all__ = [
    "FGSM",
    "PGD20",
    "PGD100",
    "AttackPreset",
    "CountingModel",
    "PassCounter",
    "attack_mode",
    "autoattack",
    "check_images",
    "fgsm",
    "folded_batchnorm",
    "pgd",
    "square",
    "transfer_attack",
]

Norm = Literal["linf", "l2"]
LossName = Literal["ce", "cw"]
NORMS = ("linf", "l2")
LOSSES = ("ce", "cw")

# Tolerance of the [0, 1] range check: images decoded from uint8 are exact, but some pipelines leave
# float noise of one ulp around 0 and 1.
RANGE_TOLERANCE = 1e-6


@dataclass
class PassCounter:
    """Counts images sent forward and backward through a model (a batch of B adds B)."""

    forward: int = 0
    backward: int = 0

    def reset(self) -> None:
        self.forward = 0
        self.backward = 0

    def snapshot(self) -> tuple[int, int]:
        return self.forward, self.backward


class CountingModel(nn.Module):
    """Wraps a model and counts, per image, its forward passes and the backward passes through it.

    A backward pass is counted when a gradient reaches the model's output (a hook on the logits), so it
    counts what any attack implementation does -- ours, torchattacks' or AutoAttack's -- without
    changing it.
    """

    def __init__(self, model: nn.Module, counter: PassCounter):
        super().__init__()
        self.model = model
        self.counter = counter
        # mirror the wrapped model's mode, or restoring the wrapper's flag would flip the model's
        self.training = model.training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        n = int(x.shape[0])
        self.counter.forward += n
        if out.requires_grad:
            out.register_hook(lambda grad: self._count_backward(n, grad))
        return out

    def _count_backward(self, n: int, grad: torch.Tensor) -> torch.Tensor:
        self.counter.backward += n
        return grad


def check_images(x: torch.Tensor, what: str = "x") -> None:
    """Raise :class:`InputRangeError` unless ``x`` is a float NCHW batch with values in [0, 1]."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = f"{x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputRangeError(
            f"{what}: expected a float tensor of images in [0, 1], got {got}; divide uint8 images by 255"
        )
    if x.ndim != 4:
        raise InputRangeError(f"{what}: expected an NCHW batch (4 dimensions), got shape {tuple(x.shape)}")
    if x.numel() == 0:
        return
    low, high = torch.aminmax(x.detach())
    low_f, high_f = float(low), float(high)  # one host sync per attack call, never per step
    if not (low_f >= -RANGE_TOLERANCE and high_f <= 1 + RANGE_TOLERANCE):
        raise InputRangeError(
            f"{what}: expected values in [0, 1], got min {low_f:.4g} and max {high_f:.4g}; pass unnormalized "
            "images (arnas-zoo models normalize inside)"
        )


@contextlib.contextmanager
def attack_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and frozen parameters for the duration of an attack; both restored on exit.

    Freezing the parameters means autograd neither computes nor stores weight gradients during the
    attack (faster, and no stray ``.grad``); the exact previous flags come back afterwards.
    """
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def _foldable_pairs(model: nn.Module) -> list[tuple[nn.Sequential, str, str]]:
    """``(sequential, conv_name, bn_name)`` for each adjacent Conv2d -> eval-mode BatchNorm2d pair."""
    found = []
    for seq in model.modules():
        if isinstance(seq, nn.Sequential):
            names = list(seq._modules)
            for conv_name, bn_name in zip(names, names[1:]):
                conv, bn = seq._modules[conv_name], seq._modules[bn_name]
                if (
                    isinstance(conv, nn.Conv2d)
                    and isinstance(bn, nn.BatchNorm2d)
                    and not bn.training
                    and bn.running_mean is not None
                    and bn.running_var is not None
                    and conv.padding_mode == "zeros"
                ):
                    found.append((seq, conv_name, bn_name))
    return found


def _fused_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    with torch.no_grad():
        scale = (bn.running_var + bn.eps).rsqrt()
        gamma = bn.weight if bn.affine else torch.ones_like(scale)
        beta = bn.bias if bn.affine else torch.zeros_like(scale)
        # a copy keeps the conv's class and hyper-parameters (a PointwiseConv2d stays one); its tensors are replaced
        fused = copy.deepcopy(conv)
        fused.weight = nn.Parameter(conv.weight * (gamma * scale).view(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
        fused.bias = nn.Parameter((bias - bn.running_mean) * gamma * scale + beta)
    fused.requires_grad_(False)
    return fused


@contextlib.contextmanager
def folded_batchnorm(model: nn.Module) -> Iterator[nn.Module]:
    """Fold ``model``'s eval-mode ``Conv2d -> BatchNorm2d`` pairs into single convs for the duration.

    In eval mode a BatchNorm is an affine map with its running statistics, so folding it into the
    convolution before it gives the same function (and the same input gradients, up to float rounding)
    with one op fewer per pair; with channels_last inputs this makes attack steps about twice as fast on
    CPU (benchmarks/bench_attacks.py). Only pairs adjacent in an ``nn.Sequential`` whose BatchNorm is in
    eval mode with running statistics are folded (a BatchNorm kept in training mode is left alone). The
    swap happens in place, so wrappers, counters and hooks on the model keep working; the original
    modules are put back on exit, also when the body raises.
    """
    swapped = []
    try:
        for seq, conv_name, bn_name in _foldable_pairs(model):
            conv, bn = seq._modules[conv_name], seq._modules[bn_name]
            seq._modules[conv_name] = _fused_conv(conv, bn)
            seq._modules[bn_name] = nn.Identity()
            swapped.append((seq, conv_name, conv, bn_name, bn))
        yield model
    finally:
        for seq, conv_name, conv, bn_name, bn in reversed(swapped):
            seq._modules[conv_name] = conv
            seq._modules[bn_name] = bn


def _check_common(eps: float, norm: str, x: torch.Tensor, y: torch.Tensor) -> None:
    if norm not in NORMS:
        raise ConfigError(f"norm: expected one of {list(NORMS)}, got {norm!r}")
    if not eps >= 0:  # also rejects NaN
        raise ConfigError(f"eps: expected a non-negative radius, got {eps}")
    check_images(x)
    if y.shape != (x.shape[0],) or y.dtype not in (torch.int64, torch.int32):
        raise ConfigError(f"y: expected {x.shape[0]} integer labels, got {y.dtype} of shape {tuple(y.shape)}")


def _objective(logits: torch.Tensor, labels: torch.Tensor, loss: str, targeted: bool) -> torch.Tensor:
    """Summed objective to ASCEND: labels are the true classes (untargeted) or the targets (targeted).

    The sum (not the mean) keeps each sample's gradient independent of the batch size.
    """
    if loss == "ce":
        ce = F.cross_entropy(logits, labels, reduction="sum")
        return -ce if targeted else ce
    # CW margin: best other logit minus the label's logit (Carlini & Wagner 2017, without the kappa clamp)
    label_logit = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf"))
    margin = others.amax(dim=1) - label_logit
    return (-margin if targeted else margin).sum()


def _random_like(x: torch.Tensor, generator: torch.Generator | None, normal: bool) -> torch.Tensor:
    """Uniform [0, 1) (or standard normal) noise shaped like ``x``, drawn from ``generator`` on its device."""
    device = generator.device if generator is not None else x.device
    draw = torch.randn if normal else torch.rand
    noise = draw(x.shape, generator=generator, device=device, dtype=x.dtype)
    return noise.to(x.device)


def _per_sample_l2(t: torch.Tensor) -> torch.Tensor:
    """L2 norm of each sample, shaped (N, 1, 1, 1) for broadcasting."""
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.ndim - 1)))


def _random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    if norm == "linf":
        delta = (2 * _random_like(x, generator, normal=False) - 1) * eps
    else:  # uniform in the l2 ball: gaussian direction, radius eps * u^(1/d)
        direction = _random_like(x, generator, normal=True)
        direction = direction / _per_sample_l2(direction)
        u = _random_like(x[:, :1, :1, :1], generator, normal=False)
        delta = direction * eps * u.pow(1.0 / x[0].numel())
    return (x + delta).clamp_(0.0, 1.0)


def _pgd_run(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    norm: str,
    loss: str,
    random_start: bool,
    targeted: bool,
    generator: torch.Generator | None,
    channels_last: bool = True,
) -> torch.Tensor:
    """One PGD run from one start; the model is already in attack mode."""
    x = x.detach()
    if channels_last:
        # channels_last makes convolutions (depthwise ones above all) several times faster on CPU
        # oneDNN and on CUDA; an input in that layout carries the whole network into it
        x = x.contiguous(memory_format=torch.channels_last)
    if norm == "linf":
        # the intersection of the eps-box and [0, 1] is a box: one clamp per step projects onto it
        lower = (x - eps).clamp_(min=0.0)
        upper = (x + eps).clamp_(max=1.0)
    x_adv = _random_start(x, eps, norm, generator) if random_start and eps > 0 else x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        objective = _objective(model(x_adv), labels, loss, targeted)
        (grad,) = torch.autograd.grad(objective, x_adv)
        with torch.no_grad():
            if norm == "linf":
                x_adv = torch.clamp(x_adv + step_size * grad.sign(), lower, upper)
            else:
                x_adv = x_adv + step_size * grad / _per_sample_l2(grad)
                delta = x_adv - x
                delta = delta * (eps / _per_sample_l2(delta)).clamp(max=1.0)
                x_adv = (x + delta).clamp_(0.0, 1.0)
    return x_adv.detach()


def _succeeded(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    with torch.no_grad():
        pred = model(x_adv).argmax(dim=1)
    return pred == target if target is not None else pred != y


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    restarts: int = 1,
    norm: Norm = "linf",
    loss: LossName = "ce",
    random_start: bool = True,
    targeted: bool = False,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    counter: PassCounter | None = None,
    channels_last: bool = True,
    fold_bn: bool = True,
) -> torch.Tensor:
    """Projected gradient descent (Madry et al., ICLR 2018) in the l_inf or l_2 ball of radius ``eps``.

    Each of ``steps`` iterations ascends ``loss`` (``"ce"`` cross-entropy or ``"cw"`` the CW margin)
    by ``step_size`` along the gradient's sign (l_inf) or its normalized direction (l_2), then projects
    onto the eps-ball and [0, 1]. ``random_start`` starts from a uniform point of the ball. With
    ``restarts > 1`` the samples not yet misclassified are attacked again from a new random start and
    each sample keeps the first restart that fooled the model (the per-sample worst case); the
    returned example of a sample never fooled is the one of the last restart. ``targeted=True`` moves
    towards ``target`` labels instead of away from ``y``.

    Args:
        model: maps [0, 1] images to logits; its training flag is restored afterwards.
        x: float (N, C, H, W) in [0, 1]; y: (N,) int64 true labels.
        generator: source of the random starts (reproducible attacks); its device may differ from x's.
        counter: counts forward/backward passes per image.
        channels_last: run the attack in the channels_last memory layout (faster; results equal up to
            float rounding of the convolutions). The returned tensor is contiguous either way.
        fold_bn: fold the model's eval-mode BatchNorms into the convolutions before them while
            attacking (:func:`folded_batchnorm`; the same function up to float rounding, and faster;
            the modules are restored afterwards). Hooks on those BatchNorm modules do not fire while
            folded: pass ``fold_bn=False`` if you rely on them.

    Returns:
        Adversarial images, (N, C, H, W), within ``eps`` of ``x`` in ``norm`` and within [0, 1].
    """
    _check_common(eps, norm, x, y)
    if loss not in LOSSES:
        raise ConfigError(f"loss: expected one of {list(LOSSES)}, got {loss!r}")
    if steps < 0 or restarts < 1:
        raise ConfigError(f"steps/restarts: expected steps >= 0 and restarts >= 1, got {steps} and {restarts}")
    if targeted and (target is None or target.shape != y.shape):
        raise ConfigError("target: a targeted attack needs one target label per image (same shape as y)")
    if not targeted:
        target = None
    labels = target if target is not None else y
    kwargs = dict(
        eps=eps,
        step_size=step_size,
        steps=steps,
        norm=norm,
        loss=loss,
        random_start=random_start,
        targeted=targeted,
        generator=generator,
        channels_last=channels_last,
    )
    run_model: nn.Module = CountingModel(model, counter) if counter is not None else model
    with attack_mode(model), folded_batchnorm(model) if fold_bn else contextlib.nullcontext():
        x_best = _pgd_run(run_model, x, labels, **kwargs).contiguous()
        if restarts == 1 or len(x) == 0:
            return x_best
        fooled = _succeeded(run_model, x_best, y, target)
        for _ in range(restarts - 1):
            todo = (~fooled).nonzero().squeeze(1)  # one sync per restart: only survivors are attacked again
            if todo.numel() == 0:
                break
            x_new = _pgd_run(run_model, x[todo], labels[todo], **kwargs)
            fooled_new = _succeeded(run_model, x_new, y[todo], None if target is None else target[todo])
            x_best[todo] = x_new
            fooled[todo] = fooled_new
        return x_best


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: Norm = "linf",
    targeted: bool = False,
    target: torch.Tensor | None = None,
    counter: PassCounter | None = None,
    channels_last: bool = True,
    fold_bn: bool = True,
) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al., ICLR 2015): one step of size ``eps``, no random start.

    For ``norm="l2"`` the step follows the normalized gradient (fast gradient method).
    """
    return pgd(
        model,
        x,
        y,
        eps=eps,
        step_size=eps,
        steps=1,
        restarts=1,
        norm=norm,
        loss="ce",
        random_start=False,
        targeted=targeted,
        target=target,
        counter=counter,
        channels_last=channels_last,
        fold_bn=fold_bn,
    )


@dataclass(frozen=True)
class AttackPreset:
    """A named, fully specified gradient attack (the settings papers report).

    ``step_size`` is for ``eps``; at another radius the step scales with it (``step_size * eps' / eps``),
    so PGD-20 at 8/255 steps 2/255 and at 16/255 steps 4/255.
    """

    name: str
    steps: int
    step_size: float
    eps: float = 8 / 255
    restarts: int = 1
    random_start: bool = True
    loss: LossName = "ce"

    def step_for(self, eps: float) -> float:
        return self.step_size * eps / self.eps

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        eps: float | None = None,
        norm: Norm = "linf",
        generator: torch.Generator | None = None,
        counter: PassCounter | None = None,
        restarts: int | None = None,
    ) -> torch.Tensor:
        eps = self.eps if eps is None else eps
        return pgd(
            model,
            x,
            y,
            eps=eps,
            step_size=self.step_for(eps),
            steps=self.steps,
            restarts=self.restarts if restarts is None else restarts,
            norm=norm,
            loss=self.loss,
            random_start=self.random_start,
            generator=generator,
            counter=counter,
        )


# The ARNAS paper's white-box attacks (PROTOCOLS.md): l_inf 8/255; FGSM one step of 8/255 without a
# random start; PGD-20/100 with step 2/255 from a uniform random start.
FGSM = AttackPreset("fgsm", steps=1, step_size=8 / 255, random_start=False)
PGD20 = AttackPreset("pgd20", steps=20, step_size=2 / 255)
PGD100 = AttackPreset("pgd100", steps=100, step_size=2 / 255)


# ---- reference implementations (AutoAttack, Square) ----------------------------------------------
AUTOATTACK_VERSIONS = ("standard", "plus", "rand")
_REFERENCE_NORMS = {"linf": "Linf", "l2": "L2"}


def _import_autoattack():  # type: ignore[no-untyped-def]
    try:
        import pyautoattack
    except ImportError:
        raise ConfigError(
            "AutoAttack needs the reference implementation: pip install 'arnas-zoo[autoattack]' (PyPI: pyautoattack)"
        ) from None
    return pyautoattack


def _fork_rng(x: torch.Tensor) -> contextlib.AbstractContextManager[None]:
    """The reference code reseeds torch's global RNG; keep the caller's random state untouched."""
    devices = [x.device] if x.device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)


def autoattack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: Norm = "linf",
    version: str = "standard",
    attacks: list[str] | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    counter: PassCounter | None = None,
) -> torch.Tensor:
    """AutoAttack (Croce & Hein, ICML 2020) through the authors' reference code (``pyautoattack``).

    ``version`` is ``"standard"`` (APGD-CE, APGD-T, FAB-T, Square), ``"plus"`` or ``"rand"`` (for
    randomized defenses), or ``"custom"`` with ``attacks`` a list of the reference names
    (``"apgd-ce"``, ``"apgd-dlr"``, ``"apgd-t"``, ``"fab"``, ``"fab-t"``, ``"square"``). In the custom
    version APGD runs 1 restart of 100 iterations, as inside ``standard`` (the reference default for
    custom runs is 5 restarts). Samples are attacked in order and each keeps the first attack that
    fools it. Returns the adversarial images (the clean image where no attack succeeded).
    """
    _check_common(eps, norm, x, y)
    if version not in (*AUTOATTACK_VERSIONS, "custom"):
        raise ConfigError(f"version: expected one of {[*AUTOATTACK_VERSIONS, 'custom']}, got {version!r}")
    if (version == "custom") != (attacks is not None):
        raise ConfigError("attacks: give a list of attacks exactly when version='custom'")
    reference = _import_autoattack()
    run_model: nn.Module = CountingModel(model, counter) if counter is not None else model
    with attack_mode(model), _fork_rng(x):
        adversary = reference.AutoAttack(
            run_model,
            norm=_REFERENCE_NORMS[norm],
            eps=eps,
            version=version,
            attacks=attacks,
            seed=seed,
            device=x.device,
        )
        if version == "custom":
            adversary.apgd.n_restarts = 1
        adversary.verbose = False
        x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=batch_size or max(len(x), 1))
    return x_adv.detach()


def square(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: Norm = "linf",
    n_queries: int = 5000,
    p_init: float = 0.8,
    seed: int = 0,
    counter: PassCounter | None = None,
) -> torch.Tensor:
    """Square attack (Andriushchenko et al., ECCV 2020): score-based black box, no gradients.

    Runs the reference implementation shipped with AutoAttack with its AutoAttack settings (margin
    loss, ``p_init=0.8``, one restart, up to ``n_queries`` queries per image).
    """
    _check_common(eps, norm, x, y)
    _import_autoattack()
    from pyautoattack.square import SquareAttack

    run_model: nn.Module = CountingModel(model, counter) if counter is not None else model
    with attack_mode(model), _fork_rng(x), torch.no_grad():
        attack = SquareAttack(
            run_model,
            norm=_REFERENCE_NORMS[norm],
            n_queries=n_queries,
            eps=eps,
            p_init=p_init,
            n_restarts=1,
            seed=seed,
            verbose=False,
            resc_schedule=False,
            device=x.device,
        )
        x_adv = attack.perturb(x, y)
    return x_adv.detach()


def transfer_attack(
    source: nn.Module,
    target: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Callable[..., torch.Tensor] = PGD20,
    **attack_kwargs: object,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Black-box transfer: craft examples on ``source`` with ``attack``, classify them with ``target``.

    Returns ``(x_adv, correct)`` where ``correct`` is the target model's per-sample correctness.
    """
    x_adv = attack(source, x, y, **attack_kwargs)
    with attack_mode(target), torch.no_grad():
        correct = target(x_adv).argmax(dim=1) == y
    return x_adv, correct
