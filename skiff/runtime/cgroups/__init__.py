"""cgroup managers for skiff-runtime: one protocol, a v1 (and hybrid) and a v2 implementation.

``new_manager(path)`` picks the implementation from the host's layout (statfs magic, see
:mod:`.detect`); ``root`` and ``mode`` let tests point a manager at a fake cgroupfs tree or at
the cgroup2 mount of a hybrid host.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from skiff.errors import InvalidArgument

from .detect import detect_mode
from .paths import cgroup_path_for
from .resources import parse_resources
from .v1 import V1Manager
from .v2 import V2Manager

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .detect import Mode as Mode
    from .join import CgroupJoin

__all__ = ["V1Manager", "V2Manager", "cgroup_path_for", "detect_mode", "new_manager",
           "parse_resources", "remove_if_empty"]


if TYPE_CHECKING:
    # A typing-only protocol: importing typing.Protocol at run time would cost the runtime
    # ~2 ms at every container start.
    from typing import Protocol

    class CgroupManager(Protocol):
        """The container's cgroup(s). ``path`` is relative to each hierarchy root ("/skiff/abc")."""

        path: str

        def create(self) -> None:
            """Make the directories (idempotent) and prepare them to accept tasks."""

        def apply(self, pid: int) -> None:
            """Move ``pid`` into the cgroup in every hierarchy."""

        def open_join(self) -> CgroupJoin:
            """Handles for a child to be made in, or move itself into, the cgroup cheaply."""

        def set(self, resources: Mapping[str, Any]) -> None:
            """Apply OCI ``linux.resources`` (whole or partial); only given fields are touched."""

        def pids(self) -> list[int]:
            """Every pid in the cgroup and its sub-cgroups."""

        def freeze(self) -> None:
            """Freeze and wait until the kernel reports it frozen (SystemFailure on timeout)."""

        def thaw(self) -> None:
            """Thaw and wait until the kernel reports it thawed."""

        def frozen(self) -> bool:
            """Whether the cgroup is frozen now."""

        def stats(self) -> dict[str, Any]:
            """runc's ``events --stats`` data object."""

        def oom_kill_count(self) -> int:
            """How many processes the OOM killer killed in this cgroup."""

        def kill_all(self, sig: int) -> None:
            """Send ``sig`` to every process, with no chance to fork away."""

        def destroy(self) -> None:
            """Remove the directories (deepest first); nothing to do if already gone."""

        def exists(self) -> bool:
            """Whether the cgroup directory exists (in any hierarchy)."""

        def paths(self) -> dict[str, str]:
            """controller -> absolute directory (v2: {"": dir}), for state.json."""


def new_manager(path: str, root: str = "/sys/fs/cgroup", mode: str | None = None) -> CgroupManager:
    """The manager for cgroup ``path`` on this host (or on the tree at ``root``)."""
    if not path.startswith("/") or ".." in path.split("/"):
        raise InvalidArgument(f"cgroup path {path!r}: must be absolute without '..' "
                              "(see cgroup_path_for)")
    if mode is None:
        mode = detect_mode(root)
    if mode == "v2":
        return V2Manager(path, root)
    if mode in ("v1", "hybrid"):
        return V1Manager(path, root, hybrid=mode == "hybrid" and
                         os.path.isdir(os.path.join(root, "unified")))
    raise InvalidArgument(f"cgroup mode {mode!r}: must be v1, hybrid or v2")


def remove_if_empty(path: str, root: str = "/sys/fs/cgroup") -> None:
    """rmdir cgroup ``path`` in every hierarchy under ``root`` where it has no children left.

    For shared parents (``/skiff``) once their last container is gone. rmdir of a cgroup with
    children or processes fails (EBUSY), so this never disturbs a live container; runtimes
    (runc among them) remove only a container's own cgroup, never its parent.
    """
    if not path.startswith("/") or ".." in path.split("/") or path == "/":
        raise InvalidArgument(f"cgroup path {path!r}: must be absolute without '..'")
    try:
        hierarchies = os.listdir(root)
    except OSError:
        return
    candidates = [root + path] + [os.path.join(root, h) + path for h in hierarchies]
    for d in candidates:
        try:
            os.rmdir(d)
        except OSError:
            pass
