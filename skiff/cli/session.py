"""One attached connection: the container's output to our stdout/stderr, our stdin to it, the
terminal in raw mode and sized, signals forwarded."""

from __future__ import annotations

import _socket  # socket.py's C core: see transport.py for why
import signal
import sys
import threading

from skiff.cli.client import APIError, path_arg
from skiff.cli.parsing import detach_keys
from skiff.cli.streams import pump_input, raw_terminal, read_output, start_thread, terminal_size
from skiff.errors import SkiffError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms) at run time
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from skiff.cli.main import Cli

DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"
_PROXIED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
            signal.SIGUSR2)


class Session:
    """One attached connection: output to our stdout/stderr, our stdin to the container,
    the terminal in raw mode and sized, signals forwarded."""

    def __init__(self, cli: Cli, cid: str, *, tty: bool, stdin: bool, stdout: bool = True,
                 stderr: bool = True, keys: str = "", sig_proxy: bool = True,
                 exec_id: str | None = None) -> None:
        self.cli, self.cid, self.tty, self.stdin = cli, cid, tty, stdin
        self.stdout, self.stderr = stdout, stderr
        self.keys_text = keys  # sent to the daemon only when the user chose keys
        self.keys = detach_keys(keys or DEFAULT_DETACH_KEYS)
        self.sig_proxy = sig_proxy and not tty
        self.exec_id = exec_id
        self.detached = threading.Event()
        self.started = threading.Event()
        self.sock: _socket.socket | None = None
        self.early = b""

    def connect(self, exec_body: dict[str, Any] | None = None) -> None:
        client = self.cli.client
        if self.exec_id is not None:
            self.sock, self.early, _ = client.hijack(f"/exec/{self.exec_id}/start",
                                                     body=exec_body)
            return
        self.sock, self.early, _ = client.hijack(
            f"/containers/{path_arg(self.cid)}/attach",
            {"stream": True, "stdin": self.stdin, "stdout": self.stdout,
             "stderr": self.stderr, "detachKeys": self.keys_text or None})

    def resize(self) -> None:
        size = terminal_size()
        if not size or not self.tty:
            return
        h, w = size
        path = (f"/exec/{self.exec_id}/resize" if self.exec_id
                else f"/containers/{path_arg(self.cid)}/resize")
        try:
            self.cli.client.post(path, {"h": h, "w": w})
        except APIError:
            pass  # a container that just exited cannot be resized: nothing to do

    def _detach(self) -> None:
        self.detached.set()
        if self.sock is not None:
            try:
                # the plain socket's shutdown: SSLSocket's would leave the output thread
                # reading raw TLS records (see streams.pump_input)
                _socket.socket.shutdown(self.sock, _socket.SHUT_RDWR)
            except OSError:
                pass

    def _forward(self, signum: int, _frame: object) -> None:
        def send() -> None:
            # A signal can come before the start was even asked for: the container is only
            # "created" then and a kill would be refused as "not running". (A kill while
            # the start is under way is fine: skiffd waits for the start to finish.)
            self.started.wait(60)
            try:
                self.cli.client.post(f"/containers/{path_arg(self.cid)}/kill",
                                     {"signal": str(signum)})
            except SkiffError:
                pass  # it exited meanwhile: nothing left to signal
        start_thread(send)

    def pump(self, start: Callable[[], None] | None = None) -> bool:
        """Copy streams until the container's output ends; True if the user detached.

        ``start`` (the container's start) runs once signals are forwarded and the terminal
        is raw, so nothing that happens right after the start is missed."""
        assert self.sock is not None
        sock = self.sock
        old_handlers: dict[signal.Signals, Any] = {}
        stdin_fd = sys.stdin.fileno() if self.stdin else -1
        main = threading.current_thread() is threading.main_thread()
        with raw_terminal(stdin_fd) if self.tty and self.stdin else _null():
            try:
                if self.tty and main:
                    old_handlers[signal.SIGWINCH] = signal.signal(
                        signal.SIGWINCH, lambda *_: start_thread(self.resize))
                if self.sig_proxy and main:
                    for sig in _PROXIED:
                        old_handlers[sig] = signal.signal(sig, self._forward)
                out = start_thread(read_output, sock, self.early, self.tty,
                                   sys.stdout.buffer, sys.stderr.buffer)
                if start is not None:
                    start()
                self.started.set()
                if self.tty:
                    self.resize()
                if self.stdin:
                    start_thread(pump_input, sock, stdin_fd, self.keys, self._detach)
                while out.is_alive():
                    out.join(0.2)  # short joins: signal handlers run between them
            finally:
                for sig, handler in old_handlers.items():
                    signal.signal(sig, handler)
                sock.close()
        return self.detached.is_set()


class _null:
    def __enter__(self) -> bool:
        return False

    def __exit__(self, *exc: object) -> None:
        return None
