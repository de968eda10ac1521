"""Registry of pretrained robust models: where their files live, pinned, and what they were trained for.

A pretrained entry is data, not code: one object per published checkpoint in
``arnas_zoo/pretrained/index.json``, read into frozen :class:`PretrainedSpec` records. The files come
either from a folder bundled inside the package (``arnas_zoo/pretrained/<folder>/``) or from a Hugging
Face Hub repository pinned to a commit. Either way every file of the model -- ``config.json``,
``model.safetensors`` and ``metrics.json`` -- is pinned by sha256 and checked before anything is
built, so a registry name always means the same network, the same weights and the same reported
figures. Entries are added only for checkpoints that were actually trained and evaluated; their
figures live in the checkpoint's ``metrics.json``, never here. :func:`index_entry` computes the entry
for a checkpoint folder (``arnas-zoo export register FOLDER --name ...``).
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from arnas_zoo.checkpoint import CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE, read_config, read_metrics, sha256_file
from arnas_zoo.errors import ConfigError, DuplicateNameError
from arnas_zoo.figures import ACCURACY_KEYS, SIZE_KEYS, Figures, figures_from_metrics
from arnas_zoo.hub_ids import validate_repo_id
from arnas_zoo.registry import normalize_name, unknown_name_error

INDEX_FILE = "index.json"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_NAME = re.compile(r"^[a-z0-9_]+\.[a-z0-9_.]+$")
THREAT_MODELS = ("linf", "l2", "l1", "none")


#: The figures a registry entry may state a goal line for (accuracies on its reporting rows).
GOAL_FIGURES = ("clean", "autoattack", "worst_case")


@dataclass(frozen=True)
class PretrainedSpec:
    """One published checkpoint.

    Attributes:
        name: registry name ``<arch>.<dataset>_<threat model>...``, lower case with a dot
            (``arnas.mnist_linf_cpu_c4l5``); the dot keeps it apart from Hub ids and folders.
        arch: the architecture registry name it was built from (``arnas``, ``darts_v2``, ...).
        sha256: sha256 of ``model.safetensors``; ``config_sha256`` / ``metrics_sha256`` of
            ``config.json`` / ``metrics.json``. All are checked on every load.
        dataset: the training data (``mnist``, ``cifar10``, ...); ``data`` names the exact mix and split.
        threat_model: ``linf``, ``l2``, ``l1`` (or ``none`` for standard training).
        eps: the perturbation budget the weights were trained for, on the [0, 1] pixel scale.
        description: one or two sentences: recipe, data subset, budget.
        folder: bundled source: a folder name under ``arnas_zoo/pretrained/``.
        repo_id: Hub source: ``org/name``; needs ``revision``, the 40-hex commit it was pinned at.
        license: the weights' license (SPDX id, lower case as the Hub spells it).
        superseded_by: the name of a better entry of the same kind, when there is one.
        params / macs: parameters and multiply-adds per image of the network the pinned config.json
            builds (stored so that listings need not build it; ``tests/test_hub_registry.py`` recounts).
    """

    name: str
    arch: str
    sha256: str
    dataset: str
    threat_model: str
    eps: float
    description: str
    config_sha256: str | None = None
    metrics_sha256: str | None = None
    folder: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    license: str = "mit"
    data: str = ""
    superseded_by: str | None = None
    params: int | None = None
    macs: int | None = None
    goals: tuple[tuple[str, float], ...] | None = None

    def __post_init__(self) -> None:
        where = f"pretrained {self.name!r:.60}"
        if self.goals is not None:  # JSON gives an object: kept as sorted pairs (the spec stays hashable)
            pairs = self.goals.items() if isinstance(self.goals, Mapping) else self.goals
            try:
                goals = tuple(sorted((str(k), float(v)) for k, v in pairs))
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: goals: expected {{figure: accuracy line in [0, 1]}}") from None
            if any(k not in GOAL_FIGURES or not 0.0 <= v <= 1.0 for k, v in goals):
                raise ConfigError(f"{where}: goals: expected figures among {GOAL_FIGURES} with lines in [0, 1]")
            object.__setattr__(self, "goals", goals)
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(f"{where}: name: expected lower-case '<arch>.<variant>' (e.g. 'arnas.mnist_linf')")
        for key in ("sha256", "config_sha256", "metrics_sha256"):
            value = getattr(self, key)
            if (value is not None or key == "sha256") and not (isinstance(value, str) and _SHA256.match(value)):
                raise ConfigError(f"{where}: {key}: expected 64 lower-case hex digits, got {value!r:.80}")
        if self.threat_model not in THREAT_MODELS:
            raise ConfigError(f"{where}: threat_model: expected one of {THREAT_MODELS}, got {self.threat_model!r:.40}")
        if not (isinstance(self.eps, (int, float)) and not isinstance(self.eps, bool) and self.eps >= 0):
            raise ConfigError(f"{where}: eps: expected a number >= 0 on the [0, 1] pixel scale, got {self.eps!r:.40}")
        if (self.folder is None) == (self.repo_id is None):
            raise ConfigError(f"{where}: give exactly one source: folder (bundled) or repo_id (Hub)")
        if self.repo_id is not None:
            validate_repo_id(self.repo_id)
            if self.revision is None or not _COMMIT.match(self.revision):
                raise ConfigError(
                    f"{where}: revision: a Hub source needs the 40-hex commit it was pinned at, "
                    f"got {self.revision!r:.60}"
                    " (arnas-zoo export hub prints it after publishing)"
                )
        elif self.revision is not None:
            raise ConfigError(f"{where}: revision only applies to a Hub source (repo_id)")
        for key in ("params", "macs"):
            value = getattr(self, key)
            if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
                raise ConfigError(f"{where}: {key}: expected a count >= 0, got {value!r:.40}")

    @property
    def source(self) -> str:
        """Human-readable source: the bundled folder or ``org/name@commit``."""
        if self.folder is not None:
            return f"bundled:{self.folder}"
        return f"{self.repo_id}@{self.revision}"

    def pins(self) -> dict[str, str]:
        """``{file name: sha256}`` of every pinned file."""
        pins = {WEIGHTS_FILE: self.sha256}
        if self.config_sha256 is not None:
            pins[CONFIG_FILE] = self.config_sha256
        if self.metrics_sha256 is not None:
            pins[METRICS_FILE] = self.metrics_sha256
        return pins

    def bundled_path(self) -> Path:
        """Path of the bundled checkpoint folder (only for ``folder`` entries)."""
        if self.folder is None:
            raise ConfigError(f"pretrained {self.name!r} is a Hub entry ({self.source}), not a bundled folder")
        return bundled_root() / self.folder

    def figures(self) -> Figures | None:
        """The headline figures of this checkpoint's pinned ``metrics.json`` (None when unavailable).

        Bundled entries read the file inside the package; Hub entries read it from the local Hugging Face
        cache when the pinned commit was downloaded before (never from the network). A file whose sha256
        differs from the pin gives None: a listing never shows figures the registry did not pin.
        """
        path = self._metrics_path()
        if path is None or self.metrics_sha256 is None:
            return None
        stat = path.stat()  # part of the cache key: a file rewritten since is checked against its pin again
        return _pinned_figures(str(path), self.metrics_sha256, stat.st_size, stat.st_mtime_ns)

    def _metrics_path(self) -> Path | None:
        if self.folder is not None:
            path = self.bundled_path() / METRICS_FILE
            return path if path.is_file() else None
        from arnas_zoo.hub_cache import cached_file

        return cached_file(str(self.repo_id), METRICS_FILE, str(self.revision))

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if v is not None}
        if self.goals is not None:
            out["goals"] = dict(self.goals)
        return out

    def goal_claims(self) -> list[str]:
        """Each goal line stated against the pinned figures (:func:`arnas_zoo.figures.claim`): "meets" only
        when the 95% interval's lower bound clears the line."""
        from arnas_zoo.figures import claim

        figures = self.figures()
        if not self.goals or figures is None:
            return []
        out = []
        for key, line in self.goals:
            value = figures.value({"clean": "clean", "autoattack": "aa", "worst_case": "worst"}[key])
            label = {"clean": "clean", "autoattack": "AutoAttack", "worst_case": "worst-case"}[key]
            out.append(f"{label}: not measured" if value is None else claim(value, figures.n, line, label))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PretrainedSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"pretrained entry: unknown key {unknown[0]!r}; expected some of {sorted(known)}")
        try:
            return cls(**dict(data))
        except TypeError as exc:
            raise ConfigError(f"pretrained entry: {exc}") from None


