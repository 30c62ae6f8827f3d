"""At create: which binds, volumes and tmpfs a container gets, from the request and its image.

Pure apart from two look-ups the caller passes in (another container's mount points for
``VolumesFrom``, whether a host path exists), so every refusal happens before anything is
created. The precedence is dockerd's (``registerMountPoints``): ``VolumesFrom`` first, then
``Binds`` and ``Mounts`` replace what sits at the same destination (but may not collide with
each other), and the image's ``VOLUME`` paths (with ``Config.Volumes``) become anonymous
volumes wherever nothing else is mounted.
"""

from __future__ import annotations

import posixpath
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from skiff.core.volumes import ANONYMOUS_LABEL
from skiff.daemon.volumes.points import BIND, TMPFS, VOLUME, MountPoint
from skiff.errors import InvalidArgument
from skiff.services.spec import MountRequest, parse_api_mount, parse_bind

# another container's stored mount points, by name or id (NotFound when there is none)
LookupMounts = Callable[[str], list[MountPoint]]
Exists = Callable[[str], bool]


@dataclass(frozen=True)
class Plan:
    points: list[MountPoint]
    volumes: dict[str, Any] | None  # Config.Volumes with the image's merged in (as dockerd)


def _strings(value: object, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"invalid {what}: must be a list of strings")
    return value


def _objects(value: object, what: str) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise InvalidArgument(f"invalid {what}: must be a list of objects")
    return value


def _bind_mode(raw: str) -> str:
    """The mode text of a ``-v`` string that parsed: Docker shows it as given."""
    parts = raw.split(":")
    if len(parts) == 3:
        return parts[2]
    if len(parts) == 2 and not parts[1].startswith("/"):
        return parts[1]
    return ""


def _volume_point(req: MountRequest, driver: str, mode: str) -> MountPoint:
    anonymous = not req.source
    return MountPoint(VOLUME, req.destination, name=req.source or secrets.token_hex(32),
                      driver=driver or "local", mode=mode, rw=req.writable,
                      copy_data=req.copy_data, anonymous=anonymous,
                      volume_labels={ANONYMOUS_LABEL: ""} if anonymous else {})


def _from_bind(raw: str, driver: str) -> MountPoint:
    req = parse_bind(raw)
    mode = _bind_mode(raw)
    if req.kind == BIND:
        return MountPoint(BIND, req.destination, source=req.source, mode=mode,
                          rw=req.writable, propagation=req.propagation)
    # dockerd gives a local volume named in Binds the mode "z" when none was written
    return _volume_point(req, driver, mode or ("z" if (driver or "local") == "local" else ""))


