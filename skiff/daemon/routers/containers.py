"""``/containers``: create, list, inspect, start, wait, attach, logs, kill, stop, restart,
pause, unpause, update, rename, prune, delete."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import socket
import struct
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from aiohttp import web

from skiff.daemon.containers.manager import NotModified
from skiff.daemon.containers.record import Container
from skiff.daemon.hijack import MULTIPLEXED_STREAM, RAW_STREAM, hijack, pipe
from skiff.daemon.http import (
    api_minor,
    json_body,
    json_response,
    log,
    qbool,
    qfilters,
    qint,
    qsize,
    route,
)
from skiff.daemon.networks.seam import NetworkView
from skiff.errors import InvalidArgument, SkiffError
from skiff.shim.detach import DEFAULT_DETACH_KEYS, parse_detach_keys
from skiff.shim.logs import LogEntry

_STREAM_IDS = {"stdout": 1, "stderr": 2}
_FRAME = struct.Struct(">BxxxI")


class ContainersBackend(Protocol):
    async def create(self, body: Mapping[str, Any], name: str | None) -> Container: ...
    def get(self, ref: str) -> Container: ...
    def list(self, *, all: bool, filters: Mapping[str, Sequence[str]]) -> list[Container]: ...
    async def start(self, ref: str) -> None: ...
    async def stop(self, ref: str, timeout: int | None = None,
                   signal: object = None) -> None: ...
    async def kill(self, ref: str, signal: object = "SIGKILL") -> None: ...
    async def remove(self, ref: str, *, force: bool = False, volumes: bool = False
                     ) -> None: ...
    async def restart(self, ref: str, timeout: int | None = None,
                      signal: object = None) -> None: ...
    async def pause(self, ref: str) -> None: ...
    async def unpause(self, ref: str) -> None: ...
    async def update(self, ref: str, body: Mapping[str, Any]) -> builtins.list[str]: ...
    async def rename(self, ref: str, new_name: str) -> None: ...
    async def prune(self, filters: Mapping[str, Sequence[str]]
                    ) -> tuple[builtins.list[str], int]: ...
    def sizes(self, c: Container) -> tuple[int, int]: ...
    async def resize(self, ref: str, height: int, width: int) -> None: ...
    def waiter(self, ref: str, condition: str) -> asyncio.Future[int]: ...
    async def attach(self, ref: str, *, stdin: bool, stdout: bool, stderr: bool, logs: bool,
                     detach_keys: bytes = b"") -> socket.socket: ...
    def early_attach(self, c: Container) -> asyncio.Future[None] | None: ...
    def logs(self, c: Container, *, follow: bool, tail: int | None, since_ns: int | None,
             until_ns: int | None, stop: Callable[[], bool]) -> Iterator[LogEntry]: ...
    def log_path(self, c: Container) -> str: ...
    def exec_ids(self, cid: str) -> Sequence[str]: ...
    def rootfs(self, c: Container) -> str: ...


def _unix_ns(text: str | None, name: str) -> int | None:
    """Docker's since/until: unix seconds with an optional fraction; 0 or absent means none."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError as exc:
        raise InvalidArgument(f"invalid value for {name}: {text!r}") from exc
    return int(value * 1e9) if value > 0 else None


def frame(stream: str, data: bytes) -> bytes:
    return _FRAME.pack(_STREAM_IDS.get(stream, 1), len(data)) + data


