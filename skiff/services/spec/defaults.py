"""The HostConfig defaults dockerd fills in on create (what ``docker inspect`` then shows).

:func:`build_spec` copes with the raw request too, but storing the adapted HostConfig makes
inspect output and later spec builds match Docker's: a memory limit without a swap limit gets
twice the memory as memory+swap, /dev/shm gets 64 MiB, the namespace modes get their daemon
defaults and unprivileged containers get the masked/read-only path lists written out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .fields import integer, mapping
from .mounts import DEFAULT_SHM_SIZE
from .security import MASKED_PATHS, READONLY_PATHS


def apply_create_defaults(host_config: Mapping[str, Any] | None, *, cgroup_version: int = 1,
                          default_ipc: str = "private",
                          default_cgroupns: str | None = None) -> dict[str, Any]:
    """A copy of ``host_config`` with dockerd's create-time defaults applied.

    ``default_cgroupns`` is the daemon's setting; without one Docker uses "host" on cgroup v1
    and "private" on v2.
    """
    hc = dict(mapping(host_config, "HostConfig"))
    memory, swap = integer(hc.get("Memory"), "Memory"), integer(hc.get("MemorySwap"),
                                                                  "MemorySwap")
    if memory > 0 and swap == 0:
        hc["MemorySwap"] = memory * 2
    if not integer(hc.get("ShmSize"), "ShmSize"):
        hc["ShmSize"] = DEFAULT_SHM_SIZE
    if not hc.get("IpcMode"):
        hc["IpcMode"] = default_ipc
    if not hc.get("CgroupnsMode"):
        hc["CgroupnsMode"] = default_cgroupns or ("private" if cgroup_version == 2 else "host")
    if not hc.get("NetworkMode"):
        hc["NetworkMode"] = "default"
    if not hc.get("Privileged"):
        if hc.get("MaskedPaths") is None:
            hc["MaskedPaths"] = list(MASKED_PATHS)
        if hc.get("ReadonlyPaths") is None:
            hc["ReadonlyPaths"] = list(READONLY_PATHS)
    return hc
