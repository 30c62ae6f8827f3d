"""The daemon's side of the shim zygote (``python -m skiff.shim zygote``, see skiff/shim/zygote.py).

A fresh ``python -m skiff.shim start`` per container costs an interpreter start and the
shim's imports (~20 ms of every ``docker run``); the zygote forks shims from a process that
has paid for both once. It is started on first use, not at boot (a daemon that never runs a
container never pays for it), and restarted if it died. It never forks from the daemon
itself: the daemon is multi-threaded, and a fork of it would copy locks held by other
threads.

The zygote's stdin is a pipe whose other end only this object holds: when the daemon exits
or is killed, the zygote sees EOF and exits too. The shims it made live on (they are in
sessions of their own), as before.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading

from skiff.errors import SystemFailure, Unavailable

READY = b"ready\n"
_START_TIMEOUT = 10.0  # for the zygote's imports, on a loaded machine
# An argument that only makes room: each shim rewrites the zygote's argument area with its
# own `python -m skiff.shim start ...` command line (ids and paths: well under 4 KiB).
_TITLE_ROOM = " " * 4096


class Zygote:
    def __init__(self, socket_path: str) -> None:
        self.path = socket_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> None:
        """Start the zygote unless it runs (lock held)."""
        if self._proc is not None and self._proc.poll() is None:
            return
        self._reap()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "skiff.shim", "zygote", "--socket", self.path,
                 _TITLE_ROOM],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        except OSError as exc:
            raise Unavailable(f"start the shim zygote: {exc}") from exc
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], _START_TIMEOUT)
        line = proc.stdout.readline() if ready else b""
        proc.stdout.close()
        if line != READY:
            proc.kill()
            proc.wait()
            raise Unavailable(f"start the shim zygote on {self.path}: it did not get ready")
        self._proc = proc

    def _reap(self) -> None:
        if self._proc is None:
            return
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def start_shim(self, args: list[str], timeout: float = 120.0) -> tuple[int, str]:
        """``python -m skiff.shim start ARGS``, forked from the zygote: (exit code, message).

        Raises Unavailable when the request never reached a zygote (the caller may then start
        the shim the slow way: nothing was started); SystemFailure when the answer was lost
        after the request went out (a shim may exist: do not start another one blindly).
        """
        with self._lock:
            self._ensure()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            try:
                sock.connect(self.path)
                sock.sendall(json.dumps({"argv": args}).encode() + b"\n")
            except OSError as exc:
                raise Unavailable(f"shim zygote {self.path}: {exc.strerror or exc}") from exc
            try:
                reply = json.loads(_read_line(sock))
                return int(reply["code"]), str(reply.get("message") or "")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise SystemFailure(f"start shim through the zygote {self.path}: no answer "
                                    f"({exc})") from exc
        finally:
            sock.close()

    def close(self) -> None:
        """Stop the zygote (shims it made keep running)."""
        with self._lock:
            self._reap()


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ValueError("connection closed before the answer")
        data += chunk
    return data.split(b"\n", 1)[0]


def enabled() -> bool:
    """``SKIFF_SHIM_ZYGOTE=0`` starts every shim with a fresh interpreter (for comparisons)."""
    return os.environ.get("SKIFF_SHIM_ZYGOTE", "1") != "0"
