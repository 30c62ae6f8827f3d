"""Instruction flags (``--from=stage``, ``--link``, ``--interval=30s``) checked against a spec.

Docker's wording is kept for the errors a user sees: ``unknown flag: NAME``,
``Duplicate flag specified: NAME``, ``Missing a value on flag: NAME``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from skiff.errors import InvalidArgument

__all__ = ["FlagKind", "Flags", "parse_flags"]


class FlagKind(Enum):
    STRING = "string"
    BOOL = "bool"
    LIST = "list"  # may repeat (`--exclude`, `--mount`)


@dataclass(frozen=True)
class Flags:
    """The flags given to one instruction, by name without the dashes."""

    strings: Mapping[str, str] = field(default_factory=dict)
    bools: Mapping[str, bool] = field(default_factory=dict)
    lists: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def get(self, name: str, default: str = "") -> str:
        return self.strings.get(name, default)

    def has(self, name: str) -> bool:
        return name in self.strings or name in self.bools or name in self.lists


def parse_flags(words: tuple[str, ...], spec: Mapping[str, FlagKind]) -> Flags:
    strings: dict[str, str] = {}
    bools: dict[str, bool] = {}
    lists: dict[str, list[str]] = {}
    for word in words:
        body = word[2:]
        name, eq, value = body.partition("=")
        if not name:
            raise InvalidArgument(f"invalid flag: {word}")
        kind = spec.get(name)
        if kind is None:
            raise InvalidArgument(f"unknown flag: {name}")
        if kind is FlagKind.LIST:
            if not eq:
                raise InvalidArgument(f"Missing a value on flag: {name}")
            lists.setdefault(name, []).append(value)
            continue
        if name in strings or name in bools:
            raise InvalidArgument(f"Duplicate flag specified: {name}")
        if kind is FlagKind.BOOL:
            if not eq:
                bools[name] = True
            elif value.lower() in ("true", "false"):
                bools[name] = value.lower() == "true"
            else:
                raise InvalidArgument(f"expecting boolean value for flag {name}, not: {value}")
            continue
        if not eq:
            raise InvalidArgument(f"Missing a value on flag: {name}")
        strings[name] = value
    return Flags(strings, bools, {k: tuple(v) for k, v in lists.items()})
