"""``docker ps --filter`` and ``docker container prune --filter``: Docker's keys and rules.

Values of one key are ORed, different keys ANDed. ``network``, ``volume``, ``publish``,
``expose`` and ``is-task`` are accepted and match everything until skiff has networks,
volumes and published ports (the seam is here: one function per key).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from skiff.daemon.containers.record import Container, unix_time
from skiff.errors import InvalidArgument

LIST_FILTERS = frozenset({"status", "id", "name", "label", "ancestor", "exited", "before",
                          "since", "health", "is-task", "network", "volume", "publish",
                          "expose"})
PRUNE_FILTERS = frozenset({"until", "label", "label!"})
_STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")
_HEALTH = ("starting", "healthy", "unhealthy", "none")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def check_keys(filters: Mapping[str, Sequence[str]], allowed: frozenset[str]) -> None:
    for key in filters:
        if key not in allowed:
            raise InvalidArgument(f"invalid filter '{key}'")


def _label_ok(labels: Mapping[str, str], want: str) -> bool:
    k, eq, v = want.partition("=")
    return k in labels and (not eq or labels[k] == v)


def labels_match(c: Container, values: Sequence[str]) -> bool:
    return all(_label_ok(c.labels, want) for want in values)


def parse_timestamp(text: str, now: float | None = None) -> float:
    """Docker's ``until``/``since`` value: unix seconds, RFC 3339, or a Go duration ago."""
    now = time.time() if now is None else now
    try:
        return float(text)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    else:
        if pos == len(text) and pos > 0:
            return now - total
    for fmt in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%d"):
        try:
            parsed = datetime.strptime(text.replace("Z", "+0000"), fmt)
        except ValueError:
            continue
        return parsed.timestamp()  # a date without a zone is local time, as Go reads it
    raise InvalidArgument(f"invalid filter value for until/since: {text!r} (a unix time, "
                          "an RFC 3339 time or a duration like 24h)")


def list_matcher(filters: Mapping[str, Sequence[str]],
                 find: Callable[[str], Container]) -> Callable[[Container], bool]:
    """A predicate for ``docker ps``; ``find`` resolves the containers before/since name."""
    check_keys(filters, LIST_FILTERS)
    for value in filters.get("status", ()):
        if value not in _STATUSES:
            raise InvalidArgument(f"invalid filter 'status={value}'")
    for value in filters.get("health", ()):
        if value not in _HEALTH:
            raise InvalidArgument(f"invalid filter 'health={value}'")
    exited: set[int] = set()
    for value in filters.get("exited", ()):
        try:
            exited.add(int(value))
        except ValueError as exc:
            raise InvalidArgument(f"invalid filter 'exited={value}'") from exc
    before = [unix_time(find(v).created) for v in filters.get("before", ())]
    since = [unix_time(find(v).created) for v in filters.get("since", ())]

    def match(c: Container) -> bool:
        created = unix_time(c.created)
        if before and not created < min(before):
            return False
        if since and not created > max(since):
            return False
        if exited and (c.status != "exited" or c.exit_code not in exited):
            return False
        health = (c.health or {}).get("Status") or "none"
        for key, values in filters.items():
            if not values:
                continue
            if key == "status" and c.state not in values:
                return False
            if key == "id" and not any(c.id.startswith(v) for v in values):
                return False
            if key == "name" and not any(v.removeprefix("/") in c.name for v in values):
                return False
            if key == "label" and not labels_match(c, values):
                return False
            if key == "ancestor" and not any(v in (c.image, c.image_id) for v in values):
                return False
            if key == "health" and health not in values:
                return False
        return True

    return match


def prune_matcher(filters: Mapping[str, Sequence[str]]) -> Callable[[Container], bool]:
    check_keys(filters, PRUNE_FILTERS)
    untils = [parse_timestamp(v) for v in filters.get("until", ())]
    want = list(filters.get("label", ()))
    refuse = list(filters.get("label!", ()))

    def match(c: Container) -> bool:
        if untils and not unix_time(c.created) < min(untils):
            return False
        if want and not labels_match(c, want):
            return False
        return not any(_label_ok(c.labels, r) for r in refuse)

    return match
