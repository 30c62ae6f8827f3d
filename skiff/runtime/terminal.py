"""Terminals: the pty made inside the container and handed over on the console socket.

As runc does: the container's init opens /dev/ptmx in its own devpts, keeps the slave as its
stdio and controlling terminal, and sends the master over the ``--console-socket`` unix socket
with SCM_RIGHTS. When no console socket is given (``run``/``exec`` in the foreground), the
runtime itself receives the master and relays it to its own stdio.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
import struct
import sys
import termios
import tty
from collections.abc import Callable

from skiff.errors import SystemFailure, os_error

TIOCSPTLCK = 0x40045431
TIOCGPTN = 0x80045430
TIOCSCTTY = 0x540E


def open_pty() -> tuple[int, int, str]:
    """(master, slave, slave path) from the devpts visible at /dev/ptmx."""
    try:
        master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        n = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0\0\0\0"))[0]
        path = f"/dev/pts/{n}"
        slave = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise os_error("open pty in container", "/dev/ptmx", exc) from exc
    return master, slave, path


def send_master(sock: socket.socket, master: int) -> None:
    try:
        socket.send_fds(sock, [b"/dev/ptmx"], [master])
    except OSError as exc:
        raise os_error("send pty master over console socket", "", exc) from exc


def recv_master(sock: socket.socket) -> int:
    _msg, fds, _flags, _addr = socket.recv_fds(sock, 4096, 1)
    if not fds:
        raise SystemFailure("console socket: no pty master received")
    return fds[0]


def make_controlling(slave: int) -> None:
    """Make ``slave`` the stdio and controlling terminal of this (session leader) process."""
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    fcntl.ioctl(0, TIOCSCTTY, 0)


def connect_console_socket(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError as exc:
        s.close()
        raise os_error("connect to console socket", path, exc) from exc
    return s


def _copy_winsize(src: int, dst: int) -> None:
    try:
        ws = fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dst, termios.TIOCSWINSZ, ws)
    except OSError:
        pass


def relay(master: int, done: Callable[[], bool]) -> None:
    """Copy stdin -> master and master -> stdout until the container's process is gone.

    Puts our own terminal in raw mode for the duration, and forwards window size changes.
    """
    stdin_tty = os.isatty(0)
    saved = termios.tcgetattr(0) if stdin_tty else None
    if stdin_tty:
        _copy_winsize(0, master)
        tty.setraw(0)
        signal.signal(signal.SIGWINCH, lambda *_: _copy_winsize(0, master))
    fds = [master, 0]
    try:
        while True:
            try:
                ready, _, _ = select.select(fds, [], [], 0.2)
            except InterruptedError:
                continue
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the slave side is closed, the process exited
                    data = b""
                if not data:
                    break
                os.write(sys.stdout.fileno(), data)
            if 0 in ready:
                data = os.read(0, 65536)
                if not data:
                    fds.remove(0)
                else:
                    os.write(master, data)
            if not ready and done():
                break
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
