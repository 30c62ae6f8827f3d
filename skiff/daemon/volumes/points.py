"""A container's mount points as the daemon records them, and the JSON Docker shows for them.

One :class:`MountPoint` per bind, volume or ``--mount type=tmpfs`` of a container. The record
keeps what inspect shows (Docker's ``MountPoint``: Type, Name, Source, Destination, Driver,
Mode, RW, Propagation) and what the daemon needs later (copy-up, non-recursive binds, whether a
missing bind source is an error, the options of a volume to create on first use).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

BIND, VOLUME, TMPFS = "bind", "volume", "tmpfs"


@dataclass
class MountPoint:
    type: str  # bind, volume or tmpfs
    destination: str
    source: str = ""  # host path: the bind source, the volume's data dir once known
    name: str = ""  # volumes only
    driver: str = ""  # volumes only
    mode: str = ""  # the -v mode text as given ("ro", "z", ...); "" for --mount
    rw: bool = True
    propagation: str = ""
    copy_data: bool = True  # volumes: fill a new empty volume from the image (not nocopy)
    non_recursive: bool = False
    anonymous: bool = False  # made for this container: `rm -v` removes it
    # --mount type=bind: a missing source is an error; -v makes the directory (Docker)
    must_exist: bool = False
    volume_labels: dict[str, str] = field(default_factory=dict)  # to create a missing volume
    volume_options: dict[str, str] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, data: Mapping[str, Any]) -> MountPoint:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def docker_json(self) -> dict[str, Any]:
        """Docker's ``MountPoint`` (inspect's and the list's ``Mounts``): Name and Driver only
        for volumes, as Go's ``omitempty`` leaves them out of the others."""
        out: dict[str, Any] = {"Type": self.type}
        if self.type == VOLUME:
            out["Name"] = self.name
        out["Source"] = self.source
        out["Destination"] = self.destination
        if self.type == VOLUME:
            out["Driver"] = self.driver
        out.update({"Mode": self.mode, "RW": self.rw, "Propagation": self.propagation})
        return out


def load(rows: Sequence[Mapping[str, Any]] | None) -> list[MountPoint]:
    return [MountPoint.from_row(r) for r in rows or ()]


def docker_mounts(rows: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """The ``Mounts`` list of a container record's stored mount points."""
    return [m.docker_json() for m in load(rows)]
