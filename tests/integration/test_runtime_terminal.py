"""Terminals: the pty master arrives over --console-socket, as with runc."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.integration.support import RuntimeDriver, new_id

Bundle = Callable[..., Path]


class ConsoleServer:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(1)
        self.master: int | None = None
        self.name = b""
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        conn, _ = self.sock.accept()
        msg, fds, _, _ = socket.recv_fds(conn, 4096, 1)
        self.name = msg
        self.master = fds[0]
        conn.close()

    def read_all(self, timeout: float = 10) -> bytes:
        self.thread.join(timeout)
        assert self.master is not None, "no pty master received"
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        return out


def test_create_with_console_socket(runtime: RuntimeDriver, make_bundle: Bundle,
                                    tmp_path: Path) -> None:
    srv = ConsoleServer(tmp_path / "console.sock")
    b = make_bundle(["sh", "-c", "tty; test -t 0 && echo stdin-is-tty; stty size"],
                    terminal=True)
    cid = new_id("tty")
    runtime("create", "--bundle", str(b), "--console-socket", str(srv.path), cid)
    runtime("start", cid)
    out = srv.read_all().decode()
    assert srv.name == b"/dev/ptmx"
    assert "/dev/pts/0" in out
    assert "stdin-is-tty" in out
    runtime.wait_status(cid, "stopped")
    runtime("delete", cid)


def test_terminal_without_console_socket_is_refused_for_create(runtime: RuntimeDriver,
                                                               make_bundle: Bundle) -> None:
    cid = new_id("notty")
    res = runtime("create", "--bundle", str(make_bundle(["sh"], terminal=True)), cid,
                  check=False)
    assert res.code != 0 and "console-socket" in res.err
    assert not (runtime.root / cid).exists()


def test_exec_tty_with_console_socket(runtime: RuntimeDriver, make_bundle: Bundle,
                                      tmp_path: Path) -> None:
    cid = new_id("exectty")
    runtime("run", "-d", "--bundle", str(make_bundle(["sleep", "60"])), cid)
    srv = ConsoleServer(tmp_path / "c.sock")
    runtime("exec", "-t", "-d", "--console-socket", str(srv.path), cid, "sh", "-c",
            "test -t 1 && echo exec-tty")
    assert "exec-tty" in srv.read_all().decode()
    runtime("delete", "-f", cid)
