"""Typed reads of the API body: a wrong JSON shape is the client's error, never a crash."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from skiff.errors import InvalidArgument


def str_list(value: object, name: str) -> list[str] | None:
    """Docker's StrSlice: null -> None, "a b" -> ["a b"] (one element: no shell splitting)."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise InvalidArgument(f"invalid {name}: must be a string or a list of strings")


def strings(value: object, name: str) -> list[str]:
    """A JSON list of strings (null: empty)."""
    if value is None:
        return []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise InvalidArgument(f"invalid {name}: must be a list of strings")


def objects(value: object, name: str) -> list[Mapping[str, Any]]:
    """A JSON list of objects (null: empty)."""
    if value is None:
        return []
    if isinstance(value, list) and all(isinstance(v, Mapping) for v in value):
        return list(value)
    raise InvalidArgument(f"invalid {name}: must be a list of objects")


def mapping(value: object, name: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"invalid {name}: must be a JSON object")
    return value


def integer(value: object, name: str) -> int:
    """An integer field (null: 0); JSON booleans are not numbers here."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"invalid {name}: must be an integer")
    return value
