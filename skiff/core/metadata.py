"""The metadata store: image names, leases and garbage collection roots.

An image record is a name (a normalised reference string such as
``docker.io/library/busybox:latest`` or ``...@sha256:...``) pointing at a target descriptor (a
manifest or an index) in the content store. Everything else an image needs is reachable from
that target, so garbage collection marks from image targets and from leases, and sweeps the
rest. A lease protects what an in-flight operation (a pull, a load) has written before its image
record exists.

Pure types and protocols only; the SQLite implementation is ``skiff.plugins.metadata.sqlite``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from skiff.core.content import ContentStore, Descriptor, Digest


@dataclass(frozen=True)
class ImageRecord:
    name: str
    target: Descriptor
    created: float
    updated: float
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Lease:
    id: str
    created: float
    expires: float | None
    labels: Mapping[str, str] = field(default_factory=dict)
    content: frozenset[Digest] = frozenset()
    snapshots: frozenset[str] = frozenset()


@dataclass(frozen=True)
class GCResult:
    removed: list[Digest]
    bytes_freed: int
    kept_snapshots: frozenset[str]
    expired_leases: list[str]


SnapshotCollector = Callable[[frozenset[str]], None]
"""Told the snapshot keys (chain IDs) still referenced; removes the unreferenced ones."""


class MetadataStore(Protocol):
    def put_image(self, name: str, target: Descriptor,
                  labels: Mapping[str, str] | None = None) -> ImageRecord:
        """Create or repoint ``name``; keeps ``created`` of an existing record."""
        ...

    def create_image(self, name: str, target: Descriptor,
                     labels: Mapping[str, str] | None = None) -> ImageRecord:
        """Like put_image, but Conflict if the name exists."""
        ...

    def get_image(self, name: str) -> ImageRecord:
        """NotFound if absent."""
        ...

    def list_images(self) -> list[ImageRecord]: ...

    def delete_image(self, name: str) -> None:
        """NotFound if absent."""
        ...

    def delete_images(self, names: list[str]) -> None:
        """Remove several names in one transaction (all or nothing)."""
        ...

    def create_lease(self, lease_id: str | None = None, ttl: float | None = None,
                     labels: Mapping[str, str] | None = None) -> Lease: ...

    def add_lease_content(self, lease_id: str, digest: Digest) -> None: ...

    def add_lease_snapshot(self, lease_id: str, key: str) -> None: ...

    def get_lease(self, lease_id: str) -> Lease: ...

    def list_leases(self) -> list[Lease]: ...

    def delete_lease(self, lease_id: str) -> None: ...

    def gc(self, content: ContentStore,
           snapshots: SnapshotCollector | None = None) -> GCResult:
        """Delete blobs unreachable from images and leases; report the snapshot keys in use."""
        ...
