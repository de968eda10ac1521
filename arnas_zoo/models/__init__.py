"""Networks of the zoo: one module per family, each registering its builder; :func:`build_model` dispatches.

- :mod:`arnas_zoo.models.cells`: genotype-built cell networks (ARNAS, DARTS space, RobNet).
- :mod:`arnas_zoo.models.resnets`: ResNet-18 (CIFAR and ImageNet stems) and WideResNet.
"""

from arnas_zoo.models import cells, macro, resnets  # noqa: F401  (each registers its family)
from arnas_zoo.models.base import (
    Family,
    Normalize,
    ZooModel,
    build_model,
    check_config,
    get_family,
    list_families,
    register_family,
)
from arnas_zoo.models.cells import AuxiliaryHead, Cell, CellNetwork

__all__ = [
    "AuxiliaryHead",
    "Cell",
    "CellNetwork",
    "Family",
    "Normalize",
    "ZooModel",
    "build_model",
    "check_config",
    "get_family",
    "list_families",
    "register_family",
]
