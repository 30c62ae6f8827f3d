"""Volumes: create, inspect, list, remove, prune, mount for containers, and skiff's extensions
(export, import, rename), over a VolumeStore and the drivers by name.

Whether a volume is in use comes from the daemon (``in_use(name)`` lists the containers that
reference it, in any state: Docker refuses to remove a volume a stopped container names).
Mount users are counted in the store, so a driver mount (tmpfs, NFS, bind) is made for the
first running user and undone after the last, across daemon restarts too.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, BinaryIO

from skiff.core.volumes import (
    ANONYMOUS_LABEL,
    VolumeDriver,
    VolumeRecord,
    VolumeStore,
    check_volume_name,
)
from skiff.errors import Conflict, InvalidArgument, NotFound

InUse = Callable[[str], list[str]]
_FILTERS = frozenset({"dangling", "name", "label", "driver"})


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _truthy(value: str) -> bool:
    low = value.lower()
    if low in ("1", "true"):
        return True
    if low in ("0", "false"):
        return False
    raise InvalidArgument(f"invalid filter 'dangling={value}'")


def _labels_match(labels: Mapping[str, str], wants: Sequence[str]) -> bool:
    for want in wants:
        k, eq, v = want.partition("=")
        if k not in labels or (eq and labels[k] != v):
            return False
    return True


class VolumeService:
    def __init__(self, store: VolumeStore, drivers: Mapping[str, VolumeDriver],
                 in_use: InUse) -> None:
        self.store = store
        self.drivers = dict(drivers)
        self.in_use = in_use

    def _driver(self, name: str) -> VolumeDriver:
        drv = self.drivers.get(name or "local")
        if drv is None:
            raise NotFound(f"error looking up volume plugin {name}: plugin \"{name}\" not found")
        return drv

    # --- queries ---------------------------------------------------------------------

    def get(self, name: str) -> VolumeRecord:
        return self.store.get(name)

    def inspect(self, name: str, *, usage: bool = False) -> dict[str, Any]:
        rec = self.store.get(name)
        out: dict[str, Any] = {
            "Name": rec.name, "Driver": rec.driver, "CreatedAt": rec.created_at,
            "Mountpoint": self._driver(rec.driver).path(rec.name),
            "Labels": dict(rec.labels) or None, "Scope": "local",
            "Options": dict(rec.options) or None,
        }
        if usage:
            out["UsageData"] = {"Size": self._driver(rec.driver).size(rec.name),
                                "RefCount": len(self.in_use(rec.name))}
        return out

    def list(self, filters: Mapping[str, Sequence[str]] | None = None) -> list[dict[str, Any]]:
        filters = filters or {}
        for key in filters:
            if key not in _FILTERS:
                raise InvalidArgument(f"invalid filter '{key}'")
        out = []
        for rec in self.store.all():
            if not self._matches(rec, filters):
                continue
            out.append(self.inspect(rec.name))
        return out

    def _matches(self, rec: VolumeRecord, filters: Mapping[str, Sequence[str]]) -> bool:
        if filters.get("name") and not any(v in rec.name for v in filters["name"]):
            return False
        if filters.get("driver") and rec.driver not in filters["driver"]:
            return False
        if filters.get("label") and not _labels_match(rec.labels, filters["label"]):
            return False
        if filters.get("dangling"):
            dangling = _truthy(filters["dangling"][0])
            if dangling == bool(self.in_use(rec.name)):
                return False
        return True

    # --- create / remove -------------------------------------------------------------

    def create(self, name: str | None = None, *, driver: str = "local",
               labels: Mapping[str, str] | None = None,
               options: Mapping[str, str] | None = None) -> VolumeRecord:
        """A new volume; an existing one of the same name and driver is returned as is
        (Docker's ``volume create`` is idempotent), with other options it is a conflict."""
        drv = self._driver(driver)
        opts = {str(k): str(v) for k, v in (options or {}).items()}
        labels = {str(k): str(v) for k, v in (labels or {}).items()}
        if name:
            check_volume_name(name)
            try:
                old = self.store.get(name)
            except NotFound:
                pass
            else:
                if old.driver != drv.name:
                    raise Conflict(f"create {name}: volume name must be unique: a volume of "
                                   f"driver {old.driver} exists")
                if opts and dict(old.options) != opts:
                    raise Conflict(f"create {name}: a volume of that name exists with other "
                                   "options")
                return old
        else:
            name = secrets.token_hex(32)
            labels = {ANONYMOUS_LABEL: "", **labels}
        drv.validate(opts)
        rec = VolumeRecord(name, drv.name, _now(), labels, opts)
        self.store.add(rec)
        try:
            drv.create(name, opts)
        except BaseException:
            self.store.delete(name)
            raise
        return rec

    def remove(self, name: str, *, force: bool = False) -> None:
        try:
            rec = self.store.get(name)
        except NotFound:
            if force:
                return
            raise
        users = self.in_use(name)
        if users:
            raise Conflict(f"remove {name}: volume is in use - [{', '.join(users)}]")
        if self.store.refs(name):  # mounted for a container the daemon no longer knows
            self.unmount_all(name)
        self._driver(rec.driver).remove(name)
        self.store.delete(name)

    def prune(self, *, all_volumes: bool = False,
              label: Sequence[str] = ()) -> dict[str, Any]:
        """Unused volumes; only anonymous ones unless ``all_volumes`` (Docker since API 1.42)."""
        deleted, reclaimed = [], 0
        for rec in self.store.all():
            if not all_volumes and not rec.anonymous:
                continue
            if label and not self._label_filter(rec.labels, label):
                continue
            if self.in_use(rec.name):
                continue
            size = self._driver(rec.driver).size(rec.name)
            self.remove(rec.name)
            deleted.append(rec.name)
            reclaimed += size
        return {"VolumesDeleted": deleted or None, "SpaceReclaimed": reclaimed}

    @staticmethod
    def _label_filter(labels: Mapping[str, str], wants: Sequence[str]) -> bool:
        positive = [w for w in wants if not w.startswith("!")]
        negative = [w[1:] for w in wants if w.startswith("!")]
        if positive and not _labels_match(labels, positive):
            return False
        return not any(_labels_match(labels, [n]) for n in negative)

    # --- use by containers -----------------------------------------------------------

    def mount(self, name: str, ref: str) -> str:
        """The host path of ``name`` for container ``ref``; the driver mounts for the first."""
        rec = self.store.get(name)
        drv = self._driver(rec.driver)
        if self.store.add_ref(name, ref) == 1 or rec.options:
            # (with options the driver checks the mount itself: idempotent after a crash)
            try:
                return drv.mount(name, rec.options)
            except BaseException:
                self.store.drop_ref(name, ref)
                raise
        return drv.path(name)

    def unmount(self, name: str, ref: str) -> None:
        try:
            rec = self.store.get(name)
        except NotFound:
            return
        if self.store.drop_ref(name, ref) == 0:
            self._driver(rec.driver).unmount(name, rec.options)

    def unmount_all(self, name: str) -> None:
        for ref in self.store.refs(name):
            self.unmount(name, ref)

    def path(self, name: str) -> str:
        rec = self.store.get(name)
        return self._driver(rec.driver).path(name)

    def size(self, name: str) -> int:
        rec = self.store.get(name)
        return self._driver(rec.driver).size(name)

    # --- skiff's extensions ----------------------------------------------------------

    @contextlib.contextmanager
    def _reachable(self, rec: VolumeRecord) -> Iterator[str]:
        """The volume's data path, mounted for the duration if it has driver options and no
        container holds it mounted already."""
        drv = self._driver(rec.driver)
        if not rec.options:
            yield drv.path(rec.name)
            return
        path = drv.mount(rec.name, rec.options)
        try:
            yield path
        finally:
            if not self.store.refs(rec.name):
                drv.unmount(rec.name, rec.options)

    def export(self, name: str, out: BinaryIO) -> None:
        rec = self.store.get(name)
        with self._reachable(rec):
            self._driver(rec.driver).export(name, out)

    def import_tar(self, name: str, tar: BinaryIO) -> None:
        """Fill an empty volume from a tar stream (refused when it has content or users)."""
        rec = self.store.get(name)
        users = self.in_use(name)
        if users:
            raise Conflict(f"import into volume {name}: volume is in use - [{', '.join(users)}]")
        with self._reachable(rec) as path:
            if os.listdir(path):
                raise Conflict(f"import into volume {name}: the volume is not empty")
            self._driver(rec.driver).import_tar(name, tar)

    def rename(self, old: str, new: str) -> VolumeRecord:
        check_volume_name(new)
        rec = self.store.get(old)
        users = self.in_use(old)
        if users:
            raise Conflict(f"rename {old}: volume is in use - [{', '.join(users)}]")
        self._driver(rec.driver).rename(old, new)
        try:
            self.store.rename(old, new)
        except BaseException:
            self._driver(rec.driver).rename(new, old)
            raise
        return self.store.get(new)
