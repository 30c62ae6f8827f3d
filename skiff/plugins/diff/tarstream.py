"""A streaming tar reader that hashes every byte it consumes (the layer's diffID).

Our own reader rather than ``tarfile``: names stay bytes end to end (layers are not always
UTF-8), every byte of the stream, padding and trailing zeros included, goes through one
sha256, and file data is handed out as slices of large read buffers (no per-block copies),
which is what keeps extraction near GNU tar's speed. Understands ustar, GNU long names/links
and PAX (local and global) headers, including SCHILY.xattr.* and LIBARCHIVE.xattr.* records.
"""

from __future__ import annotations

import base64
import hashlib
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from skiff.errors import InvalidArgument, SkiffError, os_error

BLOCK = 512
_CHUNK = 1 << 20
MAX_META = 1 << 20  # largest PAX header / GNU long name we accept

REGULAR = b"0"
HARDLINK = b"1"
SYMLINK = b"2"
CHAR = b"3"
BLOCKDEV = b"4"
DIRECTORY = b"5"
FIFO = b"6"
CONTIGUOUS = b"7"


@dataclass
class Entry:
    name: bytes             # as stored (after PAX / GNU long-name overrides)
    type: bytes             # one of the type constants above
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    atime_ns: int | None
    linkname: bytes
    devmajor: int
    devminor: int
    xattrs: dict[str, bytes] = field(default_factory=dict)


class _ReadAhead:
    """Reads (decompresses) and hashes the stream on a worker thread, a few chunks ahead.

    Decompressors and sha256 drop the GIL on large buffers, so this overlaps them with the
    extraction work (file creation, metadata) of the calling thread: GNU tar gets the same
    overlap by running gzip as a separate process.
    """

    _END = object()

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.sha = hashlib.sha256()
        self._queue: queue.Queue[object] = queue.Queue(maxsize=4)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="layer-read-ahead", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._raw.read(_CHUNK)
                if not data:
                    self._put(self._END)
                    return
                self.sha.update(data)
                if not self._put(data):
                    return
        except BaseException as exc:  # handed to the reading thread, which raises it
            self._put(exc)

    def get(self) -> bytes:
        """The next chunk; b"" at the end; re-raises what the worker hit."""
        item = self._queue.get()
        if item is self._END:
            self._thread.join()
            return b""
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, bytes)
        return item

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():  # unblock a worker waiting on a full queue
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()


class HashingSource:
    """Large buffered reads from the decompressed stream, all hashed, served as slices."""

    def __init__(self, raw: BinaryIO) -> None:
        self._ahead = _ReadAhead(raw)
        self._buf = b""
        self._pos = 0
        self._done = False
        self.total = 0

    def close(self) -> None:
        """Stop the read-ahead thread (also when extraction failed half way)."""
        self._ahead.close()

    def _fill(self) -> bool:
        if self._done:
            return False
        try:
            data = self._ahead.get()
        except SkiffError:
            raise
        except OSError as exc:
            if exc.errno is not None:  # a real I/O failure, not a decoder's complaint
                raise os_error("read layer", f"at uncompressed offset {self.total}", exc) from exc
            raise self._corrupt(exc) from exc
        except Exception as exc:
            # every decoder has its own error type (zlib.error, IsalError, ZstdError, EOFError,
            # LZMAError...): all mean the same to us, a corrupt blob
            raise self._corrupt(exc) from exc
        if not data:
            self._done = True
            return False
        self.total += len(data)
        rest = len(self._buf) - self._pos
        self._buf = self._buf[self._pos:] + data if rest else data
        self._pos = 0
        return True

    def _corrupt(self, exc: Exception) -> InvalidArgument:
        return InvalidArgument(f"layer: corrupt compressed data at uncompressed offset {self.total}: "
                               f"{type(exc).__name__}: {exc}")

    def read_exact(self, n: int) -> bytes | None:
        """Exactly ``n`` bytes, or None at a clean end of stream; InvalidArgument if truncated."""
        while len(self._buf) - self._pos < n:
            if not self._fill():
                if len(self._buf) == self._pos:
                    return None
                raise InvalidArgument(f"layer: tar stream truncated at offset {self.offset}")
        out = self._buf[self._pos:self._pos + n]
        self._pos += n
        return out

    def chunks(self, n: int) -> Iterator[memoryview]:
        """``n`` bytes as a series of buffer slices; InvalidArgument if the stream ends first."""
        while n > 0:
            if self._pos >= len(self._buf) and not self._fill():
                raise InvalidArgument(f"layer: tar stream truncated at offset {self.offset}")
            take = min(n, len(self._buf) - self._pos)
            yield memoryview(self._buf)[self._pos:self._pos + take]
            self._pos += take
            n -= take

    def skip(self, n: int) -> None:
        for _ in self.chunks(n):
            pass

    def drain(self) -> None:
        """Consume (and hash) everything left: the diffID covers the whole stream."""
        self._pos = len(self._buf)
        while self._fill():
            self._pos = len(self._buf)

    @property
    def offset(self) -> int:
        return self.total - (len(self._buf) - self._pos)

    def digest(self) -> str:
        """The sha256 of the whole stream; only meaningful after ``drain``."""
        return "sha256:" + self._ahead.sha.hexdigest()


