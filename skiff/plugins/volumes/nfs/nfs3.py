"""NFSv3 (RFC 1813) with its MOUNT3 protocol and the portmapper (RFC 1833), as a client.

Why version 3 and not 4: v3 is stateless and handle-based, so every FUSE inode operation is one
call on a file handle (LOOKUP, GETATTR, CREATE, WRITE...), owners travel as numeric uid/gid,
and there is no client id, open state, lease renewal or state recovery to get right after a
server restart. The price is the MOUNT protocol and the portmapper on the server (rpcbind),
which every NFS server that speaks v3 runs; ``port=`` and ``mountport=`` skip the portmapper.

Results are decoded into small dataclasses; an NFS status other than NFS3_OK raises
``NfsError`` carrying the matching errno, which the FUSE side returns as is.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass

from skiff.errors import NotFound, PermissionDenied, SystemFailure, Unavailable
from skiff.plugins.volumes.nfs.rpc import AuthSys, RpcClient
from skiff.plugins.volumes.nfs.xdr import Decoder, Encoder

PMAP_PROG, PMAP_VERS, PMAP_GETPORT = 100000, 2, 3
MOUNT_PROG, MOUNT_VERS, MOUNTPROC_MNT, MOUNTPROC_UMNT = 100005, 3, 1, 3
NFS_PROG, NFS_VERS = 100003, 3
IPPROTO_TCP = 6
FHSIZE3 = 64
NFS_PORT = 2049

# procedures
GETATTR, SETATTR, LOOKUP, ACCESS, READLINK, READ, WRITE, CREATE = 1, 2, 3, 4, 5, 6, 7, 8
MKDIR, SYMLINK, MKNOD, REMOVE, RMDIR, RENAME, LINK = 9, 10, 11, 12, 13, 14, 15
READDIR, READDIRPLUS, FSSTAT, FSINFO, COMMIT = 16, 17, 18, 19, 21

# ftype3
NF3REG, NF3DIR, NF3BLK, NF3CHR, NF3LNK, NF3SOCK, NF3FIFO = 1, 2, 3, 4, 5, 6, 7
_S_IFMT = {NF3REG: 0o100000, NF3DIR: 0o040000, NF3BLK: 0o060000, NF3CHR: 0o020000,
           NF3LNK: 0o120000, NF3SOCK: 0o140000, NF3FIFO: 0o010000}
FTYPE_OF_MODE = {v: k for k, v in _S_IFMT.items()}

UNSTABLE, DATA_SYNC, FILE_SYNC = 0, 1, 2
UNCHECKED, GUARDED, EXCLUSIVE = 0, 1, 2
DONT_CHANGE, SET_TO_SERVER_TIME, SET_TO_CLIENT_TIME = 0, 1, 2

# nfsstat3 -> errno; the small ones share their numbers with Linux, the rest do not
_ERRNO = {1: errno.EPERM, 2: errno.ENOENT, 5: errno.EIO, 6: errno.ENXIO, 13: errno.EACCES,
          17: errno.EEXIST, 18: errno.EXDEV, 19: errno.ENODEV, 20: errno.ENOTDIR,
          21: errno.EISDIR, 22: errno.EINVAL, 27: errno.EFBIG, 28: errno.ENOSPC,
          30: errno.EROFS, 31: errno.EMLINK, 63: errno.ENAMETOOLONG, 66: errno.ENOTEMPTY,
          69: errno.EDQUOT, 70: errno.ESTALE, 71: errno.EREMOTE, 10001: errno.EBADF,
          10002: errno.EIO, 10003: errno.EINVAL, 10004: errno.ENOTSUP, 10005: errno.EINVAL,
          10006: errno.EIO, 10007: errno.EINVAL, 10008: errno.EAGAIN}

_MNT_ERRORS = {1: "not owner (EPERM)", 2: "no such export (ENOENT)", 5: "I/O error",
               13: "access denied by the server's export rules (EACCES)",
               20: "not a directory", 22: "invalid argument", 63: "name too long",
               10004: "operation not supported", 10006: "server fault"}


class NfsError(OSError):
    """An NFS status other than OK, as the errno the FUSE side answers with."""

    def __init__(self, status: int, what: str) -> None:
        code = _ERRNO.get(status, errno.EIO)
        super().__init__(code, f"{what}: NFS3ERR {status}")
        self.status = status


@dataclass(frozen=True)
class Fattr:
    type: int
    mode: int  # permission bits only, as on the wire
    nlink: int
    uid: int
    gid: int
    size: int
    used: int
    rdev: tuple[int, int]
    fsid: int
    fileid: int
    atime: tuple[int, int]
    mtime: tuple[int, int]
    ctime: tuple[int, int]

    @property
    def st_mode(self) -> int:
        return _S_IFMT.get(self.type, 0) | (self.mode & 0o7777)


@dataclass(frozen=True)
class Sattr:
    """What SETATTR/CREATE set; None leaves a field alone. Times: (sec, nsec), or "now"."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime: tuple[int, int] | str | None = None
    mtime: tuple[int, int] | str | None = None

    def encode(self, e: Encoder) -> Encoder:
        for v in (self.mode, self.uid, self.gid):
            e.boolean(v is not None)
            if v is not None:
                e.u32(v)
        e.boolean(self.size is not None)
        if self.size is not None:
            e.u64(self.size)
        for t in (self.atime, self.mtime):
            if t is None:
                e.u32(DONT_CHANGE)
            elif t == "now":
                e.u32(SET_TO_SERVER_TIME)
            else:
                assert isinstance(t, tuple)
                e.u32(SET_TO_CLIENT_TIME).u32(t[0]).u32(t[1])
        return e


