"""`JsonConfig`: the to_dict / from_dict every kdlab config dataclass shares."""

from __future__ import annotations

import copy
import typing
from collections.abc import Mapping
from dataclasses import asdict, fields, is_dataclass
from typing import Any, TypeVar

T = TypeVar("T", bound="JsonConfig")


class JsonConfig:
    """Mixin for dataclass configs: JSON-ready `to_dict()` and a strict `from_dict()`.

    Fields holding another `JsonConfig` (or `None`) are written with its own `to_dict()` and
    read back with its `from_dict()`, so configs nest. `from_dict` refuses keys the dataclass
    does not know, naming them and the allowed ones, so a typo in a saved or hand-written
    config is an error rather than silently ignored.
    """

    def to_dict(self) -> dict[str, Any]:
        data = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, JsonConfig):
                data[f.name] = value.to_dict()
            elif is_dataclass(value) and not isinstance(value, type):
                data[f.name] = asdict(value)
            else:
                data[f.name] = copy.deepcopy(value)
        return data

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {sorted(unknown)}; allowed: {sorted(known)}")
        hints = typing.get_type_hints(cls)
        values = {}
        for key, value in data.items():
            nested = _nested_config_class(hints.get(key))
            values[key] = nested.from_dict(value) if nested is not None and isinstance(value, Mapping) else value
        return cls(**values)


def _nested_config_class(hint: Any) -> type[JsonConfig] | None:
    """The JsonConfig class a field annotation names (directly or as `X | None`), else None."""
    for candidate in (hint, *typing.get_args(hint)):
        if isinstance(candidate, type) and issubclass(candidate, JsonConfig):
            return candidate
    return None
