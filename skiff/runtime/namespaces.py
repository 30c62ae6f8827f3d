"""Namespace types: OCI names, clone flags, /proc/<pid>/ns names, and the order to join them."""

from __future__ import annotations

import os

from skiff.errors import os_error
from skiff.runtime import syscalls as sc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

FLAGS: dict[str, int] = {
    "user": sc.CLONE_NEWUSER,
    "pid": sc.CLONE_NEWPID,
    "network": sc.CLONE_NEWNET,
    "mount": sc.CLONE_NEWNS,
    "ipc": sc.CLONE_NEWIPC,
    "uts": sc.CLONE_NEWUTS,
    "cgroup": sc.CLONE_NEWCGROUP,
    "time": sc.CLONE_NEWTIME,
}

PROC_NAME: dict[str, str] = {
    "user": "user", "pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts",
    "cgroup": "cgroup", "time": "time",
}

# The user namespace first (it owns the others); mount last, because joining it changes our
# root and the other /proc paths would then resolve inside the container.
JOIN_ORDER = ("user", "pid", "ipc", "uts", "network", "cgroup", "time", "mount")


def split(namespaces: list[dict[str, Any]]) -> tuple[int, list[tuple[str, str]]]:
    """(flags to unshare, [(type, path) to join]) from the spec's ``linux.namespaces``."""
    flags = 0
    join: list[tuple[str, str]] = []
    for ns in namespaces:
        if ns.get("path"):
            join.append((ns["type"], ns["path"]))
        else:
            flags |= FLAGS[ns["type"]]
    join.sort(key=lambda j: JOIN_ORDER.index(j[0]))
    return flags, join


def join(paths: list[tuple[str, str]]) -> None:
    """setns(2) into each (type, path), in order."""
    for ns_type, path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise os_error(f"open {ns_type} namespace", path, exc) from exc
        try:
            sc.setns(fd, FLAGS[ns_type])
        except OSError as exc:
            raise os_error(f"join {ns_type} namespace", path, exc) from exc
        finally:
            os.close(fd)


def of_process(pid: int, types: list[str]) -> list[tuple[str, str]]:
    """The namespace paths of a running process, for ``exec`` to join, in join order."""
    out = [(t, f"/proc/{pid}/ns/{PROC_NAME[t]}") for t in types]
    out.sort(key=lambda j: JOIN_ORDER.index(j[0]))
    return out