def _num(field_: bytes, what: str, offset: int) -> int:
    if field_ and field_[0] & 0x80:
        # GNU base-256: big-endian two's complement in the remaining bits
        value = int.from_bytes(field_, "big") & ~(1 << (8 * len(field_) - 1))
        if field_[0] & 0x40:
            value -= 1 << (8 * len(field_) - 1)
        return value
    try:
        return int(field_.strip(b"\0 ") or b"0", 8)  # the usual "0000644\0" or "644 \0"
    except ValueError:
        pass
    text = field_.split(b"\0", 1)[0].strip(b" ")
    try:
        return int(text or b"0", 8)
    except ValueError:
        raise InvalidArgument(f"layer: bad {what} field {field_!r} in tar header at offset {offset}") from None


def _cstr(field_: bytes) -> bytes:
    return field_.split(b"\0", 1)[0]


def _checksum_ok(block: bytes) -> bool:
    stored = _cstr(block[148:156]).strip(b" ")
    try:
        want = int(stored, 8)
    except ValueError:
        return False
    if sum(block) - sum(block[148:156]) + 8 * 0x20 == want:  # the field counts as 8 spaces
        return True
    header = block[:148] + b" " * 8 + block[156:]
    signed = sum(b - 256 if b > 127 else b for b in header)  # some old tars sum signed chars
    return signed == want


def _parse_pax(data: bytes, offset: int) -> dict[bytes, bytes]:
    records: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # padding some writers leave
            break
        space = data.find(b" ", pos)
        if space < 0:
            raise InvalidArgument(f"layer: malformed PAX header at offset {offset}")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise InvalidArgument(f"layer: malformed PAX record length at offset {offset}") from None
        record = data[space + 1:pos + length]
        if length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise InvalidArgument(f"layer: malformed PAX record at offset {offset}")
        key, _, value = record[:-1].partition(b"=")
        records[key] = value
        pos += length
    return records


def _pax_time_ns(value: bytes) -> int:
    text = value.decode("ascii")
    sign = -1 if text.startswith("-") else 1
    whole, _, frac = text.lstrip("-").partition(".")
    frac = (frac + "000000000")[:9]
    return sign * (int(whole or "0") * 1_000_000_000 + int(frac))


