"""Docker (moby) seccomp profiles -> the OCI ``linux.seccomp`` object.

A moby profile is an OCI seccomp object plus selection data: ``archMap`` (which architectures
to allow given the host's) and per-rule ``includes``/``excludes`` on capabilities, architectures
and minimum kernel version. Resolving it needs the container's capabilities, so the daemon does
it per container; the runtime only ever sees the resolved OCI object. The rules are moby's:

- an architecture filter compares against Go's name for the host (``amd64``, ``arm64``, ...);
- ``includes.caps`` needs every listed capability, ``excludes.caps`` drops the rule if any is
  held (moby checks the bounding set, which is what ``caps`` should be);
- ``minKernel`` compares with the running kernel (or ``kernel=`` for tests).
"""

from __future__ import annotations

import functools
import json
import os
import re

from skiff.errors import InvalidArgument, os_error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Host machine (uname / Go) -> (Go's GOARCH, the profile's native SCMP arch).
_ARCHES: dict[str, tuple[str, str]] = {
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"),
    "amd64": ("amd64", "SCMP_ARCH_X86_64"),
    "i386": ("386", "SCMP_ARCH_X86"),
    "i686": ("386", "SCMP_ARCH_X86"),
    "386": ("386", "SCMP_ARCH_X86"),
    "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
    "arm64": ("arm64", "SCMP_ARCH_AARCH64"),
    "armv7l": ("arm", "SCMP_ARCH_ARM"),
    "arm": ("arm", "SCMP_ARCH_ARM"),
    "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"),
    "s390x": ("s390x", "SCMP_ARCH_S390X"),
    "riscv64": ("riscv64", "SCMP_ARCH_RISCV64"),
    "loongarch64": ("loong64", "SCMP_ARCH_LOONGARCH64"),
    "loong64": ("loong64", "SCMP_ARCH_LOONGARCH64"),
    "mips64": ("mips64", "SCMP_ARCH_MIPS64"),
    "mips64le": ("mips64le", "SCMP_ARCH_MIPSEL64"),
}

_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                     "seccomp-default.json")


def _cap_name(name: str) -> str:
    """``sys_admin`` and ``CAP_SYS_ADMIN`` both mean CAP_SYS_ADMIN (Docker accepts either)."""
    upper = name.upper()
    return upper if upper.startswith("CAP_") else "CAP_" + upper


def _kernel_version(release: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", release)
    if not m:
        raise InvalidArgument(f"cannot parse kernel version {release!r}")
    return int(m.group(1)), int(m.group(2))


def from_docker_profile(profile: dict[str, Any], caps: list[str], arch: str = "x86_64",
                        kernel: tuple[int, int] | None = None) -> dict[str, Any]:
    """Resolve a moby seccomp profile for one container into an OCI ``linux.seccomp`` object.

    ``caps`` are the container's capabilities (its bounding set), ``arch`` the host machine
    (``uname -m`` or Go spelling), ``kernel`` the (major, minor) to test ``minKernel``
    against, by default the running kernel's.
    """
    if not isinstance(profile, dict):
        raise InvalidArgument("seccomp profile: must be a JSON object")
    if arch not in _ARCHES:
        raise InvalidArgument(f"seccomp profile: unknown architecture {arch!r}")
    goarch, native = _ARCHES[arch]
    held = {_cap_name(c) for c in caps}
    if profile.get("architectures") and profile.get("archMap"):
        raise InvalidArgument("seccomp profile: use either 'architectures' or 'archMap', "
                              "not both")
    out: dict[str, Any] = {"defaultAction": profile.get("defaultAction")}
    for key in ("defaultErrnoRet", "listenerPath", "listenerMetadata"):
        if profile.get(key) is not None:
            out[key] = profile[key]
    if profile.get("flags") is not None:
        out["flags"] = list(profile["flags"])
    if profile.get("architectures"):
        out["architectures"] = list(profile["architectures"])
    else:
        for entry in profile.get("archMap") or []:
            if entry.get("architecture") == native:
                out["architectures"] = [native, *(entry.get("subArchitectures") or [])]
                break

    version = kernel if kernel is not None else _kernel_version(os.uname().release)
    rules = []
    for i, rule in enumerate(profile.get("syscalls") or []):
        where = f"seccomp profile: syscalls[{i}]"
        if rule.get("name") and rule.get("names"):
            raise InvalidArgument(f"{where}: use either 'name' or 'names', not both")
        if not _selected(rule, goarch, held, version, where):
            continue
        new: dict[str, Any] = {
            "names": list(rule.get("names") or [rule.get("name")]),
            "action": rule.get("action"),
        }
        if rule.get("errnoRet") is not None:
            new["errnoRet"] = rule["errnoRet"]
        if rule.get("args"):
            # Fresh dicts: callers may edit the result without touching a cached profile.
            new["args"] = [dict(a) for a in rule["args"]]
        rules.append(new)
    out["syscalls"] = rules
    return out


def _selected(rule: dict[str, Any], goarch: str, held: set[str], kernel: tuple[int, int],
              where: str) -> bool:
    exc = rule.get("excludes") or {}
    if goarch in (exc.get("arches") or []):
        return False
    if any(_cap_name(c) in held for c in exc.get("caps") or []):
        return False
    if exc.get("minKernel") and kernel >= _min_kernel(exc["minKernel"], where):
        return False
    inc = rule.get("includes") or {}
    if inc.get("arches") and goarch not in inc["arches"]:
        return False
    if any(_cap_name(c) not in held for c in inc.get("caps") or []):
        return False
    return not (inc.get("minKernel") and kernel < _min_kernel(inc["minKernel"], where))


def _min_kernel(value: object, where: str) -> tuple[int, int]:
    if not isinstance(value, str):
        raise InvalidArgument(f"{where}: minKernel must be a string like \"4.8\", "
                              f"got {json.dumps(value)}")
    try:
        return _kernel_version(value)
    except InvalidArgument:
        raise InvalidArgument(f"{where}: minKernel {json.dumps(value)} is not a kernel "
                              "version like \"4.8\"") from None


@functools.lru_cache(maxsize=1)
def _default_json() -> str:
    try:
        with open(_DATA, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise os_error("read the default seccomp profile", _DATA, exc) from exc


def default_profile(caps: list[str], arch: str | None = None) -> dict[str, Any]:
    """Docker's default profile resolved for a container with ``caps`` on this host."""
    profile = json.loads(_default_json())
    return from_docker_profile(profile, caps, arch or os.uname().machine)
