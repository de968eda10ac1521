"""AutoAttack and Square through the AutoAttack authors' reference implementation (``pyautoattack``).

The reference code is a dependency on purpose (the ``[autoattack]`` extra): AutoAttack figures are
only comparable across papers when they come from the reference implementation. The reference code
reseeds torch's global RNG; the caller's random state is kept untouched.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from arnas_zoo.attacks.batchnorm import attack_mode
from arnas_zoo.attacks.counting import CountingModel, PassCounter
from arnas_zoo.errors import ConfigError
from arnas_zoo.inputs import check_images, check_labels


def _check_common(eps: float, norm: str, x: torch.Tensor, y: torch.Tensor) -> None:
    if norm not in ("linf", "l2"):
        raise ConfigError(f"norm: expected 'linf' or 'l2', got {norm!r}")
    if not eps >= 0 or eps == float("inf"):
        raise ConfigError(f"eps: expected a finite non-negative radius, got {eps}")
    check_images(x)
    check_labels(y, x.shape[0])


AUTOATTACK_VERSIONS = ("standard", "plus", "rand")
_REFERENCE_NORMS = {"linf": "Linf", "l2": "L2"}


def _import_autoattack() -> Any:
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
    norm: str = "linf",
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
    norm: str = "linf",
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
