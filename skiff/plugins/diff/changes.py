"""Diff creation: a snapshot's changes as a tar layer with OCI whiteouts.

Two sources: an overlayfs upper directory (it already holds exactly the changes; deletions are
char 0:0 devices, opaque directories carry trusted.overlay.opaque=y), or a whole tree compared
with its parent's whole tree (the copy snapshotter). Output is deterministic (sorted names,
whole-second times, no user/group names) so the same change gives the same diffID.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from collections.abc import Iterator
from typing import BinaryIO

from skiff.core.content import Digest
from skiff.core.diff import AppliedLayer
from skiff.core.snapshots import LayerDirs, WhiteoutForm
from skiff.errors import os_error

_OVERLAY_XATTR = "trusted.overlay."
_OPAQUE_XATTR = "trusted.overlay.opaque"


class _HashingWriter:
    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        self._out.write(data)
        return len(data)


def _xattrs(path: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return out  # filesystem without xattrs
    for name in sorted(names):
        if name.startswith(_OVERLAY_XATTR):
            continue
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
    return out


def _is_whiteout_dev(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


class _Writer:
    def __init__(self, dirs: LayerDirs, tar: tarfile.TarFile) -> None:
        self.dirs = dirs
        self.tar = tar
        self.links: dict[tuple[int, int], str] = {}
        self.pending: list[tuple[str, str]] = []  # ancestor dirs not yet written: (rel, abs)

    def _flush_parents(self) -> None:
        for rel, path in self.pending:
            self._emit(rel, path, os.lstat(path))
        self.pending.clear()

    def _emit(self, rel: str, path: str, st: os.stat_result) -> None:
        info = tarfile.TarInfo(rel)
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.uname = info.gname = ""
        info.mtime = st.st_mtime_ns // 1_000_000_000
        xattrs = _xattrs(path)
        if xattrs:
            info.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                                for k, v in xattrs.items()}
        mode = st.st_mode
        if stat.S_ISREG(mode) and st.st_nlink > 1:
            first = self.links.get((st.st_dev, st.st_ino))
            if first is not None:
                info.type, info.linkname = tarfile.LNKTYPE, first
                self.tar.addfile(info)
                return
            self.links[(st.st_dev, st.st_ino)] = rel
        if stat.S_ISREG(mode):
            info.size = st.st_size
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as f:
                self.tar.addfile(info, f)
            return
        if stat.S_ISDIR(mode):
            info.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif stat.S_ISFIFO(mode):
            info.type = tarfile.FIFOTYPE
        else:
            return  # sockets are not archived (tar skips them too)
        self.tar.addfile(info)

    def whiteout(self, rel: str, mtime: int = 0) -> None:
        self._flush_parents()
        info = tarfile.TarInfo(rel)
        info.mode = 0o600
        info.uname = info.gname = ""
        info.mtime = mtime
        self.tar.addfile(info)

    def change(self, rel: str, path: str, st: os.stat_result) -> None:
        self._flush_parents()
        self._emit(rel, path, st)


def _names(path: str) -> list[str]:
    return sorted(os.listdir(path))


def _overlay(w: _Writer, rel: str, path: str) -> None:
    for name in _names(path):
        crel, cpath = f"{rel}{name}", os.path.join(path, name)
        st = os.lstat(cpath)
        if _is_whiteout_dev(st):
            w.whiteout(f"{rel}.wh.{name}", st.st_mtime_ns // 1_000_000_000)
        elif stat.S_ISDIR(st.st_mode):
            w.change(crel + "/", cpath, st)
            try:
                opaque = os.getxattr(cpath, _OPAQUE_XATTR, follow_symlinks=False) == b"y"
            except OSError:
                opaque = False
            if opaque:
                w.whiteout(f"{crel}/.wh..wh..opq", st.st_mtime_ns // 1_000_000_000)
            _overlay(w, crel + "/", cpath)
        else:
            w.change(crel, cpath, st)


def _same(new: os.stat_result, old: os.stat_result, npath: str, opath: str) -> bool:
    if stat.S_IFMT(new.st_mode) != stat.S_IFMT(old.st_mode):
        return False
    if (new.st_mode, new.st_uid, new.st_gid) != (old.st_mode, old.st_uid, old.st_gid):
        return False
    if stat.S_ISLNK(new.st_mode):
        return os.readlink(npath) == os.readlink(opath)
    if stat.S_ISCHR(new.st_mode) or stat.S_ISBLK(new.st_mode):
        return new.st_rdev == old.st_rdev
    if not stat.S_ISDIR(new.st_mode) and (new.st_size, new.st_mtime_ns) != (old.st_size, old.st_mtime_ns):
        return False  # size + mtime, as Docker and rsync do: content is not reread
    return _xattrs(npath) == _xattrs(opath)


def _compare(w: _Writer, rel: str, new: str, old: str | None) -> None:
    old_names = set(_names(old)) if old is not None else set()
    new_names = _names(new)
    for name in sorted(old_names - set(new_names)):
        w.whiteout(f"{rel}.wh.{name}")
    for name in new_names:
        crel, npath = f"{rel}{name}", os.path.join(new, name)
        nst = os.lstat(npath)
        opath = os.path.join(old, name) if old is not None and name in old_names else None
        ost = os.lstat(opath) if opath is not None else None
        if stat.S_ISDIR(nst.st_mode):
            lower = opath if ost is not None and stat.S_ISDIR(ost.st_mode) else None
            if lower is None or ost is None or not _same(nst, ost, npath, lower):
                w.change(crel + "/", npath, nst)
            else:
                w.pending.append((crel + "/", npath))  # written only if something below changed
            _compare(w, crel + "/", npath, lower)
            if w.pending and w.pending[-1][0] == crel + "/":
                w.pending.pop()
        elif ost is None or opath is None or not _same(nst, ost, npath, opath):
            w.change(crel, npath, nst)


def _tar_entries(dirs: LayerDirs, tar: tarfile.TarFile) -> None:
    w = _Writer(dirs, tar)
    if dirs.whiteouts is WhiteoutForm.OVERLAY:
        _overlay(w, "", dirs.upper)
    else:
        _compare(w, "", dirs.upper, dirs.lower)


def write_diff(dirs: LayerDirs, out: BinaryIO) -> AppliedLayer:
    """Write the changes of ``dirs`` to ``out`` as an uncompressed PAX tar; return its digest."""
    sink = _HashingWriter(out)
    try:
        with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                          encoding="utf-8", errors="surrogateescape") as tar:
            _tar_entries(dirs, tar)
    except OSError as exc:
        raise os_error("write diff of", dirs.upper, exc) from exc
    return AppliedLayer(Digest("sha256", sink.sha.hexdigest()), sink.size)


def iter_changes(dirs: LayerDirs) -> Iterator[str]:
    """The entry names ``write_diff`` would produce (for tests and ``docker diff``-like views)."""
    import io

    buf = io.BytesIO()
    write_diff(dirs, buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf, mode="r") as tar:
        for member in tar:
            yield member.name
