"""``/containers/{id}/exec`` and ``/exec/{id}``: create, start (hijacked or detached), resize,
inspect."""

from __future__ import annotations

import socket
import struct
from collections.abc import Mapping
from typing import Any, Protocol

from aiohttp import web

from skiff.daemon.containers.execs import ExecRecord, console_size
from skiff.daemon.hijack import MULTIPLEXED_STREAM, RAW_STREAM, hijack, pipe
from skiff.daemon.http import api_minor, json_body, json_response, qsize, route
from skiff.errors import InvalidArgument, SkiffError

_STDOUT_FRAME = struct.Struct(">BxxxI")


class ExecBackend(Protocol):
    async def create(self, ref: str, body: Mapping[str, Any]) -> ExecRecord: ...
    def get(self, exec_id: str) -> ExecRecord: ...
    async def prepare(self, exec_id: str, *, tty: bool | None = None,
                      size: tuple[int, int] | None = None) -> ExecRecord: ...
    async def launch(self, rec: ExecRecord, *, attach: bool) -> socket.socket | None: ...
    async def wait_recorded(self, rec: ExecRecord) -> None: ...
    async def resize(self, exec_id: str, height: int, width: int) -> None: ...


def _optional_bool(body: Mapping[str, Any], key: str) -> bool | None:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise InvalidArgument(f"exec start: {key} must be a boolean")
    return value


class ExecRouter:
    def __init__(self, backend: ExecBackend) -> None:
        self.backend = backend

    def register(self, router: web.UrlDispatcher) -> None:
        route(router, "POST", "/containers/{id}/exec", self.create)
        route(router, "POST", "/exec/{id}/start", self.start)
        route(router, "POST", "/exec/{id}/resize", self.resize)
        route(router, "GET", "/exec/{id}/json", self.inspect)

    async def create(self, request: web.Request) -> web.StreamResponse:
        body = await json_body(request)
        rec = await self.backend.create(request.match_info["id"], body)
        return json_response({"Id": rec.id}, status=201)

    async def inspect(self, request: web.Request) -> web.StreamResponse:
        return json_response(self.backend.get(request.match_info["id"]).inspect())

    async def resize(self, request: web.Request) -> web.StreamResponse:
        height, width = qsize(request)
        await self.backend.resize(request.match_info["id"], height, width)
        return web.Response(status=200)

    async def start(self, request: web.Request) -> web.StreamResponse:
        body = await json_body(request, required=False)
        detach = bool(_optional_bool(body, "Detach"))
        rec = await self.backend.prepare(
            request.match_info["id"], tty=_optional_bool(body, "Tty"),
            size=console_size(body.get("ConsoleSize"), "exec start"))
        if detach:
            await self.backend.launch(rec, attach=False)
            return web.Response(status=200)
        content_type = RAW_STREAM if rec.tty or api_minor(request) < 42 else MULTIPLEXED_STREAM
        resp, inbound = await hijack(request, content_type)
        try:
            sock = await self.backend.launch(rec, attach=True)
        except SkiffError as exc:
            # Past the 101 the error can only go into the stream (Docker writes it to stdout);
            # the client then reads the exit code (126/127) from the exec's inspect.
            text = (exc.message + "\r\n").encode()
            await resp.write(text if rec.tty else _STDOUT_FRAME.pack(1, len(text)) + text)
            return resp
        assert sock is not None
        try:
            await pipe(resp, inbound, sock)
        finally:
            sock.close()
        # The client inspects for the exit code the moment it sees EOF: record it first.
        await self.backend.wait_recorded(rec)
        return resp
