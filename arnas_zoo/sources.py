"""The one place that decides what a model spec names.

A user names a model in one of five ways, and every command (``load``, ``eval``, ``check``,
``predict``, ``export``) reads the spec through :func:`resolve`:

==============  ======================================  =========================================
kind            spelling                                 resolved to
==============  ======================================  =========================================
``folder``      an existing directory, ``./x``, ``/x``   a checkpoint folder (config + weights)
``onnx``        a path ending in ``.onnx``               an ONNX file (only where ONNX is accepted)
``hub``         ``org/name`` or ``org/name@rev``          a Hugging Face Hub repo at a revision
``pretrained``  ``arch.variant`` (``arnas.mnist_...``)    a pinned registry entry (sha256-checked)
``arch``        a registry architecture (``arnas``)       random weights (only where allowed)
==============  ======================================  =========================================

Hub ids and revisions are validated before any cache or network access: no ``..`` or ``.``
components, no backslashes, bounded lengths, so a spec cannot make the offline loader read files
outside the Hub cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arnas_zoo.errors import ConfigError, UnknownModelError
from arnas_zoo.hub_ids import validate_repo_id, validate_revision

MAX_SPEC_LENGTH = 1024
KINDS = ("folder", "onnx", "hub", "pretrained", "arch")


@dataclass(frozen=True)
class Source:
    """What a spec names; ``describe()`` is what reports record about it."""

    kind: str
    spec: str
    path: Path | None = None
    repo_id: str | None = None
    revision: str | None = None
    name: str | None = None  # pretrained or architecture name

    def describe(self) -> dict[str, Any]:
        if self.kind in ("folder", "onnx"):
            return {"kind": self.kind, "path": str(self.path)}
        if self.kind == "hub":
            from arnas_zoo.hub_cache import hub_endpoint

            return {"kind": "hub", "repo_id": self.repo_id, "revision": self.revision, "endpoint": hub_endpoint()}
        if self.kind == "pretrained":
            from arnas_zoo.pretrained import get_pretrained

            entry = get_pretrained(str(self.name))
            return {"kind": "pretrained", "name": entry.name, "source": entry.source, "sha256": entry.sha256}
        return {"kind": "arch", "name": self.name}

    @property
    def location(self) -> str:
        """One string saying where the model comes from (folder path, ``org/name@rev``, registry name)."""
        if self.path is not None:
            return str(self.path)
        if self.kind == "hub":
            return f"{self.repo_id}@{self.revision or 'main'}"
        return str(self.name)


def parse_hub_id(spec: str) -> tuple[str, str | None] | None:
    """``"org/name@rev"`` -> ``("org/name", "rev")`` (validated); None when ``spec`` is not Hub-shaped."""
    text = spec.strip()
    head, at, rev = text.partition("@")
    if head.count("/") != 1 or head.startswith(("/", ".", "~")):
        return None
    validate_repo_id(head)
    return head, (validate_revision(rev) if at else None)


def _looks_like_path(spec: str) -> bool:
    return (
        spec.startswith(("./", "../", "/", "~", ".\\", "..\\"))
        or spec in (".", "..")
        or Path(spec).expanduser().is_dir()
    )


def is_onnx_path(spec: str | os.PathLike[str]) -> bool:
    return str(spec).lower().endswith(".onnx")


def resolve(
    spec: str | os.PathLike[str],
    revision: str | None = None,
    *,
    allow_onnx: bool = False,
    allow_arch: bool = False,
) -> Source:
    """Decide what ``spec`` names (see the module docstring); unknown or malformed specs raise typed errors.

    An existing directory wins over a Hub id of the same spelling. ``revision`` applies to Hub ids only.
    """
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"model: expected a registry name, 'org/name[@rev]' or a folder path, got {spec!r:.80}")
    spec = spec.strip()
    if len(spec) > MAX_SPEC_LENGTH:
        raise ConfigError(f"model: a spec of {len(spec)} characters exceeds the limit of {MAX_SPEC_LENGTH}")
    if revision is not None:
        validate_revision(revision)
    if is_onnx_path(spec):
        if not allow_onnx:
            raise ConfigError(
                f"{spec[:80]}: an ONNX file is not accepted here; give the checkpoint folder it came from"
            )
        _no_revision(revision, spec)
        return Source("onnx", spec, path=Path(spec).expanduser())
    if _looks_like_path(spec):
        _no_revision(revision, spec)
        return Source("folder", spec, path=Path(spec).expanduser())
    hub = parse_hub_id(spec)
    if hub is not None:
        repo_id, at_revision = hub
        if at_revision is not None and revision is not None and at_revision != revision:
            raise ConfigError(f"load: two revisions given: {spec!r} and revision={revision!r}; give one")
        return Source("hub", spec, repo_id=repo_id, revision=at_revision or revision)
    from arnas_zoo.pretrained import is_pretrained
    from arnas_zoo.registry import is_registered, normalize_name

    if is_pretrained(spec):
        if revision is not None:
            raise ConfigError(
                f"load: {spec!r} is pinned by the registry; revision= applies to Hub ids ('org/name@rev')"
            )
        return Source("pretrained", spec, name=normalize_name(spec))
    if allow_arch and is_registered(spec):
        return Source("arch", spec, name=normalize_name(spec))
    raise unknown_spec(spec)


def _no_revision(revision: str | None, spec: str) -> None:
    if revision is not None:
        raise ConfigError(f"load: revision={revision!r} does not apply to the local path {spec[:80]!r}")


def unknown_spec(spec: str) -> UnknownModelError:
    """The error for a spec that names nothing, with close matches among pretrained and architecture names."""
    import difflib

    from arnas_zoo.pretrained import list_pretrained
    from arnas_zoo.registry import is_registered, list_archs, normalize_name

    known = [s.name for s in list_pretrained()]
    if is_registered(spec):
        trained = [name for name in known if name.split(".")[0] == normalize_name(spec)]
        hint = f"pretrained: {', '.join(trained)}" if trained else "no pretrained weights are registered for it yet"
        return UnknownModelError(
            f"{spec!r} is an architecture, not a pretrained model ({hint}); "
            f"use arnas_zoo.create_model({spec!r}) for random weights"
        )
    archs = [arch.name for arch in list_archs()]
    close = difflib.get_close_matches(normalize_name(spec), known + archs, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    pretrained = ", ".join(sorted(known)) or "none registered yet"
    return UnknownModelError(
        f"unknown model {spec[:80]!r}{hint} (pretrained: {pretrained}; architectures for random weights: "
        f"{', '.join(sorted(archs))}); or give a Hub id 'org/name[@rev]' or a checkpoint folder './path'"
    )
