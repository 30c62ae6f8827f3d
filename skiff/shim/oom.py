"""Whether the kernel's OOM killer struck inside a container: its memory cgroup's counter."""

from __future__ import annotations

import os

CGROUP_ROOT = "/sys/fs/cgroup"


def memory_cgroup(pid: int, root: str = CGROUP_ROOT) -> str | None:
    """The memory cgroup directory of ``pid`` (v1 ``memory`` hierarchy or v2 unified)."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    v2 = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return os.path.join(root, "memory", path.lstrip("/"))
        if controllers == "":
            v2 = os.path.join(root, path.lstrip("/"))
    # Pure v2 only: on a hybrid host the unified tree has no memory controller.
    if v2 is not None and os.path.exists(os.path.join(v2, "memory.events")):
        return v2
    return None


def oom_kills(cgroup: str | None) -> int:
    """The cgroup's OOM kill count (0 when it cannot be read: no limit, gone, old kernel)."""
    if cgroup is None:
        return 0
    for name in ("memory.events", "memory.oom_control"):
        try:
            with open(os.path.join(cgroup, name)) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return 0
