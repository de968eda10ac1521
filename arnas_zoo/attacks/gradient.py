"""The one gradient attack kernel: PGD (and FGSM as its one-step case) for evaluation, training and search.

Every caller goes through :func:`pgd`: ``arnas-zoo eval`` (FGSM, PGD-k, restarts, CW loss), the
adversarial training recipes (PGD-7 from ``x + 0.001 N(0, 1)``, TRADES' KL, FGSM with a random
start) and the searches (PGD on a supernet with batch statistics). The options that differ between
them are arguments, not copies of the loop:

- ``bn``: ``"eval"`` (running statistics) or ``"batch"`` (batch statistics, running statistics
  restored): see :mod:`arnas_zoo.attacks.batchnorm`.
- ``start``: ``"uniform"`` in the eps-ball, ``"normal"`` (``x + sigma * N(0, 1)``, ARNAS/AdvRush), or
  ``"none"``; ``noise`` passes pre-drawn U(-1, 1) or N(0, 1) draws (data-parallel shards of one global
  batch reuse the global batch's draws).
- ``loss``: ``"ce"`` cross-entropy, ``"cw"`` the CW margin, ``"kl"`` TRADES' KL(f(x) || f(x')).
- ``autocast``: a context factory for the forward passes (bf16); losses are computed in float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from arnas_zoo.attacks.batchnorm import BN_MODES, bn_mode, folded_batchnorm
from arnas_zoo.attacks.counting import CountingModel, PassCounter
from arnas_zoo.errors import ConfigError, NoGradientPathError
from arnas_zoo.inputs import check_images, check_labels

NORMS = ("linf", "l2")
LOSSES = ("ce", "cw", "kl")
STARTS = ("uniform", "normal", "none")
Autocast = Callable[[], contextlib.AbstractContextManager[Any]]


def _objective(
    logits: torch.Tensor, labels: torch.Tensor, loss: str, targeted: bool, clean: torch.Tensor | None
) -> torch.Tensor:
    """Summed objective to ASCEND (the sum keeps each sample's gradient independent of the batch size).

    ``labels`` are the true classes (untargeted) or the targets (targeted); ``clean`` holds the clean
    probabilities for the KL loss.
    """
    if loss == "kl":
        assert clean is not None  # _pgd_run computes the clean probabilities for this loss
        return F.kl_div(F.log_softmax(logits, dim=1), clean, reduction="sum")
    if loss == "ce":
        ce = F.cross_entropy(logits, labels, reduction="sum")
        return -ce if targeted else ce
    # CW margin: best other logit minus the label's logit (Carlini & Wagner 2017, without the kappa clamp)
    label_logit = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf"))
    margin = others.amax(dim=1) - label_logit
    return (-margin if targeted else margin).sum()


def draw_noise(
    shape: torch.Size | tuple[int, ...], start: str, generator: torch.Generator | None, device: torch.device, dtype: Any
) -> torch.Tensor:
    """The start's raw draws: U(-1, 1) for ``uniform``, N(0, 1) for ``normal``, on ``device``."""
    gen_device = generator.device if generator is not None else device
    if start == "normal":
        noise = torch.randn(shape, generator=generator, device=gen_device, dtype=dtype)
    else:
        noise = torch.rand(shape, generator=generator, device=gen_device, dtype=dtype).mul_(2).sub_(1)
    return noise.to(device)


def _per_sample_l2(t: torch.Tensor) -> torch.Tensor:
    """L2 norm of each sample, shaped (N, 1, 1, 1) for broadcasting."""
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.ndim - 1)))


def _start_point(
    x: torch.Tensor,
    eps: float,
    norm: str,
    start: str,
    sigma: float,
    generator: torch.Generator | None,
    noise: torch.Tensor | None,
) -> torch.Tensor:
    if start == "none" or eps == 0:
        return x.clone()
    if norm == "l2" and start == "uniform":  # uniform in the l2 ball: gaussian direction, radius eps * u^(1/d)
        direction = draw_noise(x.shape, "normal", generator, x.device, x.dtype)
        direction = direction / _per_sample_l2(direction)
        gen_device = generator.device if generator is not None else x.device
        u = torch.rand(x[:, :1, :1, :1].shape, generator=generator, device=gen_device, dtype=x.dtype).to(x.device)
        return (x + direction * eps * u.pow(1.0 / x[0].numel())).clamp_(0.0, 1.0)
    if noise is None:
        noise = draw_noise(x.shape, start, generator, x.device, x.dtype)
    scale = sigma if start == "normal" else eps
    return (x + scale * noise.to(x.device, x.dtype)).clamp_(0.0, 1.0)


