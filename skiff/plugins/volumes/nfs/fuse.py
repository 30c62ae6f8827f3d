"""The FUSE kernel protocol, spoken directly over /dev/fuse (no libfuse).

The kernel writes one request per read(2): a ``fuse_in_header`` and the opcode's argument
struct; the daemon answers with one write(2) of a ``fuse_out_header`` (negative errno or 0)
and the result struct. Layouts are those of <linux/fuse.h> for protocol 7.31, which we
announce in INIT; the kernel adapts to the lower of both versions. ``Operations`` is what a
filesystem implements (each method may raise OSError; its errno is the answer), ``serve``
runs the request loop until the filesystem is unmounted (read(2) then fails with ENODEV).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import struct
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from skiff.core.snapshots import Mount
from skiff.errors import SkiffError, SystemFailure, os_error
from skiff.plugins.snapshots.mount import mount_one

KERNEL_VERSION, KERNEL_MINOR = 7, 31

(LOOKUP, FORGET, GETATTR, SETATTR, READLINK, SYMLINK) = (1, 2, 3, 4, 5, 6)
(MKNOD, MKDIR, UNLINK, RMDIR, RENAME, LINK, OPEN, READ, WRITE, STATFS, RELEASE) = range(8, 19)
FSYNC, FLUSH, INIT, OPENDIR, READDIR, RELEASEDIR, FSYNCDIR = 20, 25, 26, 27, 28, 29, 30
ACCESS, CREATE, INTERRUPT, DESTROY, BATCH_FORGET = 34, 35, 36, 38, 42

FUSE_BIG_WRITES = 1 << 5
# setattr valid bits
FATTR_MODE, FATTR_UID, FATTR_GID, FATTR_SIZE = 1, 2, 4, 8
FATTR_ATIME, FATTR_MTIME, FATTR_FH, FATTR_ATIME_NOW, FATTR_MTIME_NOW = 16, 32, 64, 128, 256

IN_HEADER = struct.Struct("<IIQQIIIHH")
OUT_HEADER = struct.Struct("<IiQ")
_ATTR = struct.Struct("<QQQQQQIIIIIIIIII")
_ENTRY = struct.Struct("<QQQQII")
_ATTR_OUT = struct.Struct("<QII")
_INIT_IN = struct.Struct("<IIII")
_INIT_OUT = struct.Struct("<IIIIHHIIHHII6I")
_OPEN_OUT = struct.Struct("<QII")
_WRITE_OUT = struct.Struct("<II")
_KSTATFS = struct.Struct("<QQQQQIIII6I")
_DIRENT = struct.Struct("<QQII")
_SETATTR_IN = struct.Struct("<IIQQQQQQIIIIIIII")
_RW_IN = struct.Struct("<QQIIQII")  # fuse_read_in and fuse_write_in share the layout
_RELEASE_IN = struct.Struct("<QIIQ")
_U64 = struct.Struct("<Q")
_TWO_U32 = struct.Struct("<II")
_FOUR_U32 = struct.Struct("<IIII")
_FORGET_ONE = struct.Struct("<QQ")


@dataclass(frozen=True)
class Ctx:
    """Who asks: the calling process's ids (in the mounter's namespaces)."""

    uid: int
    gid: int
    pid: int


@dataclass(frozen=True)
class Attr:
    ino: int
    mode: int  # st_mode, type bits included
    nlink: int
    uid: int
    gid: int
    size: int
    blocks: int  # 512-byte units
    atime: tuple[int, int]
    mtime: tuple[int, int]
    ctime: tuple[int, int]
    rdev: int = 0
    blksize: int = 4096


@dataclass(frozen=True)
class Entry:
    nodeid: int
    attr: Attr


@dataclass(frozen=True)
class SetAttr:
    """The fields of a SETATTR request that the kernel marked valid (None otherwise)."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime: tuple[int, int] | str | None = None  # "now" for UTIME_NOW
    mtime: tuple[int, int] | str | None = None


@dataclass(frozen=True)
class StatFs:
    blocks: int
    bfree: int
    bavail: int
    files: int
    ffree: int
    bsize: int = 4096
    namelen: int = 255


