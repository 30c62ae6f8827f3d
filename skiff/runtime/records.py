"""Cheap record classes for the runtime's start-up path.

``dataclasses`` generates each method by exec'ing source text and pulls in ``inspect`` (with
``ast``, ``dis``, ``tokenize``): about 7 ms of imports plus ~0.4 ms per class, all paid before
a container's process can be exec'd. ``@record`` gives the part we use — keyword/positional
``__init__`` with defaults and factories, ``__eq__``, ``__repr__``, optional freezing and
hashing — with closures instead of generated source. Type checkers see it as a dataclass
through ``dataclass_transform``.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    T = TypeVar("T")
    C = TypeVar("C", bound=type)


class _Factory:
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn


def field(*, default_factory: Callable[[], T]) -> T:
    """A default made fresh for every instance (``field(default_factory=list)``)."""
    return _Factory(default_factory)  # type: ignore[return-value]


_MISSING = object()


def _make(cls: C, frozen: bool) -> C:
    names: list[str] = list(cls.__dict__.get("__annotations__", {}))  # noqa: RUF063 - inspect is what we avoid
    defaults: dict[str, Any] = {n: cls.__dict__[n] for n in names if n in cls.__dict__}
    for n, d in defaults.items():
        if isinstance(d, _Factory):
            delattr(cls, n)
    slots = len(names)
    setter = object.__setattr__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > slots:
            raise TypeError(f"{cls.__name__}() takes {slots} arguments, got {len(args)}")
        for name, value in zip(names, args, strict=False):
            setter(self, name, value)
        for name in names[len(args):]:
            value = kwargs.pop(name, _MISSING)
            if value is _MISSING:
                value = defaults.get(name, _MISSING)
                if value is _MISSING:
                    raise TypeError(f"{cls.__name__}() missing argument {name!r}")
                if isinstance(value, _Factory):
                    value = value.fn()
            setter(self, name, value)
        if kwargs:
            raise TypeError(f"{cls.__name__}() got unexpected arguments {sorted(kwargs)}")

    def _values(self: Any) -> tuple[Any, ...]:
        return tuple(getattr(self, n) for n in names)

    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return bool(_values(self) == _values(other))

    def __repr__(self: Any) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
        return f"{cls.__name__}({inner})"

    cls.__init__ = __init__  # type: ignore[misc]
    cls.__eq__ = __eq__  # type: ignore[assignment]
    cls.__repr__ = __repr__  # type: ignore[assignment]
    cls.__match_args__ = tuple(names)  # type: ignore[attr-defined,misc]
    cls.__record_fields__ = tuple(names)  # type: ignore[attr-defined]
    if frozen:
        def __setattr__(self: Any, name: str, value: Any) -> None:
            raise AttributeError(f"cannot assign to field {name!r} of frozen {cls.__name__}")

        def __hash__(self: Any) -> int:
            return hash(_values(self))

        cls.__setattr__ = __setattr__  # type: ignore[assignment]
        cls.__delattr__ = __setattr__  # type: ignore[assignment]
        cls.__hash__ = __hash__  # type: ignore[assignment]
    else:
        cls.__hash__ = None  # type: ignore[assignment]
    return cls


if TYPE_CHECKING:
    from typing import dataclass_transform

    @dataclass_transform(field_specifiers=(field,))
    def record(cls: C | None = None, /, *, frozen: bool = False) -> Any: ...
else:
    def record(cls=None, /, *, frozen=False):
        if cls is None:
            return lambda c: _make(c, frozen)
        return _make(cls, frozen)


def as_dict(obj: Any) -> dict[str, Any]:
    """The record's fields as a dict (shallow; values are not copied)."""
    return {n: getattr(obj, n) for n in obj.__record_fields__}


def replace(obj: T, **changes: Any) -> T:
    """A copy of ``obj`` with ``changes`` (for frozen records)."""
    values = as_dict(obj)
    values.update(changes)
    return obj.__class__(**values)