@dataclass(frozen=True)
class _Run:
    """The settings of one PGD run (one start), shared by the restarts."""

    eps: float
    step_size: float
    steps: int
    norm: str
    loss: str
    start: str
    sigma: float
    targeted: bool
    channels_last: bool
    autocast: Autocast


def _pgd_run(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    run: _Run,
    generator: torch.Generator | None,
    noise: torch.Tensor | None,
) -> torch.Tensor:
    """One PGD run from one start; the model is already in its attack mode."""
    x = x.detach()
    if run.channels_last:
        # channels_last makes convolutions (depthwise ones above all) several times faster on CPU
        # oneDNN and on CUDA; an input in that layout carries the whole network into it
        x = x.contiguous(memory_format=torch.channels_last)
    if run.norm == "linf":
        # the intersection of the eps-box and [0, 1] is a box: one clamp per step projects onto it
        lower = (x - run.eps).clamp_(min=0.0)
        upper = (x + run.eps).clamp_(max=1.0)
    clean = None
    if run.loss == "kl":
        with torch.no_grad(), run.autocast():
            clean = F.softmax(model(x).float(), dim=1)
    x_adv = _start_point(x, run.eps, run.norm, run.start, run.sigma, generator, noise)
    for _ in range(run.steps):
        x_adv.requires_grad_(True)
        with run.autocast():
            logits = model(x_adv)
        objective = _objective(logits.float(), labels, run.loss, run.targeted, clean)
        grad = _input_gradient(objective, x_adv)
        with torch.no_grad():
            if run.norm == "linf":
                x_adv = torch.clamp(x_adv + run.step_size * grad.sign(), lower, upper)
            else:
                x_adv = x_adv + run.step_size * grad / _per_sample_l2(grad)
                delta = x_adv - x
                delta = delta * (run.eps / _per_sample_l2(delta)).clamp(max=1.0)
                x_adv = (x + delta).clamp_(0.0, 1.0)
    return x_adv.detach()