@dataclass(frozen=True)
class DirItem:
    name: str
    ino: int
    mode: int  # st_mode or 0 when unknown


@dataclass(frozen=True)
class Request:
    opcode: int
    unique: int
    nodeid: int
    ctx: Ctx
    body: bytes


def _enosys() -> OSError:
    return OSError(errno.ENOSYS, "not implemented")


class Operations:
    """A filesystem as the kernel sees it; the defaults answer ENOSYS (the kernel then stops
    asking, or falls back, per opcode)."""

    def lookup(self, ctx: Ctx, parent: int, name: str) -> Entry:
        raise _enosys()

    def forget(self, nodeid: int, nlookup: int) -> None:
        pass

    def getattr(self, ctx: Ctx, nodeid: int) -> Attr:
        raise _enosys()

    def setattr(self, ctx: Ctx, nodeid: int, changes: SetAttr) -> Attr:
        raise _enosys()

    def readlink(self, ctx: Ctx, nodeid: int) -> bytes:
        raise _enosys()

    def symlink(self, ctx: Ctx, parent: int, name: str, target: bytes) -> Entry:
        raise _enosys()

    def mknod(self, ctx: Ctx, parent: int, name: str, mode: int, rdev: int) -> Entry:
        raise _enosys()

    def mkdir(self, ctx: Ctx, parent: int, name: str, mode: int) -> Entry:
        raise _enosys()

    def unlink(self, ctx: Ctx, parent: int, name: str) -> None:
        raise _enosys()

    def rmdir(self, ctx: Ctx, parent: int, name: str) -> None:
        raise _enosys()

    def rename(self, ctx: Ctx, parent: int, name: str, newparent: int, newname: str) -> None:
        raise _enosys()

    def link(self, ctx: Ctx, nodeid: int, newparent: int, newname: str) -> Entry:
        raise _enosys()

    def open(self, ctx: Ctx, nodeid: int, flags: int) -> int:
        return 0

    def read(self, ctx: Ctx, nodeid: int, fh: int, offset: int, size: int) -> bytes:
        raise _enosys()

    def write(self, ctx: Ctx, nodeid: int, fh: int, offset: int, data: bytes) -> int:
        raise _enosys()

    def statfs(self, ctx: Ctx, nodeid: int) -> StatFs:
        raise _enosys()

    def release(self, ctx: Ctx, nodeid: int, fh: int) -> None:
        pass

    def fsync(self, ctx: Ctx, nodeid: int, fh: int) -> None:
        pass

    def opendir(self, ctx: Ctx, nodeid: int) -> int:
        return 0

    def readdir(self, ctx: Ctx, nodeid: int, fh: int, offset: int) -> Sequence[DirItem]:
        """The entries from index ``offset`` on (the kernel resumes where a reply ended)."""
        raise _enosys()

    def releasedir(self, ctx: Ctx, nodeid: int, fh: int) -> None:
        pass

    def create(self, ctx: Ctx, parent: int, name: str, mode: int,
               flags: int) -> tuple[Entry, int]:
        raise _enosys()

    def access(self, ctx: Ctx, nodeid: int, mask: int) -> None:
        pass

    def destroy(self) -> None:
        pass


# --- codecs ----------------------------------------------------------------------------


def parse_request(buf: bytes) -> Request:
    if len(buf) < IN_HEADER.size:
        raise ValueError(f"fuse: request of {len(buf)} bytes is shorter than its header")
    length, opcode, unique, nodeid, uid, gid, pid, _extlen, _pad = IN_HEADER.unpack_from(buf)
    if length != len(buf):
        raise ValueError(f"fuse: header says {length} bytes, read {len(buf)}")
    return Request(opcode, unique, nodeid, Ctx(uid, gid, pid), bytes(buf[IN_HEADER.size:]))


def encode_reply(unique: int, error: int = 0, payload: bytes = b"") -> bytes:
    """``error`` is a positive errno (0 for success); the wire wants it negated."""
    return OUT_HEADER.pack(OUT_HEADER.size + len(payload), -error, unique) + payload