def parse_goals(text: str) -> dict[str, float]:
    """Goal lines as a command line gives them, ``clean=0.75,autoattack=0.40``: accuracies in [0, 1] for
    figures among :data:`GOAL_FIGURES` (a card then says "meets" only when the 95% lower bound clears one)."""
    goals: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        try:
            line = float(value)
        except ValueError:
            line = -1.0
        if not sep or key.strip() not in GOAL_FIGURES or not 0.0 <= line <= 1.0:
            raise ConfigError(
                f"goals: {part!r}: expected FIGURE=LINE with FIGURE among {GOAL_FIGURES} and LINE in [0, 1]"
            )
        goals[key.strip()] = line
    return goals


def bundled_root() -> Path:
    """Where bundled checkpoint folders live: ``arnas_zoo/pretrained/`` inside the installed package."""
    return Path(str(resources.files("arnas_zoo"))) / "pretrained"


_PRETRAINED: dict[str, PretrainedSpec] = {}


def register(spec: PretrainedSpec) -> PretrainedSpec:
    """Add ``spec`` to the registry; a second entry with the same name raises DuplicateNameError."""
    key = normalize_name(spec.name)
    if key in _PRETRAINED:
        raise DuplicateNameError(f"pretrained model {spec.name!r} is already registered; pick another name")
    _PRETRAINED[key] = spec
    return spec


