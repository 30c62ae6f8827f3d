"""``GET /events``: the event bus as a stream of JSON objects (``docker events``).

``since``/``until`` take Docker's time forms. The docker CLI sends unix seconds with a
fraction, but other clients send RFC 3339 or a duration meaning "that long ago", so all
three are accepted. With ``since`` (or ``until``) the bus's recent past is replayed first;
with ``until`` the stream ends at that moment, otherwise when the client goes or the daemon
stops.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import re
import time
from collections.abc import Iterable
from typing import Protocol

from aiohttp import web

from skiff.daemon.events import EVENT_FILTERS, Event, Subscription
from skiff.daemon.http import qfilters, route
from skiff.errors import InvalidArgument

_NS = 1_000_000_000
_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": _NS, "m": 60 * _NS,
          "h": 3600 * _NS}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIX = re.compile(r"^(-?\d+)(?:\.(\d{1,9}))?$")


def _duration_ns(text: str) -> int | None:
    """Go's time.ParseDuration (``10m``, ``1h30m``, ``1.5s``), or None if it is not one."""
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION.match(text, pos)
        if m is None:
            return None
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return int(total) if text else None


def _rfc3339_ns(text: str) -> int | None:
    # fromisoformat wants at most 6 fraction digits: keep the nanoseconds apart
    m = re.match(r"^(\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?)?)(?:\.(\d{1,9}))?"
                 r"(Z|[+-]\d{2}:?\d{2})?$", text)
    if m is None:
        return None
    base, frac, zone = m.groups()
    try:
        when = datetime.datetime.fromisoformat(base)
    except ValueError:
        return None
    if zone in (None, "Z"):
        # Docker reads a time without a zone as local time; this machine's local zone
        when = when.replace(tzinfo=datetime.UTC) if zone == "Z" else when.astimezone()
    else:
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        offset = datetime.timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        when = when.replace(tzinfo=datetime.timezone(sign * offset))
    return int(when.timestamp()) * _NS + int((frac or "0").ljust(9, "0"))


def parse_timestamp(value: str, now_ns: int, name: str) -> int | None:
    """A ``since``/``until`` value as unix nanoseconds; None for empty; 400 if unreadable."""
    text = value.strip()
    if not text:
        return None
    m = _UNIX.match(text)
    if m is not None:
        secs, frac = m.groups()
        sign = -1 if secs.startswith("-") else 1
        return int(secs) * _NS + sign * int((frac or "0").ljust(9, "0"))
    ago = _duration_ns(text)
    if ago is not None:
        return now_ns - ago
    at = _rfc3339_ns(text)
    if at is not None:
        return at
    raise InvalidArgument(f"invalid value for {name}: {value!r} is not a unix time, an "
                          "RFC 3339 time or a duration such as 10m")


class EventsBackend(Protocol):
    def subscribe(self, filters: dict[str, list[str]]) -> Subscription: ...

    def history(self, since_ns: int, until_ns: int | None,
                filters: dict[str, list[str]]) -> Iterable[Event]: ...


class EventsRouter:
    def __init__(self, backend: EventsBackend) -> None:
        self.backend = backend

    def register(self, router: web.UrlDispatcher) -> None:
        route(router, "GET", "/events", self.events)

    async def events(self, request: web.Request) -> web.StreamResponse:
        filters = qfilters(request)
        for key in sorted(filters):
            if key not in EVENT_FILTERS:
                raise InvalidArgument(f"invalid filter '{key}'")
        now = time.time_ns()
        since = parse_timestamp(request.query.get("since", ""), now, "since")
        until = parse_timestamp(request.query.get("until", ""), now, "until")
        if since is not None and until is not None and until < since:
            raise InvalidArgument("`since` time cannot be after `until` time")
        # subscribe and read the past with no await between: no event is lost or doubled
        sub = self.backend.subscribe(filters) if until is None or until > now else None
        past = list(self.backend.history(since or 0, until, filters)) \
            if since is not None or until is not None else []
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        try:
            await resp.prepare(request)
            for ev in past:
                await _send(resp, ev)
            while sub is not None:
                wait = None if until is None else max(0.0, (until - time.time_ns()) / _NS)
                try:
                    ev_or_end = await asyncio.wait_for(sub.next(), wait)
                except TimeoutError:
                    break  # ``until`` reached
                if ev_or_end is None or (until is not None and ev_or_end.time_nano > until):
                    break  # the daemon is stopping, or the event is past ``until``
                await _send(resp, ev_or_end)
        finally:
            if sub is not None:
                sub.close()
        return resp


async def _send(resp: web.StreamResponse, ev: Event) -> None:
    await resp.write(json.dumps(ev.to_json()).encode() + b"\n")
