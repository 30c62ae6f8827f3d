"""A supervised process (the container's init or an exec'd one): its stdio ends, its
attached clients, and its fate once reaped."""

from __future__ import annotations

import os
import socket
import time

from skiff.errors import SystemFailure, os_error
from skiff.shim import timefmt
from skiff.shim.conn import Conn
from skiff.shim.protocol import STDERR, STDOUT

# Typing-only imports: typing itself is ~1 MiB of every shim's memory.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


# After the process is reaped, how long its output may stay open (a process outside the
# container's pid namespace can hold the pipe) before the exit is reported anyway.
DRAIN_GRACE = 2.0


class Proc:
    def __init__(self, key: str, tty: bool, stdin: bool) -> None:
        self.key = key  # "" for the container's init, else the exec id
        self.tty = tty
        self.open_stdin = stdin
        self.pid = 0
        self.spawned = False  # the runtime made it (even if we then failed to learn its pid)
        self.stdin_fd = -1  # our end of its stdin (pipe, or a dup of the pty master)
        self.stdin_buf = bytearray()
        self.master = -1  # the pty master, for resize
        self.outputs: dict[int, int] = {}  # fd we read -> stream it is
        self.attached: list[Conn] = []
        self.waiters: list[Conn] = []
        self.wait_status: int | None = None  # from waitpid, once reaped
        self.exited_ns = 0
        self.drain_deadline = 0.0
        self.exit: dict[str, Any] | None = None  # the final record, once output is drained

    def child_stdio(self) -> tuple[int, int, int]:
        """Make pipes (not for a tty: the pty comes over the console socket); return the
        ends the runtime passes to the process. The caller closes them after the runtime ran."""
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        if self.tty:
            return null, os.dup(null), os.dup(null)
        if self.open_stdin:
            r, self.stdin_fd = os.pipe2(os.O_CLOEXEC)
            os.set_blocking(self.stdin_fd, False)
            os.close(null)
        else:
            r = null
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        for fd, stream in ((out_r, STDOUT), (err_r, STDERR)):
            os.set_blocking(fd, False)
            self.outputs[fd] = stream
        return r, out_w, err_w

    def take_console(self, listener: socket.socket, what: str) -> None:
        """Receive the pty master the runtime sent on the console socket."""
        try:
            conn, _ = listener.accept()
            with conn:
                _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
        except OSError as exc:
            raise os_error(f"{what}: receive pty master on", "console socket", exc) from exc
        if not fds:
            raise SystemFailure(f"{what}: the runtime sent no pty master")
        self.master = fds[0]
        os.set_blocking(self.master, False)
        self.outputs[self.master] = STDOUT
        # A second fd for input, so the selector can watch reading and writing separately.
        self.stdin_fd = os.dup(self.master) if self.open_stdin else -1

    def close_ends(self) -> None:
        """Close our ends of its stdio (the runtime failed: there is no process to serve)."""
        for fd in {*self.outputs, self.stdin_fd, self.master} - {-1}:
            os.close(fd)
        self.outputs.clear()
        self.stdin_fd = self.master = -1

    def reaped(self, status: int) -> None:
        self.wait_status = status
        self.exited_ns = time.time_ns()
        self.drain_deadline = time.monotonic() + DRAIN_GRACE

    @property
    def running(self) -> bool:
        return self.pid > 0 and self.wait_status is None

    def exit_record(self, oom_killed: bool) -> dict[str, Any]:
        assert self.wait_status is not None
        code = os.waitstatus_to_exitcode(self.wait_status)
        return {"exit_code": 128 - code if code < 0 else code,
                "exited_at": timefmt.format_nano(self.exited_ns),
                "oom_killed": oom_killed, "pid": self.pid}
