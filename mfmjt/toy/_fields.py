"""Strict construction of a dataclass from a saved dict (unknown keys are an error)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any


def from_dict_strict(cls: type, data: dict[str, Any]) -> Any:
    """``cls(**data)``, refusing keys that ``cls`` has no field for (with their names)."""
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return cls(**data)