def encode_attr(a: Attr) -> bytes:
    return _ATTR.pack(a.ino, a.size, a.blocks, a.atime[0], a.mtime[0], a.ctime[0],
                      a.atime[1], a.mtime[1], a.ctime[1], a.mode, a.nlink, a.uid, a.gid,
                      a.rdev & 0xFFFFFFFF, a.blksize, 0)


def decode_attr(data: bytes) -> Attr:
    (ino, size, blocks, at, mt, ct, atn, mtn, ctn, mode, nlink, uid, gid, rdev, blksize,
     _flags) = _ATTR.unpack_from(data)
    return Attr(ino, mode, nlink, uid, gid, size, blocks, (at, atn), (mt, mtn), (ct, ctn),
                rdev, blksize)


def _split_timeout(t: float) -> tuple[int, int]:
    sec = int(t)
    return sec, int((t - sec) * 1e9)


def encode_entry(e: Entry, timeout: float) -> bytes:
    sec, nsec = _split_timeout(timeout)
    return _ENTRY.pack(e.nodeid, 0, sec, sec, nsec, nsec) + encode_attr(e.attr)


def encode_attr_out(a: Attr, timeout: float) -> bytes:
    sec, nsec = _split_timeout(timeout)
    return _ATTR_OUT.pack(sec, nsec, 0) + encode_attr(a)


def encode_dirents(items: Sequence[DirItem], start: int, size: int) -> bytes:
    """As many entries as fit in ``size`` bytes; each one's ``off`` is the index after it,
    which the kernel sends back as the next READDIR offset."""
    out = bytearray()
    for i, item in enumerate(items):
        name = item.name.encode("utf-8", "surrogateescape")
        rec = _DIRENT.pack(item.ino, start + i + 1, len(name), (item.mode & 0o170000) >> 12)
        rec += name + b"\0" * (-(len(rec) + len(name)) % 8)
        if len(out) + len(rec) > size:
            break
        out += rec
    return bytes(out)


def decode_dirents(data: bytes) -> list[tuple[int, int, int, str]]:
    """(ino, off, type, name) of each dirent (tests check ``encode_dirents`` with it)."""
    out, pos = [], 0
    while pos < len(data):
        ino, off, namelen, dtype = _DIRENT.unpack_from(data, pos)
        start = pos + _DIRENT.size
        name = data[start:start + namelen].decode("utf-8", "surrogateescape")
        out.append((ino, off, dtype, name))
        pos = start + namelen + (-(_DIRENT.size + namelen) % 8)
    return out