def unregister(name: str) -> None:
    """Remove an entry (for tests that register temporary entries)."""
    _PRETRAINED.pop(normalize_name(name), None)


def is_pretrained(name: str) -> bool:
    return normalize_name(name) in _PRETRAINED


def get_pretrained(name: str) -> PretrainedSpec:
    """The entry called ``name``; an unknown name raises UnknownModelError with close matches."""
    try:
        return _PRETRAINED[normalize_name(name)]
    except KeyError:
        raise unknown_name_error("pretrained model", name, list(_PRETRAINED)) from None


@lru_cache(maxsize=256)
def _pinned_figures(path: str, sha256: str, size: int, mtime_ns: int) -> Figures | None:
    if sha256_file(Path(path)) != sha256:
        return None
    try:
        from arnas_zoo.safe_json import read_json

        return figures_from_metrics(read_json(path, what="metrics"))
    except (OSError, ValueError):
        return None


SORT_KEYS = (*ACCURACY_KEYS, *SIZE_KEYS, "name")


def _sort_value(spec: PretrainedSpec, key: str) -> float | None:
    if key in SIZE_KEYS:
        size = getattr(spec, key)
        return None if size is None else float(size)
    figures = spec.figures()
    value = None if figures is None else figures.value(key)
    return None if value is None else -value  # accuracies: best first


