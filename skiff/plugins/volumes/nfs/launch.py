"""How the local volume driver mounts NFS: the kernel's client when this kernel has one, else
the userspace client (``helper``) through FUSE. Functions here run in the daemon."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import time
from collections.abc import Sequence

from skiff.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    SkiffError,
    SystemFailure,
    Unavailable,
)
from skiff.plugins.volumes.nfs import helper

_ERROR_OF = {helper.EXIT_INVALID: InvalidArgument, helper.EXIT_NOT_FOUND: NotFound,
             helper.EXIT_UNAVAILABLE: Unavailable, helper.EXIT_DENIED: PermissionDenied}


def kernel_has_nfs(filesystems: str = "/proc/filesystems") -> bool:
    """Whether mount(2) of type nfs can work: registered, or loadable as a module."""
    try:
        with open(filesystems, encoding="ascii", errors="replace") as f:
            if any(line.split()[-1:] in (["nfs"], ["nfs4"]) for line in f):
                return True
    except OSError:
        return False
    release = os.uname().release
    return any(os.path.exists(f"/lib/modules/{release}/kernel/fs/nfs/nfs.ko{ext}")
               for ext in ("", ".xz", ".zst", ".gz"))


def helper_budget(options: Sequence[str]) -> float:
    """How long a mount may take before we give up on the helper: its own per-call timeout
    (timeo, tenths of a second) for each of portmapper x2, MOUNT, FSINFO and GETATTR, plus
    interpreter start-up; the helper should always fail first with its own clearer message."""
    timeo = 10.0
    for word in options:
        key, _, value = word.partition("=")
        if key == "timeo" and value.isdigit():
            timeo = max(0.1, int(value) / 10)
    return 5 * timeo + 15


def mount_fuse(device: str, target: str, options: Sequence[str], *, pidfile: str,
               log: str) -> None:
    """Mount ``device`` (``[ADDR]:/export``) on ``target`` with the userspace client and
    return once the mount is there; the helper's own error when it cannot be."""
    argv = [sys.executable, "-m", "skiff.plugins.volumes.nfs", "mount", device, target,
            "-o", ",".join(options), "--pidfile", pidfile, "--log", log]
    budget = helper_budget(options)
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=budget, check=False)
    except subprocess.TimeoutExpired as exc:
        raise Unavailable(f"mount nfs {device} on {target}: no result within {budget:g}s "
                          "(server unreachable?)") from exc
    except OSError as exc:
        raise SystemFailure(f"mount nfs {device} on {target}: cannot start the userspace "
                            f"NFS client: {exc}") from exc
    if proc.returncode != 0:
        message = proc.stderr.decode("utf-8", "replace").strip().removeprefix("skiff-nfs: ")
        kind: type[SkiffError] = _ERROR_OF.get(proc.returncode, SystemFailure)
        raise kind(f"mount nfs {device} on {target}: {message or f'exit {proc.returncode}'}")


def stale_fuse_mount(path: str) -> bool:
    """Whether ``path`` is a FUSE mount whose client has died (the kernel answers ENOTCONN):
    such a mount must be unmounted and made again, not reused. statfs, not stat: the kernel
    answers stat from cached attributes, statfs always asks the client."""
    try:
        os.statvfs(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has stopped serving; init reaps it


def _is_helper(pid: int) -> bool:
    """Guard against a recycled pid: the process must be our helper module."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"skiff.plugins.volumes.nfs" in f.read()
    except OSError:
        return False


def wait_helper_exit(pidfile: str, timeout: float = 5.0) -> bool:
    """After the unmount: wait for the helper to notice and exit. False if it still runs
    (a lazily detached mount stays served while files on it are open)."""
    try:
        with open(pidfile, encoding="ascii") as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return True
    if pid <= 0 or not _is_helper(pid):
        with contextlib.suppress(OSError):
            os.unlink(pidfile)
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            with contextlib.suppress(OSError):
                os.unlink(pidfile)
            return True
        time.sleep(0.02)
    return False
