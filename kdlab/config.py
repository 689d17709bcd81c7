"""`JsonConfig`: the to_dict / from_dict every kdlab config dataclass shares."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, Mapping, TypeVar

T = TypeVar("T", bound="JsonConfig")


class JsonConfig:
    """Mixin for dataclass configs: JSON-ready `to_dict()` and a strict `from_dict()`.

    `from_dict` refuses keys the dataclass does not know, naming them and the allowed ones,
    so a typo in a saved or hand-written config is an error rather than silently ignored.
    """

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {sorted(unknown)}; allowed: {sorted(known)}")
        return cls(**data)
