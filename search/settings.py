"""Settings of the peers' searches (RobNets, RoCo-NAS, the cell NSGA-II) from JSON and from ``--set KEY=VALUE``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import fields, replace
from typing import Any, TypeVar

from arnas_zoo.errors import ConfigError

T = TypeVar("T")


def config_from_dict(cls: type[T], data: Mapping[str, Any], what: str, tuple_keys: Iterable[str] = ()) -> T:
    """``cls(**data)`` with unknown keys refused and the ``tuple_keys`` lists (as JSON stores them) made tuples."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{what} config: unknown keys {unknown}; known: {sorted(known)}")
    values = dict(data)
    for key in tuple_keys:
        if values.get(key) is not None:
            values[key] = tuple(values[key])
    return cls(**values)


def with_overrides(config: T, pairs: Iterable[str], *, lists_as_tuples: bool = True) -> T:
    """A copy of dataclass ``config`` with ``KEY=VALUE`` pairs applied (VALUE parsed as JSON, else text;
    ``none`` is None; JSON lists become tuples unless ``lists_as_tuples`` is False)."""
    names = {f.name for f in fields(config)}  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or key not in names:
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE with KEY in {sorted(names)}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None if text == "none" else text
        changes[key] = tuple(value) if lists_as_tuples and isinstance(value, list) else value
    return replace(config, **changes)  # type: ignore[type-var]
