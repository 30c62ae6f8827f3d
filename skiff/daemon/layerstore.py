"""A snapshot's changes written as an uncompressed layer straight into the content store,
held by a lease until an image names it (commit and the builder's steps share this)."""

from __future__ import annotations

import uuid
from typing import BinaryIO, cast

from skiff.core.content import Writer
from skiff.core.diff import AppliedLayer
from skiff.core.snapshots import LayerDirs
from skiff.plugins.diff.changes import write_diff
from skiff.services.images import ImageService


class _WriterFile:
    """A content-store writer as the binary file ``write_diff`` writes to."""

    def __init__(self, w: Writer) -> None:
        self._w = w

    def write(self, data: bytes) -> int:
        self._w.write(bytes(data))
        return len(data)


def store_diff(images: ImageService, dirs: LayerDirs, lease: str, ref_prefix: str
               ) -> AppliedLayer:
    """Write the diff of ``dirs`` as a blob (its digest is its diffID), leased to ``lease``."""
    w = images.content.writer(f"{ref_prefix}-{uuid.uuid4().hex}")
    try:
        layer = write_diff(dirs, cast(BinaryIO, _WriterFile(w)))
        images.metadata.add_lease_content(lease, layer.diff_id)
        w.commit(layer.diff_id, layer.size)
    except BaseException:
        w.abort()
        raise
    finally:
        w.close()
    return layer
