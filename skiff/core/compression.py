"""Which compression a blob uses, from its first bytes.

The magic bytes decide, not the media type: registries and old tools mislabel layers (a
"tar+gzip" layer that is plain tar is common with hand-made images), and the bytes cannot lie.
Shared by the diff plugin's decompressor and the interchange service's fallback one, so both
read the same inputs the same way.

Pure: no I/O, no import of the project.
"""

from __future__ import annotations

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"
SNIFF_BYTES = 6
"""How many leading bytes ``sniff`` needs to tell every kind apart."""


def sniff(head: bytes) -> str:
    """The compression named by the first bytes: gzip, zstd, bzip2, xz or none."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if head.startswith(BZIP2_MAGIC):
        return "bzip2"
    if head.startswith(XZ_MAGIC):
        return "xz"
    return "none"
