"""Registry of pretrained robust models: where their weights live and what they were trained for.

A pretrained entry is data, not code: one frozen :class:`PretrainedSpec` per published checkpoint,
registered with one line::

    register(PretrainedSpec(name="arnas.mnist_linf", arch="arnas", folder="arnas.mnist_linf",
                            sha256="...", dataset="mnist", threat_model="linf", eps=0.3,
                            description="..."))

The weights come either from a folder bundled inside the package (``arnas_zoo/pretrained/<folder>/``,
a checkpoint folder as written by :func:`arnas_zoo.checkpoint.save_folder`) or from a Hugging Face Hub
repository pinned to a commit. Either way the sha256 of ``model.safetensors`` is checked when loading
(:func:`arnas_zoo.hub.load`), so a registry name always means the same weights.

Entries are added only for checkpoints that were actually trained and evaluated; their figures live
in the checkpoint's ``metrics.json``, never here. :func:`spec_line` prints the line to add for a
checkpoint folder (``python -m export register FOLDER --name ...``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from arnas_zoo.checkpoint import WEIGHTS_FILE, read_config, read_metrics, sha256_file
from arnas_zoo.errors import ConfigError, DuplicateNameError
from arnas_zoo.registry import normalize_name, unknown_name_error

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_NAME = re.compile(r"^[a-z0-9_]+\.[a-z0-9_.]+$")
THREAT_MODELS = ("linf", "l2", "l1", "none")


@dataclass(frozen=True)
class PretrainedSpec:
    """One published checkpoint.

    Attributes:
        name: registry name ``<arch>.<dataset>_<threat model>`` style, lower case with one dot
            (``arnas.mnist_linf``); the dot keeps it apart from Hub ids (``org/name``) and folders.
        arch: the architecture registry name it was built from (``arnas``, ``darts_v2``, ...).
        sha256: hex sha256 of ``model.safetensors``, checked on every load.
        dataset: the training data (``mnist``, ``cifar10``, ...), with the subset in ``description``.
        threat_model: ``linf``, ``l2``, ``l1`` (or ``none`` for standard training).
        eps: the perturbation budget the weights were trained for, on the [0, 1] pixel scale.
        description: one or two sentences: recipe, data subset, headline figure with its attack.
        folder: bundled source: a folder name under ``arnas_zoo/pretrained/``.
        repo_id: Hub source: ``org/name``; needs ``revision``.
        revision: the 40-hex commit of ``repo_id`` the sha256 was taken from (never a branch: a branch
            moves, a pin does not).
        license: the weights' license (SPDX id, lower case as the Hub spells it).
    """

    name: str
    arch: str
    sha256: str
    dataset: str
    threat_model: str
    eps: float
    description: str
    folder: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    license: str = "mit"

    def __post_init__(self) -> None:
        where = f"pretrained {self.name!r}"
        if not _NAME.match(self.name):
            raise ConfigError(f"{where}: name: expected lower-case '<arch>.<variant>' (e.g. 'arnas.mnist_linf')")
        if not _SHA256.match(self.sha256):
            raise ConfigError(f"{where}: sha256: expected 64 lower-case hex digits, got {self.sha256!r}")
        if self.threat_model not in THREAT_MODELS:
            raise ConfigError(f"{where}: threat_model: expected one of {THREAT_MODELS}, got {self.threat_model!r}")
        if not (isinstance(self.eps, (int, float)) and self.eps >= 0):
            raise ConfigError(f"{where}: eps: expected a number >= 0 on the [0, 1] pixel scale, got {self.eps!r}")
        if (self.folder is None) == (self.repo_id is None):
            raise ConfigError(f"{where}: give exactly one source: folder= (bundled) or repo_id= (Hub)")
        if self.repo_id is not None:
            if not _REPO_ID.match(self.repo_id):
                raise ConfigError(f"{where}: repo_id: expected 'org/name', got {self.repo_id!r}")
            if self.revision is None or not _COMMIT.match(self.revision):
                raise ConfigError(
                    f"{where}: revision: a Hub source needs the 40-hex commit it was pinned at, got {self.revision!r}"
                    " (python -m export hub prints it after publishing)"
                )
        elif self.revision is not None:
            raise ConfigError(f"{where}: revision only applies to a Hub source (repo_id=)")

    @property
    def source(self) -> str:
        """Human-readable source: the bundled folder or ``org/name@commit``."""
        if self.folder is not None:
            return f"bundled:{self.folder}"
        return f"{self.repo_id}@{self.revision}"

    def bundled_path(self) -> Path:
        """Path of the bundled checkpoint folder (only for ``folder=`` entries)."""
        if self.folder is None:
            raise ConfigError(f"pretrained {self.name!r} is a Hub entry ({self.source}), not a bundled folder")
        return bundled_root() / self.folder


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


def list_pretrained() -> Iterator[PretrainedSpec]:
    """Every registered entry, in registration order."""
    return iter(_PRETRAINED.values())


def spec_line(
    folder: str | Path,
    name: str,
    *,
    description: str = "",
    repo_id: str | None = None,
    revision: str | None = None,
    bundled_folder: str | None = None,
) -> str:
    """The ``register(PretrainedSpec(...))`` line for checkpoint ``folder`` (sha256 computed here).

    Arch, threat model and eps come from the folder's config.json, the dataset from config.json's
    ``extra`` or metrics.json (``dataset`` or ``data.dataset``); the line is validated by building
    the spec before it is returned.
    """
    folder = Path(folder)
    config = read_config(folder)
    digest = sha256_file(folder / WEIGHTS_FILE)
    extra = dict(config.extra or {})
    dataset = "unknown"
    for source in (extra, read_metrics(folder) or {}):
        data = source.get("data")
        found = source.get("dataset") or (data.get("dataset") if isinstance(data, dict) else None)
        if isinstance(found, str):
            dataset = found
            break
    arch = extra.get("arch_name") or (config.name or name.split(".")[0])
    kwargs: dict[str, object] = {
        "name": name,
        "arch": str(arch),
        "sha256": digest,
        "dataset": str(dataset),
        "threat_model": config.threat_model or "none",
        "eps": float(config.eps or 0.0),
        "description": description,
    }
    if repo_id is not None:
        kwargs["repo_id"] = repo_id
        kwargs["revision"] = revision
    else:
        kwargs["folder"] = bundled_folder or name
    spec = PretrainedSpec(**kwargs)  # type: ignore[arg-type]  # validates before printing
    fields = ", ".join(f"{key}={getattr(spec, key)!r}" for key in kwargs)
    return f"register(PretrainedSpec({fields}))"


# ---- published checkpoints ------------------------------------------------------------------------
# One line per trained and evaluated checkpoint (python -m export register FOLDER --name ... prints it).
# MODEL_CARD.md is checked against this list by tests/test_hub_registry.py.
register(
    PretrainedSpec(
        name="arnas.mnist_linf_cpu_c4l5",
        arch="arnas",
        sha256="ae50e4e5500d212fac5f7223232da036320d18fc8a323a56b4431e3b26c4a694",
        dataset="mnist",
        threat_model="linf",
        eps=0.3,
        description="ARNAS genotype reduced to C=4 and 5 cells (CPU budget), PGD adversarially trained on the first 6000 rows of the MNIST train subset, l_inf eps 0.3.",
        folder="arnas.mnist_linf_cpu_c4l5",
    )
)
register(
    PretrainedSpec(
        name="darts_v2.mnist_linf_cpu_c4l5",
        arch="darts_v2",
        sha256="454cd372883280bf63d851426dda81a2f83a5a28d3c6cd67cdebceece295b015",
        dataset="mnist",
        threat_model="linf",
        eps=0.3,
        description="DARTS_V2 genotype reduced to C=4 and 5 cells (CPU budget), same recipe and budget as arnas.mnist_linf_cpu_c4l5, l_inf eps 0.3.",
        folder="darts_v2.mnist_linf_cpu_c4l5",
    )
)
register(
    PretrainedSpec(
        name="resnet18.mnist_linf_cpu_w8",
        arch="resnet18",
        sha256="f877f20cdd9ee40b34a1d9e09c54a344c4509f8352bedacc3db254d1d6779f47",
        dataset="mnist",
        threat_model="linf",
        eps=0.3,
        description="ResNet-18 (CIFAR stem) at width 8 (CPU budget), same recipe and budget as arnas.mnist_linf_cpu_c4l5, l_inf eps 0.3.",
        folder="resnet18.mnist_linf_cpu_w8",
    )
)
register(
    PretrainedSpec(
        name="arnas.cifar10_linf_cpu_c4l5",
        arch="arnas",
        sha256="78bf0f46433746b8a6e5c0f9a2bf683241258231321867b39f37fb72a43d476a",
        dataset="cifar10",
        threat_model="linf",
        eps=0.03137254901960784,
        description="ARNAS genotype reduced to C=4 and 5 cells (CPU budget), PGD adversarially trained on rows 0-4550 of the CIFAR-10 train subset, l_inf eps 8/255.",
        folder="arnas.cifar10_linf_cpu_c4l5",
    )
)
register(
    PretrainedSpec(
        name="darts_v2.cifar10_linf_cpu_c4l5",
        arch="darts_v2",
        sha256="5a8838e4c2ffb8cda422bd39e25d3a52c703324f131d30d89dfc3dd07e85478a",
        dataset="cifar10",
        threat_model="linf",
        eps=0.03137254901960784,
        description="DARTS_V2 genotype reduced to C=4 and 5 cells (CPU budget), same recipe and budget as arnas.cifar10_linf_cpu_c4l5, l_inf eps 8/255.",
        folder="darts_v2.cifar10_linf_cpu_c4l5",
    )
)
