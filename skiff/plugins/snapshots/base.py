"""What the overlay and copy snapshotters share: the store, the protocol plumbing, usage."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping

from skiff.core.snapshots import Kind, LayerDirs, Mount, SnapshotInfo
from skiff.errors import InvalidArgument, os_error
from skiff.plugins.snapshots.store import Row, SnapshotStore


class DirSnapshotter:
    """A snapshotter whose snapshots are directories ``<root>/snapshots/<id>/fs``.

    Subclasses say how a new snapshot's directory is built from its parent (``_build``), what
    mounts expose it (``_mounts``) and where layer apply and diff find its files (``layer_dirs``).
    """

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.store = SnapshotStore(self.root)

    def close(self) -> None:
        self.store.close()

    def fs_dir(self, row: Row) -> str:
        return os.path.join(self.store.dir_of(row.id), "fs")

    def _fs_of_id(self, snapshot_id: int) -> str:
        return os.path.join(self.store.dir_of(snapshot_id), "fs")

    # --- hooks ---------------------------------------------------------------------------------

    def _build(self, tmp: str, parent: Row | None, kind: Kind) -> None:
        raise NotImplementedError

    def _mounts(self, row: Row) -> list[Mount]:
        raise NotImplementedError

    def layer_dirs(self, key: str) -> LayerDirs:
        raise NotImplementedError

    # --- the protocol --------------------------------------------------------------------------

    def prepare(self, key: str, parent: str | None,
                labels: Mapping[str, str] | None = None) -> list[Mount]:
        row = self.store.create(key, parent, Kind.ACTIVE, labels,
                                lambda tmp, p: self._build(tmp, p, Kind.ACTIVE))
        return self._mounts(row)

    def view(self, key: str, parent: str | None,
             labels: Mapping[str, str] | None = None) -> list[Mount]:
        row = self.store.create(key, parent, Kind.VIEW, labels,
                                lambda tmp, p: self._build(tmp, p, Kind.VIEW))
        return self._mounts(row)

    def mounts(self, key: str) -> list[Mount]:
        row = self.store.get(key)
        if row.kind is Kind.COMMITTED:
            raise InvalidArgument(f"mounts of {key!r}: a committed snapshot is not mounted directly; "
                                  "prepare or view a child of it")
        return self._mounts(row)

    def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        self.store.commit(name, key, labels)

    def remove(self, key: str) -> None:
        self.store.remove(key)

    def stat(self, key: str) -> SnapshotInfo:
        return self.store.get(key).info()

    def walk(self) -> Iterator[SnapshotInfo]:
        return self.store.walk()

    def usage(self, key: str) -> tuple[int, int]:
        return disk_usage(self.fs_dir(self.store.get(key)))

    def _with_dirs(self, key: str) -> Row:
        """An ACTIVE snapshot (takes a layer, has changes) or a COMMITTED one (has changes)."""
        row = self.store.get(key)
        if row.kind is Kind.VIEW:
            raise InvalidArgument(f"snapshot {key!r} is a view: it has no layer directory")
        return row


def disk_usage(path: str) -> tuple[int, int]:
    """(bytes allocated, inodes) under ``path``, each hardlinked inode counted once."""
    seen: set[tuple[int, int]] = set()
    size = 0
    inodes = 0

    def visit(p: str) -> None:
        nonlocal size, inodes
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            ident = (st.st_dev, st.st_ino)
            if ident in seen:
                return
            seen.add(ident)
        size += st.st_blocks * 512
        inodes += 1
        if stat.S_ISDIR(st.st_mode):
            try:
                with os.scandir(p) as it:
                    names = [e.path for e in it]
            except OSError as exc:
                raise os_error("measure", p, exc) from exc
            for child in names:
                visit(child)

    visit(path)
    return size, inodes
