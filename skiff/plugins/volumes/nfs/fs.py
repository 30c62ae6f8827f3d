"""FUSE operations answered by NFSv3 calls: the kernel's inodes are the server's file handles.

Node ids are ours (the kernel wants small stable numbers; handles are up to 64 bytes): each
distinct handle gets one, counted by the kernel's lookups and dropped when FORGET brings the
count to zero. ``st_ino`` is the server's fileid, so inode numbers agree between hosts.

Every call carries the AUTH_SYS identity of the process that made the request (uid, gid and,
best effort, its supplementary groups), so the server decides permissions and ownership as it
would for a kernel client: a file created by uid 1000 belongs to uid 1000 on the server.
A directory is read whole at OPENDIR and served from that snapshot, which gives readdir a
consistent view while entries change underneath (as the kernel client's cookie verifier does).
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from skiff.plugins.volumes.nfs.fuse import (
    Attr,
    Ctx,
    DirItem,
    Entry,
    Operations,
    SetAttr,
    StatFs,
)
from skiff.plugins.volumes.nfs.nfs3 import Fattr, Nfs3Client, Sattr
from skiff.plugins.volumes.nfs.rpc import AuthSys

ROOT_ID = 1


@dataclass
class _Node:
    fh: bytes
    nlookup: int


def to_attr(a: Fattr) -> Attr:
    return Attr(ino=a.fileid, mode=a.st_mode, nlink=a.nlink, uid=a.uid, gid=a.gid,
                size=a.size, blocks=(a.used + 511) // 512, atime=a.atime, mtime=a.mtime,
                ctime=a.ctime, rdev=os.makedev(*a.rdev) & 0xFFFFFFFF)


def groups_of(pid: int) -> tuple[int, ...]:
    """The supplementary groups of ``pid`` (FUSE requests carry only uid and gid)."""
    if pid <= 0:
        return ()
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Groups:"):
                    return tuple(int(g) for g in line.split()[1:])
    except (OSError, ValueError):
        pass  # the process is gone already: its uid/gid still identify it
    return ()


class NfsFilesystem(Operations):
    def __init__(self, nfs: Nfs3Client, root_fh: bytes, *, rtmax: int, wtmax: int) -> None:
        self.nfs = nfs
        self.rtmax = max(4096, rtmax)
        self.wtmax = max(4096, wtmax)
        self._nodes: dict[int, _Node] = {ROOT_ID: _Node(root_fh, 1)}
        self._ids: dict[bytes, int] = {root_fh: ROOT_ID}
        self._next_id = ROOT_ID + 1
        self._dirs: dict[int, list[DirItem]] = {}
        self._next_dir = 1
        self._lock = threading.Lock()

    # --- nodes ---------------------------------------------------------------------------

    def fh(self, nodeid: int) -> bytes:
        node = self._nodes.get(nodeid)
        if node is None:
            raise OSError(errno.ESTALE, f"unknown node {nodeid}")
        return node.fh

    def _remember(self, fh: bytes, attr: Fattr) -> Entry:
        """An entry for the kernel, counting one more lookup of ``fh``."""
        with self._lock:
            nodeid = self._ids.get(fh)
            if nodeid is None:
                nodeid = self._next_id
                self._next_id += 1
                self._ids[fh] = nodeid
                self._nodes[nodeid] = _Node(fh, 0)
            self._nodes[nodeid].nlookup += 1
        return Entry(nodeid, to_attr(attr))

    def forget(self, nodeid: int, nlookup: int) -> None:
        with self._lock:
            node = self._nodes.get(nodeid)
            if node is None or nodeid == ROOT_ID:
                return
            node.nlookup -= nlookup
            if node.nlookup <= 0:
                del self._nodes[nodeid]
                self._ids.pop(node.fh, None)

    def node_count(self) -> int:
        return len(self._nodes)

    @staticmethod
    def cred(ctx: Ctx) -> AuthSys:
        return AuthSys(ctx.uid, ctx.gid, groups_of(ctx.pid))

    # --- operations ----------------------------------------------------------------------

    def lookup(self, ctx: Ctx, parent: int, name: str) -> Entry:
        cred = self.cred(ctx)
        fh, attr = self.nfs.lookup(self.fh(parent), name, cred)
        return self._remember(fh, attr or self.nfs.getattr(fh, cred))

    def getattr(self, ctx: Ctx, nodeid: int) -> Attr:
        return to_attr(self.nfs.getattr(self.fh(nodeid), self.cred(ctx)))

    def setattr(self, ctx: Ctx, nodeid: int, changes: SetAttr) -> Attr:
        fh, cred = self.fh(nodeid), self.cred(ctx)
        sattr = Sattr(mode=changes.mode, uid=changes.uid, gid=changes.gid, size=changes.size,
                      atime=changes.atime, mtime=changes.mtime)
        after = self.nfs.setattr(fh, sattr, cred)
        return to_attr(after or self.nfs.getattr(fh, cred))

    def readlink(self, ctx: Ctx, nodeid: int) -> bytes:
        return self.nfs.readlink(self.fh(nodeid), self.cred(ctx))

    def symlink(self, ctx: Ctx, parent: int, name: str, target: bytes) -> Entry:
        return self._remember(*self.nfs.symlink(self.fh(parent), name, target, self.cred(ctx)))

    def mknod(self, ctx: Ctx, parent: int, name: str, mode: int, rdev: int) -> Entry:
        return self._remember(*self.nfs.mknod(self.fh(parent), name, mode, rdev,
                                              self.cred(ctx)))

    def mkdir(self, ctx: Ctx, parent: int, name: str, mode: int) -> Entry:
        return self._remember(*self.nfs.mkdir(self.fh(parent), name, mode & 0o7777,
                                              self.cred(ctx)))

    def unlink(self, ctx: Ctx, parent: int, name: str) -> None:
        self.nfs.remove(self.fh(parent), name, self.cred(ctx))

    def rmdir(self, ctx: Ctx, parent: int, name: str) -> None:
        self.nfs.rmdir(self.fh(parent), name, self.cred(ctx))

    def rename(self, ctx: Ctx, parent: int, name: str, newparent: int, newname: str) -> None:
        self.nfs.rename(self.fh(parent), name, self.fh(newparent), newname, self.cred(ctx))

    def link(self, ctx: Ctx, nodeid: int, newparent: int, newname: str) -> Entry:
        fh, cred = self.fh(nodeid), self.cred(ctx)
        self.nfs.link(fh, self.fh(newparent), newname, cred)
        return self._remember(fh, self.nfs.getattr(fh, cred))  # nlink has changed

    def create(self, ctx: Ctx, parent: int, name: str, mode: int,
               flags: int) -> tuple[Entry, int]:
        fh, attr = self.nfs.create(self.fh(parent), name, mode & 0o7777, self.cred(ctx),
                                   exclusive=bool(flags & os.O_EXCL))
        return self._remember(fh, attr), 0

    def read(self, ctx: Ctx, nodeid: int, fh: int, offset: int, size: int) -> bytes:
        handle, cred = self.fh(nodeid), self.cred(ctx)
        out = bytearray()
        while len(out) < size:
            data, eof = self.nfs.read(handle, offset + len(out),
                                      min(size - len(out), self.rtmax), cred)
            out += data
            if eof or not data:
                break
        return bytes(out)

    def write(self, ctx: Ctx, nodeid: int, fh: int, offset: int, data: bytes) -> int:
        handle, cred = self.fh(nodeid), self.cred(ctx)
        done = 0
        while done < len(data):
            n = self.nfs.write(handle, offset + done, data[done:done + self.wtmax], cred)
            if n <= 0:
                raise OSError(errno.EIO, "write: the server accepted no bytes")
            done += n
        return done

    def statfs(self, ctx: Ctx, nodeid: int) -> StatFs:
        s = self.nfs.fsstat(self.fh(nodeid), self.cred(ctx))
        bsize = 4096
        return StatFs(blocks=s.tbytes // bsize, bfree=s.fbytes // bsize,
                      bavail=s.abytes // bsize, files=s.tfiles, ffree=s.ffiles, bsize=bsize)

    def opendir(self, ctx: Ctx, nodeid: int) -> int:
        entries = self.nfs.readdirplus(self.fh(nodeid), self.cred(ctx))
        items = [DirItem(e.name, e.fileid, e.attr.st_mode if e.attr else 0) for e in entries]
        names = {i.name for i in items}
        for dot in ("..", "."):  # some servers leave them out; readdir(3) users expect them
            if dot not in names:
                items.insert(0, DirItem(dot, 1, 0o040000))
        with self._lock:
            handle = self._next_dir
            self._next_dir += 1
            self._dirs[handle] = items
        return handle

    def readdir(self, ctx: Ctx, nodeid: int, fh: int, offset: int) -> Sequence[DirItem]:
        items = self._dirs.get(fh)
        if items is None:
            raise OSError(errno.EBADF, f"readdir: unknown directory handle {fh}")
        return items[offset:]

    def releasedir(self, ctx: Ctx, nodeid: int, fh: int) -> None:
        with self._lock:
            self._dirs.pop(fh, None)
