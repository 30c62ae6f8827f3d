"""A head start on the kernel's cgroup migration lock for commands that start containers."""

from __future__ import annotations

import os


def warm_cgroup_migration() -> None:
    """Start taking the kernel's cgroup migration lock now, in the background.

    Moving a process between cgroups takes a global per-cpu rwsem for writing; when nobody has
    done so for a few tens of ms, that first waits for an RCU grace period (10-20 ms here), and
    the lock then stays cheap for a while. Re-writing our own pid into the cgroup we are already
    in is a no-op that pays that wait on a helper thread while we parse the spec and set up, so
    the container's own move later is fast. Any failure just means no head start.

    Call it first thing: the kernel holds cgroup_mutex during that wait, so a cgroup mkdir
    issued meanwhile waits too; the head start is whatever runs before our first mkdir
    (imports, reading and checking the spec).
    """
    import _thread

    def warm() -> None:
        try:
            with open("/proc/self/cgroup") as f:
                lines = f.read().splitlines()
            for line in lines:
                hid, controllers, path = line.split(":", 2)
                if hid == "0":
                    base = "/sys/fs/cgroup/unified"
                    base = base if os.path.isdir(base) else "/sys/fs/cgroup"
                elif "pids" in controllers.split(","):
                    base = "/sys/fs/cgroup/pids"
                else:
                    continue
                with open(f"{base}{path}/cgroup.procs", "w") as f:
                    f.write(str(os.getpid()))
                return
        except (OSError, ValueError):
            pass

    _thread.start_new_thread(warm, ())
