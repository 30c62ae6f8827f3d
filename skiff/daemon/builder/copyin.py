"""COPY/ADD and WORKDIR on a mounted build root, confined to it.

Paths in the root are resolved by the kernel with the root as ``/`` (openat2 RESOLVE_IN_ROOT),
so a symlink the image holds (``/app -> /etc``, ``/x -> ../../host``) can never send a write
outside the root. Files are not copied by hand: the sources are written as a tar (owner and
mode already those the image must get) and unpacked by ``docker cp``'s confined extractor at
the destination directory, which never follows the last component of an entry.

Docker's rules for the destination: a directory source copies its contents; a file goes to
``dest/<name>`` when ``dest`` ends in ``/`` or already is a directory, else to ``dest`` itself;
missing directories on the way are created (mode 0755, owned by ``--chown``'s user). ADD
unpacks local tar archives (plain, gzip, bzip2, xz) into the destination instead of copying
them.
"""

from __future__ import annotations

import errno
import os
import posixpath
import tarfile
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

from skiff.daemon.containers.archive import ContainerFS
from skiff.errors import InvalidArgument, os_error
from skiff.linux.openat2 import RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS, openat2
from skiff.services.builder.build import CopyPlan
from skiff.services.builder.context import Source
from skiff.services.spec import resolve_user

_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_RESOLVE = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
_SPOOL = 16 << 20


def mkdir_all(root: str, path: str, owner: tuple[int, int] | None = None) -> bool:
    """Create directory ``path`` of the root and its missing parents; whether any was made."""
    parts = [p for p in path.split("/") if p and p != "."]
    try:
        rootfd = os.open(root, _PATH_DIR)
    except OSError as exc:
        raise os_error("open build root", root, exc) from exc
    made = False
    try:
        for i in range(len(parts)):
            prefix = "/".join(parts[: i + 1])
            try:
                os.close(openat2(rootfd, prefix, _PATH_DIR, _RESOLVE))
                continue
            except OSError as exc:
                if exc.errno == errno.ENOTDIR:
                    raise InvalidArgument(f"mkdir /{prefix}: not a directory") from exc
                if exc.errno != errno.ENOENT:
                    raise os_error("resolve", f"/{prefix} in the build root", exc) from exc
            parent = openat2(rootfd, "/".join(parts[:i]) or ".", _PATH_DIR, _RESOLVE)
            try:
                os.mkdir(parts[i], 0o755, dir_fd=parent)
                os.chmod(parts[i], 0o755, dir_fd=parent)  # whatever the daemon's umask
                if owner is not None:
                    os.chown(parts[i], owner[0], owner[1], dir_fd=parent,
                             follow_symlinks=False)
                made = True
            except FileExistsError as exc:  # ENOENT above: a dangling symlink is in the way
                raise InvalidArgument(f"mkdir /{prefix}: a dangling symlink is in the way") \
                    from exc
            except OSError as exc:
                raise os_error("mkdir", f"/{prefix} in the build root", exc) from exc
            finally:
                os.close(parent)
    finally:
        os.close(rootfd)
    return made


def _is_dir_in_root(root: str, path: str) -> bool:
    try:
        rootfd = os.open(root, _PATH_DIR)
    except OSError as exc:
        raise os_error("open build root", root, exc) from exc
    try:
        os.close(openat2(rootfd, path.lstrip("/") or ".", _PATH_DIR, _RESOLVE))
        return True
    except OSError:
        return False
    finally:
        os.close(rootfd)


def chown_ids(root: str, chown: str) -> tuple[int, int] | None:
    """``--chown=user[:group]`` as ids, names looked up in the root's passwd/group files."""
    if not chown:
        return None
    fs = ContainerFS(root, "build")
    try:
        passwd, group = fs.read_text("/etc/passwd"), fs.read_text("/etc/group")
    finally:
        fs.close()
    user, _, grp = chown.partition(":")
    try:
        ids = resolve_user(f"{user}:{grp}" if grp else user, passwd, group)
    except InvalidArgument as exc:
        raise InvalidArgument(f"unable to convert uid/gid chown string to host mapping: "
                              f"{exc.message}") from exc
    # Docker: a user without a group gets the gid equal to its uid (not its passwd group)
    return ids.uid, ids.gid if grp else ids.uid


def _entries(src: Source) -> Iterator[tuple[str, str]]:
    """(host path, name relative to the source) of a directory source's contents."""
    for dirpath, dirnames, filenames in os.walk(src.path):
        dirnames.sort()
        rel = os.path.relpath(dirpath, src.path)
        for name in [*dirnames, *sorted(filenames)]:
            yield os.path.join(dirpath, name), name if rel == "." else f"{rel}/{name}"


def _is_archive(path: str) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except (OSError, tarfile.TarError, EOFError):
        return False


class _TarBuilder:
    def __init__(self, out: BinaryIO, owner: tuple[int, int], chmod: int | None) -> None:
        self.tar = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT,  # noqa: SIM115
                                encoding="utf-8", errors="surrogateescape")
        self.owner = owner
        self.chmod = chmod

    def add(self, host_path: str, name: str) -> None:
        try:
            info = self.tar.gettarinfo(host_path, arcname=name)
        except OSError as exc:
            raise os_error("read build source", host_path, exc) from exc
        info.uid, info.gid = self.owner
        info.uname = info.gname = ""
        if self.chmod is not None and not info.issym():
            info.mode = (info.mode & ~0o7777) | self.chmod
        try:
            if info.isreg():
                with open(host_path, "rb") as f:
                    self.tar.addfile(info, f)
            else:
                self.tar.addfile(info)
        except OSError as exc:
            raise os_error("read build source", host_path, exc) from exc

    def close(self) -> None:
        self.tar.close()


def copy_into(root: str, plan: CopyPlan, *, tmpdir: str) -> None:
    """Carry out ``plan`` on the mounted root ``root`` (see the module docs)."""
    owner = chown_ids(root, plan.chown)
    single_file = len(plan.sources) == 1 and not plan.sources[0].is_dir
    into_dest = plan.dest_is_dir or not single_file or _is_dir_in_root(root, plan.dest) or (
        plan.extract_archives and _is_archive(plan.sources[0].path))
    if into_dest:
        target, rename = plan.dest, None
    else:
        target, rename = posixpath.dirname(plan.dest) or "/", posixpath.basename(plan.dest)
    mkdir_all(root, target, owner)
    archives = [s for s in plan.sources
                if plan.extract_archives and not s.is_dir and _is_archive(s.path)]
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL, dir=tmpdir) as spool:
        builder = _TarBuilder(spool, owner or (0, 0), plan.chmod)  # type: ignore[arg-type]
        try:
            for src in plan.sources:
                if src in archives:
                    continue
                if src.is_dir:
                    for host, rel in _entries(src):
                        builder.add(host, rel)
                else:
                    builder.add(src.path, rename or src.name)
        finally:
            builder.close()
        spool.seek(0)
        _extract(root, target, spool)  # type: ignore[arg-type]
    for src in archives:
        try:
            with open(src.path, "rb") as f:
                _extract(root, target, f, owner)
        except OSError as exc:
            raise os_error("read archive", src.name, exc) from exc


def _extract(root: str, target: str, archive: BinaryIO,
             owner: tuple[int, int] | None = None) -> None:
    fs = ContainerFS(root, "build")
    try:
        fs.extract(target, archive, no_overwrite_dir_non_dir=False, owner=owner)
    finally:
        fs.close()

