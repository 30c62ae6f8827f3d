"""Volumes and binds for containers: planned at create, mounted for a run, freed at removal.

- :meth:`ContainerMounts.plan` (create): the container's mount points, every refusal before
  anything exists (see :mod:`.plan`).
- :meth:`ContainerMounts.attach` / :meth:`detach` (the runner, around each run's bundle): a
  volume is made if missing (named on first use, anonymous ones under their planned name),
  mounted through the VolumeService with the container id as the user, filled from the image
  if new and empty; a ``-v`` bind source that is missing is created as a directory (Docker's
  behaviour), a ``--mount`` one is an error. The result is what the spec builder binds.
- :meth:`remove_anonymous` (``rm -v``, ``--rm``): the anonymous volumes no other container uses.
- :meth:`users` (the VolumeService's ``in_use``): the containers naming a volume, in any
  state, read from the container store, so no count can go stale.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterator, Mapping
from typing import Any

from skiff.daemon.containers.archive import VolumeBind
from skiff.daemon.containers.record import Container
from skiff.daemon.containers.store import ContainerStore
from skiff.daemon.events import EventBus
from skiff.daemon.volumes.copyup import copy_up, is_empty
from skiff.daemon.volumes.plan import Plan, plan_mounts
from skiff.daemon.volumes.points import BIND, VOLUME, MountPoint, load
from skiff.errors import Conflict, InvalidArgument, NotFound, SkiffError, os_error
from skiff.plugins.volumes.local import LocalDriver
from skiff.plugins.volumes.store import SqliteVolumeStore
from skiff.services.spec import ResolvedMount
from skiff.services.volumes import VolumeService

log = logging.getLogger("skiffd.volumes")


class ContainerMounts:
    def __init__(self, volumes: VolumeService, containers: ContainerStore,
                 events: EventBus | None = None) -> None:
        self.volumes = volumes
        self.containers = containers
        self.events = events

    def close(self) -> None:
        close = getattr(self.volumes.store, "close", None)
        if close is not None:
            close()

    def _event(self, action: str, name: str, **attrs: str) -> None:
        if self.events is not None:
            self.events.publish_threadsafe("volume", action, name, {"driver": "local", **attrs})

    # --- create ------------------------------------------------------------------------

    def plan(self, config: Mapping[str, Any], host_config: Mapping[str, Any],
             image_config: Mapping[str, Any]) -> Plan:
        """The new container's mount points (volume sources filled in: the driver knows
        where a volume's data will be before it exists)."""
        planned = plan_mounts(config, host_config, image_config, self._mounts_of,
                              os.path.exists)
        for m in planned.points:
            if m.type == VOLUME and not m.source:
                driver = self.volumes.drivers.get(m.driver)
                if driver is None:
                    raise NotFound(f'error looking up volume plugin {m.driver}: plugin '
                                   f'"{m.driver}" not found')
                m.source = driver.path(m.name)
        return planned

    def _mounts_of(self, ref: str) -> list[MountPoint]:
        return load(self.containers.find(ref).mount_points)

    def users(self, name: str) -> list[str]:
        return [c.id for c in self.containers.all()
                if any(m.type == VOLUME and m.name == name for m in load(c.mount_points))]

    # --- a run -------------------------------------------------------------------------

    def attach(self, c: Container, rootfs: str) -> list[ResolvedMount]:
        """Make ``c``'s binds and volumes usable; what the spec binds (tmpfs not included:
        the spec builder takes those from the HostConfig). On failure nothing stays mounted."""
        out: list[ResolvedMount] = []
        try:
            for m in load(c.mount_points):
                if m.type == VOLUME:
                    out.append(self._volume(c, m, rootfs))
                elif m.type == BIND:
                    out.append(self._bind(m))
        except BaseException:
            self.detach(c)
            raise
        return out

    def _volume(self, c: Container, m: MountPoint, rootfs: str) -> ResolvedMount:
        try:
            self.volumes.get(m.name)
        except NotFound:
            try:
                self.volumes.create(m.name, driver=m.driver, labels=m.volume_labels,
                                    options=m.volume_options)
            except Conflict:
                self.volumes.get(m.name)  # another container's create made it meanwhile
            else:
                self._event("create", m.name)
        host = self.volumes.mount(m.name, c.id)
        if m.copy_data and is_empty(host):
            copy_up(rootfs, m.destination, host)
        self._event("mount", m.name, container=c.id, destination=m.destination,
                    propagation=m.propagation, **{"read/write": str(m.rw).lower()})
        return ResolvedMount(host, m.destination, m.rw, m.propagation, m.non_recursive)

    @staticmethod
    def _bind(m: MountPoint) -> ResolvedMount:
        if not os.path.lexists(m.source):
            if m.must_exist:
                raise InvalidArgument(f'invalid mount config for type "bind": bind source '
                                      f"path does not exist: {m.source}")
            try:  # -v: dockerd makes the missing host directory
                os.makedirs(m.source, mode=0o755, exist_ok=True)
            except OSError as exc:
                raise os_error("create bind source directory", m.source, exc) from exc
        return ResolvedMount(m.source, m.destination, m.rw, m.propagation, m.non_recursive)

    def detach(self, c: Container) -> None:
        """``c`` no longer runs: drop it as a user of its volumes (idempotent)."""
        for m in load(c.mount_points):
            if m.type != VOLUME:
                continue
            try:
                was_user = c.id in self.volumes.store.refs(m.name)
                self.volumes.unmount(m.name, c.id)
            except SkiffError as exc:  # the others still get their turn
                log.error("unmount volume %s of container %s: %s", m.name, c.id, exc)
                continue
            if was_user:
                self._event("unmount", m.name, container=c.id)

    # --- removal -----------------------------------------------------------------------

    def remove_anonymous(self, c: Container) -> list[str]:
        """Remove ``c``'s anonymous volumes unless another container (``--volumes-from``)
        still names them; call after ``c`` left the store. The names removed."""
        removed = []
        for m in load(c.mount_points):
            if m.type != VOLUME or not m.anonymous:
                continue
            with contextlib.suppress(NotFound):
                try:
                    self.volumes.remove(m.name)
                except Conflict:
                    continue  # shared through --volumes-from: it stays, as in Docker
                except SkiffError as exc:
                    log.error("remove volume %s of container %s: %s", m.name, c.id, exc)
                    continue
                removed.append(m.name)
                self._event("destroy", m.name)
        return removed

    # --- docker cp ----------------------------------------------------------------------

    @contextlib.contextmanager
    def for_copy(self, c: Container) -> Iterator[list[VolumeBind]]:
        """``c``'s volumes and binds for a copy. A volume its driver mounts (bind, NFS, tmpfs)
        is mounted for the copy under a user of its own, so a copy into a stopped container
        reaches the volume's data rather than the empty directory beneath it."""
        ref = f"cp-{c.id}-{secrets.token_hex(4)}"
        held: list[str] = []
        try:
            for m in load(c.mount_points):
                if m.type != VOLUME:
                    continue
                try:
                    if not self.volumes.get(m.name).options:
                        continue  # a plain directory: nothing to mount
                except NotFound:
                    continue
                self.volumes.mount(m.name, ref)
                held.append(m.name)
            yield cp_volumes(c)
        finally:
            for name in held:
                try:
                    self.volumes.unmount(name, ref)
                except SkiffError as exc:
                    log.error("unmount volume %s after a copy: %s", name, exc)

    # --- /system/df --------------------------------------------------------------------

    def disk_usage(self) -> list[dict[str, Any]]:
        """``/system/df``'s Volumes: each with UsageData (Size, RefCount)."""
        out = []
        for v in self.volumes.list():
            with contextlib.suppress(NotFound):
                out.append(self.volumes.inspect(v["Name"], usage=True))
        return out


def build_container_mounts(root: str, containers: ContainerStore,
                           events: EventBus | None = None) -> ContainerMounts:
    """The volume service over ``root`` (Docker's layout: ``<root>/<name>/_data`` for each
    volume, the metadata database beside them) and the container side over it."""
    local = LocalDriver(root)  # (makes ``root``, where the database goes too)
    store = SqliteVolumeStore(os.path.join(root, "metadata.db"))
    holder: list[ContainerMounts] = []  # the service asks the container side who uses what
    volumes = VolumeService(store, {"local": local}, in_use=lambda name: holder[0].users(name))
    holder.append(ContainerMounts(volumes, containers, events))
    return holder[0]


def cp_volumes(c: Container) -> list[VolumeBind]:
    """What ``docker cp`` must see mounted in ``c``'s tree: its volumes and binds."""
    return [VolumeBind(m.source, m.destination, m.rw) for m in load(c.mount_points)
            if m.type in (BIND, VOLUME) and m.source]
