"""Tar layers: apply a (compressed) layer to a snapshot directory, and write one from changes.

``apply_layer`` is the engine's unpack path: decompression (``compression``), a hashing tar
reader (``tarstream``) and confined extraction (``extract``) in one pass, returning the diffID
for the caller to check against the image config. ``write_diff`` goes the other way (commit,
export, build). ``TarDiffer`` binds both to the core ``Applier``/``DiffWriter`` protocols.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from typing import BinaryIO

from skiff.core.content import Digest
from skiff.core.diff import AppliedLayer, BytesProgress
from skiff.core.snapshots import LayerDirs, WhiteoutForm
from skiff.plugins.diff import tarstream
from skiff.plugins.diff.changes import write_diff
from skiff.plugins.diff.compression import open_layer
from skiff.plugins.diff.confine import ConfinedRoot
from skiff.plugins.diff.extract import Extractor

__all__ = ["AppliedLayer", "TarDiffer", "apply_layer", "open_layer", "write_diff"]

_log = logging.getLogger(__name__)
_PROGRESS_STEP = 1 << 19  # report at most every 512 KiB of input


class _Counting(io.RawIOBase):
    """Counts bytes read from the compressed blob and reports them now and then."""

    def __init__(self, inner: BinaryIO, progress: BytesProgress) -> None:
        super().__init__()
        self._inner = inner
        self._progress = progress
        self.count = 0
        self._reported = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(len(buf))
        n = len(data)
        buf[:n] = data
        self.count += n
        if self.count - self._reported >= _PROGRESS_STEP or (n == 0 and self.count != self._reported):
            self._reported = self.count
            self._progress(self.count)
        return n


def apply_layer(tar_stream: BinaryIO, dest: str,
                whiteouts: WhiteoutForm = WhiteoutForm.DELETE,
                lowers: Sequence[str] = ()) -> AppliedLayer:
    """Extract an uncompressed tar stream into ``dest``, confined to it; return its diffID.

    ``whiteouts`` says what ``dest`` is: a whole tree (OCI whiteouts become deletions) or an
    overlayfs upper directory (they become char 0:0 devices and the opaque xattr). Hostile
    entries raise InvalidArgument naming the entry; ``dest`` is then half-written and must be
    discarded, but nothing outside it has been touched. ``lowers`` (overlay form) are the
    parent layers, nearest first, consulted only for the metadata of directories the layer
    implies without containing.
    """
    root = ConfinedRoot(dest)
    source = tarstream.HashingSource(tar_stream)
    try:
        extractor = Extractor(root, whiteouts, lowers)
        try:
            extractor.run(tarstream.TarReader(source))
        finally:
            extractor.close()
        if extractor.skipped:
            _log.warning("layer applied to %s without %d entries: %s%s", dest,
                         len(extractor.skipped), "; ".join(extractor.skipped[:5]),
                         " ..." if len(extractor.skipped) > 5 else "")
    finally:
        source.close()
        root.close()
    return AppliedLayer(Digest.parse(source.digest()), source.total)


class TarDiffer:
    """The tar implementation of the core ``Applier`` and ``DiffWriter`` protocols."""

    def apply(self, dirs: LayerDirs, blob: BinaryIO, media_type: str,
              progress: BytesProgress | None = None) -> AppliedLayer:
        source: BinaryIO = blob
        if progress is not None:
            source = io.BufferedReader(_Counting(blob, progress), buffer_size=1 << 20)
        stream = open_layer(source, media_type)
        try:
            return apply_layer(stream, dirs.upper, dirs.whiteouts, dirs.lowers)
        finally:
            stream.close()

    def write_diff(self, dirs: LayerDirs, out: BinaryIO) -> AppliedLayer:
        return write_diff(dirs, out)
