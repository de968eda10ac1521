"""Robustness evaluation: clean and per-attack robust accuracy, per-point worst case, sanity checks.

:func:`evaluate` runs a list of attacks over an :class:`~arnas_zoo.data.ImageData` and returns an
:class:`EvaluationReport` (``format_table()`` for people, ``to_metrics()`` for ``metrics.json``).
The headline robust accuracy of an attack counts the points correct on the clean input *and* on the
adversarial input (:mod:`~arnas_zoo.evaluate.report`); every report carries the automatic checks
of :mod:`~arnas_zoo.evaluate.checks` against false robustness.

Modules: :mod:`~arnas_zoo.evaluate.specs` (named attacks, eps parsing), :mod:`~arnas_zoo.evaluate.runner`
(:func:`evaluate`, :func:`transfer_matrix`), :mod:`~arnas_zoo.evaluate.report`,
:mod:`~arnas_zoo.evaluate.checks`, :mod:`~arnas_zoo.evaluate.folder`.
"""

from arnas_zoo.evaluate.checks import sanity_checks, significantly_more
from arnas_zoo.evaluate.folder import evaluate_folder
from arnas_zoo.evaluate.report import (
    HEADLINE,
    METRICS_SCHEMA,
    AttackResult,
    EvaluationReport,
    SanityCheck,
    fraction,
    read_report,
)
from arnas_zoo.evaluate.runner import (
    TransferReport,
    check_model_fits,
    correct_mask,
    evaluate,
    run_attack,
    transfer_matrix,
)
from arnas_zoo.evaluate.specs import ATTACK_NAMES, AttackSpec, make_attack, parse_attacks, parse_eps

__all__ = [
    "ATTACK_NAMES",
    "HEADLINE",
    "METRICS_SCHEMA",
    "AttackResult",
    "AttackSpec",
    "EvaluationReport",
    "SanityCheck",
    "TransferReport",
    "check_model_fits",
    "correct_mask",
    "evaluate",
    "evaluate_folder",
    "fraction",
    "make_attack",
    "parse_attacks",
    "parse_eps",
    "read_report",
    "run_attack",
    "sanity_checks",
    "significantly_more",
    "transfer_matrix",
]
