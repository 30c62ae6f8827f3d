"""spec.mounts: Docker's default filesystems, then the user's, ordered by depth.

Order as moby writes it: the defaults (minus any a user mount replaces), the init binary, then
the container's own mounts (binds and volumes, /etc files, /dev/shm, tmpfs) sorted stably by
the number of path components of the destination, so that a parent is mounted before what
is mounted inside it. Read-only roots and privileged containers adjust the result.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from skiff.errors import InvalidArgument

from .fields import objects
from .inputs import EtcFiles, ResolvedMount
from .tmpfs import mount_api_data, tmpfs_options

DEFAULT_SHM_SIZE = 64 * 1024 * 1024
INIT_PATH_IN_CONTAINER = "/sbin/docker-init"

_PROPAGATIONS = frozenset({"private", "rprivate", "shared", "rshared", "slave", "rslave"})
# Never made read-only by ReadonlyRootfs: the container needs to write to these.
_KEEP_WRITABLE = frozenset({"/proc", "/dev/pts", "/dev/shm", "/dev/mqueue", "/dev"})


@dataclass(frozen=True)
class UserMount:
    """One of the container's own mounts before it is turned into spec form."""

    destination: str
    source: str
    kind: str  # "bind" or "tmpfs"
    writable: bool = True
    propagation: str = ""
    non_recursive: bool = False
    data: str = ""  # tmpfs option string


def default_mounts(shm_size: int) -> list[dict[str, Any]]:
    return [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["ro", "nosuid", "noexec", "nodev"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={shm_size}"]},
    ]


def _check_destination(dest: object, kind: str) -> str:
    if not isinstance(dest, str) or not dest:
        raise InvalidArgument(f'invalid mount config for type "{kind}": field Target must '
                              "not be empty")
    if not dest.startswith("/"):
        raise InvalidArgument(f'invalid mount config for type "{kind}": invalid mount path: '
                              f"'{dest}' mount path must be absolute")
    return posixpath.normpath(dest).replace("//", "/")


def user_mounts(host_config: Mapping[str, Any], resolved: Sequence[ResolvedMount],
                etc: EtcFiles, shm_source: str | None) -> list[UserMount]:
    """Binds/volumes (resolved by the daemon), tmpfs (HostConfig.Mounts then .Tmpfs), the
    /etc files and a bind-mounted /dev/shm, in moby's order before sorting."""
    out: list[UserMount] = []
    for m in resolved:
        dest = _check_destination(m.destination, "bind")
        if m.propagation and m.propagation not in _PROPAGATIONS:
            raise InvalidArgument(f"invalid mount config for {dest}: invalid propagation "
                                  f"mode: {m.propagation}")
        out.append(UserMount(dest, m.source, "bind", m.writable, m.propagation,
                             m.non_recursive))
    for api in objects(host_config.get("Mounts"), "Mounts"):
        if api.get("Type") == "tmpfs":
            dest = _check_destination(api.get("Target"), "tmpfs")
            data = mount_api_data(api)
            tmpfs_options(data)  # rejects bad options now, with the mount named
            out.append(UserMount(dest, "tmpfs", "tmpfs", data=data))
        elif api.get("Type") not in ("bind", "volume", "npipe", "cluster", "image"):
            raise InvalidArgument(f"invalid mount config: mount type unknown: "
                                  f"\"{api.get('Type')}\"")
    taken = {m.destination for m in out}
    ro = bool(host_config.get("ReadonlyRootfs"))
    # The daemon's files come after the user's and yield to a user mount at the same place.
    for dest, src in (("/etc/resolv.conf", etc.resolv_conf), ("/etc/hostname", etc.hostname),
                      ("/etc/hosts", etc.hosts)):
        if src and dest not in taken:
            out.append(UserMount(dest, src, "bind", not ro, "rprivate"))
    if shm_source and "/dev/shm" not in taken:
        out.append(UserMount("/dev/shm", shm_source, "bind", True, "rprivate"))
    tmpfs = host_config.get("Tmpfs") or {}
    if not isinstance(tmpfs, Mapping):
        raise InvalidArgument("invalid Tmpfs: must be an object of path -> options")
    for raw_dest in sorted(tmpfs):
        dest = _check_destination(raw_dest, "tmpfs")
        data = tmpfs[raw_dest] or ""
        if not isinstance(data, str):
            raise InvalidArgument(f"invalid Tmpfs options for {raw_dest}: must be a string")
        tmpfs_options(data)
        out.append(UserMount(dest, "tmpfs", "tmpfs", data=data))
    seen: set[str] = set()
    for um in out:
        if um.destination in seen:
            raise InvalidArgument(f"Duplicate mount point: {um.destination}")
        seen.add(um.destination)
    # Parents before children; ties keep their order (Go's insertion sort does, for the
    # handful of mounts a container has).
    return sorted(out, key=lambda m: m.destination.count("/"))


def spec_mount(m: UserMount) -> dict[str, Any]:
    if m.kind == "tmpfs":
        return {"destination": m.destination, "type": "tmpfs", "source": "tmpfs",
                "options": tmpfs_options(m.data)}
    opts = ["bind" if m.non_recursive else "rbind"]
    if not m.writable:
        opts.append("ro")
    if m.propagation:
        opts.append(m.propagation)
    return {"destination": m.destination, "type": "bind", "source": m.source, "options": opts}


def rootfs_propagation(mounts: Sequence[UserMount]) -> str | None:
    """A shared or slave bind needs the root's propagation to carry events: moby raises
    it to shared, or to rslave, when the binds ask for it."""
    want: str | None = None
    for m in mounts:
        if m.propagation in ("shared", "rshared"):
            want = "shared"
        elif m.propagation in ("slave", "rslave") and want is None:
            want = "rslave"
    return want


def build_mounts(host_config: Mapping[str, Any], user: list[UserMount], *, privileged: bool,
                 no_ipc: bool, init_source: str | None) -> list[dict[str, Any]]:
    shm_size = host_config.get("ShmSize") or DEFAULT_SHM_SIZE
    if not isinstance(shm_size, int) or shm_size < 0:
        raise InvalidArgument("SHM size can not be less than 0")
    taken = {m.destination for m in user}
    over_dev = "/dev" in taken
    mounts = []
    for m in default_mounts(shm_size):
        dest = m["destination"]
        if dest in taken or (no_ipc and dest == "/dev/shm"):
            continue
        if over_dev and dest.startswith("/dev/"):
            continue
        mounts.append(m)
    if init_source is not None:
        mounts.append({"destination": INIT_PATH_IN_CONTAINER, "type": "bind",
                       "source": init_source, "options": ["bind", "ro"]})
    mounts.extend(spec_mount(m) for m in user)
    if host_config.get("ReadonlyRootfs"):
        for m in mounts:
            if m["destination"] in _KEEP_WRITABLE or m["destination"] in taken:
                continue
            if "ro" not in m["options"]:
                m["options"].append("ro")
    if privileged:
        for m in mounts:
            if m["destination"] == "/sys" or m["type"] == "cgroup":
                m["options"] = [o for o in m["options"] if o != "ro"]
    return mounts
