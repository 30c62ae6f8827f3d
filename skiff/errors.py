"""The one error tree of the project.

Every layer raises these; foreign exceptions (OSError, HTTP client errors, netlink errors) are
translated at the boundary where they happen with ``raise SkiffError(...) from exc`` so that the
message names the operation and the object. The daemon maps each kind to an HTTP status in one
table; the CLIs map them to exit codes.
"""

from __future__ import annotations

import errno
import os


class SkiffError(Exception):
    """Base of every error skiff raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class NotFound(SkiffError):
    """The named object does not exist."""


class Conflict(SkiffError):
    """The object exists, or is in a state that forbids the operation."""


class InvalidArgument(SkiffError):
    """The caller's input is malformed or names something impossible."""


class Unavailable(SkiffError):
    """A resource the operation needs cannot be reached or is not supported here."""


class PermissionDenied(SkiffError):
    """The caller is not allowed to do this."""


class SystemFailure(SkiffError):
    """A system call or external program failed; the message says which and on what."""


def os_error(op: str, target: str, exc: OSError) -> SystemFailure:
    """Translate an OSError into a SystemFailure whose message names the operation and object.

    ``os_error("mount proc", "/run/x/rootfs/proc", exc)`` gives
    ``mount proc on /run/x/rootfs/proc: EINVAL (Invalid argument)``.
    """
    code = exc.errno or 0
    name = errno.errorcode.get(code, str(code))
    return SystemFailure(f"{op} {target}: {name} ({os.strerror(code)})")
