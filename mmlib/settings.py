"""Typed settings: a profile's plain dict becomes the frozen settings dataclass a model module owns.

``build(cls, values, where)`` makes ``cls(**values)`` strictly: a key that is not a field of ``cls``
raises ``SettingsError`` naming it (and where it came from), so a misspelt key can never fall back to
a default silently. Fields typed with a dataclass (or a union of dataclasses, or ``X | None``) are
built from nested dicts the same way; lists become tuples. ``mmlib.profiles`` uses it for every
section of every profile.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping


class SettingsError(ValueError):
    """A profile setting that no settings dataclass knows."""


def _dataclass_options(tp: Any) -> list[type]:
    """The dataclass types a field annotation admits (``A``, ``A | B``, ``A | None``, ``Optional[A]``)."""
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    return [a for a in args if isinstance(a, type) and dataclasses.is_dataclass(a)]


def _value(tp: Any, value: Any, where: str) -> Any:
    options = _dataclass_options(tp)
    if isinstance(value, Mapping) and options:
        errors = []
        for cls in options:
            try:
                return build(cls, value, where)
            except SettingsError as e:
                errors.append(str(e))
        raise SettingsError(errors[0] if len(errors) == 1 else
                            f"{where}: fits none of {', '.join(c.__name__ for c in options)}: " + "; ".join(errors))
    if isinstance(value, list):
        return tuple(value)
    return value


def build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    """``cls`` from ``values``: every key must name a field of ``cls`` (else ``SettingsError``)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise SettingsError(f"{where}: unknown setting {unknown[0]!r} for {cls.__name__} "
                            f"(known: {', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
    try:
        return cls(**{k: _value(hints[k], v, f"{where}.{k}") for k, v in values.items()})
    except TypeError as e:       # a required field missing
        raise SettingsError(f"{where}: {e}") from None
