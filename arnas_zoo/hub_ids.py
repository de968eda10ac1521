"""What the Hugging Face Hub accepts as a repository id and a revision: checked before any request or path.

A leaf module (the standard library and :mod:`arnas_zoo.errors`), so the registry of pretrained models and
the source resolver can both use it without importing each other.
"""

from __future__ import annotations

import re

from arnas_zoo.errors import ConfigError

__all__ = ["MAX_REVISION_LENGTH", "validate_repo_id", "validate_revision"]

MAX_REVISION_LENGTH = 255
_REPO_PART = r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9])?"
_REPO_ID = re.compile(rf"^{_REPO_PART}/{_REPO_PART}$")
_REVISION = re.compile(r"^[\w.\-/]+$")


def validate_repo_id(repo_id: str) -> str:
    """``org/name`` as the Hub allows it (letters, digits, ``-_.``; no ``..``/``--`` runs), else ConfigError."""
    if len(repo_id) > 200 or not _REPO_ID.match(repo_id) or ".." in repo_id or "--" in repo_id:
        raise ConfigError(f"Hub repo id: expected 'org/name' (letters, digits, - _ .), got {repo_id[:80]!r}")
    return repo_id


def validate_revision(revision: str) -> str:
    """A branch, tag, ``refs/pr/N`` or commit: bounded, no ``.``/``..`` components, no backslash."""
    parts = revision.split("/")
    if (
        not revision
        or len(revision) > MAX_REVISION_LENGTH
        or not _REVISION.match(revision)
        or any(p in ("", ".", "..") for p in parts)
        or revision.endswith(".lock")
    ):
        raise ConfigError(
            f"Hub revision: expected a branch, tag or commit (at most {MAX_REVISION_LENGTH} characters of letters, "
            f"digits, - _ . /, no '..' parts), got {revision[:80]!r}"
        )
    return revision
