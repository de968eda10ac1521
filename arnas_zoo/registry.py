"""Registry of buildable architectures, each with its paper's default evaluation configuration.

``create_model("arnas")`` builds the 20-cell ARNAS evaluation network; keyword overrides change any
:class:`~arnas_zoo.config.ModelConfig` field (``create_model("arnas", init_channels=8, layers=5)``).
Metadata lives in the registered :class:`ArchSpec`, never in branches on names.
"""

from __future__ import annotations

import difflib
import json
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
    """Register every architecture of ``arnas_zoo/architectures.json`` (the registry is data)."""
    entries = json.loads(resources.files("arnas_zoo").joinpath("architectures.json").read_text())
    for entry in entries:
        fields = dict(entry["config"], name=entry["name"])
        if "genotype" in entry:
            fields["genotype"] = bundled_genotype(entry["genotype"]).to_dict()
        register(
            ArchSpec(
                entry["name"], ModelConfig.from_dict(fields), paper=entry["paper"], description=entry["description"]
            )
        )


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
        from arnas_zoo.safe_json import read_json

        # bounded and typed: a huge, binary or deeply nested file is refused in one line, never read whole
        data = read_json(path, max_bytes=16 * 1024 * 1024, what="genotype or config JSON")
        if isinstance(data, dict) and data.get("schema") == CONFIG_SCHEMA:
            config = ModelConfig.from_dict(data)
            return config.replace(**overrides) if overrides else config
        from arnas_zoo.macro import MacroGenotype, is_macro_json, macro_config

        if is_macro_json(data):
            return macro_config(MacroGenotype.from_dict(data, str(path)), **overrides)
        return config_for_genotype(Genotype.load(path), **overrides)
    return get_config(target, **overrides)
