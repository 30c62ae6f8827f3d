"""The filters of ``GET /networks`` and ``POST /networks/prune`` (Docker's keys and wording)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from skiff.daemon.networks.requests import PREDEFINED
from skiff.daemon.networks.state import NetworkMeta
from skiff.errors import InvalidArgument

Filters = Mapping[str, Sequence[str]]


def list_match(meta: NetworkMeta, filters: Filters, unused: Callable[[NetworkMeta], bool]
               ) -> bool:
    """Values of one key are ORed (label: ANDed, as Docker), keys ANDed. ``unused`` answers
    ``dangling`` (asked only when that filter is given: it reads the records)."""
    for key, values in filters.items():
        if not values:
            continue
        if key == "name":
            ok = any(v in meta.name for v in values)
        elif key == "id":
            ok = any(v in meta.id for v in values)
        elif key == "driver":
            ok = meta.driver in values
        elif key == "scope":
            ok = "local" in values
        elif key == "type":
            bad = set(values) - {"custom", "builtin"}
            if bad:
                raise InvalidArgument(f"invalid filter: 'type'='{sorted(bad)[0]}'")
            ok = ("builtin" if meta.name in PREDEFINED else "custom") in values
        elif key == "label":
            ok = all(label_ok(dict(meta.labels), v) for v in values)
        elif key == "dangling":
            ok = unused(meta) == bool_filter(values, "dangling")
        else:
            raise InvalidArgument(f"invalid filter '{key}'")
        if not ok:
            return False
    return True


def prune_match(meta: NetworkMeta, filters: Filters) -> bool:
    for key, values in filters.items():
        if key == "label":
            if not all(label_ok(dict(meta.labels), v) for v in values):
                return False
        elif key == "label!":
            if any(label_ok(dict(meta.labels), v) for v in values):
                return False
        elif key == "until":
            pass  # accepted, not applied yet (durations and timestamps are not parsed)
        else:
            raise InvalidArgument(f"invalid filter '{key}'")
    return True


def label_ok(labels: Mapping[str, str], want: str) -> bool:
    """``key`` (present) or ``key=value`` (equal)."""
    key, sep, value = want.partition("=")
    return key in labels and (not sep or labels[key] == value)


def bool_filter(values: Sequence[str], key: str) -> bool:
    v = values[-1].lower()
    if v in ("true", "1"):
        return True
    if v in ("false", "0"):
        return False
    raise InvalidArgument(f"invalid filter '{key}={values[-1]}'")
