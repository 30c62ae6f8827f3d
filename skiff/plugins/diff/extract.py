"""Confined extraction of one tar layer into a directory, with OCI whiteouts.

Every entry is created relative to a descriptor of its parent directory that was opened beneath
the destination (see ``confine``), and its last component is never followed: files are created
with O_EXCL|O_NOFOLLOW after removing whatever was there, so a symlink planted by an earlier
entry or layer can be replaced but never written through. Names with ``..`` or a leading ``/``
are refused outright, as are hardlinks whose target resolves outside. Any refusal fails the
whole layer; the caller throws the half-extracted snapshot away.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Sequence

from skiff.core.snapshots import WhiteoutForm
from skiff.errors import InvalidArgument, SkiffError, os_error
from skiff.plugins.diff import tarstream as ts
from skiff.plugins.diff.confine import ConfinedRoot, display

WHITEOUT = b".wh."
OPAQUE = b".wh..wh..opq"
META_PREFIX = b".wh..wh."  # aufs bookkeeping (.wh..wh.plnk etc.): never content
OVERLAY_XATTR = "trusted.overlay."
OPAQUE_XATTR = "trusted.overlay.opaque"

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

Parts = tuple[bytes, ...]


def split_name(raw: bytes, what: str = "layer entry") -> Parts:
    """The components of an archive path; refuses absolute paths and any ``..`` component."""
    shown = raw.decode("utf-8", "replace")
    if b"\0" in raw:
        raise InvalidArgument(f"{what} {shown!r}: refused: NUL byte in name")
    if raw.startswith(b"/"):
        raise InvalidArgument(f"{what} {shown!r}: refused: absolute path")
    parts = tuple(p for p in raw.split(b"/") if p and p != b".")
    if b".." in parts:
        raise InvalidArgument(f"{what} {shown!r}: refused: '..' path component")
    return parts


class Extractor:
    """Applies tar entries under ``root``; call ``run`` once, then ``close``."""

    def __init__(self, root: ConfinedRoot, form: WhiteoutForm, lowers: Sequence[str] = ()) -> None:
        self.root = root
        self.form = form
        self._lower_paths = tuple(lowers)
        self._lowers: list[ConfinedRoot] | None = None  # opened on first use
        if lowers:
            root.on_mkdir = self._inherit
        self.privileged = os.geteuid() == 0
        self.skipped: list[str] = []  # what was deliberately not reproduced, for the caller's log
        self._dirs: list[tuple[Parts, ts.Entry]] = []  # modes/times applied after their content
        self._written: set[Parts] = set()  # paths this layer produced (opaque dirs keep them)
        self._cached: tuple[Parts, int] | None = None  # last parent directory descriptor

    def close(self) -> None:
        self._drop_cache()
        for lower in self._lowers or ():
            lower.close()

    # --- directories a layer implies ----------------------------------------------------------

    def _lower_dir(self, parts: Parts) -> os.stat_result | None:
        """The topmost lower layer's directory at ``parts`` (None if hidden or absent)."""
        if self._lowers is None:
            self._lowers = []
            for path in self._lower_paths:
                try:
                    self._lowers.append(ConfinedRoot(path))
                except SkiffError:
                    continue
        for lower in self._lowers:
            try:
                pfd = lower.open_dir_if_exists(parts[:-1], display(parts))
            except SkiffError:
                return None  # a symlink on the way: the merged view has no directory here
            if pfd is None:
                continue
            try:
                st = self._lstat(pfd, parts[-1])
            finally:
                os.close(pfd)
            if st is None:
                continue
            return st if stat.S_ISDIR(st.st_mode) else None  # a file or whiteout hides the rest
        return None

    def _inherit(self, parts: Parts, fd: int) -> None:
        """A directory the layer implies gets the owner, mode and times it has below."""
        st = self._lower_dir(parts)
        if st is None:
            return
        if self.privileged:
            os.chown(f"/proc/self/fd/{fd}", st.st_uid, st.st_gid)
        self._dirs.append((parts, ts.Entry(
            name=b"/".join(parts), type=ts.DIRECTORY, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid,
            gid=st.st_gid, size=0, mtime_ns=st.st_mtime_ns, atime_ns=st.st_atime_ns,
            linkname=b"", devmajor=0, devminor=0)))

    # --- parent directory descriptors ------------------------------------------------------

    def _drop_cache(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def _parent(self, parts: Parts, what: str) -> int:
        """Descriptor of directory ``parts`` (created if missing); owned by the cache."""
        if self._cached is not None and self._cached[0] == parts:
            return self._cached[1]
        fd = self.root.open_dir(parts, what, create=True)
        self._drop_cache()
        self._cached = (parts, fd)
        return fd

    def _invalidate(self, parts: Parts) -> None:
        # An entry at ``parts`` may replace a directory the cached descriptor lives under.
        if self._cached is not None and self._cached[0][:len(parts)] == parts:
            self._drop_cache()

    # --- the loop ----------------------------------------------------------------------------

    def run(self, reader: ts.TarReader) -> None:
        for entry in reader:
            parts = split_name(entry.name)
            what = display(parts) or "."
            try:
                self._one(reader, entry, parts, what)
            except SkiffError:
                raise
            except OSError as exc:
                raise os_error("extract layer entry", repr(what), exc) from exc
            except ValueError as exc:  # e.g. a NUL byte in a link target or an xattr name
                raise InvalidArgument(f"layer entry {what!r}: {exc}") from exc
        self._finish_dirs()

    def _one(self, reader: ts.TarReader, entry: ts.Entry, parts: Parts, what: str) -> None:
        if not parts:
            if entry.type != ts.DIRECTORY:
                raise InvalidArgument(f"layer entry {entry.name!r}: the root must be a directory")
            self._dirs.append(((), entry))
            return
        base = parts[-1]
        if base.startswith(WHITEOUT):
            self._whiteout(parts, what)
            return
        self._invalidate(parts)
        pfd = self._parent(parts[:-1], what)
        self._note_written(parts)
        typ = entry.type
        if typ in (ts.REGULAR, ts.CONTIGUOUS):
            self._regular(reader, entry, pfd, base)
        elif typ == ts.DIRECTORY:
            self._directory(entry, pfd, base, parts)
        elif typ == ts.SYMLINK:
            self._replace(pfd, base)
            os.symlink(entry.linkname, base, dir_fd=pfd)
            self._meta_by_name(entry, pfd, base, symlink=True)
        elif typ == ts.HARDLINK:
            self._hardlink(entry, pfd, base, what)
        elif typ in (ts.CHAR, ts.BLOCKDEV, ts.FIFO):
            self._special(entry, pfd, base, what)
        else:
            self.skipped.append(f"{what}: unsupported tar entry type {typ!r}")

    def _note_written(self, parts: Parts) -> None:
        if self.form is not WhiteoutForm.DELETE:
            return
        self._written.add(parts)
        for i in range(len(parts) - 1, 0, -1):
            if parts[:i] in self._written:
                break
            self._written.add(parts[:i])

    # --- entry kinds -------------------------------------------------------------------------

    @staticmethod
    def _lstat(pfd: int, base: bytes) -> os.stat_result | None:
        try:
            return os.stat(base, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _replace(self, pfd: int, base: bytes, keep_dir: bool = False) -> os.stat_result | None:
        """Remove whatever is at ``base`` (a directory only if ``keep_dir`` is false)."""
        st = self._lstat(pfd, base)
        if st is None:
            return None
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return st
            shutil.rmtree(base, dir_fd=pfd)  # fd-based walk: immune to symlink games
        else:
            os.unlink(base, dir_fd=pfd)
        return None

    def _regular(self, reader: ts.TarReader, entry: ts.Entry, pfd: int, base: bytes) -> None:
        self._replace(pfd, base)
        fd = os.open(base, _CREATE, 0o600, dir_fd=pfd)
        try:
            for chunk in reader.data(entry):
                while chunk:
                    n = os.write(fd, chunk)
                    chunk = chunk[n:]
            self._meta_fd(entry, fd)
        finally:
            os.close(fd)

    def _directory(self, entry: ts.Entry, pfd: int, base: bytes, parts: Parts) -> None:
        if self._replace(pfd, base, keep_dir=True) is None:
            os.mkdir(base, 0o700, dir_fd=pfd)
        fd = os.open(base, _OPEN_DIR, dir_fd=pfd)
        try:
            if self.privileged:
                os.chown(fd, entry.uid, entry.gid)
            self._xattrs_fd(entry, fd)
        finally:
            os.close(fd)
        self._dirs.append((parts, entry))  # mode and times once its content is in

    def _hardlink(self, entry: ts.Entry, pfd: int, base: bytes, what: str) -> None:
        target = split_name(entry.linkname, f"layer entry {what!r}: hardlink target")
        if not target:
            raise InvalidArgument(f"layer entry {what!r}: hardlink to the root directory")
        shown = display(target)
        tfd = self.root.open_dir(target[:-1], what)
        try:
            tst = self._lstat(tfd, target[-1])
            if tst is None:
                raise InvalidArgument(f"layer entry {what!r}: hardlink target {shown!r} does not exist "
                                      "in this layer")
            if stat.S_ISDIR(tst.st_mode):
                raise InvalidArgument(f"layer entry {what!r}: hardlink to directory {shown!r}")
            cur = self._lstat(pfd, base)
            if cur is not None and (cur.st_dev, cur.st_ino) == (tst.st_dev, tst.st_ino):
                return
            self._replace(pfd, base)
            # follow_symlinks=False: a link to a symlink links the symlink, never its target
            os.link(target[-1], base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(tfd)

    def _special(self, entry: ts.Entry, pfd: int, base: bytes, what: str) -> None:
        if entry.type == ts.FIFO:
            self._replace(pfd, base)
            os.mkfifo(base, 0o600, dir_fd=pfd)
        else:
            if not self.privileged:
                # as Docker does rootless: device nodes cannot be made without CAP_MKNOD
                self.skipped.append(f"{what}: device node skipped (not root)")
                return
            self._replace(pfd, base)
            kind = stat.S_IFCHR if entry.type == ts.CHAR else stat.S_IFBLK
            os.mknod(base, kind | 0o600, os.makedev(entry.devmajor, entry.devminor), dir_fd=pfd)
        self._meta_by_name(entry, pfd, base, symlink=False)

    # --- whiteouts ---------------------------------------------------------------------------

    def _whiteout(self, parts: Parts, what: str) -> None:
        base = parts[-1]
        dir_parts = parts[:-1]
        if base == OPAQUE:
            self._invalidate(dir_parts)
            self._opaque(dir_parts, what)
            return
        if base.startswith(META_PREFIX):
            return
        name = base[len(WHITEOUT):]
        if name in (b"", b".", b".."):
            raise InvalidArgument(f"layer entry {what!r}: refused: whiteout of {name!r}")
        self._invalidate((*dir_parts, name))
        if self.form is WhiteoutForm.OVERLAY:
            pfd = self._parent(dir_parts, what)
            self._replace(pfd, name)
            os.mknod(name, stat.S_IFCHR | 0o600, os.makedev(0, 0), dir_fd=pfd)
            return
        target = self.root.open_dir_if_exists(dir_parts, what)
        if target is None:
            return  # nothing there to delete
        try:
            self._replace(target, name)
        finally:
            os.close(target)

    def _opaque(self, dir_parts: Parts, what: str) -> None:
        if self.form is WhiteoutForm.OVERLAY:
            fd = self.root.open_dir(dir_parts, what, create=True)
            try:
                os.setxattr(f"/proc/self/fd/{fd}", OPAQUE_XATTR, b"y")
            finally:
                os.close(fd)
            return
        found = self.root.open_dir_if_exists(dir_parts, what)
        if found is None:
            return
        try:
            listable = os.open(".", _OPEN_DIR, dir_fd=found)  # O_PATH descriptors cannot be listed
        finally:
            os.close(found)
        try:
            self._clear_lower(listable, dir_parts)
        finally:
            os.close(listable)

    def _clear_lower(self, dfd: int, dir_parts: Parts) -> None:
        """Delete what lower layers put under a directory, keeping this layer's own entries."""
        for text in os.listdir(dfd):  # names come back as str for a descriptor
            name = os.fsencode(text)
            child = (*dir_parts, name)
            if child not in self._written:
                self._replace(dfd, name)
                continue
            st = self._lstat(dfd, name)
            if st is not None and stat.S_ISDIR(st.st_mode):
                sub = os.open(name, _OPEN_DIR, dir_fd=dfd)
                try:
                    self._clear_lower(sub, child)
                finally:
                    os.close(sub)

    # --- metadata ----------------------------------------------------------------------------

    def _xattrs_fd(self, entry: ts.Entry, fd: int) -> None:
        for key, value in entry.xattrs.items():
            if key.startswith(OVERLAY_XATTR):
                # a layer must not steer overlayfs (redirect/metacopy could expose other files)
                self.skipped.append(f"{entry.name!r}: xattr {key} dropped")
                continue
            try:
                os.setxattr(fd, key, value)
            except OSError as exc:
                self._xattr_error(entry, key, exc)

    def _xattr_error(self, entry: ts.Entry, key: str, exc: OSError) -> None:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP) or (
                exc.errno == errno.EPERM and not self.privileged):
            self.skipped.append(f"{entry.name!r}: xattr {key} not supported here")
            return
        raise exc

    def _meta_fd(self, entry: ts.Entry, fd: int) -> None:
        if self.privileged:
            os.chown(fd, entry.uid, entry.gid)
        os.chmod(fd, entry.mode)  # after chown, which clears set-id bits
        self._xattrs_fd(entry, fd)  # after chown, which clears security.capability
        atime = entry.atime_ns if entry.atime_ns is not None else entry.mtime_ns
        os.utime(fd, ns=(atime, entry.mtime_ns))

    def _meta_by_name(self, entry: ts.Entry, pfd: int, base: bytes, symlink: bool) -> None:
        if self.privileged:
            os.chown(base, entry.uid, entry.gid, dir_fd=pfd, follow_symlinks=False)
        if not symlink:
            os.chmod(base, entry.mode, dir_fd=pfd)  # just created by us: not a symlink
        proc = os.fsencode(f"/proc/self/fd/{pfd}/") + base
        for key, value in entry.xattrs.items():
            if key.startswith(OVERLAY_XATTR):
                continue
            try:
                os.setxattr(proc, key, value, follow_symlinks=False)
            except OSError as exc:
                self._xattr_error(entry, key, exc)
        atime = entry.atime_ns if entry.atime_ns is not None else entry.mtime_ns
        os.utime(base, ns=(atime, entry.mtime_ns), dir_fd=pfd, follow_symlinks=False)

    def _finish_dirs(self) -> None:
        self._drop_cache()
        # deepest first, so setting a child's times does not disturb its parent's afterwards
        for parts, entry in reversed(self._dirs):
            what = display(parts) or "."
            try:
                if parts:
                    pfd = self.root.open_dir(parts[:-1], what)
                    try:
                        fd = os.open(parts[-1], _OPEN_DIR, dir_fd=pfd)
                    finally:
                        os.close(pfd)
                else:
                    fd = os.open(".", _OPEN_DIR, dir_fd=self.root.fd)
            except (SkiffError, OSError):
                continue  # removed or replaced by a later entry of this layer
            try:
                if not parts and self.privileged:
                    os.chown(fd, entry.uid, entry.gid)
                os.chmod(fd, entry.mode)
                atime = entry.atime_ns if entry.atime_ns is not None else entry.mtime_ns
                os.utime(fd, ns=(atime, entry.mtime_ns))
            except OSError as exc:
                raise os_error("set directory metadata", repr(what), exc) from exc
            finally:
                os.close(fd)
