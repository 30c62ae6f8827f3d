"""TLS for the TCP API sockets, with half-close: a TLS endpoint in front of the HTTP server.

asyncio's own TLS transport ends the whole connection when the client sends close_notify.
The docker CLI does exactly that on an attach as soon as its stdin is done (``CloseWrite``,
even without ``-i``) and then waits for the container's output, which would be lost. So each
TLS connection is decrypted here with ``ssl.MemoryBIO`` and handed to the aiohttp server
over a private socketpair: the client's close_notify becomes a plain half-close (write EOF)
there, exactly what the attach code already handles on unix sockets, and our output keeps
flowing until the server closes its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable

log = logging.getLogger("skiffd")
_CHUNK = 65536

ServerFactory = Callable[[], asyncio.BaseProtocol]


class _Upstream(asyncio.Protocol):
    """Our end of the socketpair: what the HTTP server writes goes to the TLS client."""

    def __init__(self, bridge: TLSBridge) -> None:
        self.bridge = bridge

    def data_received(self, data: bytes) -> None:
        self.bridge.send(data)

    def eof_received(self) -> bool:
        self.bridge.finish()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.bridge.finish()

    # flow control: a server that reads slowly slows the client's reading, not our memory
    def pause_writing(self) -> None:
        if self.bridge.transport is not None:
            self.bridge.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.bridge.transport is not None and not self.bridge.transport.is_closing():
            self.bridge.transport.resume_reading()


class TLSBridge(asyncio.Protocol):
    """One client connection: TLS records in and out, plaintext to and from the server."""

    def __init__(self, ctx: ssl.SSLContext, server: ServerFactory) -> None:
        self.ctx = ctx
        self.server = server
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.transport: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.handshaken = False
        self.done = False
        # plaintext (and the client's EOF) that arrived before the server side was connected
        self._pending: tuple[bytes, bool] | None = (b"", False)
        self._connecting: asyncio.Task[None] | None = None

    # --- the client side ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.incoming.write(data)
        if not self.handshaken and not self._handshake():
            return
        self._read_plaintext()

    def eof_received(self) -> bool:
        # a TCP FIN without close_notify (the docker CLI's CloseWrite on TLS): still only
        # the client's direction ends
        log.debug("TLS client %s: end of input", self._peer())
        self._upstream_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.done = True
        if self.upstream is not None:
            self.upstream.close()

    # ... and a client that reads slowly (logs -f, a big export) pauses the server's output
    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and not self.upstream.is_closing():
            self.upstream.resume_reading()

    def _handshake(self) -> bool:
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return False
        except ssl.SSLError as exc:
            # a client without a certificate from our CA ends here (--tlsverify)
            log.info("TLS handshake with %s failed: %s", self._peer(), exc.reason or exc)
            self._flush()
            self._abort()
            return False
        self._flush()
        self.handshaken = True
        self._connect_server()
        return True

    def _read_plaintext(self) -> None:
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self.tls.read(_CHUNK)
            except ssl.SSLWantReadError:
                break  # all of what arrived is read
            except ssl.SSLError as exc:
                log.info("TLS error from %s: %s", self._peer(), exc.reason or exc)
                self._abort()
                return
            if not chunk:  # close_notify (read() answers b"" rather than raising)
                log.debug("TLS client %s: close_notify", self._peer())
                self._forward(b"".join(chunks))
                chunks = []
                self._upstream_eof()
                break
            chunks.append(chunk)
        self._forward(b"".join(chunks))
        self._flush()  # key updates and the like produce records to send back

    # --- the server side ---------------------------------------------------------------

    def _connect_server(self) -> None:
        ours, theirs = socket.socketpair()
        loop = asyncio.get_running_loop()

        async def connect() -> None:
            try:
                await loop.connect_accepted_socket(self.server, theirs)
                transport, _ = await loop.connect_accepted_socket(
                    lambda: _Upstream(self), ours)
            except OSError as exc:
                log.error("TLS connection from %s: connect to the API server: %s",
                          self._peer(), exc)
                ours.close()
                theirs.close()
                self._abort()
                return
            assert isinstance(transport, asyncio.Transport)
            self.upstream = transport
            if self.done:
                transport.close()
            elif self._pending is not None:
                data, eof = self._pending
                self._pending = None
                if data:
                    transport.write(data)
                if eof:
                    transport.write_eof()

        self._connecting = loop.create_task(connect())

    def _forward(self, data: bytes) -> None:
        if not data:
            return
        if self.upstream is None:
            pending = self._pending or (b"", False)
            self._pending = (pending[0] + data, pending[1])
        else:
            self.upstream.write(data)

    def _upstream_eof(self) -> None:
        if self.upstream is None:
            pending = self._pending or (b"", False)
            self._pending = (pending[0], True)
        elif self.upstream.can_write_eof() and not self.upstream.is_closing():
            self.upstream.write_eof()

    def send(self, data: bytes) -> None:
        """Plaintext from the server to the client."""
        if self.done:
            return
        try:
            self.tls.write(data)
        except ssl.SSLError as exc:
            log.info("TLS write to %s failed: %s", self._peer(), exc)
            self._abort()
            return
        self._flush()

    def finish(self) -> None:
        """The server closed its end: say close_notify and close after what is queued."""
        if self.done:
            return
        self.done = True
        with contextlib.suppress(ssl.SSLError):
            self.tls.unwrap()
        self._flush()
        if self.transport is not None:
            self.transport.close()

    # --- plumbing ----------------------------------------------------------------------

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _abort(self) -> None:
        self.done = True
        if self.transport is not None:
            self.transport.close()
        if self.upstream is not None:
            self.upstream.close()

    def _peer(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "a client"
