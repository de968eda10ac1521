"""The search wing's one interface: a strategy is a config class, its presets and a run function.

Every search here (ARNAS with its robustness objectives, DSRNA's among them; RobNets; RoCo-NAS; the
evolutionary cell search) lives in a folder of its own under ``search/`` and registers a :class:`Strategy`
when its package is imported, the way model families register with :func:`arnas_zoo.models.register_family`.
The command line (:mod:`search.cli`) is generated from this registry: ``python -m search run PRESET`` finds
the strategy that owns ``PRESET``, ``python -m search presets`` lists them all, grouped by strategy.

A strategy's ``run(config, out, options)`` claims ``out`` through :func:`arnas_zoo.runs.folder.claim_run_folder`,
runs on :func:`arnas_zoo.runs.run_task` (one process) or :func:`arnas_zoo.jobs.run_jobs` (many candidates),
and returns an :class:`Outcome`: the genotype files it wrote, its summary and the lines a person reads.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arnas_zoo.errors import ConfigError, DuplicateNameError
from arnas_zoo.progress import Progress

#: the strategies that ship here, by package (relative to this one): imported on first use of the registry
BUILTIN = ("arnas", "robnet", "roco", "evolve")

#: the :class:`RunOptions` a strategy may or may not honour, with their command-line flags
OPTIONAL = {
    "previous": "--resume-previous",
    "device": "--device",
    "name": "--name",
    "backend": "--backend",
    "address": "--address",
    "max_parallel": "--max-parallel",
}


@dataclass(frozen=True)
class RunOptions:
    """How to run a search, as opposed to what to search (the config). Defaults: a fresh local run."""

    resume: bool = False
    previous: bool = False  # resume from the state saved before the latest one
    device: str = "auto"
    name: str | None = None  # the genotype's name
    backend: str = "local"  # the job layer's backend, for strategies that train many candidates
    address: str | None = None  # the Ray cluster to join
    max_parallel: int | None = None
    progress: Progress | bool = True  # a Progress, or whether to show one
    plots: bool = True

    def set_options(self) -> list[str]:
        """The optional fields that differ from their defaults (what a strategy must honour or refuse)."""
        default = RunOptions()
        return [key for key in OPTIONAL if getattr(self, key) != getattr(default, key)]


@dataclass(frozen=True)
class Outcome:
    """What a search returns: the genotype JSON files it wrote, its summary, the lines the command prints."""

    genotypes: list[Path]
    summary: dict[str, Any]
    lines: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Strategy:
    """One search strategy: where it comes from, its presets, how to load a config and how to run it."""

    name: str  # the command-line group: ``python -m search NAME run``
    title: str  # how messages name it
    papers: str  # the papers it implements
    home: str  # its folder in the repository
    presets: Callable[[], Mapping[str, dict[str, Any]]]  # preset -> its settings that differ from the defaults
    load: Callable[[str, Sequence[str]], Any]  # (preset or JSON file, KEY=VALUE overrides) -> a validated config
    run: Callable[[Any, Path, RunOptions], Outcome]
    default_preset: str
    takes: frozenset[str] = frozenset()  # the OPTIONAL run options it honours
    folder_prefix: str = ""  # the default output folder is runs/<folder_prefix><preset>-seed<seed>
    commands: Callable[[], Sequence[Any]] | None = None  # more click commands for its group (sweep, compare)

    def __post_init__(self) -> None:
        unknown = set(self.takes) - set(OPTIONAL)
        if unknown:
            raise ConfigError(f"strategy {self.name}: unknown run options {sorted(unknown)}; known: {list(OPTIONAL)}")

    def default_out(self, source: str, config: Any) -> Path:
        stem = source if source in self.presets() else Path(source).stem
        return Path("runs") / f"{self.folder_prefix}{stem}-seed{config.seed}"

    def refused(self, options: RunOptions) -> list[str]:
        """The set options this strategy does not honour."""
        return [key for key in options.set_options() if key not in self.takes]

    def start(self, config: Any, out: Path, options: RunOptions) -> Outcome:
        """``run`` after refusing the options it does not honour (a run never ignores what it was asked)."""
        refused = self.refused(options)
        if refused:
            raise ConfigError(refusal(self, refused))
        return self.run(config, out, options)


_STRATEGIES: dict[str, Strategy] = {}


def register_strategy(strategy: Strategy) -> Strategy:
    """Add ``strategy`` to the registry (a second strategy of the same name, or one reusing a preset, raises)."""
    if strategy.name in _STRATEGIES:
        raise DuplicateNameError(f"search strategy {strategy.name!r} is already registered")
    taken = {preset: other.name for other in _STRATEGIES.values() for preset in other.presets()}
    clash = sorted(set(strategy.presets()) & set(taken))
    if clash:
        raise DuplicateNameError(f"strategy {strategy.name}: presets {clash} already belong to {taken[clash[0]]}")
    _STRATEGIES[strategy.name] = strategy
    return strategy


def strategies() -> dict[str, Strategy]:
    """Every registered strategy by name, the built-in ones first (importing their packages registers them)."""
    for package in BUILTIN:
        if package not in _STRATEGIES:
            importlib.import_module(f"{__package__}.{package}")
    return dict(_STRATEGIES)


def get_strategy(name: str) -> Strategy:
    found = strategies()
    if name not in found:
        raise ConfigError(f"search strategy: expected one of {sorted(found)}, got {name[:60]!r}")
    return found[name]


def strategy_for(source: str) -> Strategy:
    """The strategy that owns preset ``source``; ARNAS for a JSON file (a peer's JSON config runs through its
    own group: ``python -m search roco run FILE``); otherwise a :class:`ConfigError` listing every preset."""
    found = strategies()
    for strategy in found.values():
        if source in strategy.presets():
            return strategy
    if Path(source).is_file():
        return found["arnas"]
    listing = "; ".join(f"{s.name}: {', '.join(s.presets())}" for s in found.values())
    raise ConfigError(f"config: {source[:80]!r} is neither a preset ({listing}) nor a JSON file")


def refusal(strategy: Strategy, keys: Sequence[str]) -> str:
    """``roco-tiny``-style message: which flags this strategy does not take, and which strategies do."""
    parts = []
    for key in keys:
        takers = [f"the {s.title} search" for s in _STRATEGIES.values() if key in s.takes]
        whom = " and ".join([", ".join(takers[:-1]), takers[-1]] if len(takers) > 1 else takers) or "no strategy"
        parts.append(f"{OPTIONAL[key]} is for {whom}")
    return f"{strategy.title} ({strategy.name}) does not take it: " + "; ".join(parts)


def config_settings(config: Any, defaults: Any) -> dict[str, Any]:
    """The fields of dataclass config ``config`` that differ from ``defaults`` (what a preset changes)."""
    mine, base = config.to_dict(), defaults.to_dict()
    return {key: value for key, value in mine.items() if base.get(key) != value}


def settings_of(presets: Mapping[str, Any], cls: Any) -> Callable[[], dict[str, dict[str, Any]]]:
    """A ``Strategy.presets`` for dataclass configs: each preset's fields that differ from ``cls()``'s."""
    return lambda: {name: config_settings(config, cls()) for name, config in presets.items()}


def load_from(presets: Mapping[str, Any], cls: Any, what: str) -> Callable[[str, Sequence[str]], Any]:
    """A ``Strategy.load`` for a dataclass config with ``from_dict``/``with_overrides``/``validate``: a preset
    name, or a JSON file of its fields, then the ``KEY=VALUE`` overrides."""

    def load(source: str, overrides: Sequence[str]) -> Any:
        if source in presets:
            config = presets[source]
        elif Path(source).is_file():
            from arnas_zoo.safe_json import read_json_object

            config = cls.from_dict(read_json_object(source, what=f"{what} config"))
        else:
            raise ConfigError(f"{what}: expected one of {sorted(presets)} or a JSON file, got {source[:80]!r}")
        config = config.with_overrides(list(overrides))
        config.validate()
        return config

    return load
