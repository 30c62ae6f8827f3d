"""Volumes: the record, the driver protocol and the store protocol (no I/O here).

A volume is named storage that outlives containers. The ``local`` driver keeps it as a
directory under the daemon's root, or mounts what its options say there (tmpfs, a bind of a
host directory, NFS): Docker's local driver options ``type``, ``device`` and ``o``. Which
containers use a volume is not stored with it: the daemon derives it from its containers,
so a crash cannot leave a stale count behind.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from skiff.errors import InvalidArgument

_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+\Z")
ANONYMOUS_LABEL = "com.docker.volume.anonymous"


def check_volume_name(name: str) -> str:
    """Docker's volume name rule; anything else (``..``, ``/``, spaces) is refused."""
    if not _NAME.match(name):
        raise InvalidArgument(f'volume name "{name}" includes invalid characters for a local '
                              'volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If '
                              "you intended to pass a host directory, use absolute path")
    return name


@dataclass(frozen=True)
class VolumeRecord:
    name: str
    driver: str
    created_at: str  # RFC 3339, as Docker's CreatedAt
    labels: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, str] = field(default_factory=dict)

    @property
    def anonymous(self) -> bool:
        return ANONYMOUS_LABEL in self.labels


class VolumeDriver(Protocol):
    """Where a driver keeps volumes and how it makes them usable (one per driver name)."""

    name: str

    def validate(self, options: Mapping[str, str]) -> None:
        """InvalidArgument naming the option when ``options`` cannot work."""

    def create(self, name: str, options: Mapping[str, str]) -> None: ...

    def remove(self, name: str) -> None: ...

    def path(self, name: str) -> str:
        """The Mountpoint inspect shows (where the data is, once mounted)."""
        ...

    def mount(self, name: str, options: Mapping[str, str]) -> str:
        """Make the volume usable (its first user); the host path to bind."""
        ...

    def unmount(self, name: str, options: Mapping[str, str]) -> None:
        """Its last user is gone."""

    def size(self, name: str) -> int: ...

    def export(self, name: str, out: BinaryIO) -> None:
        """The volume's content as a tar stream."""

    def import_tar(self, name: str, tar: BinaryIO) -> None:
        """Extract a tar stream into the (empty) volume, confined to it."""

    def rename(self, old: str, new: str) -> None: ...


class VolumeStore(Protocol):
    def add(self, rec: VolumeRecord) -> None:
        """Conflict if the name is taken."""

    def get(self, name: str) -> VolumeRecord:
        """NotFound if there is no such volume."""
        ...

    def all(self) -> list[VolumeRecord]: ...

    def delete(self, name: str) -> None: ...

    def rename(self, old: str, new: str) -> None: ...

    def refs(self, name: str) -> list[str]:
        """Who has the volume mounted now (driver mounts are counted per ref)."""
        ...

    def add_ref(self, name: str, ref: str) -> int:
        """Record a user; the number of users afterwards."""
        ...

    def drop_ref(self, name: str, ref: str) -> int:
        """Forget a user; the number of users left."""
        ...
