"""Snapshots: keyed, parent-chained filesystem trees, and the Snapshotter protocol.

A snapshotter RETURNS mounts; it never performs them. Callers (the unpack service through a
temporary mount, the daemon for a container's root) perform them, so that the same snapshot
can be mounted wherever it is needed and the runtime receives plain mount data.

Pure types and protocols only: no I/O at import, no import of the project except the errors.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol


@dataclass(frozen=True)
class Mount:
    """One mount as an OCI runtime spec would describe it: performed at a target by a caller."""

    type: str
    source: str
    options: tuple[str, ...] = ()


class Kind(Enum):
    VIEW = "view"            # read-only, never committed
    ACTIVE = "active"        # writable, may be committed
    COMMITTED = "committed"  # immutable, a parent for others


@dataclass(frozen=True)
class SnapshotInfo:
    key: str
    parent: str | None
    kind: Kind
    created: float
    labels: Mapping[str, str] = field(default_factory=dict)


class WhiteoutForm(Enum):
    """How deletions of lower files are recorded in a snapshot's own directory."""

    OVERLAY = "overlay"  # overlayfs form: char 0:0 device, trusted.overlay.opaque=y on dirs
    DELETE = "delete"    # the directory holds the full tree: deleted files are simply gone


@dataclass(frozen=True)
class LayerDirs:
    """Where an ACTIVE snapshot's files live on the host, for layer apply and diff creation.

    ``upper`` is the directory a layer is extracted into. With ``WhiteoutForm.OVERLAY`` it holds
    only this snapshot's changes; with ``DELETE`` it holds the whole tree, and ``lower`` (the
    parent's whole tree, or None for a base snapshot) is what changes are computed against.
    """

    upper: str
    whiteouts: WhiteoutForm
    lower: str | None = None
    lowers: tuple[str, ...] = ()
    """OVERLAY: the parent layers' directories, nearest first (read only). A layer that implies
    a directory without containing it (``a/b/f`` with no ``a/b/`` entry) gets it in ``upper``
    with the metadata it has below, as overlayfs would otherwise show the new one's."""


class Snapshotter(Protocol):
    def prepare(self, key: str, parent: str | None,
                labels: Mapping[str, str] | None = None) -> list[Mount]:
        """A new writable (ACTIVE) snapshot on top of the COMMITTED ``parent``."""
        ...

    def view(self, key: str, parent: str | None,
             labels: Mapping[str, str] | None = None) -> list[Mount]:
        """A new read-only (VIEW) snapshot of the COMMITTED ``parent``."""
        ...

    def mounts(self, key: str) -> list[Mount]:
        """The mounts of an existing ACTIVE or VIEW snapshot."""
        ...

    def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        """Turn ACTIVE ``key`` into COMMITTED ``name`` (``key`` no longer exists afterwards)."""
        ...

    def remove(self, key: str) -> None:
        """Remove a snapshot; Conflict if other snapshots have it as parent."""
        ...

    def stat(self, key: str) -> SnapshotInfo:
        """NotFound if absent."""
        ...

    def walk(self) -> Iterator[SnapshotInfo]: ...

    def usage(self, key: str) -> tuple[int, int]:
        """(bytes, inodes) this snapshot's own directory takes on disk."""
        ...

    def layer_dirs(self, key: str) -> LayerDirs:
        """Where to apply a layer onto ACTIVE ``key`` and where diff creation finds its changes.

        Also answers for a COMMITTED snapshot (its layer's files, e.g. for export or inspect);
        a layer must only ever be applied to an ACTIVE one. InvalidArgument for a VIEW.
        """
        ...
