"""What the daemon decides before a spec can be built: the facts spec.py may not look up itself.

The builder is pure (no files, no syscalls), so everything that needs the host or the image's
root filesystem arrives here already resolved: the user's ids (read from the image's
/etc/passwd and /etc/group by the daemon, parsed by :mod:`.users`), the host paths of binds and
volumes, device numbers, namespace paths of other containers, the seccomp profile as data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from skiff.core.snapshots import Mount

# Every capability of Linux 5.9+ in kernel number order (privileged and --cap-add ALL use the
# ones the running kernel knows: the daemon may pass a shorter list).
ALL_CAPS: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)


@dataclass(frozen=True)
class ResolvedUser:
    """process.user: ids after the image's passwd/group files and GroupAdd were consulted."""

    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class ResolvedMount:
    """A bind or volume mount whose host source the daemon has resolved (Docker's MountPoint).

    ``propagation`` is "" for volumes (Docker writes none) and e.g. "rprivate" for binds;
    ``non_recursive`` is ``BindOptions.NonRecursive``.
    """

    source: str
    destination: str
    writable: bool = True
    propagation: str = ""
    non_recursive: bool = False


@dataclass(frozen=True)
class DeviceNode:
    """What stat() says about a device node on the host (the daemon looks it up)."""

    type: str  # "c" or "b"
    major: int
    minor: int
    file_mode: int = 0o666
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class HostDevice:
    """A device as it appears in the container: privileged containers get all of the host's."""

    path: str
    node: DeviceNode


@dataclass(frozen=True)
class EtcFiles:
    """Host files the daemon wrote for the container, bind-mounted over the image's."""

    resolv_conf: str | None = None
    hostname: str | None = None
    hosts: str | None = None


@dataclass(frozen=True)
class SpecInputs:
    """Everything :func:`build_spec` needs besides the API's Config and HostConfig.

    ``rootfs`` is a path, or the snapshotter's mounts: then ``root.path`` is ``rootfs``
    relative to the bundle and whoever starts the runtime mounts them there (as containerd
    does). ``netns_path`` is the network namespace the daemon prepared (None: the runtime
    makes a fresh one). ``namespace_paths`` maps "network"/"ipc"/"pid" to the namespace files
    of the container named in a ``container:<id>`` mode. ``shm_path`` is the host directory
    bind-mounted on /dev/shm for ipc modes shareable and container:<id>.
    ``seccomp_profile`` is the daemon's default profile in moby's JSON format (None: no
    default profile, as Docker without seccomp); it is resolved here with
    :func:`skiff.runtime.seccomp_profile.from_docker_profile` for the container's
    capabilities, ``arch`` and ``kernel``. ``device_nodes`` maps every host path named in
    HostConfig.Devices and the Blkio* lists to its node.
    """

    container_id: str
    rootfs: str | Sequence[Mount]
    user: ResolvedUser = field(default_factory=ResolvedUser)
    mounts: Sequence[ResolvedMount] = ()
    etc_files: EtcFiles = field(default_factory=EtcFiles)
    netns_path: str | None = None
    namespace_paths: Mapping[str, str] = field(default_factory=dict)
    shm_path: str | None = None
    seccomp_profile: Mapping[str, Any] | None = None
    init_path: str | None = None
    init_default: bool = False
    device_nodes: Mapping[str, DeviceNode] = field(default_factory=dict)
    host_devices: Sequence[HostDevice] = ()
    cgroup_parent: str = "/skiff"
    cgroup_driver: str = "cgroupfs"
    systemd_scope_prefix: str = "skiff"
    all_caps: Sequence[str] = ALL_CAPS
    apparmor: bool = False
    arch: str = "x86_64"
    kernel: tuple[int, int] = (6, 1)
    ncpu: int | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