@dataclass(frozen=True)
class DirEntry:
    name: str
    fileid: int
    attr: Fattr | None
    fh: bytes | None


@dataclass(frozen=True)
class FsStat:
    tbytes: int
    fbytes: int
    abytes: int
    tfiles: int
    ffiles: int
    afiles: int


@dataclass(frozen=True)
class FsInfo:
    rtmax: int
    wtmax: int
    dtpref: int


def decode_fattr(d: Decoder) -> Fattr:
    return Fattr(type=d.u32(), mode=d.u32(), nlink=d.u32(), uid=d.u32(), gid=d.u32(),
                 size=d.u64(), used=d.u64(), rdev=(d.u32(), d.u32()), fsid=d.u64(),
                 fileid=d.u64(), atime=(d.u32(), d.u32()), mtime=(d.u32(), d.u32()),
                 ctime=(d.u32(), d.u32()))


def encode_fattr(e: Encoder, a: Fattr) -> Encoder:
    """The server side of ``decode_fattr`` (tests build replies with it)."""
    e.u32(a.type).u32(a.mode).u32(a.nlink).u32(a.uid).u32(a.gid).u64(a.size).u64(a.used)
    e.u32(a.rdev[0]).u32(a.rdev[1]).u64(a.fsid).u64(a.fileid)
    for t in (a.atime, a.mtime, a.ctime):
        e.u32(t[0]).u32(t[1])
    return e


def post_op_attr(d: Decoder) -> Fattr | None:
    return decode_fattr(d) if d.boolean() else None


def post_op_fh(d: Decoder) -> bytes | None:
    return d.opaque(FHSIZE3) if d.boolean() else None


def skip_wcc(d: Decoder) -> Fattr | None:
    """wcc_data: the 'before' part is dropped, the 'after' attributes returned."""
    if d.boolean():
        d.u64()
        d.u32(), d.u32(), d.u32(), d.u32()
    return post_op_attr(d)


def diropargs(e: Encoder, fh: bytes, name: str) -> Encoder:
    return e.opaque(fh, FHSIZE3).string(name, 255)


def getport(host: str, prog: int, vers: int, *, timeout: float) -> int:
    """The TCP port the portmapper at ``host`` has for ``prog``/``vers``."""
    pm = RpcClient(host, 111, PMAP_PROG, PMAP_VERS, timeout=timeout, retries=0,
                   reserved_port=False)
    try:
        args = Encoder().u32(prog).u32(vers).u32(IPPROTO_TCP).u32(0).bytes()
        port = pm.call(PMAP_GETPORT, args).u32()
    finally:
        pm.close()
    if port == 0:
        raise Unavailable(f"portmapper at {host}: program {prog} version {vers} is not "
                          "registered over TCP (is the NFS server up and serving NFSv3?)")
    return port


def mount_export(host: str, export: str, port: int, cred: AuthSys, *,
                 timeout: float) -> bytes:
    """The root file handle of ``export`` from the server's MOUNT3 service."""
    mnt = RpcClient(host, port, MOUNT_PROG, MOUNT_VERS, timeout=timeout, retries=0)
    try:
        d = mnt.call(MOUNTPROC_MNT, Encoder().string(export, 1024).bytes(), cred)
        status = d.u32()
        if status == 0:
            return d.opaque(FHSIZE3)
    finally:
        mnt.close()
    why = _MNT_ERRORS.get(status, f"mountstat3 {status}")
    if status == 2:
        raise NotFound(f"mount {host}:{export}: {why}")
    if status in (1, 13):
        raise PermissionDenied(f"mount {host}:{export}: {why}")
    raise SystemFailure(f"mount {host}:{export}: {why}")


