"""``start``: detach a shim from whoever runs us, and report whether the container exists.

The starter (run by the daemon) forks; the child starts a new session and forks again, so
the shim is nobody's child (it is reparented to init) and outlives a SIGKILLed daemon. The
shim makes itself a child subreaper, so the container's init and every exec'd process become
its children to reap. It creates the container, then writes ``ok`` or the runtime's one-line
error on a pipe; the starter relays that and exits 0 or 1.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

from skiff.errors import Conflict, SkiffError, os_error
from skiff.shim.server import SOCKET, Config, Shim, remove_tree

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

PR_SET_CHILD_SUBREAPER = 36
SHIM_LOG = "shim.log"


def prctl(option: int, value: int, name: str) -> None:
    """prctl(2) with one argument; ``name`` (of the option) in the error."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise os_error(f"prctl {name}", "shim", OSError(err, os.strerror(err)))


def set_child_subreaper() -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1, "PR_SET_CHILD_SUBREAPER")


def start(cfg: Config) -> int:
    """Start a shim for ``cfg``; 0 once the container is created, else 1 with the message."""
    code, message = start_report(cfg)
    if code:
        sys.stderr.write(message + "\n")
    return code


def start_report(cfg: Config, close_fds: tuple[int, ...] = ()) -> tuple[int, str]:
    """Start a shim for ``cfg``: ``(0, "")`` once the container is created, else ``(1, why)``.

    ``close_fds`` are descriptors of the caller's that the shim must not hold (the zygote's
    connection to the daemon: the shim outlives it).
    """
    refused = prepare(cfg)
    if refused:
        return 1, refused
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            for fd in close_fds:
                os.close(fd)
            os.setsid()
            if os.fork() == 0:
                become_shim(cfg, lambda message: _report(w, message))
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    message = b"".join(chunks).decode("utf-8", "replace").strip()
    if message == "ok":
        return 0, ""
    return 1, message or f"start shim for container {cfg.id}: it died before reporting"


def prepare(cfg: Config) -> str:
    """Make the state dir; why no shim may start for ``cfg`` ("" if one may)."""
    try:
        os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
    except OSError as exc:
        return str(os_error("create shim state dir", cfg.state_dir, exc))
    if _shim_alive(os.path.join(cfg.state_dir, SOCKET)):
        return str(Conflict(f"start shim for container {cfg.id}: one is running"))
    return ""


def _shim_alive(path: str) -> bool:
    """Whether a shim answers on ``path``; a socket left by a killed one is removed."""
    import socket

    if not os.path.exists(path):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
            return True
        except ConnectionRefusedError:
            os.unlink(path)
            return False
        except OSError:
            return True  # cannot tell: do not start a second shim over it


def become_shim(cfg: Config, report: Callable[[str], None]) -> NoReturn:
    """Turn this (detached) process into the shim; never returns.

    ``report`` is called once, with "ok" when the container is created or with why not.
    """
    code = 1
    shim = None
    reported = False
    try:
        os.chdir("/")  # hold no directory of the daemon's busy
        null = os.open(os.devnull, os.O_RDWR)
        log = os.open(os.path.join(cfg.state_dir, SHIM_LOG),
                      os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_IGN)
        set_child_subreaper()
        shim = Shim(cfg)
        try:
            shim.create()
        except SkiffError as exc:
            shim.abandon()
            remove_tree(cfg.state_dir)  # before the report: the starter's caller sees it gone
            reported = True
            report(str(exc))
        else:
            reported = True
            report("ok")
            shim.serve()
            shim.shutdown()
            code = 0
    except BaseException:
        import traceback

        traceback.print_exc()
        if not reported:
            report(f"start shim for container {cfg.id}: internal error (see "
                   f"{os.path.join(cfg.state_dir, SHIM_LOG)})")
    finally:
        os._exit(code)


def _report(fd: int, message: str) -> None:
    if fd < 0:
        return
    try:
        os.write(fd, (" ".join(message.split()) + "\n").encode())
    finally:
        os.close(fd)
