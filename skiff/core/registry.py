"""What the pull/push services need from a registry: the RegistryClient protocol.

The implementation (HTTP, auth, mirrors) lives in ``skiff.plugins.registry.client``; services
only see this protocol so they can be tested against any registry-shaped object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from skiff.core.content import BlobInfo, ContentStore, Descriptor, Digest, Writer
from skiff.core.progress import BytesProgress

ByteProgress = BytesProgress
"""The progress callback of blob transfers (the same type as layer apply's)."""


@dataclass(frozen=True)
class Repository:
    """A repository on a registry: ``docker.io`` + ``library/busybox``."""

    domain: str
    path: str

    def __str__(self) -> str:
        return f"{self.domain}/{self.path}"


class PushOutcome:
    """How a blob got to the registry (the push progress line differs for each)."""

    PUSHED = "pushed"
    EXISTS = "exists"
    MOUNTED = "mounted"


class RegistryClient(Protocol):
    def resolve(self, repo: Repository, reference: str) -> Descriptor:
        """Tag or digest -> the descriptor of the manifest or index it names (NotFound if none)."""
        ...

    def fetch_manifest(self, repo: Repository, desc: Descriptor) -> bytes:
        """The manifest/index bytes, size-limited and verified against ``desc.digest``."""
        ...

    def fetch_blob(self, repo: Repository, desc: Descriptor, writer: Writer,
                   progress: ByteProgress | None = None) -> BlobInfo:
        """Stream the blob into ``writer`` from ``writer.offset`` on, then commit it verified."""
        ...

    def blob_exists(self, repo: Repository, digest: Digest) -> bool: ...

    def push_blob(self, repo: Repository, desc: Descriptor, content: ContentStore,
                  mount_from: str | None = None,
                  progress: ByteProgress | None = None) -> str:
        """Make the blob present in ``repo``; returns a PushOutcome value."""
        ...

    def push_manifest(self, repo: Repository, reference: str, media_type: str,
                      raw: bytes) -> Digest:
        """PUT a manifest under a tag or digest; returns its digest."""
        ...

    def list_tags(self, repo: Repository) -> list[str]: ...
