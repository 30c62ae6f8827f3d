"""A blocking client of a shim's control socket (protocol: :mod:`skiff.shim.protocol`).

One connection per call, so a daemon can use it from worker threads; ``attach`` and
``exec(attach=True)`` hand back the connected socket, which then carries the streams.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from typing import Any

from skiff.errors import SystemFailure, Unavailable
from skiff.shim import protocol
from skiff.shim.server import SOCKET


class ShimClient:
    def __init__(self, state_dir: str, timeout: float | None = 30.0) -> None:
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, SOCKET)
        self.timeout = timeout

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise Unavailable(f"connect to shim {self.path}: {exc.strerror or exc}") from exc
        return sock

    def _exchange(self, op: str, timeout: float | None, args: dict[str, Any],
                  stream: bool = False) -> tuple[socket.socket, dict[str, Any]]:
        """Send one request, read its reply line. ``stream``: the connection carries the
        process's streams after the reply, so not a byte past the newline may be read."""
        sock = self._connect()
        try:
            sock.settimeout(timeout)
            sock.sendall(protocol.encode({"op": op, **args}))
            line = _read_line(sock, 1 if stream else 65536)
            reply: dict[str, Any] = json.loads(line)
            return sock, protocol.raise_for(reply)
        except BaseException:
            sock.close()
            raise

    def call(self, op: str, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        sock, reply = self._exchange(op, self.timeout if timeout is None else timeout, args)
        sock.close()
        reply.pop("ok", None)
        reply.pop("v", None)
        return reply

    def state(self) -> dict[str, Any]:
        return self.call("state")

    def start(self) -> int:
        """Start the container's process; its pid."""
        pid = int(self.call("start").get("pid") or 0)
        return pid or int(self.state().get("pid") or 0)  # a shim from before pid replies

    def kill(self, signal: int | str = "SIGTERM", all: bool = False,
             exec_id: str | None = None) -> None:
        self.call("kill", signal=signal, all=all, exec=exec_id)

    def wait(self, exec_id: str | None = None, timeout: float | None = None
             ) -> dict[str, Any]:
        """Block until the process exits (``timeout`` None: for ever); its exit record."""
        sock, reply = self._exchange("wait", timeout, {"exec": exec_id})
        sock.close()
        reply.pop("ok", None)
        reply.pop("v", None)
        return reply

    def attach(self, *, stdin: bool = False, stdout: bool = True, stderr: bool = True,
               logs: bool = False, stdin_once: bool = False, exec_id: str | None = None,
               detach_keys: bytes = b"") -> socket.socket:
        sock, _ = self._exchange("attach", self.timeout, {
            "stdin": stdin, "stdout": stdout, "stderr": stderr, "logs": logs,
            "stdin_once": stdin_once, "exec": exec_id, "detach_keys": detach_keys.hex()},
            stream=True)
        sock.settimeout(None)
        return sock

    def resize(self, height: int, width: int, exec_id: str | None = None) -> None:
        self.call("resize", height=height, width=width, exec=exec_id)

    def close_stdin(self, exec_id: str | None = None) -> None:
        self.call("close-stdin", exec=exec_id)

    def exec(self, exec_id: str, process: dict[str, Any], *, tty: bool = False,
             stdin: bool = False) -> int:
        """Start an exec'd process (not attached); its pid."""
        return int(self.call("exec", id=exec_id, process=process, tty=tty, stdin=stdin)["pid"])

    def exec_attached(self, exec_id: str, process: dict[str, Any], *, tty: bool = False,
                      stdin: bool = False) -> socket.socket:
        """Start an exec'd process with this connection attached to its streams."""
        sock, _ = self._exchange("exec", self.timeout, {
            "id": exec_id, "process": process, "tty": tty, "stdin": stdin, "attach": True},
            stream=True)
        sock.settimeout(None)
        return sock

    def exec_delete(self, exec_id: str) -> None:
        """Forget a finished exec (after its exit was collected with ``wait``)."""
        self.call("exec-delete", exec=exec_id)

    def delete(self, force: bool = False) -> None:
        self.call("delete", force=force)


def _read_line(sock: socket.socket, chunk: int = 1) -> bytes:
    """The reply line. Byte by byte by default: after an attach or exec reply, whatever
    follows the newline belongs to the stream. ``chunk``: nothing follows, read in pieces."""
    buf = bytearray()
    while not buf.endswith(b"\n"):
        data = sock.recv(chunk)
        if not data:
            raise SystemFailure("shim closed the connection before replying")
        buf += data
        if len(buf) > protocol.MAX_LINE:
            raise SystemFailure("shim reply too long")
    return bytes(buf)


def read_frames(sock: socket.socket) -> Iterator[tuple[int, bytes]]:
    """(stream, data) of Docker's multiplexed stream until the shim closes it."""
    while True:
        header = _read_exact(sock, protocol.HEADER_SIZE)
        if header is None:
            return
        stream, size = protocol.parse_header(header)
        data = _read_exact(sock, size)
        if data is None:
            raise SystemFailure("shim stream ended inside a frame")
        yield stream, data


def _read_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            if buf:
                raise SystemFailure("shim stream ended inside a frame")
            return None
        buf += chunk
    return bytes(buf)
