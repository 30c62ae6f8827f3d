"""Network namespaces kept alive by a bind mount on a file, the way `ip netns` does it.

skiff keeps them under its own exec root (``/run/skiff/netns/<id>``) instead of /run/netns so
that they are ours to list and clean up. Namespaces are per thread in Linux, so "create" and
"run in" happen on a short-lived dedicated thread: the calling thread (and the asyncio loop
the daemon runs on) never changes namespace.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from skiff.errors import Conflict, NotFound, os_error

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MNT_DETACH = 0x2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def _check(rc: int, op: str, target: str) -> None:
    if rc != 0:
        code = ctypes.get_errno()
        raise os_error(op, target, OSError(code, os.strerror(code)))


def _setns(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise NotFound(f"network namespace {path} does not exist") from exc
    except OSError as exc:
        raise os_error("open network namespace", path, exc) from exc
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), "setns into network namespace", path)
    finally:
        os.close(fd)


def _on_thread(fn: Callable[[], T], name: str) -> T:
    """Run ``fn`` on a fresh thread (so its namespace changes die with it) and return its result."""
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # handed to the caller's thread below
            error.append(exc)

    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def is_netns(path: str) -> bool:
    """True if ``path`` is a bind-mounted network namespace (nsfs), not just a placeholder file."""
    try:
        return os.stat(path).st_dev != os.stat(os.path.dirname(path) or ".").st_dev
    except OSError:
        return False


def create(path: str) -> None:
    """Make a new network namespace and pin it by bind-mounting it on ``path``.

    Conflict if ``path`` already holds a namespace. The loopback device starts down, as in
    any fresh namespace; the network driver brings it up.
    """
    if is_netns(path):
        raise Conflict(f"network namespace {path} already exists")
    try:
        os.makedirs(os.path.dirname(path), mode=0o711, exist_ok=True)
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o444))
    except OSError as exc:
        raise os_error("create network namespace file", path, exc) from exc

    def pin() -> None:
        _check(_libc.unshare(CLONE_NEWNET), "unshare network namespace for", path)
        source = f"/proc/self/task/{threading.get_native_id()}/ns/net"
        _check(_libc.mount(source.encode(), path.encode(), None, MS_BIND, None),
               "bind-mount network namespace on", path)

    try:
        _on_thread(pin, "netns-create")
    except BaseException:
        _unlink_quiet(path)
        raise


def remove(path: str) -> None:
    """Unpin and delete the namespace file; the namespace dies with its last user. Idempotent."""
    if is_netns(path):
        rc = _libc.umount2(path.encode(), MNT_DETACH)
        if rc != 0 and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
            _check(rc, "unmount network namespace", path)
    _unlink_quiet(path)


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise os_error("remove network namespace file", path, exc) from exc


def run_in(path: str, fn: Callable[[], T]) -> T:
    """Call ``fn`` with the network namespace at ``path`` as its own; returns what ``fn`` returns.

    Sockets ``fn`` opens (netlink, UDP, ...) belong to that namespace for their whole life,
    even after the thread is gone, which is what the embedded DNS server relies on.
    """
    def inside() -> T:
        _setns(path)
        return fn()

    return _on_thread(inside, "netns-run")


def check_exists(path: str) -> None:
    if not is_netns(path):
        raise NotFound(f"network namespace {path} does not exist")

