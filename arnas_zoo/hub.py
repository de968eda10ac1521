"""One-call loading: a pretrained registry name, a Hugging Face Hub repo, or a local folder.

>>> import arnas_zoo
>>> model = arnas_zoo.load("./runs/mnist")           # a checkpoint folder           # doctest: +SKIP
>>> model = arnas_zoo.load("org/arnas-mnist@v1.0")   # a Hub repo at a tag/commit    # doctest: +SKIP
>>> model = arnas_zoo.load("arnas.mnist_linf")       # a pinned registry entry       # doctest: +SKIP

Whatever the source, the result is the same: the network rebuilt from ``config.json``, the
``model.safetensors`` weights loaded strictly, in eval mode on ``device``, with ``.config`` and
``.metrics`` (the folder's metrics.json, or None) attached. Inputs are [0, 1] NCHW images.

Hub downloads go through ``huggingface_hub`` (its cache, token and revision handling). The
environment is read at call time, not at import: ``HF_ENDPOINT`` (a mirror or a local server),
``HF_HUB_OFFLINE=1`` (cache only), ``HF_HUB_CACHE`` / ``HF_HOME`` (where the cache lives) and
``HF_TOKEN``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from arnas_zoo.checkpoint import CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE, load_folder
from arnas_zoo.devices import resolve_device
from arnas_zoo.errors import ArnasZooError, CheckpointError, UnknownModelError
from arnas_zoo.hub_cache import hub_cache_dir, hub_endpoint, hub_offline
from arnas_zoo.models import ZooModel
from arnas_zoo.pretrained import PretrainedSpec, get_pretrained
from arnas_zoo.sources import Source, resolve, validate_repo_id, validate_revision

# What a model repo must hold; anything else in it (README.md, model.onnx, ...) is not downloaded.
HUB_FILES = (CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE)


class HubUnavailableError(ArnasZooError, ConnectionError):
    """A Hub model is neither in the local cache nor downloadable (offline mode or no connection)."""


def download(
    repo_id: str,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Fetch config.json, model.safetensors and metrics.json of a Hub repo; return the snapshot folder.

    Uses the huggingface_hub cache, so a second call (or one with ``HF_HUB_OFFLINE=1``) needs no
    network. Raises HubUnavailableError (offline, not cached), UnknownModelError (no such repo or
    revision) or CheckpointError (the repo is not an arnas-zoo model: no config.json).
    """
    # Imported here so that `import arnas_zoo` stays light for users who never touch the Hub.
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    validate_repo_id(repo_id)
    if revision is not None:
        validate_revision(revision)
    endpoint = hub_endpoint()
    offline = hub_offline()
    where = f"{repo_id}@{revision or 'main'}"
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            token=token,
            cache_dir=str(cache_dir) if cache_dir is not None else hub_cache_dir(),
            allow_patterns=list(HUB_FILES),
            endpoint=endpoint,
            local_files_only=offline,
        )
    except RevisionNotFoundError:
        raise UnknownModelError(
            f"Hub repo {repo_id!r} has no revision {revision!r} at {endpoint}; use a branch, tag or commit it has"
        ) from None
    except GatedRepoError:
        raise HubUnavailableError(
            f"Hub repo {repo_id!r} is gated at {endpoint}: accept its terms on the Hub and pass token= "
            "(or set HF_TOKEN)"
        ) from None
    except RepositoryNotFoundError:
        # Some Hub-compatible servers (mirrors) answer an unknown revision with "repo not found".
        at = f" at revision {revision!r}" if revision is not None else ""
        raise UnknownModelError(
            f"Hub repo {repo_id!r}{at} not found at {endpoint} (check the repo id{' and revision' if at else ''}; "
            "a private repo needs token= or HF_TOKEN)"
        ) from None
    except LocalEntryNotFoundError:
        if offline:
            raise HubUnavailableError(
                f"{where} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1: run once with network access "
                "(unset HF_HUB_OFFLINE) to cache it, or load a local folder instead"
            ) from None
        raise HubUnavailableError(
            f"{where}: cannot reach {endpoint} and the model is not in the local cache; check the connection "
            "(or HF_ENDPOINT), or set HF_HUB_OFFLINE=1 after a first download"
        ) from None
    except HfHubHTTPError as exc:
        raise HubUnavailableError(f"{where}: the Hub at {endpoint} answered {exc.response.status_code}") from None
    folder_path = Path(folder)
    if not _is_snapshot(folder_path):
        raise CheckpointError(
            f"{where}: the Hugging Face cache resolved it to {folder_path}, which is not a snapshot folder "
            "(a tampered refs/ file?); delete that repo from the cache (huggingface-cli delete-cache) and retry"
        )
    if not (folder_path / CONFIG_FILE).is_file():
        raise CheckpointError(
            f"Hub repo {where} has no {CONFIG_FILE}: it is not an arnas-zoo model "
            "(publish one with `arnas-zoo export hub FOLDER --repo-id ORG/NAME`)"
        )
    if not (folder_path / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"Hub repo {where} has no {WEIGHTS_FILE} (only safetensors weights are loaded)")
    return folder_path


