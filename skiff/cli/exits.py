"""Exit statuses as the docker CLI uses them."""

from __future__ import annotations

from skiff.errors import SkiffError

CLI_FAILURE = 125  # the CLI or the daemon failed: the container never got to run
CANNOT_INVOKE = 126
NOT_FOUND = 127


class UsageError(SkiffError):
    """Bad flags or arguments: printed with a pointer to --help, exit 125."""


class ExitStatus(Exception):
    """End the command with this status and no message (a container's own exit status)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def start_failure_code(message: str) -> int:
    """What the docker CLI exits with when a container's command could not be started:
    127 when it was not found, 126 when it could not be invoked, else 125."""
    low = message.lower()
    if ("executable file not found" in low or "no such file or directory" in low
            or ("not found" in low and "exec" in low)):
        return NOT_FOUND
    if "permission denied" in low or "is a directory" in low:
        return CANNOT_INVOKE
    return CLI_FAILURE
