"""Layer decompression: gzip (ISA-L when installed), zstd, bzip2, xz or plain tar.

The magic bytes decide, not the media type (``skiff.core.compression.sniff``, shared with the
interchange service); the media type only matters when the stream is empty or too short.
"""

from __future__ import annotations

import io
from typing import BinaryIO, cast

from skiff.core.compression import (
    BZIP2_MAGIC,
    GZIP_MAGIC,
    SNIFF_BYTES,
    XZ_MAGIC,
    ZSTD_MAGIC,
    sniff,
)
from skiff.errors import InvalidArgument, Unavailable

__all__ = ["BZIP2_MAGIC", "GZIP_MAGIC", "XZ_MAGIC", "ZSTD_MAGIC", "open_compressor",
           "open_layer", "sniff"]

_SNIFF = SNIFF_BYTES


class _Prefixed(io.RawIOBase):
    """The sniffed bytes followed by the rest of the stream, without needing seek()."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        super().__init__()
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buf), len(self._head))
            buf[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buf))
        n = len(data)
        buf[:n] = data
        return n


def _read_head(fileobj: BinaryIO) -> bytes:
    head = b""
    while len(head) < _SNIFF:
        chunk = fileobj.read(_SNIFF - len(head))
        if not chunk:
            break
        head += chunk
    return head


def open_layer(fileobj: BinaryIO, media_type: str = "") -> BinaryIO:
    """A readable stream of the uncompressed tar inside ``fileobj`` (any supported compression).

    ``media_type`` is only a hint; the magic bytes decide. The returned stream does not own
    ``fileobj``: the caller closes it.
    """
    head = _read_head(fileobj)
    kind = sniff(head)
    # A "compressed" media type over plain bytes falls through to "none": if it is not a tar
    # either, the tar reader's header checksum refuses it with the offset.
    raw = io.BufferedReader(_Prefixed(head, fileobj), buffer_size=1 << 20)
    if kind == "gzip":
        return _open_gzip(raw)
    if kind == "zstd":
        return _open_zstd(raw)
    if kind == "bzip2":
        import bz2

        return bz2.BZ2File(raw, "rb")  # type: ignore[return-value]
    if kind == "xz":
        import lzma

        return lzma.LZMAFile(raw, "rb")  # type: ignore[return-value]
    return raw


def _open_gzip(raw: BinaryIO) -> BinaryIO:
    try:
        # ISA-L's igzip decompresses several times faster than zlib; the threaded reader also
        # moves decompression off the thread that hashes and writes files (it drops the GIL).
        from isal import igzip_threaded
    except ImportError:
        import gzip

        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    stream: BinaryIO = igzip_threaded.open(raw, "rb", threads=1)  # type: ignore[no-untyped-call,unused-ignore]
    return stream


def _open_zstd(raw: BinaryIO) -> BinaryIO:
    try:
        import zstandard
    except ImportError as exc:
        raise Unavailable("zstd-compressed layer: the 'zstandard' Python package is not installed") from exc
    reader: BinaryIO = zstandard.ZstdDecompressor().stream_reader(
        raw, read_size=1 << 20, read_across_frames=True, closefd=False)
    return reader


def open_compressor(out: BinaryIO, kind: str = "gzip") -> BinaryIO:
    """A writable stream that compresses into ``out`` (gzip or zstd); closing it does not
    close ``out``. For layers written by commit/build: ``write_diff`` into it, then close."""
    if kind == "gzip":
        try:
            from isal import igzip
        except ImportError:
            import gzip

            # mtime=0: the same tar gives the same blob digest
            return cast(BinaryIO, gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0))
        return cast(BinaryIO, igzip.IGzipFile(  # type: ignore[no-untyped-call,unused-ignore]
            fileobj=out, mode="wb", compresslevel=2, mtime=0))
    if kind == "zstd":
        import zstandard

        return cast(BinaryIO, zstandard.ZstdCompressor(level=3).stream_writer(out, closefd=False))
    raise InvalidArgument(f"layer compression {kind!r}: want gzip or zstd")
