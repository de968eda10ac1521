"""The Hugging Face Hub settings in effect and the local cache, without importing torch.

The environment is read at call time, not at import: ``HF_ENDPOINT`` (a mirror or a local server),
``HF_HUB_OFFLINE=1`` (cache only), ``HF_HUB_CACHE`` / ``HF_HOME`` (where the cache lives).
"""

from __future__ import annotations

import os
from pathlib import Path

_TRUE = {"1", "on", "yes", "true"}
DEFAULT_ENDPOINT = "https://huggingface.co"


def hub_endpoint() -> str:
    """The Hub endpoint in effect now: ``$HF_ENDPOINT`` or huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set now (huggingface_hub itself reads it only at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def hub_cache_dir() -> str | None:
    """``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else None (huggingface_hub's default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def cached_file(repo_id: str, filename: str, revision: str) -> Path | None:
    """``filename`` of ``repo_id`` at ``revision`` when it is in the local cache, else None (no network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=hub_cache_dir(), revision=revision)
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None
