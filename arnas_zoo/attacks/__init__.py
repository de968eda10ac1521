"""Adversarial attacks: one PGD kernel (FGSM, PGD-k, restarts, CE/CW/KL losses, BatchNorm modes) and
AutoAttack and Square through the reference implementation.

Every attack takes a model that maps float NCHW images in [0, 1] to logits, a batch ``x`` (checked to
lie in [0, 1]) with labels ``y``, and returns adversarial images of the same shape inside the
eps-ball around ``x`` and inside [0, 1]. The model's training flag and its parameters'
``requires_grad`` flags are restored afterwards, also when the attack raises; no weight gradient is
accumulated.

Example::

    from arnas_zoo.attacks import pgd, PGD20
    x_adv = pgd(model, x, y, eps=8/255, step_size=2/255, steps=20)
    x_adv = PGD20(model, x, y)                      # the ARNAS paper's PGD-20 (step 2/255, random start)

Modules: :mod:`~arnas_zoo.attacks.gradient` (the kernel), :mod:`~arnas_zoo.attacks.batchnorm` (BN
modes and folding), :mod:`~arnas_zoo.attacks.counting` (passes per image),
:mod:`~arnas_zoo.attacks.reference` (AutoAttack, Square).
"""

from arnas_zoo.attacks.batchnorm import BN_MODES, attack_mode, batch_statistics, bn_mode, folded_batchnorm
from arnas_zoo.attacks.counting import CountingModel, PassCounter
from arnas_zoo.attacks.gradient import (
    FGSM,
    LOSSES,
    NORMS,
    PGD20,
    PGD100,
    STARTS,
    AttackPreset,
    draw_noise,
    fgsm,
    pgd,
    transfer_attack,
)
from arnas_zoo.attacks.reference import AUTOATTACK_VERSIONS, autoattack, square
from arnas_zoo.inputs import check_images

__all__ = [
    "AUTOATTACK_VERSIONS",
    "BN_MODES",
    "FGSM",
    "LOSSES",
    "NORMS",
    "PGD20",
    "PGD100",
    "STARTS",
    "AttackPreset",
    "CountingModel",
    "PassCounter",
    "attack_mode",
    "autoattack",
    "batch_statistics",
    "bn_mode",
    "check_images",
    "draw_noise",
    "fgsm",
    "folded_batchnorm",
    "pgd",
    "square",
    "transfer_attack",
]
