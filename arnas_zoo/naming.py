"""One name everywhere: every command and function that takes a model reads it here.

A user names a network in any of these forms, and every reader (``info``, ``draw``, ``genotype``,
``export onnx``, ``export card``, ``create_model``, ``load``) accepts all that make sense for it:

- an architecture of the registry (``arnas``): its default config, random weights;
- a pretrained zoo name (``arnas.cifar10_linf_cpu_c4l5_mix``): the pinned checkpoint, sha256-checked;
- a Hub spec (``org/name[@rev]``): a published checkpoint;
- a checkpoint folder, a ``config.json`` or a genotype JSON file.

This module sits above :mod:`arnas_zoo.registry`, :mod:`arnas_zoo.sources` and
:mod:`arnas_zoo.pretrained` and none of them imports it, so it adds no import cycle.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arnas_zoo.atomic import replacing
from arnas_zoo.checkpoint import CONFIG_FILE, read_config, sha256_file
from arnas_zoo.config import ModelConfig
from arnas_zoo.errors import CheckpointError, ConfigError, UnknownModelError
from arnas_zoo.pretrained import get_pretrained, is_pretrained, list_pretrained
from arnas_zoo.registry import is_registered, normalize_name, resolve_config
from arnas_zoo.sources import parse_hub_id, resolve, unknown_spec

if TYPE_CHECKING:
    import torch

    from arnas_zoo.models import ZooModel


def checkpoint_folder(spec: str | os.PathLike[str], *, token: str | bool | None = None) -> Path:
    """The folder holding ``spec``'s ``config.json`` and weights: a folder as given, a zoo entry's pinned
    folder (bundled, or its Hub commit downloaded), or a Hub repo's snapshot.

    Raises UnknownModelError (with close matches) for a name that is none of these, and
    CheckpointError when a zoo entry's config.json does not match its sha256 pin.
    """
    source = resolve(spec)
    if source.kind == "folder":
        assert source.path is not None
        if not (source.path / CONFIG_FILE).is_file():
            raise CheckpointError(f"{source.path}: not a checkpoint folder (no {CONFIG_FILE})")
        return source.path
    from arnas_zoo.hub import download  # the Hub client is imported only for Hub sources

    if source.kind == "hub":
        assert source.repo_id is not None
        return download(source.repo_id, source.revision, token=token)
    entry = get_pretrained(str(source.name))
    if entry.folder is not None:
        folder = entry.bundled_path()
    else:
        assert entry.repo_id is not None  # PretrainedSpec validation guarantees it
        folder = download(entry.repo_id, entry.revision, token=token)
    found = sha256_file(folder / CONFIG_FILE)
    if entry.config_sha256 is not None and found != entry.config_sha256:
        raise CheckpointError(
            f"pretrained {entry.name!r}: config.json has sha256 {found[:12]}..., the registry pins "
            f"{entry.config_sha256[:12]}...; reinstall arnas-zoo"
        )
    return folder


def is_model_name(target: str) -> bool:
    """Whether ``target`` is spelled as a zoo name or a Hub spec (not a path, not an architecture)."""
    if is_registered(target) or Path(target).exists() or target.endswith(".json"):
        return False
    if is_pretrained(target):
        return True
    try:
        return parse_hub_id(target) is not None
    except ConfigError:
        return False


def config_of(target: str, **overrides: Any) -> ModelConfig:
    """The config ``target`` names, in any of the module's forms, with macro ``overrides`` applied."""
    if is_model_name(target):
        config = read_config(checkpoint_folder(target))
        return config.replace(**overrides) if overrides else config
    path = Path(target)
    if path.exists() or path.suffix == ".json" or is_registered(target):
        return resolve_config(target, **overrides)
    raise unknown_spec(target)


def create_model(
    name: str, pretrained: bool = False, *, device: str | torch.device = "cpu", **overrides: Any
) -> ZooModel:
    """Build a network by name, timm's way: ``pretrained=True`` returns what :func:`arnas_zoo.load` returns.

    Args:
        name: an architecture (``"arnas"``), a zoo name (``"arnas.cifar10_linf_cpu_c4l5_mix"``) or, with
            ``pretrained=True``, a Hub spec or checkpoint folder.
        pretrained: load the trained, pinned weights. An architecture name then stands for its one
            current zoo model; when it has several, the error lists them.
        device: where the model goes.
        overrides: config fields (``init_channels=8``, ``num_classes=100``); not with ``pretrained``,
            whose weights fix the architecture.

    Without ``pretrained`` a zoo name builds that checkpoint's architecture with random weights.
    """
    from arnas_zoo.models import build_model

    if pretrained:
        if overrides:
            raise ConfigError(
                f"create_model({name!r}, pretrained=True): pretrained weights fix the architecture; "
                f"drop {', '.join(sorted(overrides))} (or build random weights without pretrained=True)"
            )
        from arnas_zoo.hub import load

        return load(default_pretrained(name) if is_registered(name) else name, device=device)
    if is_registered(name):
        from arnas_zoo.registry import create_model as build_arch

        return build_arch(name, **overrides).to(device)
    return build_model(config_of(name, **overrides)).to(device)


def default_pretrained(arch: str) -> str:
    """The zoo name ``create_model(arch, pretrained=True)`` loads: the architecture's one current entry."""
    current = [s.name for s in list_pretrained(arch=normalize_name(arch), include_superseded=False)]
    if len(current) == 1:
        return current[0]
    if not current:
        raise UnknownModelError(
            f"{arch!r} has no pretrained weights in the zoo yet; use create_model({arch!r}) for random weights "
            "(arnas-zoo pretrained lists what is trained)"
        )
    raise UnknownModelError(
        f"{arch!r} has {len(current)} pretrained models ({', '.join(current)}); name one, e.g. "
        f"create_model({current[0]!r}, pretrained=True)"
    )


def copy_checkpoint(spec: str, dest: str | os.PathLike[str], *, token: str | bool | None = None) -> Path:
    """Copy ``spec``'s checkpoint files (config, weights, metrics) into the folder ``dest``; return it.

    For commands that write beside a checkpoint (``export onnx`` adds model.onnx and onnx.json) when the
    checkpoint is a zoo entry or a Hub snapshot, which must stay as pinned. A zoo entry's copied files
    are checked against every sha256 pin. ``dest`` may already hold the same checkpoint; a different
    one is refused, never overwritten.
    """
    import shutil

    from arnas_zoo.checkpoint import METRICS_FILE, WEIGHTS_FILE

    source = checkpoint_folder(spec, token=token)
    dest = Path(dest)
    pins = get_pretrained(spec).pins() if is_pretrained(spec) else {}
    names = [n for n in (CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE) if (source / n).is_file()]
    for name in names:
        if (dest / name).is_file() and sha256_file(dest / name) != sha256_file(source / name):
            raise CheckpointError(
                f"{dest}: already holds a different {name} than {spec!r}; choose another output folder"
            )
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        if not (dest / name).is_file():
            with replacing(dest / name) as tmp:
                shutil.copyfile(source / name, tmp)
        if name in pins and sha256_file(dest / name) != pins[name]:
            raise CheckpointError(f"{dest / name}: sha256 differs from the registry's pin for {spec!r}")
    return dest


def folder_name(spec: str) -> str:
    """A folder name for ``spec``'s local copy: the zoo name, or the Hub repo's name (``org/x@v1`` -> ``x``)."""
    if is_pretrained(spec):
        return normalize_name(spec)
    hub = parse_hub_id(spec)
    if hub is not None:
        return hub[0].split("/")[1]
    return Path(spec).name
