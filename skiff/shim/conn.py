"""One client connection of the shim's control socket: buffered, non-blocking, line- or
stream-mode."""

from __future__ import annotations

import socket

from skiff.shim import protocol

# Typing-only imports: typing itself is ~1 MiB of every shim's memory.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from skiff.shim.detach import DetachScanner


# A client that lets this much live output pile up is dropped rather than let it grow the
# shim without bound (the container never blocks on a slow reader).
MAX_BUFFERED = 8 * 1024 * 1024

REQUEST, WAITING, ATTACHED = "request", "waiting", "attached"


class Conn:
    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.fd = sock.fileno()
        self.mode = REQUEST
        self.inbuf = b""
        self.outbuf = bytearray()
        self.closing = False  # close once outbuf is sent
        self.closed = False
        self.events = 0  # what the selector watches for (0: not registered)
        # While attached: which process, which of its streams, what to do with our input.
        self.target: Any = None
        self.streams: frozenset[int] = frozenset()
        self.stdin = False
        self.stdin_once = False
        self.detach: DetachScanner | None = None  # the client's detach keys, when attached
        self.input_done = False

    def reply(self, obj: dict[str, Any]) -> None:
        self.send(protocol.encode(obj), live=False)

    def send(self, data: bytes, live: bool = True) -> bool:
        """Queue ``data``; False (and the connection marked for closing) when it is too slow.

        ``live`` output counts against the limit; replies and log replays do not.
        """
        if self.closed:
            return False
        if live and len(self.outbuf) > MAX_BUFFERED:
            self.outbuf.clear()
            self.closing = True
            return False
        self.outbuf += data
        return True

    def flush(self) -> None:
        """Send what the socket takes now; the rest waits for the next writable event."""
        while self.outbuf and not self.closed:
            try:
                n = self.sock.send(self.outbuf)
            except BlockingIOError:
                return
            except OSError:
                self.outbuf.clear()
                self.closing = True
                return
            del self.outbuf[:n]

    def flush_blocking(self, timeout: float) -> None:
        """Send everything (shim about to exit): block up to ``timeout`` seconds."""
        if self.closed or not self.outbuf:
            return
        try:
            self.sock.settimeout(timeout)
            self.sock.sendall(self.outbuf)
        except OSError:
            pass
        self.outbuf.clear()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()
