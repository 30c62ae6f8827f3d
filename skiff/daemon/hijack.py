"""HTTP connection hijacking for attach: answer ``101 UPGRADED`` and pipe raw bytes both ways.

The docker CLI sends ``Connection: Upgrade`` / ``Upgrade: tcp`` and, after the 101, treats
the connection as a plain byte stream: Docker's multiplexed frames (or raw tty bytes) from
us, stdin from it. The shim already speaks exactly that on its attach connection, so the
daemon only copies bytes between the two sockets. A client that half-closes (stdin at EOF)
keeps receiving output: the transport's protocol is wrapped so that EOF does not close it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from aiohttp import web

RAW_STREAM = "application/vnd.docker.raw-stream"
MULTIPLEXED_STREAM = "application/vnd.docker.multiplexed-stream"
_CHUNK = 65536


class _Raw(web.StreamResponse):
    """A response whose body is whatever we write: no chunking, no length."""

    _length_check = False


class _Inbound:
    """aiohttp's payload parser hook after an upgrade: bytes from the client into a queue."""

    def __init__(self, queue: asyncio.Queue[bytes | None]) -> None:
        self.queue = queue

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.queue.put_nowait(bytes(data))
        return False, b""

    def feed_eof(self) -> None:
        self.queue.put_nowait(None)


class _KeepOpenOnEof(asyncio.Protocol):
    """Delegates to aiohttp's protocol, but a client's half-close only ends its input."""

    def __init__(self, inner: Any, on_eof: Any) -> None:
        self.inner = inner
        self.on_eof = on_eof

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool:
        self.on_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


def wants_upgrade(request: web.Request) -> bool:
    return "upgrade" in request.headers.get("Connection", "").lower() and bool(
        request.headers.get("Upgrade"))


async def hijack(request: web.Request, content_type: str
                 ) -> tuple[web.StreamResponse, asyncio.Queue[bytes | None] | None]:
    """Send the 101 (or, for a client that did not ask to upgrade, a 200 with a raw body).

    Returns the response to write output to and, when upgraded, the queue of client bytes
    (None at the client's EOF).
    """
    if not wants_upgrade(request):
        resp = _Raw(status=200, headers={"Content-Type": content_type})
        resp.force_close()
        await resp.prepare(request)
        return resp, None
    resp = _Raw(status=101, reason="UPGRADED", headers={
        "Content-Type": content_type, "Connection": "Upgrade", "Upgrade": "tcp"})
    resp.force_close()
    await resp.prepare(request)
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    request.protocol.set_parser(_Inbound(queue))  # type: ignore[arg-type]
    transport = request.transport
    if transport is not None:
        transport.set_protocol(_KeepOpenOnEof(request.protocol,
                                              lambda: queue.put_nowait(None)))
    return resp, queue


async def pipe(resp: web.StreamResponse, inbound: asyncio.Queue[bytes | None] | None,
               sock: socket.socket) -> None:
    """Copy shim -> client until the shim ends the stream, and client -> shim meanwhile."""
    sock.setblocking(False)
    reader, writer = await asyncio.open_unix_connection(sock=sock)

    async def upstream() -> None:
        assert inbound is not None
        while (data := await inbound.get()) is not None:
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    up = asyncio.ensure_future(upstream()) if inbound is not None else None
    try:
        while chunk := await reader.read(_CHUNK):
            await resp.write(chunk)
    finally:
        if up is not None:
            up.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await up
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
