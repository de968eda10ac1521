"""arnas-zoo: adversarially robust architectures found by NAS (ARNAS and its peers).

Build a network from the registry or from genotype JSON, inspect it, and (with the other modules)
train, attack, load and deploy it. Inputs are float NCHW images in [0, 1]; models normalize.

The names below are imported on first use (PEP 562), so ``import arnas_zoo`` and the command line's
``--help`` do not pay for importing torch. Importing the package first also sets the OpenMP wait
policy to passive unless you chose one (:mod:`arnas_zoo.threads`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from arnas_zoo._version import __version__
from arnas_zoo.threads import apply_thread_policy

apply_thread_policy()  # before torch is imported: OpenMP threads sleep instead of spinning (see arnas_zoo.threads)

# public name -> module that defines it
_EXPORTS = {
    "ArnasZooError": "arnas_zoo.errors",
    "CheckpointError": "arnas_zoo.errors",
    "ConfigError": "arnas_zoo.errors",
    "DataNotFoundError": "arnas_zoo.errors",
    "DuplicateNameError": "arnas_zoo.errors",
    "GenotypeError": "arnas_zoo.errors",
    "InputRangeError": "arnas_zoo.errors",
    "UnknownModelError": "arnas_zoo.errors",
    "CellGenotype": "arnas_zoo.genotype",
    "Edge": "arnas_zoo.genotype",
    "Genotype": "arnas_zoo.genotype",
    "ModelConfig": "arnas_zoo.config",
    "ZooModel": "arnas_zoo.models",
    "build_model": "arnas_zoo.models",
    "create_model": "arnas_zoo.naming",
    "list_pretrained": "arnas_zoo.pretrained",
    "get_spec": "arnas_zoo.registry",
    "list_archs": "arnas_zoo.registry",
    "load": "arnas_zoo.hub",
    "ModelStats": "arnas_zoo.stats",
    "model_stats": "arnas_zoo.stats",
}

__all__ = [
    "ArnasZooError",
    "CellGenotype",
    "CheckpointError",
    "ConfigError",
    "DataNotFoundError",
    "DuplicateNameError",
    "Edge",
    "Genotype",
    "GenotypeError",
    "InputRangeError",
    "ModelConfig",
    "ModelStats",
    "UnknownModelError",
    "ZooModel",
    "__version__",
    "build_model",
    "create_model",
    "get_spec",
    "list_archs",
    "list_pretrained",
    "load",
    "model_stats",
]

if TYPE_CHECKING:
    from arnas_zoo.config import ModelConfig
    from arnas_zoo.errors import (
        ArnasZooError,
        CheckpointError,
        ConfigError,
        DataNotFoundError,
        DuplicateNameError,
        GenotypeError,
        InputRangeError,
        UnknownModelError,
    )
    from arnas_zoo.genotype import CellGenotype, Edge, Genotype
    from arnas_zoo.hub import load
    from arnas_zoo.models import ZooModel, build_model
    from arnas_zoo.naming import create_model
    from arnas_zoo.pretrained import list_pretrained
    from arnas_zoo.registry import get_spec, list_archs
    from arnas_zoo.stats import ModelStats, model_stats


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'arnas_zoo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__