def list_pretrained(
    pattern: str | None = None,
    *,
    dataset: str | None = None,
    threat_model: str | None = None,
    arch: str | None = None,
    sort: str | None = None,
    include_superseded: bool = True,
) -> list[PretrainedSpec]:
    """The registered entries that match, in index order or sorted; each carries its figures (``.figures()``).

    Args:
        pattern: a shell-style pattern on the name (``"*resnet*"``, ``"arnas.cifar10*"``); without a
            wildcard it matches anywhere in the name (``"cifar10"``). Case-insensitive.
        dataset, threat_model, arch: keep entries with exactly this value (case-insensitive).
        sort: ``clean``, ``aa`` or ``worst`` (best first), ``params`` or ``macs`` (smallest first), or
            ``name``; entries without the figure come last. None keeps index order.
        include_superseded: False drops entries that a better one of the same kind replaced.

    Raises:
        ConfigError: an unknown ``sort`` key.
    """
    if sort is not None and sort not in SORT_KEYS:
        raise ConfigError(f"sort: expected one of {', '.join(SORT_KEYS)}, got {sort!r:.40}")
    specs = list(_PRETRAINED.values())
    if pattern:
        glob = pattern.lower() if any(ch in pattern for ch in "*?[") else f"*{pattern.lower()}*"
        specs = [s for s in specs if fnmatch.fnmatchcase(s.name.lower(), glob)]
    for key, wanted in (("dataset", dataset), ("threat_model", threat_model), ("arch", arch)):
        if wanted is not None:
            specs = [s for s in specs if str(getattr(s, key)).lower() == wanted.lower()]
    if not include_superseded:
        specs = [s for s in specs if not s.superseded_by]
    if sort == "name":
        return sorted(specs, key=lambda s: s.name)
    if sort is not None:
        keyed = [(_sort_value(s, sort), i, s) for i, s in enumerate(specs)]
        keyed.sort(key=lambda t: (t[0] is None, t[0] if t[0] is not None else 0.0, t[1]))
        return [s for _, _, s in keyed]
    return specs


def pretrained_values(key: str) -> list[str]:
    """The distinct values of ``dataset``, ``threat_model`` or ``arch`` over the registry, sorted."""
    return sorted({str(getattr(s, key)) for s in _PRETRAINED.values()})


def _dataset_of(folder: Path) -> str:
    config = read_config(folder)
    for source in (dict(config.extra or {}), read_metrics(folder) or {}):
        data = source.get("data")
        found = source.get("dataset") or (data.get("dataset") if isinstance(data, dict) else None)
        if isinstance(found, str):
            return found
    return "unknown"


def index_entry(
    folder: str | Path,
    name: str,
    *,
    description: str = "",
    data: str = "",
    repo_id: str | None = None,
    revision: str | None = None,
    bundled_folder: str | None = None,
) -> PretrainedSpec:
    """The registry entry for checkpoint ``folder``, every pinned sha256 computed here.

    Arch, threat model and eps come from the folder's config.json, the dataset from config.json's
    ``extra`` or metrics.json; the entry is validated before it is returned.
    """
    from arnas_zoo.introspect import compute_stats

    folder = Path(folder)
    config = read_config(folder)
    arch = dict(config.extra or {}).get("arch_name") or (config.name or name.split(".")[0])
    metrics = folder / METRICS_FILE
    stats = compute_stats(config)
    return PretrainedSpec(
        name=name,
        arch=str(arch),
        sha256=sha256_file(folder / WEIGHTS_FILE),
        dataset=_dataset_of(folder),
        threat_model=config.threat_model or "none",
        eps=float(config.eps or 0.0),
        description=description,
        config_sha256=sha256_file(folder / CONFIG_FILE),
        metrics_sha256=sha256_file(metrics) if metrics.is_file() else None,
        folder=None if repo_id is not None else (bundled_folder or name),
        repo_id=repo_id,
        revision=revision,
        data=data,
        params=int(stats["params"]),
        macs=int(stats["macs"]),
    )


def read_index(path: str | Path) -> list[PretrainedSpec]:
    """The entries of an ``index.json`` file (a JSON list of entry objects)."""
    path = Path(path)
    from arnas_zoo.safe_json import read_json

    try:
        raw = read_json(path, max_bytes=16 * 1024 * 1024, what="pretrained index")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable pretrained index ({exc})") from None
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: expected a JSON list of entries")
    return [PretrainedSpec.from_dict(item) for item in raw]


def write_index(path: str | Path, entries: list[PretrainedSpec]) -> None:
    from arnas_zoo.atomic import atomic_write_text

    atomic_write_text(Path(path), json.dumps([e.to_dict() for e in entries], indent=1) + "\n")


def _load_bundled_index() -> None:
    for spec in read_index(bundled_root() / INDEX_FILE):
        register(spec)


_load_bundled_index()
