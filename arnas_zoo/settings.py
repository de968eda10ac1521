"""The one base of the project's config dataclasses: JSON in and out, unknown keys refused, ``replace``,
``KEY=VALUE`` overrides, and the place each adds its checks.

A config is a frozen dataclass that subclasses :class:`Settings` and names itself in ``what`` (messages
read ``what.key: ...``); one written to disk by a versioned format names it in ``schema``. A field
annotated as a tuple reads the list JSON stores it as. A subclass changes how one field is read or written
in :meth:`Settings.decode` / :meth:`Settings.encode` (a genotype, a CLI string coerced to a number) and adds
its checks in :meth:`Settings.validate`, which its ``__post_init__`` may call so that no invalid config exists.

Used by :class:`~arnas_zoo.config.ModelConfig`, :class:`~arnas_zoo.training.recipe.Recipe` and every search
strategy's config (``search/*/config.py``).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterable, Mapping
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
def tuple_fields(cls: type) -> frozenset[str]:
    """The fields of dataclass ``cls`` annotated as a tuple (alone or in a union with None)."""
    hints = typing.get_type_hints(cls)
    found = set()
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        if any(typing.get_origin(option) is tuple for option in options):
            found.add(f.name)
    return frozenset(found)


class Settings:
    """Mixin of the frozen config dataclasses (``@dataclass(frozen=True) class X(Settings)``)."""

    what: ClassVar[str] = "config"  # how messages name the config
    schema: ClassVar[str | None] = None  # the format's name, written as "schema" and checked on reading
    item: ClassVar[str] = "key"  # what messages call an entry ("field" where users set them: the recipe)

    # ---- one field ----------------------------------------------------------------------------------
    def encode(self, key: str, value: Any) -> Any:
        """Field ``key``'s value as JSON holds it (tuples as lists, mappings as dicts)."""
        if isinstance(value, tuple):
            return list(value)
        if isinstance(value, Mapping):
            return dict(value)
        return value

    @classmethod
    def decode(cls, key: str, value: Any) -> Any:
        """Field ``key``'s value from JSON or a caller: a tuple field takes a list (a string is refused)."""
        if key in tuple_fields(typing.cast(type, cls)) and value is not None:
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
            return tuple(value)
        return value

    # ---- the whole config ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema": self.schema} if self.schema else {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            out[f.name] = self.encode(f.name, getattr(self, f.name))
        return out

    @classmethod
    def _known(cls, keys: Iterable[str]) -> None:
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(str(k) for k in set(keys) - known)
        if unknown:
            key = unknown[0][:60]
            raise ConfigError(f"{cls.what}.{key}: unknown {cls.item} {key!r}; expected one of {sorted(known)}")

    @classmethod
    def from_dict(cls: type[S], data: Mapping[str, Any]) -> S:
        """A config from its JSON fields (missing ones take their defaults); errors name ``what.key``."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{cls.what}: expected a JSON object, got {type(data).__name__}")
        values = dict(data)
        if cls.schema is not None:
            schema = values.pop("schema", cls.schema)
            if schema != cls.schema:
                raise ConfigError(f"{cls.what}.schema: expected {cls.schema!r}, got {schema!r:.80}")
        cls._known(values)
        try:
            return cls(**{key: cls.decode(key, value) for key, value in values.items()})
        except ConfigError as exc:  # say where, once
            text = str(exc)
            raise ConfigError(text if text.startswith(f"{cls.what}.") else f"{cls.what}.{text}") from None
        except TypeError as exc:
            raise ConfigError(f"{cls.what}: {exc}") from None

    def replace(self: S, **changes: Any) -> S:
        """A copy with ``changes`` applied (read as :meth:`decode` reads them; the checks run again)."""
        self._known(changes)
        decoded = {key: self.decode(key, value) for key, value in changes.items()}
        return dataclasses.replace(self, **decoded)  # type: ignore[type-var]

    def with_overrides(self: S, pairs: Iterable[str]) -> S:
        """A copy with ``KEY=VALUE`` pairs applied (see :func:`parse_overrides`)."""
        return self.replace(**parse_overrides(pairs))

    def validate(self) -> None:
        """The checks beyond the field types; a config adds its own."""
