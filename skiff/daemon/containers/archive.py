"""``docker cp`` below HTTP: stat, tar out and tar in over a container's root, confined to it.

Every path a client names is resolved by the kernel with openat2(RESOLVE_IN_ROOT): the root
directory is the container's ``/``, so an absolute symlink (``/escape -> /``) or a run of
``..`` lands inside the rootfs, never on the host. Past that point all work is relative to
directory descriptors and never follows a symlink: the tar writer walks with
``dir_fd``/``O_NOFOLLOW``, and extraction goes through the image unpacker's confined extractor.

Docker's rules for the last path element: it is not followed (a symlink is reported and copied
as a link) unless the path ends in ``/`` or ``/.``, which name the directory itself; ``/.``
means "the contents", so the archive's entries are named ``./...`` instead of after the
directory's base name.

Volumes and binds: :func:`container_root` yields the one directory every path is resolved
in. When the container has volumes or binds, that is a private view: the root bound (not
recursively) at a temporary directory, made private, with each volume and bind source mounted
at its destination (read-only ones read-only), as Docker does; so a copy into or out of a path
under a volume reaches the volume, and the walk itself need not know about mounts.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import posixpath
import stat
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from skiff.core.snapshots import Mount, Snapshotter, WhiteoutForm
from skiff.errors import InvalidArgument, NotFound, PermissionDenied, os_error
from skiff.linux.openat2 import RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS, openat2
from skiff.plugins.diff import tarstream as ts
from skiff.plugins.diff.compression import open_layer
from skiff.plugins.diff.confine import ConfinedRoot
from skiff.plugins.diff.extract import WHITEOUT, Extractor, Parts
from skiff.plugins.diff.tar import TarDiffer
from skiff.plugins.snapshots.mount import is_mountpoint, mount_all, mount_one, unmount_all
from skiff.services.export import export_snapshot, read_only
from skiff.services.spec import resolve_user

STAT_HEADER = "X-Docker-Container-Path-Stat"

# Go's os.FileMode type bits: the stat header carries them, and the docker CLI tests them
GO_DIR = 1 << 31
GO_SYMLINK = 1 << 27
GO_DEVICE = 1 << 26
GO_PIPE = 1 << 25
GO_SOCKET = 1 << 24
GO_SETUID = 1 << 23
GO_SETGID = 1 << 22
GO_CHARDEV = 1 << 21
GO_STICKY = 1 << 20

_RESOLVE = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_READ_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20


def go_file_mode(st_mode: int) -> int:
    """A POSIX ``st_mode`` as Go's ``os.FileMode`` (type bits high, permissions low)."""
    mode = stat.S_IMODE(st_mode) & 0o777
    kind = stat.S_IFMT(st_mode)
    if kind == stat.S_IFDIR:
        mode |= GO_DIR
    elif kind == stat.S_IFLNK:
        mode |= GO_SYMLINK
    elif kind == stat.S_IFCHR:
        mode |= GO_DEVICE | GO_CHARDEV
    elif kind == stat.S_IFBLK:
        mode |= GO_DEVICE
    elif kind == stat.S_IFIFO:
        mode |= GO_PIPE
    elif kind == stat.S_IFSOCK:
        mode |= GO_SOCKET
    if st_mode & stat.S_ISUID:
        mode |= GO_SETUID
    if st_mode & stat.S_ISGID:
        mode |= GO_SETGID
    if st_mode & stat.S_ISVTX:
        mode |= GO_STICKY
    return mode


def _rfc3339_ns(ns: int) -> str:
    secs, frac = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    return f"{text}.{frac:09d}Z".replace(".000000000Z", "Z")


@dataclass(frozen=True)
class PathStat:
    """Docker's ``types.ContainerPathStat``."""

    name: str
    size: int
    mode: int  # Go FileMode bits
    mtime: str
    link_target: str

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "size": self.size, "mode": self.mode, "mtime": self.mtime,
                "linkTarget": self.link_target}

    def header(self) -> str:
        return base64.b64encode(json.dumps(self.to_json()).encode()).decode()


