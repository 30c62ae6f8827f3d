"""An attached container's streams: Docker's multiplexed framing, stdin with detach keys, the
local terminal in raw mode and its size."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO

MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
_HEADER = struct.Struct(">BxxxI")


class Demuxer:
    """Splits Docker's multiplexed stream (8-byte header: stream id, 3 zero bytes, length)
    into stdout/stderr writes; fed arbitrary pieces."""

    def __init__(self, stdout: Callable[[bytes], None], stderr: Callable[[bytes], None]
                 ) -> None:
        self.sinks = {0: stdout, 1: stdout, 2: stderr}
        self.buf = bytearray()

    def feed(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= _HEADER.size:
            kind, size = _HEADER.unpack_from(self.buf)
            if len(self.buf) < _HEADER.size + size:
                return
            payload = bytes(self.buf[_HEADER.size:_HEADER.size + size])
            del self.buf[:_HEADER.size + size]
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


def read_output(sock: socket.socket, early: bytes, tty: bool, out: BinaryIO, err: BinaryIO
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


def pump_input(sock: socket.socket, fd: int, keys: bytes | None,
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
        socket.socket.shutdown(sock, socket.SHUT_WR)
    except OSError:
        return


def start_thread(target: Callable[..., None], *args: object) -> threading.Thread:
    t = threading.Thread(target=target, args=args, daemon=True)
    t.start()
    return t


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[bool]:
    """Put the terminal at ``fd`` in raw mode (the container's pty does the line editing);
    restore it on exit. Yields whether ``fd`` is a terminal."""
    if not os.isatty(fd):
        yield False
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def terminal_size(fd: int | None = None) -> tuple[int, int] | None:
    """(height, width) of the terminal, or None when there is none."""
    for candidate in ([fd] if fd is not None else [sys.stdout.fileno(), sys.stdin.fileno()]):
        try:
            size = os.get_terminal_size(candidate)
            return size.lines, size.columns
        except OSError:
            continue
    return None
