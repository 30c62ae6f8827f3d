"""Putting a container's process into its cgroup without the kernel's slow path.

Writing a pid to ``cgroup.procs`` takes the kernel's global threadgroup rwsem for writing, and
when nobody has done so for a grace period that first waits for RCU: 6-16 ms on this kind of
VM, at every container start and exec. Two ways in skip it, and the runtime uses both:

- cgroup v2: clone3(CLONE_INTO_CGROUP) makes the process inside the cgroup (the parent of
  stage 1 clones it so; see syscalls.clone_process);
- cgroup v1: a single-threaded process that writes "0" (itself) to a hierarchy's ``tasks``
  file migrates one thread, which the kernel does without that lock.

The fds are opened by the runtime, with its credentials (cgroupfs checks the opener's), before
stage 1 joins or makes any namespace; stage 2 writes through them from wherever it then is.
"""

from __future__ import annotations

import os

from skiff.errors import os_error
from skiff.runtime.records import field, record


@record
class CgroupJoin:
    """Open handles on a container's cgroup, inherited by the stages across fork."""

    task_fds: list[int] = field(default_factory=list)  # v1: each hierarchy's `tasks`, write-only
    task_paths: list[str] = field(default_factory=list)  # for error messages
    clone_fd: int | None = None  # v2 (or hybrid's unified) directory, for CLONE_INTO_CGROUP
    clone_dir: str | None = None  # where the parent writes the pid if clone3 could not be used

    def enter_self(self) -> None:
        """Move the calling single-threaded process into every v1 hierarchy; close all fds."""
        try:
            for fd, path in zip(self.task_fds, self.task_paths, strict=True):
                try:
                    os.write(fd, b"0")
                except OSError as exc:
                    raise os_error("join cgroup", path, exc) from exc
        finally:
            self.close()

    def close(self) -> None:
        for fd in [*self.task_fds, *([self.clone_fd] if self.clone_fd is not None else [])]:
            try:
                os.close(fd)
            except OSError:
                pass
        self.task_fds, self.clone_fd = [], None


def open_join(v1_dirs: list[str], v2_dir: str | None) -> CgroupJoin:
    """Handles on ``tasks`` in each v1 directory and on the v2 directory (OSError if missing)."""
    join = CgroupJoin(clone_dir=v2_dir)
    try:
        for d in v1_dirs:
            path = os.path.join(d, "tasks")
            join.task_fds.append(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
            join.task_paths.append(path)
        if v2_dir is not None:
            join.clone_fd = os.open(v2_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except BaseException:
        join.close()
        raise
    return join