def _layout(x: torch.Tensor) -> torch.memory_format:
    """The memory format of ``x`` (adversarial examples come back in the layout of the clean batch)."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _fooled(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    with torch.no_grad():
        pred = model(x_adv).argmax(dim=1)
    return pred == target if target is not None else pred != y


def _check_arguments(
    eps: float, step_size: float, steps: int, restarts: int, norm: str, loss: str, start: str, bn: str
) -> None:
    if norm not in NORMS:
        raise ConfigError(f"norm: expected one of {list(NORMS)}, got {norm!r}")
    if loss not in LOSSES:
        raise ConfigError(f"loss: expected one of {list(LOSSES)}, got {loss!r}")
    if start not in STARTS:
        raise ConfigError(f"start: expected one of {list(STARTS)}, got {start!r}")
    if bn not in BN_MODES:
        raise ConfigError(f"bn: expected one of {list(BN_MODES)}, got {bn!r}")
    if not eps >= 0 or eps == float("inf"):  # also rejects NaN
        raise ConfigError(f"eps: expected a finite non-negative radius, got {eps}")
    if not step_size >= 0 or step_size == float("inf"):
        raise ConfigError(f"step_size: expected a finite non-negative step, got {step_size}")
    if steps < 0 or restarts < 1:
        raise ConfigError(f"steps/restarts: expected steps >= 0 and restarts >= 1, got {steps} and {restarts}")


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    restarts: int = 1,
    norm: str = "linf",
    loss: str = "ce",
    start: str = "uniform",
    sigma: float = 0.001,
    targeted: bool = False,
    target: torch.Tensor | None = None,
    bn: str = "eval",
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    counter: PassCounter | None = None,
    channels_last: bool = True,
    fold_bn: bool = True,
    autocast: Autocast | None = None,
    check_inputs: bool = True,
) -> torch.Tensor:
    """Projected gradient ascent (Madry et al., ICLR 2018) in the l_inf or l_2 ball of radius ``eps``.

    Each of ``steps`` iterations ascends ``loss`` by ``step_size`` along the gradient's sign (l_inf)
    or its normalized direction (l_2), then projects onto the eps-ball and [0, 1]. With
    ``restarts > 1`` the samples not yet misclassified are attacked again from a new start and each
    sample keeps the first restart that fooled the model (the per-sample worst case). ``targeted``
    moves towards ``target`` instead of away from ``y``.

    Args:
        model: maps [0, 1] images to logits; its flags (training, requires_grad) are restored.
        x: float (N, C, H, W) in [0, 1]; y: (N,) int64 true labels.
        bn: ``"eval"`` or ``"batch"`` BatchNorm statistics while attacking (module docstring).
        start, sigma, noise: the starting point (module docstring); ``generator`` seeds it.
        counter: counts forward/backward passes per image.
        channels_last: attack in the channels_last layout (faster; equal up to float rounding).
        fold_bn: fold eval-mode BatchNorms into the convolutions before them while attacking (eval
            mode only; hooks on those BatchNorms do not fire while folded).
        autocast: context factory wrapped around forward passes (e.g. bf16); None for full precision.
        check_inputs: check ``x`` and ``y`` (one host sync); callers that validated them may skip it.

    Returns:
        Detached adversarial images, (N, C, H, W), within ``eps`` of ``x`` in ``norm`` and in [0, 1], in
        the memory layout of ``x`` (channels_last in, channels_last out).
    """
    _check_arguments(eps, step_size, steps, restarts, norm, loss, start, bn)
    if check_inputs:
        check_images(x)
        check_labels(y, x.shape[0])
    if targeted and (target is None or target.shape != y.shape):
        raise ConfigError("target: a targeted attack needs one target label per image (same shape as y)")
    if not targeted:
        target = None
    labels = target if target is not None else y
    run = _Run(
        eps, step_size, steps, norm, loss, start, sigma, targeted, channels_last, autocast or contextlib.nullcontext
    )
    run_model: nn.Module = CountingModel(model, counter) if counter is not None else model
    fold = folded_batchnorm(model) if fold_bn and bn == "eval" and not hasattr(model, "_orig_mod") else None
    # enable_grad: an attack called inside torch.no_grad() (an evaluation loop) still needs input gradients
    with torch.enable_grad(), bn_mode(model, bn), fold or contextlib.nullcontext():
        x_best = _pgd_run(run_model, x, labels, run, generator, noise).contiguous(memory_format=_layout(x))
        if restarts == 1 or len(x) == 0:
            return x_best
        fooled = _fooled(run_model, x_best, y, target)
        for _ in range(restarts - 1):
            todo = (~fooled).nonzero().squeeze(1)  # one sync per restart: only survivors are attacked again
            if todo.numel() == 0:
                break
            x_new = _pgd_run(run_model, x[todo], labels[todo], run, generator, None)
            fooled_new = _fooled(run_model, x_new, y[todo], None if target is None else target[todo])
            x_best[todo] = x_new
            fooled[todo] = fooled_new
        return x_best


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
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
        norm=norm,
        start="none",
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
    start: str = "uniform"
    loss: str = "ce"

    @property
    def random_start(self) -> bool:
        return self.start != "none"

    def step_for(self, eps: float) -> float:
        return self.step_size * eps / self.eps

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        eps: float | None = None,
        norm: str = "linf",
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
            start=self.start,
            generator=generator,
            counter=counter,
        )


# The ARNAS paper's white-box attacks (PROTOCOLS.md): l_inf 8/255; FGSM one step of 8/255 without a
# random start; PGD-20/100 with step 2/255 from a uniform random start.
FGSM = AttackPreset("fgsm", steps=1, step_size=8 / 255, start="none")
PGD20 = AttackPreset("pgd20", steps=20, step_size=2 / 255)
PGD100 = AttackPreset("pgd100", steps=100, step_size=2 / 255)


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
    from arnas_zoo.attacks.batchnorm import attack_mode

    x_adv = attack(source, x, y, **attack_kwargs)
    with attack_mode(target), torch.no_grad():
        correct = target(x_adv).argmax(dim=1) == y
    return x_adv, correct


def _input_gradient(objective: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """d objective / d input; a model with no autograd path from its input is a typed error, not a crash."""
    no_path = NoGradientPathError(
        "the model's output has no gradient path to its input (a detach, torch.no_grad or non-differentiable step "
        "inside forward): gradient attacks (FGSM, PGD, APGD) cannot run on it and would overstate its robustness; "
        "evaluate it with a black-box attack (--attacks square) or make forward differentiable"
    )
    if not objective.requires_grad:
        raise no_path
    try:
        (grad,) = torch.autograd.grad(objective, x_adv)
    except RuntimeError as exc:
        if "not have been used in the graph" in str(exc) or "does not require grad" in str(exc):
            raise no_path from None
        raise
    return grad
