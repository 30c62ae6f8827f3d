"""The daemon's event bus: what ``GET /events`` streams (``docker events``).

Every part of the daemon publishes here (containers: create/start/die/...; images:
pull/tag/delete/...; networks, volumes later). Subscribers get new events as they happen and,
with ``since``, the recent past from a bounded ring (Docker keeps the last 1000 too). All of
it runs on the event loop; publishing from a worker thread goes through
:meth:`EventBus.publish_threadsafe`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_HISTORY = 1000
_QUEUE = 4096  # a subscriber that falls this far behind is dropped, not the daemon slowed


@dataclass(frozen=True)
class Event:
    type: str  # container, image, network, volume, daemon
    action: str  # create, start, die, pull, tag, delete, exec_start: ls, health_status: healthy
    actor_id: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    time_nano: int = field(default_factory=time.time_ns)

    def to_json(self) -> dict[str, Any]:
        """Docker's message shape, with the pre-1.22 fields the docker CLI still reads."""
        body: dict[str, Any] = {
            "Type": self.type, "Action": self.action,
            "Actor": {"ID": self.actor_id, "Attributes": dict(self.attributes)},
            "scope": "local", "time": self.time_nano // 1_000_000_000,
            "timeNano": self.time_nano,
        }
        if self.type in ("container", "image"):
            body["status"] = self.action
            body["id"] = self.actor_id
            if self.type == "container" and "image" in self.attributes:
                body["from"] = self.attributes["image"]
        return body


def matches(ev: Event, filters: Mapping[str, Sequence[str]]) -> bool:
    """Docker's event filters: values of one key are ORed, different keys ANDed."""
    for key, values in filters.items():
        if not values:
            continue
        if key == "type":
            ok = ev.type in values
        elif key == "event":
            ok = ev.action in values or ev.action.split(":", 1)[0] in values
        elif key in ("container", "image", "network", "volume"):
            name = ev.attributes.get("name", "")
            ok = (ev.type == key and any(
                v in (ev.actor_id, name) or (len(v) >= 3 and ev.actor_id.startswith(v))
                for v in values)) or (key == "image" and ev.attributes.get("image") in values)
        elif key == "label":
            ok = all(_label(ev, v) for v in values)
        elif key == "scope":
            ok = "local" in values
        elif key == "daemon":
            ok = ev.type == "daemon" and ev.actor_id in values
        else:
            ok = False
        if not ok:
            return False
    return True


def _label(ev: Event, want: str) -> bool:
    k, eq, v = want.partition("=")
    return k in ev.attributes and (not eq or ev.attributes[k] == v)


EVENT_FILTERS = frozenset({"type", "event", "container", "image", "network", "volume",
                           "label", "scope", "daemon"})


class Subscription:
    def __init__(self, bus: EventBus, filters: Mapping[str, Sequence[str]]) -> None:
        self.bus = bus
        self.filters = filters
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(_QUEUE)

    def offer(self, ev: Event) -> None:
        if not matches(ev, self.filters):
            return
        try:
            self.queue.put_nowait(ev)
        except asyncio.QueueFull:  # too slow: end its stream rather than grow without bound
            self.bus.unsubscribe(self)
            self.queue.get_nowait()
            self.queue.put_nowait(None)

    async def next(self) -> Event | None:
        """The next matching event; None when the bus closed this subscription."""
        return await self.queue.get()

    def close(self) -> None:
        self.bus.unsubscribe(self)


class EventBus:
    def __init__(self) -> None:
        self._history: deque[Event] = deque(maxlen=_HISTORY)
        self._subs: set[Subscription] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop that thread-side publishers hand their events to."""
        self._loop = loop

    def publish(self, type: str, action: str, actor_id: str,
                attributes: Mapping[str, str] | None = None) -> Event:
        """Record and deliver an event (call on the event loop's thread)."""
        ev = Event(type, action, actor_id, dict(attributes or {}))
        self._history.append(ev)
        for sub in list(self._subs):
            sub.offer(ev)
        return ev

    def publish_threadsafe(self, type: str, action: str, actor_id: str,
                           attributes: Mapping[str, str] | None = None) -> None:
        """publish() from a worker thread (or directly when no loop is bound yet)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self.publish(type, action, actor_id, attributes)
            return
        loop.call_soon_threadsafe(self.publish, type, action, actor_id, attributes)

    def subscribe(self, filters: Mapping[str, Sequence[str]] | None = None) -> Subscription:
        sub = Subscription(self, filters or {})
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def history(self, since_ns: int, until_ns: int | None,
                filters: Mapping[str, Sequence[str]]) -> Iterable[Event]:
        for ev in list(self._history):
            if ev.time_nano >= since_ns and (until_ns is None or ev.time_nano <= until_ns) \
                    and matches(ev, filters):
                yield ev

    def close(self) -> None:
        for sub in list(self._subs):
            self.unsubscribe(sub)
            sub.queue.put_nowait(None)

    @property
    def listeners(self) -> int:
        return len(self._subs)
