"""A private Hugging Face Hub repo as the place runs are parked (:mod:`arnas_zoo.runs.park`).

Each park is one commit of the staged snapshot (the Hub keeps every earlier one in the repo's history);
an unpark reads ``PARKED.json`` at one commit and then exactly the files it lists, from that same commit,
so a park landing meanwhile cannot mix two snapshots. Files a later park no longer lists stay in the repo
and are never downloaded. Credentials are huggingface_hub's own (``HF_TOKEN`` or ``token=``); the endpoint
is ``$HF_ENDPOINT`` or huggingface.co.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from arnas_zoo.errors import ArnasZooError
from arnas_zoo.hub_cache import hub_endpoint
from arnas_zoo.hub_ids import validate_repo_id, validate_revision

__all__ = ["ParkTransferError", "download", "previous_manifest", "upload"]


class ParkTransferError(ArnasZooError, RuntimeError):
    """The Hub refused or failed a park or an unpark (HTTP status and message in the text)."""


def _failed(what: str, repo_id: str, exc: Exception) -> ParkTransferError:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    why = f"HTTP {status}" if status is not None else type(exc).__name__
    first = (str(exc).splitlines() or [""])[0][:200]
    return ParkTransferError(f"{hub_endpoint()}: {what} {repo_id} failed ({why}): {first}")


def _transfer_errors() -> tuple[type[Exception], ...]:
    """What a failed request raises: the Hub's HTTP errors, and the HTTP client's own base class (the
    one HfHubHTTPError derives from), which connection failures raise directly (refused, timed out)."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    client = [c for c in HfHubHTTPError.__mro__[1:] if issubclass(c, Exception) and c.__name__ == "HTTPError"]
    return (HfHubHTTPError, LocalEntryNotFoundError, OSError, *client)


def upload(staged: Path, repo_id: str, manifest: dict[str, Any], token: str | None = None) -> str:
    """Commit the staged snapshot to the private model repo ``repo_id`` (created if needed); the commit id."""
    from huggingface_hub import HfApi

    validate_repo_id(repo_id)
    runs = ", ".join(f"{name} e{run.get('epoch')}s{run.get('step')}" for name, run in sorted(manifest["runs"].items()))
    message = f"park {len(manifest['files'])} files at {manifest['parked_at']}" + (f": {runs}" if runs else "")
    api = HfApi(endpoint=hub_endpoint(), token=token)
    try:
        api.create_repo(repo_id, private=True, exist_ok=True, repo_type="model")
        info = api.upload_folder(folder_path=str(staged), repo_id=repo_id, repo_type="model", commit_message=message)
    except _transfer_errors() as exc:
        raise _failed("parking to", repo_id, exc) from None
    return str(info.oid)


def previous_manifest(repo_id: str, into: Path, token: str | None = None) -> dict[str, Any] | None:
    """The manifest of the last park in ``repo_id`` (main), or None when there is none (no repo, no park)."""
    from arnas_zoo.runs.park_manifest import NothingParkedError, read_manifest

    try:
        folder = download(repo_id, into / "previous", token=token, manifest_only=True)
    except NothingParkedError:
        return None
    return read_manifest(folder)


def download(
    repo_id: str, into: Path, revision: str | None = None, token: str | None = None, manifest_only: bool = False
) -> Path:
    """Download the snapshot parked at ``repo_id`` (latest, or ``revision``) into ``into/snapshot``."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    from arnas_zoo.runs.park_manifest import MANIFEST, NothingParkedError, read_manifest

    validate_repo_id(repo_id)
    if revision is not None:
        validate_revision(revision)
    endpoint = hub_endpoint()
    folder = into / "snapshot"
    failures: tuple[type[Exception], ...] = (json.JSONDecodeError, *_transfer_errors())
    try:
        api = HfApi(endpoint=endpoint, token=token)
        commit = api.repo_info(repo_id, revision=revision or "main", repo_type="model").sha
        if commit is None:
            raise ParkTransferError(f"{endpoint}: {repo_id} did not say which commit {revision or 'main'} is")
        hf_hub_download(repo_id, MANIFEST, revision=commit, local_dir=folder, token=token, endpoint=endpoint)
        if manifest_only:
            return folder
        files = sorted(read_manifest(folder)["files"])
        snapshot_download(
            repo_id, revision=commit, allow_patterns=files, local_dir=folder, token=token, endpoint=endpoint
        )
    except RepositoryNotFoundError:
        raise NothingParkedError(
            f"{endpoint}: no repo {repo_id} (nothing parked there yet, or a private repo without HF_TOKEN)"
        ) from None
    except EntryNotFoundError:
        raise NothingParkedError(f"{endpoint}: {repo_id} holds no {MANIFEST}; nothing has been parked there") from None
    except failures as exc:
        raise _failed("unparking from", repo_id, exc) from None
    return folder
