"""Layer application and diff creation as protocols, so services need no plugin import.

Pure types and protocols only: no I/O at import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Protocol

from skiff.core.content import Digest
from skiff.core.progress import BytesProgress
from skiff.core.snapshots import LayerDirs

__all__ = ["AppliedLayer", "Applier", "BytesProgress", "DiffWriter"]



@dataclass(frozen=True)
class AppliedLayer:
    """What applying (or writing) a layer produced: the diffID (sha256 of the uncompressed tar)."""

    diff_id: Digest
    size: int  # bytes of the uncompressed tar


class Applier(Protocol):
    def apply(self, dirs: LayerDirs, blob: BinaryIO, media_type: str,
              progress: BytesProgress | None = None) -> AppliedLayer:
        """Extract the (possibly compressed) layer ``blob`` into ``dirs.upper``, confined to it.

        Raise InvalidArgument naming the entry for a hostile or corrupt layer; the caller
        discards the snapshot (nothing outside ``dirs.upper`` has been touched).
        """
        ...


class DiffWriter(Protocol):
    def write_diff(self, dirs: LayerDirs, out: BinaryIO) -> AppliedLayer:
        """Write the snapshot's changes as an uncompressed tar with OCI whiteouts to ``out``."""
        ...
