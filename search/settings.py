"""The one base of the search strategies' settings: JSON (de)serialisation, ``KEY=VALUE`` overrides, replace.

Every strategy's config is a frozen dataclass that subclasses :class:`Settings`; it names itself in ``what``
and adds its checks in :meth:`Settings.validate`. Unknown keys are refused with the known ones named; a
field annotated as a tuple accepts the list JSON stores it as.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import asdict, fields
from functools import cache
from typing import Any, ClassVar, TypeVar

from arnas_zoo.errors import ConfigError

S = TypeVar("S", bound="Settings")


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """``["epochs=5", "order=first"]`` -> ``{"epochs": 5, "order": "first"}``: each VALUE parsed as JSON when it
    can be (``null`` or ``none``: None), else kept as text."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set: expected key=value, got {pair[:80]!r}")
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):  # not JSON: keep the text
            value = None if raw == "none" else raw
        out[key.strip()] = value
    return out


@cache
def _tuple_fields(cls: type) -> frozenset[str]:
    """The fields of dataclass ``cls`` annotated as a tuple (alone or in a union with None)."""
    hints = typing.get_type_hints(cls)
    found = set()
    for f in fields(cls):
        hint = hints[f.name]
        options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        if any(typing.get_origin(option) is tuple for option in options):
            found.add(f.name)
    return frozenset(found)


class Settings:
    """Mixin of the strategies' frozen config dataclasses (``@dataclass(frozen=True) class X(Settings)``)."""

    what: ClassVar[str] = "search"  # how messages name the config

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[S], data: Mapping[str, Any]) -> S:
        """A config from its JSON fields: unknown keys refused, lists of tuple fields made tuples."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{cls.what} config: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(str(k) for k in set(data) - known)
        if unknown:
            raise ConfigError(f"{cls.what} config: unknown key {unknown[0]!r}; expected some of {sorted(known)}")
        tuples = _tuple_fields(typing.cast(type, cls))
        values = {k: tuple(v) if k in tuples and isinstance(v, list) else v for k, v in data.items()}
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"{cls.what} config: {exc}") from None

    def replace(self: S, **changes: Any) -> S:
        """A copy with ``changes`` applied, through :meth:`from_dict` (the same refusals)."""
        return type(self).from_dict({**self.to_dict(), **changes})

    def with_overrides(self: S, pairs: Iterable[str]) -> S:
        """A copy with ``KEY=VALUE`` pairs applied (see :func:`parse_overrides`)."""
        return self.replace(**parse_overrides(pairs))

    def validate(self) -> None:
        """The checks beyond the field types; a strategy's config adds its own."""
