"""Namespace modes (network, ipc, pid, uts, user, cgroup) and the sysctls they allow.

``host`` leaves a namespace out (the container shares the daemon's); ``container:<id>`` joins
the namespace file the daemon found for that container; anything else is a fresh namespace.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from skiff.errors import InvalidArgument

_IPC_SYSCTLS = frozenset({"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
                          "kernel.shmall", "kernel.shmmax", "kernel.shmmni",
                          "kernel.shm_rmid_forced"})
# Set by dockerd for containers with their own network namespace, unless the user sets them:
# unprivileged ports and ICMP sockets, as a fresh namespace would otherwise forbid.
_NET_DEFAULTS = (("net.ipv4.ip_unprivileged_port_start", "0"),
                 ("net.ipv4.ping_group_range", "0 2147483647"))


@dataclass(frozen=True)
class Modes:
    network: str
    ipc: str
    pid: str
    uts: str
    cgroupns: str

    def net_host(self) -> bool:
        return self.network == "host"

    def net_container(self) -> bool:
        return self.network.startswith("container:")


def _mode(hc: Mapping[str, Any], key: str) -> str:
    value = hc.get(key) or ""
    if not isinstance(value, str):
        raise InvalidArgument(f"invalid {key}: must be a string")
    return value


def modes(hc: Mapping[str, Any]) -> Modes:
    ipc = _mode(hc, "IpcMode") or "private"
    if ipc not in ("private", "shareable", "host", "none") and not _joins(ipc):
        raise InvalidArgument(f"invalid IPC mode: {ipc}")
    pid = _mode(hc, "PidMode")
    if pid not in ("", "host") and not _joins(pid):
        raise InvalidArgument(f"invalid PID mode: {pid}")
    uts = _mode(hc, "UTSMode")
    if uts not in ("", "host"):
        raise InvalidArgument(f"invalid UTS mode: {uts}")
    userns = _mode(hc, "UsernsMode")
    if userns not in ("", "host"):
        raise InvalidArgument(f"invalid USER mode: {userns} (user namespace remapping is "
                              "not supported)")
    cgroupns = _mode(hc, "CgroupnsMode") or "host"
    if cgroupns not in ("host", "private"):
        raise InvalidArgument(f"invalid cgroup namespace mode: {cgroupns}")
    network = _mode(hc, "NetworkMode") or "default"
    if network.startswith("container:") and not _joins(network):
        raise InvalidArgument(f"invalid network mode: {network}")
    return Modes(network, ipc, pid, uts, cgroupns)


def _joins(mode: str) -> bool:
    return mode.startswith("container:") and len(mode) > len("container:")


def _joined(kind: str, mode: str, paths: Mapping[str, str]) -> dict[str, str]:
    path = paths.get(kind)
    if not path:
        raise InvalidArgument(f"{kind} mode {mode}: the daemon gave no namespace path for "
                              f"{mode.split(':', 1)[1]}")
    return {"type": kind, "path": path}


def namespaces(m: Modes, netns_path: str | None,
               paths: Mapping[str, str]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = [{"type": "mount"}]
    if m.net_container():
        out.append(_joined("network", m.network, paths))
    elif netns_path:
        out.append({"type": "network", "path": netns_path})
    elif not m.net_host():
        out.append({"type": "network"})
    if m.uts != "host":
        out.append({"type": "uts"})
    if _joins(m.pid):
        out.append(_joined("pid", m.pid, paths))
    elif m.pid != "host":
        out.append({"type": "pid"})
    if _joins(m.ipc):
        out.append(_joined("ipc", m.ipc, paths))
    elif m.ipc != "host":
        out.append({"type": "ipc"})
    if m.cgroupns == "private":
        out.append({"type": "cgroup"})
    return out


def sysctls(hc: Mapping[str, Any], m: Modes, domainname: str) -> dict[str, str]:
    """HostConfig.Sysctls, checked against the namespaces the container owns, plus Docker's
    defaults for a private network namespace and kernel.domainname."""
    given = hc.get("Sysctls") or {}
    if not isinstance(given, Mapping):
        raise InvalidArgument("invalid Sysctls: must be an object of name -> value")
    out: dict[str, str] = {}
    for key, value in given.items():
        if not isinstance(value, str):
            raise InvalidArgument(f"invalid sysctl {key}: value must be a string")
        if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
            if m.ipc == "host":
                raise InvalidArgument(f'sysctl "{key}" not allowed in host IPC namespace')
        elif key.startswith("net."):
            if m.net_host():
                raise InvalidArgument(f'sysctl "{key}" not allowed in host network namespace')
        elif key in ("kernel.hostname", "kernel.domainname"):
            if m.uts == "host":
                raise InvalidArgument(f'sysctl "{key}" not allowed in host UTS namespace')
        else:
            raise InvalidArgument(f'sysctl "{key}" is not in a separate kernel namespace')
        out[key] = value
    if not m.net_host() and not m.net_container():
        for key, value in _NET_DEFAULTS:
            out.setdefault(key, value)
    if domainname and m.uts != "host":
        out["kernel.domainname"] = domainname
    return out
