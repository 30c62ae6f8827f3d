"""Where a container's cgroup lives: OCI ``linux.cgroupsPath`` to a path under each hierarchy."""

from __future__ import annotations

import posixpath
import re

from skiff.errors import InvalidArgument

DEFAULT_PARENT = "/skiff"

_UNIT_PART = re.compile(r"[A-Za-z0-9:_.\\-]+")


def cgroup_path_for(cgroups_path: str | None, container_id: str, systemd: bool = False) -> str:
    """The cgroup path (relative to every hierarchy root) for a container.

    Without systemd: ``None`` or ``""`` gives ``/skiff/<id>``; an absolute path is used as is;
    a relative one is taken from the hierarchy root (runc joins it to its own cgroup, which is
    the root for a runtime started by a daemon in the root cgroup, and a single string cannot
    express runc's per-hierarchy parents anyway). ``..`` can never climb above the root.

    With systemd: ``slice:prefix:name`` maps to the directory systemd would create, e.g.
    ``system.slice:docker:abc`` -> ``/system.slice/docker-abc.scope``.
    """
    if not container_id or "/" in container_id:
        raise InvalidArgument(f"container id {container_id!r}: must be non-empty without '/'")
    if systemd:
        return _systemd_path(cgroups_path, container_id)
    if not cgroups_path:
        return f"{DEFAULT_PARENT}/{container_id}"
    if ":" in cgroups_path.split("/")[0] and cgroups_path.count(":") == 2:
        raise InvalidArgument(f"linux.cgroupsPath {cgroups_path!r}: looks like a systemd "
                              "slice:prefix:name path but the systemd cgroup driver is not in use")
    cleaned = posixpath.normpath("/" + cgroups_path)
    # normpath keeps a leading "//"; collapse it so every hierarchy sees the same path.
    return "/" + cleaned.lstrip("/") if cleaned != "/" else "/"


def _systemd_path(cgroups_path: str | None, container_id: str) -> str:
    if not cgroups_path:
        slice_, prefix, name = "system.slice", "skiff", container_id
    else:
        parts = cgroups_path.split(":")
        if len(parts) != 3:
            raise InvalidArgument(f"linux.cgroupsPath {cgroups_path!r}: expected "
                                  "\"slice:prefix:name\" with the systemd cgroup driver")
        slice_, prefix, name = parts
        slice_ = slice_ or "system.slice"
        name = name or container_id
    for part, what in ((prefix, "prefix"), (name, "name")):
        if part and not _UNIT_PART.fullmatch(part):
            raise InvalidArgument(f"linux.cgroupsPath {cgroups_path!r}: invalid {what} {part!r}")
    if name.endswith(".slice"):
        return expand_slice(name)
    unit = f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
    return posixpath.join(expand_slice(slice_), unit)


def expand_slice(slice_: str) -> str:
    """systemd's slice nesting: ``a-b-c.slice`` lives in ``/a.slice/a-b.slice/a-b-c.slice``."""
    if not slice_.endswith(".slice") or "/" in slice_:
        raise InvalidArgument(f"systemd slice {slice_!r}: must be a name ending in .slice")
    stem = slice_[: -len(".slice")]
    if stem == "-":
        return "/"
    if not stem or stem.startswith("-") or stem.endswith("-") or "--" in stem:
        raise InvalidArgument(f"systemd slice {slice_!r}: empty component in the name")
    path = ""
    prefix = ""
    for component in stem.split("-"):
        prefix = f"{prefix}-{component}" if prefix else component
        path += f"/{prefix}.slice"
    return path
