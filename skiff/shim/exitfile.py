"""The exit record ``<state-dir>/exit.json``: written once, atomically, read by the daemon."""

from __future__ import annotations

import json
import os

from skiff.errors import os_error

# Typing-only imports: typing itself is ~1 MiB of every shim's memory.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


NAME = "exit.json"


def write(state_dir: str, record: dict[str, Any]) -> None:
    """Write ``record`` so a reader sees the whole file or none (temp file, rename).

    No fsync: the record is for a daemon that restarts after a crash, and the page cache
    outlives a crashed process; a power loss takes the container with it. (The state dir is
    under the exec root, /run by default: tmpfs, where fsync is nothing anyway.) Waiters are
    answered after this, so it is on the path of every `docker run --rm`.
    """
    path = os.path.join(state_dir, NAME)
    tmp = path + ".tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, json.dumps(record).encode())
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        raise os_error("write exit status", path, exc) from exc


def read(state_dir: str) -> dict[str, Any] | None:
    """The exit record, or None while the container has not exited."""
    try:
        with open(os.path.join(state_dir, NAME)) as f:
            record: dict[str, Any] = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise os_error("read exit status", state_dir, exc if isinstance(exc, OSError)
                       else OSError(0, str(exc))) from exc
    return record