class TarReader:
    """Iterate a tar stream's entries; read each entry's data before asking for the next."""

    def __init__(self, source: HashingSource) -> None:
        self.source = source
        self._global: dict[bytes, bytes] = {}
        self._pending = 0  # unread data + padding of the current entry

    def data(self, entry: Entry) -> Iterator[memoryview]:
        """The current entry's content (only for regular files; call at most once)."""
        for chunk in self.source.chunks(entry.size):
            self._pending -= len(chunk)
            yield chunk

    def __iter__(self) -> Iterator[Entry]:
        src = self.source
        while True:
            if self._pending:
                src.skip(self._pending)
                self._pending = 0
            entry = self._next_header()
            if entry is None:
                src.drain()
                return
            padded = (entry.size + BLOCK - 1) // BLOCK * BLOCK
            self._pending = padded if entry.type in (REGULAR, CONTIGUOUS) else 0
            if entry.type not in (REGULAR, CONTIGUOUS) and padded:
                # data on a non-file entry (allowed by the format, meaningless to us)
                src.skip(padded)
            yield entry

    def _read_blob(self, size: int) -> bytes:
        if size > MAX_META:  # a name or PAX header this large is an attack on our memory
            raise InvalidArgument(f"layer: tar metadata header of {size} bytes at offset "
                                  f"{self.source.offset} (limit {MAX_META})")
        padded = (size + BLOCK - 1) // BLOCK * BLOCK
        data = b"".join(bytes(c) for c in self.source.chunks(padded))
        return data[:size]

    def _next_header(self) -> Entry | None:
        src = self.source
        local: dict[bytes, bytes] = {}
        longname: bytes | None = None
        longlink: bytes | None = None
        while True:
            offset = src.offset
            block = src.read_exact(BLOCK)
            if block is None:
                return None  # no end-of-archive marker: GNU tar accepts this, so do we
            if block.count(0) == BLOCK:
                return None  # end-of-archive
            if not _checksum_ok(block):
                raise InvalidArgument(f"layer: not a tar stream or corrupt tar header at offset {offset}")
            typ = block[156:157]
            size = _num(block[124:136], "size", offset)
            if size < 0:
                raise InvalidArgument(f"layer: negative size in tar header at offset {offset}")
            if typ in (b"x", b"X"):
                local.update(_parse_pax(self._read_blob(size), offset))
                continue
            if typ == b"g":
                self._global.update(_parse_pax(self._read_blob(size), offset))
                continue
            if typ == b"L":
                longname = _cstr(self._read_blob(size))
                continue
            if typ == b"K":
                longlink = _cstr(self._read_blob(size))
                continue
            return self._entry(block, typ, size, offset, {**self._global, **local}, longname, longlink)

    def _entry(self, block: bytes, typ: bytes, size: int, offset: int, pax: dict[bytes, bytes],
               longname: bytes | None, longlink: bytes | None) -> Entry:
        name = _cstr(block[0:100])
        if block[257:263] == b"ustar\0":  # POSIX ustar: a prefix field extends the name
            prefix = _cstr(block[345:500])
            if prefix:
                name = prefix + b"/" + name
        if longname is not None:
            name = longname
        linkname = longlink if longlink is not None else _cstr(block[157:257])
        if typ == b"\0":
            # pre-POSIX tars mark directories only by the trailing slash
            typ = DIRECTORY if name.endswith(b"/") else REGULAR
        mtime_ns = _num(block[136:148], "mtime", offset) * 1_000_000_000
        atime_ns: int | None = None
        uid = _num(block[108:116], "uid", offset)
        gid = _num(block[116:124], "gid", offset)
        xattrs: dict[str, bytes] = {}
        for key, value in pax.items():
            if key == b"path":
                name = value
            elif key == b"linkpath":
                linkname = value
            elif key == b"size":
                size = int(value)
            elif key == b"uid":
                uid = int(value)
            elif key == b"gid":
                gid = int(value)
            elif key == b"mtime":
                mtime_ns = _pax_time_ns(value)
            elif key == b"atime":
                atime_ns = _pax_time_ns(value)
            elif key.startswith(b"SCHILY.xattr."):
                xattrs[key[len(b"SCHILY.xattr."):].decode("utf-8", "surrogateescape")] = value
            elif key.startswith(b"LIBARCHIVE.xattr."):
                # libarchive URL-encodes the name and base64-encodes the value (unpadded)
                from urllib.parse import unquote_to_bytes

                xname = unquote_to_bytes(key[len(b"LIBARCHIVE.xattr."):]).decode("utf-8", "surrogateescape")
                xattrs.setdefault(xname, base64.b64decode(value + b"=" * (-len(value) % 4)))
            elif key.startswith(b"GNU.sparse."):
                raise InvalidArgument(
                    f"layer entry {name.decode('utf-8', 'replace')!r}: sparse tar entries are not supported")
        if typ == b"S":
            raise InvalidArgument(
                f"layer entry {name.decode('utf-8', 'replace')!r}: sparse tar entries are not supported")
        dev = typ in (CHAR, BLOCKDEV)
        return Entry(
            name=name, type=typ, mode=_num(block[100:108], "mode", offset) & 0o7777,
            uid=uid, gid=gid, size=size, mtime_ns=mtime_ns, atime_ns=atime_ns,
            linkname=linkname, devmajor=_num(block[329:337], "devmajor", offset) if dev else 0,
            devminor=_num(block[337:345], "devminor", offset) if dev else 0, xattrs=xattrs,
        )
