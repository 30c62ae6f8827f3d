"""SecurityOpt: no-new-privileges, seccomp, apparmor, label (and systempaths) as dockerd
parses them, and the masked/read-only /proc and /sys paths."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from skiff.errors import InvalidArgument
from skiff.runtime.seccomp_profile import from_docker_profile

from .fields import strings

MASKED_PATHS: tuple[str, ...] = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS: tuple[str, ...] = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                   "/proc/sysrq-trigger")
_LABEL_KEYS = ("user", "role", "type", "level", "filetype")


@dataclass
class SecurityOptions:
    no_new_privileges: bool = False
    seccomp: str = ""  # "" (daemon default), "unconfined", "builtin" or profile JSON text
    apparmor: str = ""
    labels: list[str] = field(default_factory=list)
    unconfined_paths: bool = False


def _bool(text: str, opt: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "t", "true"):
        return True
    if lowered in ("0", "f", "false"):
        return False
    raise InvalidArgument(f'invalid --security-opt 2: "{opt}"')


def parse_security_opts(opts: object) -> SecurityOptions:
    out = SecurityOptions()
    for opt in strings(opts, "SecurityOpt"):
        if opt == "no-new-privileges":
            out.no_new_privileges = True
            continue
        if opt == "disable":
            out.labels.append("disable")
            continue
        sep = "=" if "=" in opt else ":" if ":" in opt else None
        if sep is None:
            raise InvalidArgument(f'invalid --security-opt 1: "{opt}"')
        key, value = opt.split(sep, 1)
        if key == "label":
            if value != "disable" and not (
                    ":" in value and value.split(":", 1)[0] in _LABEL_KEYS):
                raise InvalidArgument(f'bad label option "{value}", valid options '
                                      "'disable' or 'user, role, level, type, filetype' "
                                      "followed by ':' and a value")
            out.labels.append(value)
        elif key == "apparmor":
            out.apparmor = value
        elif key == "seccomp":
            out.seccomp = value
        elif key == "no-new-privileges":
            out.no_new_privileges = _bool(value, opt)
        elif key == "systempaths" and value == "unconfined":
            # The docker CLI turns this into empty MaskedPaths/ReadonlyPaths; API clients
            # that pass it through get the same effect.
            out.unconfined_paths = True
        else:
            raise InvalidArgument(f'invalid --security-opt 2: "{opt}"')
    return out


def system_paths(hc: Mapping[str, Any], sec: SecurityOptions,
                 privileged: bool) -> tuple[list[str], list[str]]:
    """(maskedPaths, readonlyPaths): None in HostConfig means Docker's defaults, [] none."""
    if privileged or sec.unconfined_paths:
        return [], []
    masked = hc.get("MaskedPaths")
    readonly = hc.get("ReadonlyPaths")
    for name, value in (("MaskedPaths", masked), ("ReadonlyPaths", readonly)):
        if value is not None and not (isinstance(value, list)
                                      and all(isinstance(p, str) for p in value)):
            raise InvalidArgument(f"invalid {name}: must be a list of paths")
    return (list(MASKED_PATHS) if masked is None else list(masked),
            list(READONLY_PATHS) if readonly is None else list(readonly))


def seccomp(sec: SecurityOptions, privileged: bool, default: Mapping[str, Any] | None,
            caps: list[str], arch: str, kernel: tuple[int, int]) -> dict[str, Any] | None:
    """The resolved linux.seccomp object, or None for no filter."""
    if sec.seccomp == "unconfined" or privileged:
        return None
    if sec.seccomp in ("", "builtin"):
        profile = default
    else:
        try:
            profile = json.loads(sec.seccomp)
        except ValueError as exc:
            raise InvalidArgument(f"Decoding seccomp profile failed: {exc}") from exc
    if profile is None:
        return None
    if not isinstance(profile, dict):
        profile = dict(profile)
    return from_docker_profile(profile, caps, arch, kernel)


def apparmor_profile(sec: SecurityOptions, privileged: bool, enabled: bool) -> str | None:
    """Only hosts with AppArmor get a profile name in the spec (as Docker)."""
    if not enabled:
        return None
    if sec.apparmor:
        return sec.apparmor
    return "unconfined" if privileged else "docker-default"
