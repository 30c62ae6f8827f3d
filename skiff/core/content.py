"""Content-addressed blobs: digests, descriptors and the ContentStore protocol.

Pure types and protocols only: no I/O at import, no import of anything else in the project except
the error tree. Implementations live in ``skiff.plugins.content``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from skiff.errors import InvalidArgument

_DIGEST_RE = re.compile(r"^(sha256):([a-f0-9]{64})$|^(sha512):([a-f0-9]{128})$")


@dataclass(frozen=True, order=True)
class Digest:
    """An algorithm-qualified content digest, e.g. ``sha256:e3b0...``."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        m = _DIGEST_RE.match(text)
        if not m:
            raise InvalidArgument(f"invalid digest {text!r}: want sha256:<64 hex> or sha512:<128 hex>")
        algo = m.group(1) or m.group(3)
        hexpart = m.group(2) or m.group(4)
        return cls(algo, hexpart)

    @classmethod
    def from_bytes(cls, data: bytes) -> Digest:
        import hashlib

        return cls("sha256", hashlib.sha256(data).hexdigest())

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @property
    def encoded(self) -> str:
        return self.hex


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a manifest says about a blob."""

    media_type: str
    digest: Digest
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Mapping[str, object] | None = None
    urls: tuple[str, ...] = ()
    artifact_type: str | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = dict(self.platform)
        if self.urls:
            out["urls"] = list(self.urls)
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out

    @classmethod
    def from_json(cls, obj: object, where: str = "descriptor") -> Descriptor:
        if not isinstance(obj, dict):
            raise InvalidArgument(f"{where}: not a JSON object")
        mt = obj.get("mediaType")
        dg = obj.get("digest")
        size = obj.get("size")
        if not isinstance(mt, str) or not mt:
            raise InvalidArgument(f"{where}: mediaType missing or not a string")
        if not isinstance(dg, str):
            raise InvalidArgument(f"{where}: digest missing or not a string")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidArgument(f"{where}: size missing or not a non-negative integer")
        ann = obj.get("annotations") or {}
        if not isinstance(ann, dict):
            raise InvalidArgument(f"{where}: annotations is not an object")
        plat = obj.get("platform")
        if plat is not None and not isinstance(plat, dict):
            raise InvalidArgument(f"{where}: platform is not an object")
        urls = obj.get("urls") or []
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise InvalidArgument(f"{where}: urls is not a list of strings")
        at = obj.get("artifactType")
        try:
            digest = Digest.parse(dg)
        except InvalidArgument as exc:
            raise InvalidArgument(f"{where}: {exc}") from exc
        return cls(mt, digest, size, dict(ann), plat, tuple(urls),
                   at if isinstance(at, str) else None)


@dataclass(frozen=True)
class BlobInfo:
    digest: Digest
    size: int
    # When the blob became visible (seconds since the epoch), if the store knows; garbage
    # collection spares blobs committed after it began, which a racing pull may still need.
    committed: float | None = None


class Writer(Protocol):
    """An open ingest: bytes go in, ``commit`` verifies the digest and makes the blob visible.

    ``offset`` is where writing resumes; a writer reopened under the same ref after an
    interruption starts at the size already ingested.
    """

    @property
    def offset(self) -> int: ...

    def write(self, data: bytes) -> None: ...

    def digest(self) -> Digest:
        """The digest of everything written so far (the writer hashes as it goes, so callers
        that learn the digest only from the content, like load and import, need not hash again).
        """
        ...

    def commit(self, expected: Digest, size: int | None = None) -> BlobInfo: ...

    def abort(self) -> None: ...

    def close(self) -> None:
        """Release the writer, keeping what was written so a writer with the same ref resumes."""
        ...


class ContentStore(Protocol):
    """Blobs by digest, verified on commit; a crash at any instant leaves no half blob visible."""

    def info(self, digest: Digest) -> BlobInfo:
        """Raise NotFound if absent."""
        ...

    def exists(self, digest: Digest) -> bool: ...

    def open(self, digest: Digest) -> BinaryIO:
        """A readable, seekable file of the blob; raise NotFound if absent."""
        ...

    def read(self, digest: Digest, limit: int | None = None) -> bytes:
        """The whole blob (for manifests and configs); ``limit`` refuses larger blobs."""
        ...

    def path(self, digest: Digest) -> str:
        """Where the blob lives on disk (for zero-copy serving); NotFound if absent."""
        ...

    def writer(self, ref: str) -> Writer:
        """An ingest keyed by ``ref`` (resumable: reopening continues from its offset)."""
        ...

    def put(self, data: bytes, expected: Digest | None = None) -> BlobInfo:
        """Write a small blob in one go."""
        ...

    def delete(self, digest: Digest) -> None: ...

    def walk(self) -> Iterator[BlobInfo]: ...