def unmount_export(host: str, export: str, port: int, cred: AuthSys, *,
                   timeout: float) -> None:
    """Tell the server we are done (it only updates its showmount list; errors ignored)."""
    mnt = RpcClient(host, port, MOUNT_PROG, MOUNT_VERS, timeout=timeout, retries=0)
    try:
        mnt.call(MOUNTPROC_UMNT, Encoder().string(export, 1024).bytes(), cred)
    except (Unavailable, SystemFailure):
        pass
    finally:
        mnt.close()


CredFor = Callable[[], AuthSys]


class Nfs3Client:
    """NFSv3 procedures on file handles; every call carries the credentials it is given."""

    def __init__(self, rpc: RpcClient) -> None:
        self.rpc = rpc

    def _call(self, proc: int, what: str, args: Encoder, cred: AuthSys) -> Decoder:
        d = self.rpc.call(proc, args.bytes(), cred)
        status = d.u32()
        if status != 0:
            raise NfsError(status, what)
        return d

    def _status(self, proc: int, what: str, args: Encoder, cred: AuthSys) -> tuple[int, Decoder]:
        d = self.rpc.call(proc, args.bytes(), cred)
        return d.u32(), d

    def getattr(self, fh: bytes, cred: AuthSys) -> Fattr:
        d = self._call(GETATTR, "getattr", Encoder().opaque(fh, FHSIZE3), cred)
        return decode_fattr(d)

    def setattr(self, fh: bytes, sattr: Sattr, cred: AuthSys) -> Fattr | None:
        e = sattr.encode(Encoder().opaque(fh, FHSIZE3)).boolean(False)  # no ctime guard
        status, d = self._status(SETATTR, "setattr", e, cred)
        if status != 0:
            raise NfsError(status, "setattr")
        return skip_wcc(d)

    def lookup(self, dirfh: bytes, name: str, cred: AuthSys) -> tuple[bytes, Fattr | None]:
        d = self._call(LOOKUP, f"lookup {name}", diropargs(Encoder(), dirfh, name), cred)
        fh = d.opaque(FHSIZE3)
        return fh, post_op_attr(d)

    def access(self, fh: bytes, mask: int, cred: AuthSys) -> int:
        d = self._call(ACCESS, "access", Encoder().opaque(fh, FHSIZE3).u32(mask), cred)
        post_op_attr(d)
        return d.u32()

    def readlink(self, fh: bytes, cred: AuthSys) -> bytes:
        d = self._call(READLINK, "readlink", Encoder().opaque(fh, FHSIZE3), cred)
        post_op_attr(d)
        return d.opaque(4096)

    def read(self, fh: bytes, offset: int, count: int, cred: AuthSys) -> tuple[bytes, bool]:
        d = self._call(READ, "read", Encoder().opaque(fh, FHSIZE3).u64(offset).u32(count),
                       cred)
        post_op_attr(d)
        d.u32()
        eof = d.boolean()
        return d.opaque(count), eof

    def write(self, fh: bytes, offset: int, data: bytes, cred: AuthSys) -> int:
        # FILE_SYNC: data is on the server's disk when we answer the kernel, so there is no
        # COMMIT verifier to track across a server restart
        e = Encoder().opaque(fh, FHSIZE3).u64(offset).u32(len(data)).u32(FILE_SYNC)
        d = self._call(WRITE, "write", e.opaque(data), cred)
        skip_wcc(d)
        return d.u32()

    def _new_object(self, proc: int, what: str, e: Encoder, dirfh: bytes, name: str,
                    cred: AuthSys) -> tuple[bytes, Fattr]:
        d = self._call(proc, what, e, cred)
        fh, attr = post_op_fh(d), post_op_attr(d)
        if fh is None:  # the server may omit them; LOOKUP gets both
            fh, attr = self.lookup(dirfh, name, cred)
        if attr is None:
            attr = self.getattr(fh, cred)
        return fh, attr

    def create(self, dirfh: bytes, name: str, mode: int, cred: AuthSys, *,
               exclusive: bool) -> tuple[bytes, Fattr]:
        e = diropargs(Encoder(), dirfh, name).u32(GUARDED if exclusive else UNCHECKED)
        Sattr(mode=mode).encode(e)
        return self._new_object(CREATE, f"create {name}", e, dirfh, name, cred)

    def mkdir(self, dirfh: bytes, name: str, mode: int, cred: AuthSys) -> tuple[bytes, Fattr]:
        e = Sattr(mode=mode).encode(diropargs(Encoder(), dirfh, name))
        return self._new_object(MKDIR, f"mkdir {name}", e, dirfh, name, cred)

    def symlink(self, dirfh: bytes, name: str, target: bytes,
                cred: AuthSys) -> tuple[bytes, Fattr]:
        e = Sattr().encode(diropargs(Encoder(), dirfh, name)).opaque(target, 4096)
        return self._new_object(SYMLINK, f"symlink {name}", e, dirfh, name, cred)

    def mknod(self, dirfh: bytes, name: str, st_mode: int, rdev: int,
              cred: AuthSys) -> tuple[bytes, Fattr]:
        ftype = FTYPE_OF_MODE.get(st_mode & 0o170000)
        if ftype is None or ftype in (NF3DIR, NF3LNK):
            raise OSError(errno.EINVAL, f"mknod {name}: unsupported file type")
        if ftype == NF3REG:  # mknod(2) of a regular file is a create
            return self.create(dirfh, name, st_mode & 0o7777, cred, exclusive=True)
        e = diropargs(Encoder(), dirfh, name).u32(ftype)
        Sattr(mode=st_mode & 0o7777).encode(e)
        if ftype in (NF3CHR, NF3BLK):
            e.u32(os.major(rdev)).u32(os.minor(rdev))
        return self._new_object(MKNOD, f"mknod {name}", e, dirfh, name, cred)

    def remove(self, dirfh: bytes, name: str, cred: AuthSys) -> None:
        status, _ = self._status(REMOVE, f"remove {name}", diropargs(Encoder(), dirfh, name),
                                 cred)
        if status != 0:
            raise NfsError(status, f"remove {name}")

    def rmdir(self, dirfh: bytes, name: str, cred: AuthSys) -> None:
        status, _ = self._status(RMDIR, f"rmdir {name}", diropargs(Encoder(), dirfh, name),
                                 cred)
        if status != 0:
            raise NfsError(status, f"rmdir {name}")

    def rename(self, fromfh: bytes, fromname: str, tofh: bytes, toname: str,
               cred: AuthSys) -> None:
        e = diropargs(diropargs(Encoder(), fromfh, fromname), tofh, toname)
        status, _ = self._status(RENAME, f"rename {fromname}", e, cred)
        if status != 0:
            raise NfsError(status, f"rename {fromname} to {toname}")

    def link(self, fh: bytes, dirfh: bytes, name: str, cred: AuthSys) -> None:
        e = diropargs(Encoder().opaque(fh, FHSIZE3), dirfh, name)
        status, _ = self._status(LINK, f"link {name}", e, cred)
        if status != 0:
            raise NfsError(status, f"link {name}")

    def readdirplus(self, dirfh: bytes, cred: AuthSys, *, maxcount: int = 32768
                    ) -> list[DirEntry]:
        """The whole directory, following cookies until the server says eof."""
        out: list[DirEntry] = []
        cookie, verf = 0, b"\0" * 8
        while True:
            e = Encoder().opaque(dirfh, FHSIZE3).u64(cookie).fixed(verf, 8)
            d = self._call(READDIRPLUS, "readdirplus", e.u32(maxcount // 4).u32(maxcount),
                           cred)
            post_op_attr(d)
            verf = d.fixed(8)
            while d.boolean():
                fileid, name, cookie = d.u64(), d.string(255), d.u64()
                out.append(DirEntry(name, fileid, post_op_attr(d), post_op_fh(d)))
            if d.boolean():
                return out

    def fsstat(self, fh: bytes, cred: AuthSys) -> FsStat:
        d = self._call(FSSTAT, "fsstat", Encoder().opaque(fh, FHSIZE3), cred)
        post_op_attr(d)
        return FsStat(d.u64(), d.u64(), d.u64(), d.u64(), d.u64(), d.u64())

    def fsinfo(self, fh: bytes, cred: AuthSys) -> FsInfo:
        d = self._call(FSINFO, "fsinfo", Encoder().opaque(fh, FHSIZE3), cred)
        post_op_attr(d)
        rtmax, _rtpref, _rtmult, wtmax, _wtpref, _wtmult, dtpref = (d.u32() for _ in range(7))
        return FsInfo(rtmax, wtmax, dtpref)