@dataclass(frozen=True)
class _Split:
    """A client path taken apart the way Docker does."""

    abs_path: str     # "/" + path, trailing "/" or "/." kept
    parent: str       # the directory part, resolved with symlinks followed
    base: str         # the last element ("" or "." when the path names the directory itself)

    @property
    def names_directory(self) -> bool:
        return self.base in ("", ".")

    @property
    def display_name(self) -> str:
        """Docker's stat name and archive base name: the base of the path as given."""
        if self.base == ".":
            return "."
        trimmed = self.abs_path.rstrip("/")
        return os.path.basename(trimmed) if trimmed else "/"


def split_path(path: str) -> _Split:
    if not path:
        raise InvalidArgument("path: must not be empty")
    if "\0" in path:
        raise InvalidArgument(f"path {path!r}: NUL byte")
    abs_path = path if path.startswith("/") else "/" + path
    parent, _, base = abs_path.rpartition("/")
    return _Split(abs_path, parent or "/", base)


class ContainerFS:
    """One container root directory, opened once; every path resolves inside it."""

    def __init__(self, root: str, container: str) -> None:
        self.root = root
        self.container = container
        try:
            self.fd = os.open(root, _PATH_DIR)
        except OSError as exc:
            raise os_error("open container root", root, exc) from exc

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> ContainerFS:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- resolution ----------------------------------------------------------------------

    def _missing(self, path: str) -> NotFound:
        return NotFound(f"Could not find the file {path} in container {self.container}")

    def _open_in_root(self, path: str, flags: int, what: str) -> int:
        """openat2 with the container root as ``/`` (symlinks followed, never out of it)."""
        try:
            return openat2(self.fd, path.lstrip("/") or ".", flags, _RESOLVE)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                raise self._missing(what) from exc
            if exc.errno in (errno.ELOOP, errno.EXDEV):
                raise InvalidArgument(f"path {what} in container {self.container}: too many "
                                      "levels of symbolic links") from exc
            raise os_error("resolve path in container", f"{self.container}: {what}",
                           exc) from exc

    def _container_path(self, fd: int) -> str:
        """Where an open descriptor sits, as an absolute path inside the container."""
        real = os.readlink(f"/proc/self/fd/{fd}")
        root = os.readlink(f"/proc/self/fd/{self.fd}")
        rel = os.path.relpath(real, root)
        return "/" if rel == "." else "/" + rel

    @contextlib.contextmanager
    def _target(self, sp: _Split) -> Iterator[tuple[int, str, os.stat_result]]:
        """(parent directory descriptor, base name, lstat of the target) of a client path."""
        if sp.names_directory:
            fd = self._open_in_root(sp.abs_path, _PATH_DIR, sp.abs_path)
            try:
                st = os.stat(fd)
                # the directory itself, named relative to its own descriptor
                yield fd, ".", st
            finally:
                os.close(fd)
            return
        pfd = self._open_in_root(sp.parent, _PATH_DIR, sp.abs_path)
        try:
            try:
                st = os.stat(sp.base, dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError as exc:
                raise self._missing(sp.abs_path) from exc
            except OSError as exc:
                raise os_error("stat", f"{sp.abs_path} in container {self.container}",
                               exc) from exc
            yield pfd, sp.base, st
        finally:
            os.close(pfd)

    def read_text(self, path: str) -> str | None:
        """A small file of the container (``/etc/passwd``), or None if it cannot be read."""
        try:
            fd = openat2(self.fd, path.lstrip("/"), os.O_RDONLY | os.O_CLOEXEC, _RESOLVE)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as f:
            return f.read(1 << 20).decode("utf-8", "replace")

    def owner(self, user: str) -> tuple[int, int]:
        """The uid/gid ``Config.User`` names, looked up in the container's own files."""
        ids = resolve_user(user, self.read_text("/etc/passwd"), self.read_text("/etc/group"))
        return ids.uid, ids.gid

    # --- HEAD ----------------------------------------------------------------------------

    def stat(self, path: str) -> PathStat:
        sp = split_path(path)
        with self._target(sp) as (pfd, base, st):
            link = ""
            if stat.S_ISLNK(st.st_mode):
                # Docker reports the fully resolved target, as a path in the container
                try:
                    fd = openat2(pfd, base, os.O_PATH | os.O_CLOEXEC, _RESOLVE)
                except OSError:
                    fd = -1  # dangling: report the link's own text
                if fd >= 0:
                    try:
                        link = self._container_path(fd)
                    finally:
                        os.close(fd)
                else:
                    link = os.readlink(base, dir_fd=pfd)
        return PathStat(sp.display_name, st.st_size, go_file_mode(st.st_mode),
                        _rfc3339_ns(st.st_mtime_ns), link)

    # --- GET -----------------------------------------------------------------------------

    def write_tar(self, path: str, out: BinaryIO) -> None:
        """The archive of ``path``: entries named after its base name (``.`` for ``/.``)."""
        sp = split_path(path)
        with self._target(sp) as (pfd, base, st), tarfile.open(
                fileobj=out, mode="w|", format=tarfile.PAX_FORMAT,
                encoding="utf-8", errors="surrogateescape") as tar:
            # the root is named "/" (children "/bin", ...): the docker CLI rebases on that
            _TarWalker(tar).entry(pfd, base, st, sp.display_name)

    # --- PUT -----------------------------------------------------------------------------

    def extract(self, path: str, archive: BinaryIO, *, no_overwrite_dir_non_dir: bool,
                owner: tuple[int, int] | None) -> list[str]:
        """Unpack ``archive`` into directory ``path``; notes on entries skipped on the way.

        ``owner`` (``copyUIDGID`` with a container user) replaces every entry's uid/gid.
        """
        sp = split_path(path)
        with self._target(sp) as (pfd, base, st):
            if stat.S_ISLNK(st.st_mode):  # the extraction point may be a link to a directory
                fd = self._open_in_root(sp.abs_path, _PATH_DIR, sp.abs_path)
            elif not stat.S_ISDIR(st.st_mode):
                raise InvalidArgument("extraction point is not a directory")
            else:
                fd = os.open(base, _PATH_DIR | os.O_NOFOLLOW, dir_fd=pfd)
        try:
            dest = ConfinedRoot(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        # the API takes the tar plain or compressed (gzip, bzip2, xz): the magic bytes decide
        plain = open_layer(archive)
        source = ts.HashingSource(plain)
        try:
            ex = _CopyExtractor(dest, no_overwrite_dir_non_dir, owner)
            try:
                ex.run(ts.TarReader(source))
            finally:
                ex.close()
            return ex.skipped
        finally:
            source.close()
            plain.close()
            dest.close()


class _TarWalker:
    """Writes a tree to a tar walking by descriptors, never following a symlink."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar
        self.links: dict[tuple[int, int], str] = {}

    def _info(self, name: str, st: os.stat_result) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.uname = info.gname = ""
        info.mtime = st.st_mtime_ns // 1_000_000_000
        return info

    def entry(self, pfd: int, base: str, st: os.stat_result, name: str) -> None:
        mode = st.st_mode
        info = self._info(name, st)
        if stat.S_ISDIR(mode):
            self._directory(pfd, base, info)
        elif stat.S_ISREG(mode):
            self._regular(pfd, base, st, info)
        elif stat.S_ISLNK(mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(base, dir_fd=pfd)
            self.tar.addfile(info)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            self.tar.addfile(info)
        elif stat.S_ISFIFO(mode):
            info.type = tarfile.FIFOTYPE
            self.tar.addfile(info)
        # sockets are not archived (Go's tar writer and GNU tar skip them too)

    def _regular(self, pfd: int, base: str, st: os.stat_result, info: tarfile.TarInfo) -> None:
        if st.st_nlink > 1:
            first = self.links.get((st.st_dev, st.st_ino))
            if first is not None:
                info.type, info.linkname = tarfile.LNKTYPE, first
                self.tar.addfile(info)
                return
            self.links[(st.st_dev, st.st_ino)] = info.name
        fd = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        with os.fdopen(fd, "rb") as f:
            now = os.fstat(f.fileno())
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                return  # replaced since the listing: skip it rather than archive a stranger
            info.size = now.st_size  # it may have changed size since lstat (running container)
            self.tar.addfile(info, _Exactly(f, info.size))

    def _directory(self, pfd: int, base: str, info: tarfile.TarInfo) -> None:
        info.type = tarfile.DIRTYPE
        self.tar.addfile(info)
        fd = os.open(base, _READ_DIR, dir_fd=pfd)
        try:
            for child in sorted(os.listdir(fd)):
                try:
                    cst = os.stat(child, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed meanwhile
                self.entry(fd, child, cst, f"{info.name.rstrip('/')}/{child}")
        finally:
            os.close(fd)


class _Exactly:
    """A file cut or zero-padded to the size already written in the tar header."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f = f
        self._left = size

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        want = self._left if n < 0 else min(n, self._left)
        data = self._f.read(want) or b"\0" * min(want, _CHUNK)
        self._left -= len(data)
        return data


class _CopyExtractor(Extractor):
    """The unpacker's confined extractor with ``docker cp``'s rules on top.

    A copy is not a layer: ``.wh.`` names would silently delete files, so they are refused;
    with ``noOverwriteDirNonDir`` a directory never replaces a file or the other way round.
    """

    def __init__(self, root: ConfinedRoot, no_overwrite_dir_non_dir: bool,
                 owner: tuple[int, int] | None) -> None:
        super().__init__(root, WhiteoutForm.DELETE)
        self.no_overwrite = no_overwrite_dir_non_dir
        self.owner = owner
        self._entry_name = ""

    def _one(self, reader: ts.TarReader, entry: ts.Entry, parts: Parts, what: str) -> None:
        if parts and parts[-1].startswith(WHITEOUT):
            raise InvalidArgument(f"archive entry {what!r}: refused: whiteout names "
                                  "(.wh.*) cannot be copied into a container")
        if self.owner is not None:
            entry.uid, entry.gid = self.owner
        self._entry_name = what
        super()._one(reader, entry, parts, what)

    def _replace(self, pfd: int, base: bytes, keep_dir: bool = False) -> os.stat_result | None:
        if self.no_overwrite:
            st = self._lstat(pfd, base)
            if st is not None and stat.S_ISDIR(st.st_mode) != keep_dir:
                if keep_dir:
                    raise InvalidArgument(f"cannot overwrite non-directory "
                                          f"{self._entry_name!r} with directory")
                raise InvalidArgument(f"cannot overwrite directory {self._entry_name!r} "
                                      "with non-directory")
        return super()._replace(pfd, base, keep_dir)


# --- the root to work in -----------------------------------------------------------------


@contextlib.contextmanager
def container_root(rootfs: str, mounts: Callable[[], list[Mount]], scratch: str, *,
                   writable: bool, volumes: Sequence[VolumeBind] = ()) -> Iterator[str]:
    """The directory holding the container's root, for the duration of the block.

    A created or running container's snapshot is mounted at its bundle's ``rootfs``: that is
    used as is. An exited one's is not: its snapshot is mounted (read-only unless
    ``writable``) at a private directory under ``scratch`` and unmounted afterwards, whatever
    happens. ``volumes`` (host source, destination, writable) are mounted over a private view
    of that root (see :func:`volume_view`).
    """
    with _snapshot_root(rootfs, mounts, scratch, writable=writable) as root, \
            volume_view(root, volumes, scratch, writable=writable) as view:
        yield view


@contextlib.contextmanager
def _snapshot_root(rootfs: str, mounts: Callable[[], list[Mount]], scratch: str, *,
                   writable: bool) -> Iterator[str]:
    if os.path.isdir(rootfs) and is_mountpoint(rootfs):
        yield rootfs
        return
    wanted = mounts()
    if not writable:
        wanted = read_only(wanted)
    try:
        os.makedirs(scratch, mode=0o700, exist_ok=True)
        where = tempfile.mkdtemp(prefix="cp-", dir=scratch)
    except OSError as exc:
        raise os_error("create a temporary mount point in", scratch, exc) from exc
    try:
        mount_all(wanted, where)
        try:
            yield where
        finally:
            unmount_all(where, detach=True)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(where)


@dataclass(frozen=True)
class VolumeBind:
    """A volume or bind of the container, for cp: host ``source`` at ``destination``."""

    source: str
    destination: str
    writable: bool = True


def _scratch_dir(scratch: str, prefix: str) -> str:
    try:
        os.makedirs(scratch, mode=0o700, exist_ok=True)
        return tempfile.mkdtemp(prefix=prefix, dir=scratch)
    except OSError as exc:
        raise os_error("create a temporary mount point in", scratch, exc) from exc


def _mount_at(root_fd: int, v: VolumeBind, scratch: str, *, writable: bool) -> None:
    """Mount ``v`` on its destination inside the tree ``root_fd`` opens.

    The destination is resolved with RESOLVE_IN_ROOT and mounted on through the descriptor,
    so a symlink in the container's tree cannot send it anywhere else. A read-only one is
    first bound read-only at a private staging directory (whose path is ours, so the remount
    cannot be raced) and that mount bound in: a bind keeps the read-only flag."""
    try:
        fd = openat2(root_fd, v.destination.lstrip("/"), os.O_PATH | os.O_CLOEXEC,
                     RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return  # no mount point in this tree (the runtime makes it at the next start)
        raise os_error("open volume mount point", v.destination, exc) from exc
    try:
        if v.writable and writable:
            mount_one(Mount("bind", v.source, ("rbind",)), f"/proc/self/fd/{fd}")
            return
        stage = _scratch_dir(scratch, "ro-")
        try:
            mount_one(Mount("bind", v.source, ("rbind", "ro", "private")), stage)
            try:
                mount_one(Mount("bind", stage, ("rbind",)), f"/proc/self/fd/{fd}")
            finally:
                unmount_all(stage, detach=True)
        finally:
            with contextlib.suppress(OSError):
                os.rmdir(stage)
    finally:
        os.close(fd)


@contextlib.contextmanager
def volume_view(root: str, volumes: Sequence[VolumeBind], scratch: str, *,
                writable: bool) -> Iterator[str]:
    """``root`` with ``volumes`` mounted at their destinations, in a private view that
    nothing outside sees; ``root`` itself when there are none. Parents before children."""
    wanted = sorted((v for v in volumes if os.path.exists(v.source)),
                    key=lambda v: v.destination.rstrip("/").count("/"))
    if not wanted:
        yield root
        return
    view = _scratch_dir(scratch, "cpv-")
    try:
        # a bind of a shared mount joins its peer group: private before anything goes on it
        mount_one(Mount("bind", root, ("bind", "private")), view)
        try:
            view_fd = os.open(view, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                for v in wanted:
                    _mount_at(view_fd, v, scratch, writable=writable)
            finally:
                os.close(view_fd)
            yield view
        finally:
            unmount_all(view, detach=True)  # a lazy unmount takes the volumes along
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(view)


def export_container(snapshotter: Snapshotter, key: str, out: BinaryIO, scratch: str) -> None:
    """``docker export``: the container's merged tree as a tar, through a read-only mount."""
    try:
        os.makedirs(scratch, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise os_error("create directory", scratch, exc) from exc
    export_snapshot(snapshotter, key, out, writer=TarDiffer(), mount=mount_all,
                    unmount=lambda where: unmount_all(where, detach=True), tmpdir=scratch)


def check_read_only_rootfs(read_only_rootfs: bool, container: str) -> None:
    """Docker refuses to copy into a container whose root is mounted read-only."""
    if read_only_rootfs:
        raise PermissionDenied(f"container rootfs is marked read-only: {container}")


def check_copy_target(path: str, read_only_rootfs: bool, volumes: Sequence[VolumeBind],
                      container: str) -> None:
    """Docker's rule for a copy into ``path``: the deepest volume or bind holding it decides
    (a read-only one refuses, a writable one accepts even over a read-only root); elsewhere
    the root does. By the path as written: what a symlink leads to, the kernel still guards."""
    clean = posixpath.normpath("/" + path.lstrip("/"))
    holder: VolumeBind | None = None
    for v in volumes:
        dest = posixpath.normpath(v.destination)
        if (clean == dest or clean.startswith(dest.rstrip("/") + "/")) and (
                holder is None or len(dest) > len(holder.destination)):
            holder = v
    if holder is not None:
        if not holder.writable:
            raise PermissionDenied(f"mounted volume is marked read-only: {holder.destination} "
                                   f"in {container}")
        return
    check_read_only_rootfs(read_only_rootfs, container)


__all__ = ["STAT_HEADER", "ContainerFS", "PathStat", "check_copy_target",
           "check_read_only_rootfs",
           "container_root", "export_container", "go_file_mode", "split_path"]
