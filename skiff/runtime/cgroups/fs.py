"""File access to a cgroup directory: one write per value, errors naming file and directory.

cgroupfs wants each value in a single write(2) and reports bad values as the errno of that
write, so values go through ``os.write`` on an fd opened without O_CREAT: a missing file means
a missing controller, never a file we should invent.
"""

from __future__ import annotations

import errno
import os
import time

from skiff.errors import SystemFailure, Unavailable, os_error

UINT64_MAX = 2**64 - 1


def has(dirpath: str, name: str) -> bool:
    return os.path.exists(os.path.join(dirpath, name))


def write(dirpath: str, name: str, value: str) -> None:
    path = os.path.join(dirpath, name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise os_error(f"write {name}={value.strip()!r} in", dirpath, exc) from exc


def write_required(dirpath: str, name: str, value: str, field: str) -> None:
    """Write a file that a requested resource needs; its absence is Unavailable, not a crash."""
    if not has(dirpath, name):
        raise Unavailable(f"{field}: {name} does not exist in {dirpath} "
                          "(controller or feature not available)")
    write(dirpath, name, value)


def read(dirpath: str, name: str) -> str:
    path = os.path.join(dirpath, name)
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as exc:
        raise os_error(f"read {name} in", dirpath, exc) from exc


def read_optional(dirpath: str, name: str) -> str | None:
    """The file's text, or None when it does not exist (controller not there)."""
    try:
        with open(os.path.join(dirpath, name)) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise os_error(f"read {name} in", dirpath, exc) from exc


def to_uint(text: str | None) -> int:
    """A counter or limit as runc reports it: "max" is UINT64_MAX, absent is 0."""
    if text is None or text == "":
        return 0
    if text == "max":
        return UINT64_MAX
    value = int(text)
    # v1 reports "unlimited" as a huge page-rounded number and -1 can be read back as such.
    return UINT64_MAX if value < 0 else value


def keyed(text: str | None) -> dict[str, int]:
    """Parse ``key value`` lines (memory.stat, cpu.stat, memory.events, ...)."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = to_uint(parts[1])
            except ValueError:
                continue
    return out


def procs_recursive(dirpath: str) -> list[int]:
    """Every pid listed in cgroup.procs of ``dirpath`` and all of its descendants."""
    pids: list[int] = []
    for current, _dirs, _files in os.walk(dirpath):
        text = read_optional(current, "cgroup.procs")
        pids.extend(int(line) for line in (text or "").split())
    return pids


def remove_tree(dirpath: str, timeout: float = 2.0) -> None:
    """rmdir ``dirpath`` and its sub-cgroups, deepest first.

    A cgroup with a dying task is busy for a moment after the task is reaped, so EBUSY is
    retried until ``timeout``. An already-gone directory is not an error.
    """
    if not os.path.isdir(dirpath):
        return
    subdirs = [d for d, _, _ in os.walk(dirpath, topdown=False)]
    deadline = time.monotonic() + timeout
    for d in subdirs:
        while True:
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno == errno.EBUSY and time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                raise os_error("remove cgroup", d, exc) from exc


def make_dirs(dirpath: str) -> None:
    try:
        os.makedirs(dirpath, exist_ok=True)
    except OSError as exc:
        raise os_error("create cgroup", dirpath, exc) from exc


def timeout_error(op: str, dirpath: str, seconds: float) -> SystemFailure:
    return SystemFailure(f"{op} {dirpath}: timed out after {seconds:g}s")
