"""What every network of the zoo shares, and the registry of builder families.

A *family* is one kind of network (genotype-built cell networks, ResNets, WideResNets, ...). Each
family registers itself next to its classes with :func:`register_family`; :func:`build_model`
dispatches on ``config.arch``. Adding a family is one new module and one decorator: no list of
names elsewhere to keep in step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from arnas_zoo.config import ModelConfig, max_params
from arnas_zoo.errors import ConfigError, DuplicateNameError


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` inside the model, so that inputs stay in [0, 1]."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def input_normalization(config: ModelConfig) -> nn.Module:
    """The model's first module: :class:`Normalize` when the config has mean/std, else identity."""
    if config.mean is not None and config.std is not None:
        return Normalize(config.mean, config.std)
    return nn.Identity()


class ZooModel(nn.Module):
    """Common interface of every network in the zoo.

    ``forward(x)`` takes [0, 1] NCHW images and returns logits. ``forward_train(x)`` returns
    ``(logits, aux_logits)`` where ``aux_logits`` is None unless the model has an auxiliary head
    and is in training mode.
    """

    config: ModelConfig

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self(x), None


Builder = Callable[[ModelConfig], ZooModel]
Check = Callable[[ModelConfig], None]
Estimate = Callable[[ModelConfig], int]


@dataclass(frozen=True)
class Family:
    """A builder family: how to build, check and size a network of kind ``arch``."""

    arch: str
    build: Builder
    check: Check | None = None
    estimate_params: Estimate | None = None
    description: str = ""


_FAMILIES: dict[str, Family] = {}


def register_family(
    arch: str, *, check: Check | None = None, estimate_params: Estimate | None = None, description: str = ""
) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder`` as the family ``arch`` (a second registration raises)."""

    def decorate(builder: Builder) -> Builder:
        if arch in _FAMILIES:
            raise DuplicateNameError(f"model family {arch!r} is already registered")
        _FAMILIES[arch] = Family(arch, builder, check, estimate_params, description)
        return builder

    return decorate


def list_families() -> list[str]:
    return sorted(_FAMILIES)


def get_family(arch: str) -> Family:
    try:
        return _FAMILIES[arch]
    except KeyError:
        raise ConfigError(f"arch: expected one of {list_families()}, got {arch!r:.60}") from None


def check_config(config: ModelConfig) -> None:
    """Everything :func:`build_model` checks before allocating: the family's rules and the size ceiling."""
    family = get_family(config.arch)
    if family.check is not None:
        family.check(config)
    if family.estimate_params is not None:
        estimate, ceiling = family.estimate_params(config), max_params()
        if estimate > ceiling:
            raise ConfigError(
                f"{config.name or config.arch}: about {estimate:.3g} parameters exceed the ceiling of {ceiling:.3g} "
                "(raise it with ARNAS_ZOO_MAX_PARAMS if you mean it)"
            )


def build_model(config: ModelConfig) -> ZooModel:
    """Build the (randomly initialised, training-mode) network that ``config`` describes."""
    check_config(config)
    return _FAMILIES[config.arch].build(config)