def encode_init_out(kernel_minor: int, kernel_flags: int, max_write: int) -> bytes:
    minor = min(kernel_minor, KERNEL_MINOR)
    out = _INIT_OUT.pack(KERNEL_VERSION, minor, 128 * 1024, kernel_flags & FUSE_BIG_WRITES,
                         16, 12, max_write, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    return out if minor >= 23 else out[:24]  # older kernels take the 7.22 struct only


def encode_statfs(s: StatFs) -> bytes:
    return _KSTATFS.pack(s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen,
                         s.bsize, 0, 0, 0, 0, 0, 0, 0)


def _names(body: bytes, count: int) -> list[str]:
    parts = body.split(b"\0")
    if len(parts) < count + 1:
        raise OSError(errno.EINVAL, "fuse: missing name in request")
    return [p.decode("utf-8", "surrogateescape") for p in parts[:count]]


def decode_setattr(body: bytes) -> SetAttr:
    (valid, _pad, _fh, size, _lock, atime, mtime, _ctime, atimensec, mtimensec, _ctimensec,
     mode, _u4, uid, gid, _u5) = _SETATTR_IN.unpack_from(body)
    at: tuple[int, int] | str | None = None
    mt: tuple[int, int] | str | None = None
    if valid & FATTR_ATIME_NOW:
        at = "now"
    elif valid & FATTR_ATIME:
        at = (atime, atimensec)
    if valid & FATTR_MTIME_NOW:
        mt = "now"
    elif valid & FATTR_MTIME:
        mt = (mtime, mtimensec)
    return SetAttr(mode=mode & 0o7777 if valid & FATTR_MODE else None,
                   uid=uid if valid & FATTR_UID else None,
                   gid=gid if valid & FATTR_GID else None,
                   size=size if valid & FATTR_SIZE else None, atime=at, mtime=mt)


# --- the session -----------------------------------------------------------------------


class Session:
    """One mounted FUSE filesystem: the /dev/fuse descriptor and the loop answering it."""

    def __init__(self, ops: Operations, *, timeout: float = 1.0,
                 max_write: int = 128 * 1024) -> None:
        self.ops = ops
        self.timeout = timeout  # how long the kernel may cache entries and attributes
        self.max_write = max_write
        self.fd = -1

    def mount(self, source: str, target: str, *, fstype: str = "fuse",
              options: Iterable[str] = ()) -> None:
        """Open /dev/fuse and mount it on ``target`` for every user, with the kernel checking
        permissions on the attributes we return (as an NFS client does on the server's).
        ``options`` are mount flags by name (ro, nosuid, noexec...)."""
        try:
            self.fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise os_error("open", "/dev/fuse", exc) from exc
        data = (f"fd={self.fd}", f"rootmode={stat.S_IFDIR:o}", "user_id=0", "group_id=0",
                "allow_other", "default_permissions")
        try:
            mount_one(Mount(fstype, source, (*options, *data)), target)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def serve(self) -> None:
        """Answer requests until the filesystem is unmounted (or DESTROY arrives)."""
        bufsize = self.max_write + 64 * 1024
        while True:
            try:
                buf = os.read(self.fd, bufsize)
            except OSError as exc:
                if exc.errno in (errno.EINTR, errno.EAGAIN, errno.ENOENT):
                    continue  # interrupted, or the request was withdrawn before we read it
                if exc.errno == errno.ENODEV:
                    return  # unmounted
                raise SystemFailure(f"read /dev/fuse: {os.strerror(exc.errno or 0)}") from exc
            req = parse_request(buf)
            reply = self.handle(req)
            if reply is not None:
                self._send(reply)
            if req.opcode == DESTROY:
                return

    def _send(self, reply: bytes) -> None:
        try:
            os.write(self.fd, reply)
        except OSError as exc:
            # ENOENT: the caller was interrupted and the kernel dropped the request;
            # ENODEV: unmounted meanwhile (the next read ends the loop)
            if exc.errno not in (errno.ENOENT, errno.ENODEV):
                raise SystemFailure(f"write /dev/fuse: {os.strerror(exc.errno or 0)}") from exc

    def handle(self, req: Request) -> bytes | None:
        """The reply to one request, or None for those that take none (FORGET)."""
        try:
            payload = self._dispatch(req)
        except OSError as exc:
            code = exc.errno if exc.errno and exc.errno > 0 else errno.EIO
            return encode_reply(req.unique, code)
        except (struct.error, ValueError):
            return encode_reply(req.unique, errno.EINVAL)
        except SkiffError as exc:  # the server is unreachable or answered garbage
            print(f"skiff-nfs: opcode {req.opcode}: {exc}", file=sys.stderr, flush=True)
            return encode_reply(req.unique, errno.EIO)
        except Exception as exc:  # a bug must cost one request, not every user the mount
            print(f"skiff-nfs: opcode {req.opcode}: internal error: {exc!r}", file=sys.stderr,
                  flush=True)
            return encode_reply(req.unique, errno.EIO)
        if payload is None:
            return None
        return encode_reply(req.unique, 0, payload)

    def _dispatch(self, req: Request) -> bytes | None:
        ops, ctx, node, body, t = self.ops, req.ctx, req.nodeid, req.body, self.timeout
        op = req.opcode
        if op == INIT:
            major, minor, _readahead, flags = _INIT_IN.unpack_from(body)
            if major != KERNEL_VERSION:
                raise OSError(errno.EPROTO, f"fuse: kernel protocol {major} unsupported")
            return encode_init_out(minor, flags, self.max_write)
        if op == LOOKUP:
            return encode_entry(ops.lookup(ctx, node, _names(body, 1)[0]), t)
        if op == FORGET:
            ops.forget(node, _U64.unpack_from(body)[0])
            return None
        if op == BATCH_FORGET:
            count, _ = _TWO_U32.unpack_from(body)
            for i in range(count):
                nodeid, nlookup = _FORGET_ONE.unpack_from(body, 8 + i * _FORGET_ONE.size)
                ops.forget(nodeid, nlookup)
            return None
        if op == GETATTR:
            return encode_attr_out(ops.getattr(ctx, node), t)
        if op == SETATTR:
            return encode_attr_out(ops.setattr(ctx, node, decode_setattr(body)), t)
        if op == READLINK:
            return ops.readlink(ctx, node)
        if op == SYMLINK:
            name, target = _names(body, 2)
            return encode_entry(ops.symlink(ctx, node, name,
                                            target.encode("utf-8", "surrogateescape")), t)
        if op == MKNOD:
            mode, rdev, _umask, _ = _FOUR_U32.unpack_from(body)
            return encode_entry(ops.mknod(ctx, node, _names(body[16:], 1)[0], mode, rdev), t)
        if op == MKDIR:
            mode, _umask = _TWO_U32.unpack_from(body)
            return encode_entry(ops.mkdir(ctx, node, _names(body[8:], 1)[0], mode), t)
        if op in (UNLINK, RMDIR):
            (ops.unlink if op == UNLINK else ops.rmdir)(ctx, node, _names(body, 1)[0])
            return b""
        if op == RENAME:
            (newdir,) = _U64.unpack_from(body)
            old, new = _names(body[8:], 2)
            ops.rename(ctx, node, old, newdir, new)
            return b""
        if op == LINK:
            (oldnode,) = _U64.unpack_from(body)
            return encode_entry(ops.link(ctx, oldnode, node, _names(body[8:], 1)[0]), t)
        if op in (OPEN, OPENDIR):
            flags, _ = _TWO_U32.unpack_from(body)
            fh = ops.open(ctx, node, flags) if op == OPEN else ops.opendir(ctx, node)
            return _OPEN_OUT.pack(fh, 0, 0)
        if op == READ:
            fh, offset, size, *_ = _RW_IN.unpack_from(body)
            return ops.read(ctx, node, fh, offset, size)
        if op == WRITE:
            fh, offset, size, *_ = _RW_IN.unpack_from(body)
            data = body[_RW_IN.size:_RW_IN.size + size]
            return _WRITE_OUT.pack(ops.write(ctx, node, fh, offset, data), 0)
        if op == STATFS:
            return encode_statfs(ops.statfs(ctx, node))
        if op in (RELEASE, RELEASEDIR):
            fh, *_ = _RELEASE_IN.unpack_from(body)
            (ops.release if op == RELEASE else ops.releasedir)(ctx, node, fh)
            return b""
        if op in (FSYNC, FSYNCDIR):
            (fh,) = _U64.unpack_from(body)
            ops.fsync(ctx, node, fh)
            return b""
        if op == FLUSH:
            return b""  # writes are synchronous on the server already (FILE_SYNC)
        if op == READDIR:
            fh, offset, size, *_ = _RW_IN.unpack_from(body)
            return encode_dirents(ops.readdir(ctx, node, fh, offset), offset, size)
        if op == CREATE:
            flags, mode, _umask, _ = _FOUR_U32.unpack_from(body)
            entry, fh = ops.create(ctx, node, _names(body[16:], 1)[0], mode, flags)
            return encode_entry(entry, t) + _OPEN_OUT.pack(fh, 0, 0)
        if op == ACCESS:
            ops.access(ctx, node, _TWO_U32.unpack_from(body)[0])
            return b""
        if op == INTERRUPT:
            return None  # requests are answered in order and quickly; nothing to cancel
        if op == DESTROY:
            with contextlib.suppress(OSError):
                ops.destroy()
            return b""
        raise _enosys()