class ContainersRouter:
    def __init__(self, backend: ContainersBackend, networks: NetworkView | None = None
                 ) -> None:
        self.backend = backend
        self.networks = networks

    def register(self, router: web.UrlDispatcher) -> None:
        route(router, "POST", "/containers/create", self.create)
        route(router, "GET", "/containers/json", self.list)
        route(router, "GET", "/containers/{id}/json", self.inspect)
        route(router, "POST", "/containers/{id}/start", self.start)
        route(router, "POST", "/containers/{id}/wait", self.wait)
        route(router, "POST", "/containers/{id}/attach", self.attach)
        route(router, "GET", "/containers/{id}/logs", self.logs)
        route(router, "POST", "/containers/{id}/kill", self.kill)
        route(router, "POST", "/containers/{id}/stop", self.stop)
        route(router, "POST", "/containers/{id}/resize", self.resize)
        route(router, "POST", "/containers/{id}/restart", self.restart)
        route(router, "POST", "/containers/{id}/pause", self.pause)
        route(router, "POST", "/containers/{id}/unpause", self.unpause)
        route(router, "POST", "/containers/{id}/update", self.update)
        route(router, "POST", "/containers/{id}/rename", self.rename)
        route(router, "POST", "/containers/prune", self.prune)
        route(router, "DELETE", "/containers/{id}", self.delete)

    async def create(self, request: web.Request) -> web.StreamResponse:
        body = await json_body(request)
        c = await self.backend.create(body, request.query.get("name") or None)
        return json_response({"Id": c.id, "Warnings": []}, status=201)

    async def list(self, request: web.Request) -> web.StreamResponse:
        found = self.backend.list(all=qbool(request, "all"), filters=qfilters(request))
        limit = qint(request, "limit", -1) or -1
        if limit > 0:
            found = found[:limit]
        rows = [c.summary() for c in found]
        networks = self.networks
        if networks is not None:  # Ports and NetworkSettings, read in one worker thread
            extras = await asyncio.to_thread(lambda: [networks.summary_extra(c) for c in found])
            for row, extra in zip(rows, extras, strict=True):
                row.update(extra)
        if qbool(request, "size"):
            # cheap: the snapshotter measures the writable layer, the image knows its size
            for row, c in zip(rows, found, strict=True):
                row["SizeRw"], row["SizeRootFs"] = await asyncio.to_thread(self.backend.sizes, c)
        return json_response(rows)

    async def inspect(self, request: web.Request) -> web.StreamResponse:
        c = self.backend.get(request.match_info["id"])
        body = c.inspect(log_path=self.backend.log_path(c), rootfs=self.backend.rootfs(c),
                         exec_ids=self.backend.exec_ids(c.id))
        if self.networks is not None:
            body.update(await asyncio.to_thread(self.networks.inspect_extra, c))
        return json_response(body)

    async def start(self, request: web.Request) -> web.StreamResponse:
        try:
            await self.backend.start(request.match_info["id"])
        except NotModified:
            return web.Response(status=304)
        return web.Response(status=204)

    async def stop(self, request: web.Request) -> web.StreamResponse:
        try:
            await self.backend.stop(request.match_info["id"], qint(request, "t"),
                                    request.query.get("signal") or None)
        except NotModified:
            return web.Response(status=304)
        return web.Response(status=204)

    async def kill(self, request: web.Request) -> web.StreamResponse:
        await self.backend.kill(request.match_info["id"], request.query.get("signal")
                                or "SIGKILL")
        return web.Response(status=204)

    async def resize(self, request: web.Request) -> web.StreamResponse:
        height, width = qsize(request)
        await self.backend.resize(request.match_info["id"], height, width)
        return web.Response(status=200)

    async def restart(self, request: web.Request) -> web.StreamResponse:
        await self.backend.restart(request.match_info["id"], qint(request, "t"),
                                   request.query.get("signal") or None)
        return web.Response(status=204)

    async def pause(self, request: web.Request) -> web.StreamResponse:
        await self.backend.pause(request.match_info["id"])
        return web.Response(status=204)

    async def unpause(self, request: web.Request) -> web.StreamResponse:
        await self.backend.unpause(request.match_info["id"])
        return web.Response(status=204)

    async def update(self, request: web.Request) -> web.StreamResponse:
        body = await json_body(request)
        warnings = await self.backend.update(request.match_info["id"], body)
        return json_response({"Warnings": warnings})

    async def rename(self, request: web.Request) -> web.StreamResponse:
        await self.backend.rename(request.match_info["id"], request.query.get("name", ""))
        return web.Response(status=204)

    async def prune(self, request: web.Request) -> web.StreamResponse:
        deleted, reclaimed = await self.backend.prune(qfilters(request))
        return json_response({"ContainersDeleted": deleted or None,
                              "SpaceReclaimed": reclaimed})

    async def delete(self, request: web.Request) -> web.StreamResponse:
        if qbool(request, "link"):
            raise InvalidArgument("removing links (link=true) is not supported: skiff has "
                                  "no container links yet")
        await self.backend.remove(request.match_info["id"], force=qbool(request, "force"),
                                  volumes=qbool(request, "v"))
        return web.Response(status=204)

    async def wait(self, request: web.Request) -> web.StreamResponse:
        fut = self.backend.waiter(request.match_info["id"],
                                  request.query.get("condition", "not-running"))
        # Headers go out now: the docker CLI waits for them before it starts the container.
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        try:
            code = await fut
        finally:
            if not fut.done():
                fut.cancel()
        await resp.write(json.dumps({"StatusCode": code, "Error": None}).encode() + b"\n")
        await resp.write_eof()
        return resp

    async def attach(self, request: web.Request) -> web.StreamResponse:
        c = self.backend.get(request.match_info["id"])
        if not qbool(request, "stream") and not qbool(request, "logs"):
            raise InvalidArgument("attach: stream or logs must be true")
        stdin = qbool(request, "stdin")
        keys = parse_detach_keys(request.query.get("detachKeys") or DEFAULT_DETACH_KEYS)
        content_type = RAW_STREAM if c.tty or api_minor(request) < 42 else MULTIPLEXED_STREAM

        async def reach_shim() -> socket.socket:
            return await self.backend.attach(
                c.id, stdin=stdin, stdout=qbool(request, "stdout"),
                stderr=qbool(request, "stderr"), logs=qbool(request, "logs"), detach_keys=keys)

        early = self.backend.early_attach(c)
        if early is None:  # running: errors answer the request, the shim is reached first
            sock = await reach_shim()
            try:
                resp, inbound = await hijack(request, content_type)
            except BaseException:
                sock.close()
                raise
        else:
            # Not running (its shim may be still or again to be made): answer now, so that
            # the client's next requests travel meanwhile; a start waits for this attach.
            try:
                resp, inbound = await hijack(request, content_type)
                try:
                    sock = await reach_shim()
                except SkiffError as exc:  # past the 101, the stream's end says it
                    log.warning("attach to container %s: %s", c.id, exc)
                    return resp
            finally:
                if not early.done():
                    early.set_result(None)
        try:
            await pipe(resp, inbound, sock)
        finally:
            sock.close()
        return resp

    async def logs(self, request: web.Request) -> web.StreamResponse:
        c = self.backend.get(request.match_info["id"])
        want = {s for s in ("stdout", "stderr") if qbool(request, s)}
        if not want:
            raise InvalidArgument("Bad parameters: you must choose at least one stream")
        tail_text = request.query.get("tail", "all")
        tail = None if tail_text in ("", "all") else qint(request, "tail")
        since, until = (_unix_ns(request.query.get("since"), "since"),
                        _unix_ns(request.query.get("until"), "until"))
        timestamps = qbool(request, "timestamps")
        follow = qbool(request, "follow")
        resp = web.StreamResponse(headers={
            "Content-Type": RAW_STREAM if c.tty or api_minor(request) < 42
            else MULTIPLEXED_STREAM})
        await resp.prepare(request)

        # The log reader blocks (it polls while following): a thread feeds a queue.
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=256)
        cancelled = threading.Event()

        def produce() -> None:
            try:
                for entry in self.backend.logs(c, follow=follow, tail=tail, since_ns=since,
                                               until_ns=until, stop=cancelled.is_set):
                    if entry.stream not in want:
                        continue
                    data = entry.format(timestamps=timestamps)
                    chunk = data if c.tty else frame(entry.stream, data)
                    if cancelled.is_set():
                        return
                    asyncio.run_coroutine_threadsafe(queue.put(chunk), loop).result()
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        worker = threading.Thread(target=produce, name=f"logs-{c.id[:12]}", daemon=True)
        worker.start()
        try:
            while (chunk := await queue.get()) is not None:
                await resp.write(chunk)
        finally:
            cancelled.set()
            with contextlib.suppress(asyncio.QueueEmpty):
                while True:  # unblock a producer waiting on a full queue
                    queue.get_nowait()
        await resp.write_eof()
        return resp