def _str_map(value: object, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidArgument(f"invalid mount config: {what} must be an object of strings")
    return dict(value)


def _from_api(m: Mapping[str, Any], driver: str, exists: Exists) -> MountPoint:
    req = parse_api_mount(m)
    if req is None:  # tmpfs: the spec builder mounts it from HostConfig.Mounts
        target = m.get("Target")
        return MountPoint(TMPFS, posixpath.normpath(str(target)), rw=not m.get("ReadOnly"))
    if req.kind == BIND:
        # BindOptions.CreateMountpoint (API 1.42): make a missing source, as -v does
        create = bool((m.get("BindOptions") or {}).get("CreateMountpoint"))
        if not create and not exists(req.source):
            raise InvalidArgument(f'invalid mount config for type "bind": bind source path '
                                  f"does not exist: {req.source}")
        return MountPoint(BIND, req.destination, source=req.source, rw=req.writable,
                          propagation=req.propagation, non_recursive=req.non_recursive,
                          must_exist=not create)
    opts = m.get("VolumeOptions") or {}
    config = opts.get("DriverConfig") or {}
    if not isinstance(config, Mapping):
        raise InvalidArgument("invalid mount config: VolumeOptions.DriverConfig must be an "
                              "object")
    name = config.get("Name") or driver
    if not isinstance(name, str):
        raise InvalidArgument("invalid mount config: VolumeOptions.DriverConfig.Name must be "
                              "a string")
    point = _volume_point(req, name, "")
    point.volume_labels.update(_str_map(opts.get("Labels"), "VolumeOptions.Labels"))
    point.volume_options = _str_map(config.get("Options"), "VolumeOptions.DriverConfig.Options")
    return point


def _volumes_from(spec: str, lookup: LookupMounts) -> list[MountPoint]:
    ref, _, mode = spec.partition(":")
    if not ref or mode not in ("", "ro", "rw"):
        raise InvalidArgument(f"invalid mode for volumes-from: {spec}")
    out = []
    for m in lookup(ref):
        if m.type not in (BIND, VOLUME):
            continue
        # the copy is never the volume's creator: no copy-up, and `rm -v` of this one keeps it
        out.append(MountPoint(m.type, m.destination, source=m.source, name=m.name,
                              driver=m.driver, rw=m.rw and mode != "ro",
                              propagation=m.propagation, copy_data=False,
                              non_recursive=m.non_recursive, must_exist=m.must_exist))
    return out


def plan_mounts(config: Mapping[str, Any], host_config: Mapping[str, Any],
                image_config: Mapping[str, Any], lookup: LookupMounts,
                exists: Exists) -> Plan:
    """The mount points of a new container; InvalidArgument naming the bad entry."""
    driver = host_config.get("VolumeDriver") or ""
    if not isinstance(driver, str):
        raise InvalidArgument("invalid VolumeDriver: must be a string")
    points: dict[str, MountPoint] = {}
    for spec in _strings(host_config.get("VolumesFrom"), "VolumesFrom"):
        for m in _volumes_from(spec, lookup):
            points[m.destination] = m
    mine: set[str] = set()  # destinations Binds and Mounts named: they may not repeat
    requested = [_from_bind(raw, driver) for raw in _strings(host_config.get("Binds"), "Binds")]
    requested += [_from_api(m, driver, exists)
                  for m in _objects(host_config.get("Mounts"), "Mounts")]
    for m in requested:
        if m.destination in mine:
            raise InvalidArgument(f"Duplicate mount point: {m.destination}")
        mine.add(m.destination)
        points[m.destination] = m
    tmpfs = host_config.get("Tmpfs") or {}
    if not isinstance(tmpfs, Mapping):
        raise InvalidArgument("invalid Tmpfs: must be an object of path -> options")
    taken_by_tmpfs = {posixpath.normpath(str(d)) for d in tmpfs}
    for dest in sorted(taken_by_tmpfs & mine):
        raise InvalidArgument(f"Duplicate mount point: {dest}")
    volumes = _merged_volumes(config.get("Volumes"), image_config.get("Volumes"))
    for raw in sorted(volumes or {}):
        if not isinstance(raw, str) or not raw.startswith("/"):
            raise InvalidArgument(f"invalid volume specification: '{raw}': mount path must "
                                  "be absolute")
        dest = posixpath.normpath(raw)
        if dest == "/":
            raise InvalidArgument(f"invalid volume specification: '{raw}': destination can't "
                                  "be '/'")
        if dest in points or dest in taken_by_tmpfs:
            continue
        points[dest] = MountPoint(VOLUME, dest, name=secrets.token_hex(32), driver="local",
                                  anonymous=True, volume_labels={ANONYMOUS_LABEL: ""})
    return Plan(list(points.values()), volumes)


def _merged_volumes(mine: object, image: object) -> dict[str, Any] | None:
    merged: dict[str, Any] = {}
    for value, what in ((image, "image Volumes"), (mine, "Volumes")):
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise InvalidArgument(f"invalid {what}: must be an object of paths")
        merged.update({str(k): v for k, v in value.items()})
    return merged or None


def volume_names(points: Sequence[MountPoint]) -> list[str]:
    return [m.name for m in points if m.type == VOLUME]
