"""Registry of buildable architectures, each with its paper's default evaluation configuration.

``create_model("arnas")`` builds the 20-cell ARNAS evaluation network; keyword overrides change any
:class:`~arnas_zoo.config.ModelConfig` field (``create_model("arnas", init_channels=8, layers=5)``).
Metadata lives in the registered :class:`ArchSpec`, never in branches on names.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from arnas_zoo.config import ModelConfig
from arnas_zoo.errors import DuplicateNameError, UnknownModelError
from arnas_zoo.genotype import Genotype

if TYPE_CHECKING:
    from arnas_zoo.models import ZooModel


@dataclass(frozen=True)
class ArchSpec:
    """A named architecture: its default evaluation config and where it comes from."""

    name: str
    config: ModelConfig
    paper: str
    description: str = ""

    @property
    def space(self) -> str:
        return self.config.genotype.space if self.config.genotype is not None else "hand-crafted"


_ARCHS: dict[str, ArchSpec] = {}


def normalize_name(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def register(spec: ArchSpec) -> ArchSpec:
    key = normalize_name(spec.name)
    if key in _ARCHS:
        raise DuplicateNameError(f"architecture {spec.name!r} is already registered; pick another name")
    _ARCHS[key] = spec
    return spec


def unknown_name_error(kind: str, name: str, known: list[str]) -> UnknownModelError:
    close = difflib.get_close_matches(normalize_name(name), known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return UnknownModelError(f"unknown {kind} {name!r}{hint} (known: {', '.join(sorted(known))})")


def get_spec(name: str) -> ArchSpec:
    try:
        return _ARCHS[normalize_name(name)]
    except KeyError:
        raise unknown_name_error("architecture", name, list(_ARCHS)) from None


def is_registered(name: str) -> bool:
    return normalize_name(name) in _ARCHS


def list_archs() -> Iterator[ArchSpec]:
    return iter(_ARCHS.values())


def get_config(name: str, **overrides: Any) -> ModelConfig:
    return get_spec(name).config.replace(**overrides) if overrides else get_spec(name).config


def create_model(name: str, **overrides: Any) -> ZooModel:
    """Build registered architecture ``name`` (randomly initialised) with config overrides."""
    from arnas_zoo.models import build_model  # torch is imported only when a network is built

    return build_model(get_config(name, **overrides))


def bundled_genotype(stem: str) -> Genotype:
    """A published genotype shipped with the package (``arnas_zoo/genotypes/<stem>.json``)."""
    text = resources.files("arnas_zoo").joinpath("genotypes").joinpath(f"{stem}.json").read_text()
    return Genotype.from_json(text)


def _register_defaults() -> None:
    darts_papers = {
        "darts_v1": ("DARTS (first order)", "Liu et al., ICLR 2019"),
        "darts_v2": ("DARTS (second order)", "Liu et al., ICLR 2019"),
        "pdarts": ("P-DARTS", "Chen et al., ICCV 2019"),
        "advrush": ("AdvRush", "Mok et al., ICCV 2021"),
        "racl": ("RACL", "Dong et al., 2020 (arXiv 2009.00902)"),
    }
    register(
        ArchSpec(
            "arnas",
            ModelConfig(
                genotype=bundled_genotype("arnas"),
                init_channels=64,
                placement=("accurate", "accurate", "robust"),
                filter_multipliers=(1, 2, 2),
                name="arnas",
            ),
            paper="Ou et al., CVPR 2024 (arXiv 2405.05502)",
            description="Accurate cells before the 2nd reduction, Robust cells after; 1-2-2 filters",
        )
    )
    for key, (title, paper) in darts_papers.items():
        register(
            ArchSpec(
                key,
                ModelConfig(genotype=bundled_genotype(key), init_channels=36, name=key),
                paper=paper,
                description=f"{title} normal/reduce cells, DARTS macro (C=36, 20 cells, 1-2-4)",
            )
        )
    robnet = bundled_genotype("robnet_large")

    def robnet_config(init_channels: int, layers: int, name: str) -> ModelConfig:
        # one RobNet cell code shared by every cell, reductions included; RobNet's ops are non-affine
        return ModelConfig(
            genotype=robnet,
            placement=("shared",) * 3,
            reduction_cell="shared",
            affine=False,
            auxiliary=False,
            init_channels=init_channels,
            layers=layers,
            name=name,
        )

    register(
        ArchSpec(
            "robnet_large",
            robnet_config(init_channels=36, layers=20, name="robnet_large"),
            paper="Guo et al., CVPR 2020",
            description="one RobNet cell code shared by all 20 cells (C=36)",
        )
    )
    register(
        ArchSpec(
            "robnet_large_v2",
            robnet_config(init_channels=64, layers=33, name="robnet_large_v2"),
            paper="Guo et al., CVPR 2020",
            description="the RobNet-large cell code at C=64, 33 cells",
        )
    )
    register(
        ArchSpec(
            "robnet_free",
            ModelConfig(
                genotype=bundled_genotype("robnet_free"),
                init_channels=36,
                cell_types=tuple(f"cell{i}" for i in range(20)),
                affine=False,
                auxiliary=False,
                name="robnet_free",
            ),
            paper="Guo et al., CVPR 2020",
            description="one RobNet cell code per cell (20 cells, C=36)",
        )
    )
    baselines = {
        # name: (init_channels = first-stage width, layers = depth, paper, description)
        "resnet18": (64, 18, "He et al., CVPR 2016", "ResNet-18 with the CIFAR stem (3x3 conv, no max pool)"),
        "resnet18_imagenet": (
            64,
            18,
            "He et al., CVPR 2016",
            "torchvision's ImageNet-style ResNet-18 (the one counted in ARNAS Table 1)",
        ),
        "wrn34_10": (160, 34, "Zagoruyko & Komodakis, BMVC 2016", "WideResNet-34-10 (pre-activation)"),
    }
    for key, (width, depth, paper, description) in baselines.items():
        config = ModelConfig(arch=key, init_channels=width, layers=depth, auxiliary=False, name=key)
        register(ArchSpec(key, config, paper=paper, description=description))


_register_defaults()


#: Which registered architecture supplies the macro for a bare genotype of each space.
SPACE_DEFAULT_ARCH = {"arnas": "arnas", "darts": "darts_v2", "robnet": "robnet_large"}


def config_for_genotype(genotype: Genotype, **overrides: Any) -> ModelConfig:
    """The default evaluation config of ``genotype``'s space with ``genotype`` put in.

    ARNAS-space genotypes get the ARNAS macro, DARTS-space ones the DARTS macro; a RobNet genotype
    with one cell shares it across all cells, one with a cell per layer (``cell0``, ``cell1``, ...)
    gets one code per cell.
    """
    base = get_config(SPACE_DEFAULT_ARCH[genotype.space])
    changes: dict[str, Any] = {"genotype": genotype, "name": genotype.name}
    if genotype.space == "robnet":
        if len(genotype.cells) == 1:
            (only,) = genotype.cells
            changes.update(placement=(only,) * 3, reduction_cell=only)
        else:
            changes.update(cell_types=tuple(genotype.cells), layers=len(genotype.cells))
    changes.update(overrides)
    return base.replace(**changes)


def resolve_config(target: str, **overrides: Any) -> ModelConfig:
    """A registry name, a genotype JSON file, a config.json, or a checkpoint folder -> config."""
    import json
    from pathlib import Path

    from arnas_zoo.config import CONFIG_SCHEMA
    from arnas_zoo.errors import ConfigError

    path = Path(target)
    if path.is_dir():
        from arnas_zoo.checkpoint import read_config

        config = read_config(path)
        return config.replace(**overrides) if overrides else config
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise ConfigError(f"{path}: no such file; expected a genotype JSON, a config.json or a registry name")
        text = path.read_text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict) and data.get("schema") == CONFIG_SCHEMA:
            config = ModelConfig.from_dict(data)
            return config.replace(**overrides) if overrides else config
        return config_for_genotype(Genotype.load(path), **overrides)
    return get_config(target, **overrides)
