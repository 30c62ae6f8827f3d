"""An attached container's streams: Docker's multiplexed framing, stdin with detach keys, the
local terminal in raw mode and its size."""

from __future__ import annotations

import _socket  # socket.py's C core: see transport.py for why
import os
import sys
import threading

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms) at run time
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, BinaryIO

MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
_HEADER_SIZE = 8  # decoded by hand: the struct module is one more import on every run


class Demuxer:
    """Splits Docker's multiplexed stream (8-byte header: stream id, 3 zero bytes, length)
    into stdout/stderr writes; fed arbitrary pieces."""

    def __init__(self, stdout: Callable[[bytes], None], stderr: Callable[[bytes], None]
                 ) -> None:
        self.sinks = {0: stdout, 1: stdout, 2: stderr}
        self.buf = bytearray()

    def feed(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= _HEADER_SIZE:
            kind = self.buf[0]
            size = int.from_bytes(self.buf[4:_HEADER_SIZE], "big")
            if len(self.buf) < _HEADER_SIZE + size:
                return
            payload = bytes(self.buf[_HEADER_SIZE:_HEADER_SIZE + size])
            del self.buf[:_HEADER_SIZE + size]
            self.sinks.get(kind, self.sinks[1])(payload)


def writer(stream: BinaryIO) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        stream.write(data)
        stream.flush()
    return write


class DetachWatcher:
    """Finds the detach sequence in typed input; bytes that start it are held back until it
    either completes (detach) or breaks (they are sent after all)."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self.held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(bytes to forward, detach requested)."""
        out = bytearray()
        for b in data:
            self.held += bytes([b])
            if self.keys.startswith(self.held):
                if self.held == self.keys:
                    self.held = b""
                    return bytes(out), True
                continue
            # A broken sequence goes through; its last byte may begin a new one.
            if self.keys[:1] == bytes([b]):
                out += self.held[:-1]
                self.held = bytes([b])
            else:
                out += self.held
                self.held = b""
        return bytes(out), False


def read_output(sock: _socket.socket, early: bytes, tty: bool, out: BinaryIO, err: BinaryIO
                ) -> None:
    """Copy the container's output until the daemon closes the stream."""
    demux = None if tty else Demuxer(writer(out), writer(err))
    sink = writer(out)
    data = early
    while True:
        if data:
            if demux is None:
                sink(data)
            else:
                demux.feed(data)
        try:
            data = sock.recv(65536)
        except OSError:
            return
        if not data:
            return


def pump_input(sock: _socket.socket, fd: int, keys: bytes | None,
               on_detach: Callable[[], None]) -> None:
    """Copy stdin to the container; at EOF half-close so the container sees it."""
    watcher = DetachWatcher(keys) if keys else None
    try:
        while True:
            data = os.read(fd, 65536)
            if not data:
                break
            detach = False
            if watcher is not None:
                data, detach = watcher.feed(data)
            if data:
                sock.sendall(data)
            if detach:
                on_detach()
                return
        # The plain socket's shutdown even for TLS: SSLSocket.shutdown drops its TLS state,
        # after which the output thread would read raw records as container output. skiffd
        # takes a FIN without close_notify as the half-close it is.
        _socket.socket.shutdown(sock, _socket.SHUT_WR)
    except OSError:
        return


def start_thread(target: Callable[..., None], *args: object) -> threading.Thread:
    t = threading.Thread(target=target, args=args, daemon=True)
    t.start()
    return t


class raw_terminal:  # lower case: it replaces a function of that name, used in a with
    """Put the terminal at ``fd`` in raw mode (the container's pty does the line editing);
    restore it on exit. Entering gives whether ``fd`` is a terminal. A class rather than a
    contextlib.contextmanager: contextlib is otherwise not needed by a run."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.saved: list[Any] | None = None

    def __enter__(self) -> bool:
        if not os.isatty(self.fd):
            return False
        import termios
        import tty

        self.saved = termios.tcgetattr(self.fd)
        try:
            tty.setraw(self.fd, termios.TCSANOW)
        except BaseException:
            self.__exit__()
            raise
        return True

    def __exit__(self, *exc: object) -> None:
        if self.saved is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
            self.saved = None


def terminal_size(fd: int | None = None) -> tuple[int, int] | None:
    """(height, width) of the terminal, or None when there is none."""
    for candidate in ([fd] if fd is not None else [sys.stdout.fileno(), sys.stdin.fileno()]):
        try:
            size = os.get_terminal_size(candidate)
            return size.lines, size.columns
        except OSError:
            continue
    return None