def _is_snapshot(folder: Path) -> bool:
    """A cache answer must be ``.../snapshots/<40-hex commit>`` (a refs file holding '../..' escapes it)."""
    import re

    return folder.parent.name == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", folder.name) is not None


def load_pretrained(
    spec: PretrainedSpec,
    device: str | torch.device = "cpu",
    token: str | bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ZooModel:
    """Load a registry entry from its bundled folder or pinned Hub commit, checking every pinned file's sha256."""
    if spec.folder is not None:
        folder = spec.bundled_path()
        if not folder.is_dir():
            raise CheckpointError(
                f"pretrained {spec.name!r}: bundled folder {folder} is missing from this installation; "
                "reinstall arnas-zoo"
            )
    else:
        assert spec.repo_id is not None  # guaranteed by PretrainedSpec validation, not user input
        folder = download(spec.repo_id, spec.revision, token=token, cache_dir=cache_dir)
    model = load_folder(folder, device=device, expected_sha256=spec.pins())
    model.pretrained = spec  # type: ignore[assignment]
    return model


def load_source(
    source: Source,
    device: str | torch.device = "cpu",
    token: str | bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ZooModel:
    """The model a resolved :class:`~arnas_zoo.sources.Source` names (folder, Hub repo or pinned entry)."""
    dev = resolve_device(device)
    if source.kind == "folder":
        assert source.path is not None
        if not source.path.is_dir():
            raise CheckpointError(
                f"{source.path}: no such folder; expected a checkpoint folder (config.json + model.safetensors)"
            )
        return load_folder(source.path, device=dev)
    if source.kind == "hub":
        assert source.repo_id is not None
        return load_folder(download(source.repo_id, source.revision, token=token, cache_dir=cache_dir), device=dev)
    if source.kind == "pretrained":
        return load_pretrained(get_pretrained(str(source.name)), device=dev, token=token, cache_dir=cache_dir)
    raise UnknownModelError(f"{source.spec!r}: a {source.kind} source has no trained weights to load")


def load(
    spec: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ZooModel:
    """Load a ready-to-use model in one call.

    Args:
        spec: one of
            - a pretrained registry name: ``"arnas.mnist_linf_cpu_c4l5"`` (pinned, sha256-checked);
            - a Hub repo: ``"org/name"``, ``"org/name@v1.0"`` (tag, branch or commit after ``@``);
            - a local checkpoint folder: ``"./folder"``, an absolute path, or any existing directory
              (an existing directory wins over a Hub id of the same spelling).
        device: where the model goes (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a torch.device; ``"auto"``
            picks CUDA when present).
        revision: Hub revision (branch, tag or commit); same as ``@rev`` in ``spec``.
        token: Hub token for private repos (default: huggingface_hub's, e.g. ``HF_TOKEN``).
        cache_dir: Hub cache folder (default: ``HF_HUB_CACHE`` / ``HF_HOME`` / ~/.cache/huggingface).

    Returns:
        The model in eval mode on ``device`` with ``.config`` (ModelConfig) and ``.metrics``
        (dict or None) attached.

    Raises:
        UnknownModelError: unknown registry name (with close matches), unknown Hub repo or revision.
        HubUnavailableError: offline (``HF_HUB_OFFLINE=1``) or unreachable Hub, and not cached.
        CheckpointError: the folder/repo has no config.json, weights that do not fit the config, or a
            file whose sha256 differs from the registry's pin.
        ConfigError: contradictory or malformed arguments (a revision for a folder, ``org/..``).

    Warns (``UserWarning``) when a registry name is superseded by a better entry; it still loads.
    """
    _warn_if_superseded(spec)
    return load_source(resolve(spec, revision), device=device, token=token, cache_dir=cache_dir)


def _warn_if_superseded(spec: str | os.PathLike[str]) -> None:
    import warnings

    from arnas_zoo.pretrained import get_pretrained, is_pretrained

    name = str(spec)
    better = get_pretrained(name).superseded_by if is_pretrained(name) else None
    if better:
        warnings.warn(f"{name} is superseded by {better} (arnas_zoo.load({better!r})); loading it anyway", stacklevel=3)
