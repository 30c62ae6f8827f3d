"""The plain-copy snapshotter, for machines without overlayfs (and for debugging).

An active snapshot starts as a full copy of its parent's tree (``cp -a``: owners, modes, times,
xattrs, hardlinks, devices; reflinks where the filesystem has them), so layers cost their whole
tree each. Views do not copy: they bind-mount the parent's tree read-only. Diffs are computed
by comparing the snapshot with its parent (``WhiteoutForm.DELETE`` with ``lower``).
"""

from __future__ import annotations

import os
import subprocess

from skiff.core.snapshots import Kind, LayerDirs, Mount, WhiteoutForm
from skiff.errors import SystemFailure, os_error
from skiff.plugins.snapshots.base import DirSnapshotter
from skiff.plugins.snapshots.store import Row


class CopySnapshotter(DirSnapshotter):
    def _build(self, tmp: str, parent: Row | None, kind: Kind) -> None:
        fs = os.path.join(tmp, "fs")
        try:
            os.mkdir(fs, 0o755)
        except OSError as exc:
            raise os_error("create snapshot directory", fs, exc) from exc
        if parent is None or kind is Kind.VIEW:
            return
        src = self.fs_dir(parent)
        proc = subprocess.run(["cp", "-a", "--reflink=auto", "--", f"{src}/.", fs],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemFailure(f"copy snapshot {parent.key!r} into {fs}: {proc.stderr.strip()}")
        # the root's own metadata too (cp copies the content of ``src/.`` onto ``fs``)
        try:
            st = os.lstat(src)
            os.chmod(fs, st.st_mode & 0o7777)
            if os.geteuid() == 0:
                os.chown(fs, st.st_uid, st.st_gid)
            os.utime(fs, ns=(st.st_atime_ns, st.st_mtime_ns))
        except OSError as exc:
            raise os_error("copy root metadata to", fs, exc) from exc

    def _mounts(self, row: Row) -> list[Mount]:
        if row.kind is Kind.VIEW:
            ancestors = self.store.ancestors(row.id)
            source = self._fs_of_id(ancestors[0]) if ancestors else self.fs_dir(row)
            return [Mount("bind", source, ("rbind", "ro"))]
        return [Mount("bind", self.fs_dir(row), ("rbind", "rw"))]

    def layer_dirs(self, key: str) -> LayerDirs:
        row = self._with_dirs(key)
        parent = self._fs_of_id(row.parent_id) if row.parent_id is not None else None
        return LayerDirs(self.fs_dir(row), WhiteoutForm.DELETE, parent)
