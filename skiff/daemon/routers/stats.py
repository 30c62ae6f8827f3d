"""``/containers/{id}/top`` and ``/containers/{id}/stats`` (one sample or a stream)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, Protocol

from aiohttp import web

from skiff.daemon.containers.record import Container
from skiff.daemon.containers.stats import with_previous
from skiff.daemon.http import json_response, log, qbool, route
from skiff.errors import InvalidArgument, SkiffError

_INTERVAL = 1.0  # seconds between samples, as dockerd


class MetricsBackend(Protocol):
    def get(self, ref: str) -> Container: ...
    def is_running(self, cid: str) -> bool: ...
    def sample(self, c: Container) -> dict[str, Any]: ...
    def top(self, c: Container, ps_args: str) -> dict[str, Any]: ...


class StatsRouter:
    def __init__(self, backend: MetricsBackend, interval: float = _INTERVAL) -> None:
        self.backend = backend
        self.interval = interval

    def register(self, router: web.UrlDispatcher) -> None:
        route(router, "GET", "/containers/{id}/top", self.top)
        route(router, "GET", "/containers/{id}/stats", self.stats)

    async def top(self, request: web.Request) -> web.StreamResponse:
        c = self.backend.get(request.match_info["id"])
        table = await asyncio.to_thread(self.backend.top, c, request.query.get("ps_args", ""))
        return json_response(table)

    async def _sample(self, c: Container, previous: dict[str, Any] | None) -> dict[str, Any]:
        return with_previous(await asyncio.to_thread(self.backend.sample, c), previous)

    async def stats(self, request: web.Request) -> web.StreamResponse:
        c = self.backend.get(request.match_info["id"])
        stream, one_shot = qbool(request, "stream", True), qbool(request, "one-shot")
        if stream and one_shot:
            raise InvalidArgument("cannot have stream=true and one-shot=true")
        if not stream:
            sample = await self._sample(c, None)
            if not one_shot and self.backend.is_running(c.id):
                # Docker waits for a second sample so precpu_stats give a usable CPU delta.
                await asyncio.sleep(self.interval)
                sample = await self._sample(c, sample)
            return json_response(sample)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        previous: dict[str, Any] | None = None
        with contextlib.suppress(ConnectionResetError):
            while True:
                try:
                    previous = await self._sample(c, previous)
                except SkiffError as exc:
                    # removed meanwhile (its spec or cgroup gone): past the headers, the
                    # stream's end says it, as Docker's does
                    log.debug("stats of container %s: %s", c.id, exc)
                    break
                await resp.write(json.dumps(previous).encode() + b"\n")
                if not self.backend.is_running(c.id):
                    break  # one sample of zeros and the stream ends
                await asyncio.sleep(self.interval)
                if request.transport is None or request.transport.is_closing():
                    break  # the client went away
            await resp.write_eof()
        return resp
