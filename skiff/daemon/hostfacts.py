"""Facts about this host that every spec the daemon builds needs: Docker's default seccomp
profile (as skiff-runtime ships it) and the kernel version (the profile's rules depend on it)."""

from __future__ import annotations

import json
import os
from functools import cache
from importlib import resources
from typing import Any

from skiff.errors import os_error

# Docker's default profile in moby's format
_SECCOMP = str(resources.files("skiff.runtime") / "data" / "seccomp-default.json")


@cache
def default_seccomp_profile() -> dict[str, Any]:
    try:
        with open(_SECCOMP, encoding="utf-8") as f:
            profile: dict[str, Any] = json.load(f)
    except OSError as exc:
        raise os_error("read the default seccomp profile", _SECCOMP, exc) from exc
    return profile


def kernel_version() -> tuple[int, int]:
    parts = os.uname().release.split(".")
    try:
        return int(parts[0]), int(parts[1].split("-")[0])
    except (IndexError, ValueError):
        return (5, 0)
