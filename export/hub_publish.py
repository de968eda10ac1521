"""Publishing a checkpoint folder to the Hugging Face Hub.

:func:`build_hub_folder` writes the Hub-ready folder (DESIGN.md): config.json, model.safetensors,
metrics.json, README.md (model card from :mod:`export.card`) and, when the checkpoint was exported,
model.onnx with its onnx.json record. :func:`publish` creates the repo, uploads the folder in one
commit, optionally tags that commit, and returns the commit id to pin in the pretrained registry.

The endpoint is ``$HF_ENDPOINT`` read at call time (huggingface.co by default), the token
``token=`` or huggingface_hub's own (``HF_TOKEN`` / ``hf auth login``).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from arnas_zoo.checkpoint import (
    CONFIG_FILE,
    METRICS_FILE,
    WEIGHTS_FILE,
    atomic_write_json,
    atomic_write_text,
    load_folder,
    read_config,
    sha256_file,
)
from arnas_zoo.errors import ArnasZooError, CheckpointError, ConfigError
from arnas_zoo.hub_cache import hub_endpoint
from arnas_zoo.sources import parse_hub_id

from .card import GENOTYPE_PICTURE, LAYOUT_PICTURE, render_card
from .onnx_export import ONNX_RECORD, read_onnx_record

ONNX_FILE = "model.onnx"


class PublishError(ArnasZooError, RuntimeError):
    """The Hub refused an upload step (authentication, permissions, a conflicting tag...)."""


@dataclass(frozen=True)
class Published:
    """What :func:`publish` did: where, which commit, which tag, and the weights' sha256."""

    repo_id: str
    commit: str
    tag: str | None
    url: str
    sha256: str
    folder: Path


def build_hub_folder(
    folder: str | os.PathLike[str],
    out: str | os.PathLike[str],
    repo_id: str | None = None,
    license: str = "mit",
    include_onnx: bool = True,
) -> Path:
    """Write the Hub-ready copy of checkpoint ``folder`` into ``out`` (created; must be empty or absent).

    The checkpoint is loaded first (strictly), so a folder whose weights do not fit its config
    is never published.
    """
    folder, out = Path(folder), Path(out)
    load_folder(folder)  # validates config + weights before anything is written
    if out.resolve() == folder.resolve():
        raise ConfigError(f"--out {out}: must differ from the checkpoint folder")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: exists and is not empty; choose another --out or remove it")
    out.mkdir(parents=True, exist_ok=True)
    names = [CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE]
    records = read_onnx_record(folder) or {}
    if include_onnx and (folder / ONNX_FILE).is_file():
        if ONNX_FILE not in records or records[ONNX_FILE].get("sha256") != sha256_file(folder / ONNX_FILE):
            raise CheckpointError(
                f"{folder / ONNX_FILE}: no passing parity record for this file in {ONNX_RECORD}; "
                "re-export it with `python -m export onnx FOLDER` (or publish with --no-onnx)"
            )
        names.append(ONNX_FILE)
        # only this file's record: other entries name local paths of the machine that exported them
        atomic_write_json(out / ONNX_RECORD, {ONNX_FILE: records[ONNX_FILE]})
    for name in names:
        if (folder / name).is_file():
            shutil.copy2(folder / name, out / name)
    config = read_config(out)
    if config.genotype is not None:
        from arnas_zoo.draw import draw_genotype, draw_layout

        draw_genotype(config.genotype, out / GENOTYPE_PICTURE)
        draw_layout(config, out / LAYOUT_PICTURE)
    # Rendered from the copy, so the card describes exactly the files that are uploaded.
    atomic_write_text(out / "README.md", render_card(out, repo_id, license))
    return out


def check_hub_folder(folder: str | os.PathLike[str], out: str | os.PathLike[str], repo_id: str) -> Path:
    """Require that ``out`` is a Hub-ready copy of checkpoint ``folder`` for ``repo_id``, to publish as it is:
    its config.json, model.safetensors and metrics.json are ``folder``'s byte for byte (sha256) and its
    card names ``repo_id``. Raises ConfigError saying what differs."""
    folder, out = Path(folder), Path(out)
    if not (out / "README.md").is_file():
        raise ConfigError(f"{out}: no Hub-ready folder here (no README.md); build it without --reuse")
    for name in (CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE):
        if not (out / name).is_file() or sha256_file(out / name) != sha256_file(folder / name):
            raise ConfigError(f"{out / name}: not {folder / name}; rebuild the Hub-ready folder (without --reuse)")
    if repo_id not in (out / "README.md").read_text(encoding="utf-8"):
        raise ConfigError(f"{out}/README.md: its card is not for {repo_id}; rebuild it for this --repo-id")
    return out


def publish(
    hub_folder: str | os.PathLike[str],
    repo_id: str,
    tag: str | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
) -> Published:
    """Create ``repo_id`` (if needed), upload ``hub_folder`` as one commit, tag it; return the commit."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    hub_folder = Path(hub_folder)
    parsed = parse_hub_id(repo_id)
    if parsed is None or parsed[1] is not None:
        raise ConfigError(f"--repo-id: expected 'org/name' (no @revision), got {repo_id!r}")
    if not (hub_folder / CONFIG_FILE).is_file() or not (hub_folder / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"{hub_folder}: not a Hub-ready folder (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    endpoint = hub_endpoint()
    api = HfApi(endpoint=endpoint, token=token)
    message = commit_message or f"Upload {hub_folder.name} with arnas-zoo" + (f" ({tag})" if tag else "")
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            folder_path=str(hub_folder), repo_id=repo_id, repo_type="model", commit_message=message
        )
        commit = str(info.oid)
        if tag is not None:
            api.create_tag(repo_id, tag=tag, revision=commit, repo_type="model", tag_message=message)
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise PublishError(
            f"{endpoint}: publishing {repo_id} failed with HTTP {status}: {str(exc).splitlines()[0]}"
        ) from None
    return Published(
        repo_id=repo_id,
        commit=commit,
        tag=tag,
        url=f"{endpoint}/{repo_id}",
        sha256=sha256_file(hub_folder / WEIGHTS_FILE),
        folder=hub_folder,
    )
