"""arnas-zoo: adversarially robust architectures found by NAS (ARNAS and its peers).

Build a network from the registry or from genotype JSON, inspect it, and (with the other modules)
train, attack, load and deploy it. Inputs are float NCHW images in [0, 1]; models normalize.
"""

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
from arnas_zoo.network import ModelConfig, ZooModel, build_model
from arnas_zoo.registry import create_model, get_spec, list_archs
from arnas_zoo.stats import ModelStats, model_stats

__version__ = "0.1.0"

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
    "load",
    "model_stats",
]
