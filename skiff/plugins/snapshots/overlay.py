"""The overlayfs snapshotter: each snapshot is one upper directory; parents become lowerdirs.

Layout: ``<root>/snapshots/<id>/fs`` (the upper directory, which is the layer's content once
committed) and ``<root>/snapshots/<id>/work`` (overlayfs's scratch space). Ids are small
integers, so a lowerdir list relative to ``<root>/snapshots`` costs about 8 bytes a layer and the
mount helper (``mount.py``) fits ~500 layers (overlayfs's own limit) in one page of options.

Layers are applied straight into the upper directory (``WhiteoutForm.OVERLAY``): no mount is
needed to unpack, and whiteouts are stored the way overlayfs reads them.
"""

from __future__ import annotations

import os

from skiff.core.snapshots import Kind, LayerDirs, Mount, WhiteoutForm
from skiff.errors import Unavailable, os_error
from skiff.plugins.snapshots.base import DirSnapshotter
from skiff.plugins.snapshots.store import Row


def overlay_supported() -> bool:
    """Whether this kernel has overlayfs (loaded or loadable; /proc/filesystems lists it)."""
    try:
        with open("/proc/filesystems", encoding="ascii") as f:
            if any(line.split()[-1] == "overlay" for line in f if line.strip()):
                return True
    except OSError:
        return False
    return os.path.isdir("/sys/module/overlay")


class OverlaySnapshotter(DirSnapshotter):
    def __init__(self, root: str) -> None:
        if not overlay_supported():
            raise Unavailable("overlay snapshotter: this kernel has no overlayfs; "
                              "use the copy snapshotter")
        super().__init__(root)

    def _build(self, tmp: str, parent: Row | None, kind: Kind) -> None:
        try:
            os.mkdir(os.path.join(tmp, "fs"), 0o755)
            if kind is Kind.ACTIVE:
                os.mkdir(os.path.join(tmp, "work"), 0o700)
        except OSError as exc:
            raise os_error("create overlay directories in", tmp, exc) from exc

    def _mounts(self, row: Row) -> list[Mount]:
        lowers = [self._fs_of_id(i) for i in self.store.ancestors(row.id)]
        if row.kind is Kind.VIEW:
            if not lowers:
                return [Mount("bind", self.fs_dir(row), ("rbind", "ro"))]
            if len(lowers) == 1:  # overlayfs wants two lowers without an upper: bind instead
                return [Mount("bind", lowers[0], ("rbind", "ro"))]
            return [Mount("overlay", "overlay", (f"lowerdir={':'.join(lowers)}",))]
        if not lowers:
            return [Mount("bind", self.fs_dir(row), ("rbind", "rw"))]
        work = os.path.join(self.store.dir_of(row.id), "work")
        # redirect_dir=off (which also turns metacopy off): a renamed lower directory is then
        # copied up whole, so the upper directory alone is the exact change set write_diff reads,
        # whatever the distribution's overlay module defaults are.
        return [Mount("overlay", "overlay", (
            f"lowerdir={':'.join(lowers)}", f"upperdir={self.fs_dir(row)}", f"workdir={work}",
            "index=off", "redirect_dir=off"))]

    def layer_dirs(self, key: str) -> LayerDirs:
        row = self._with_dirs(key)
        lowers = tuple(self._fs_of_id(i) for i in self.store.ancestors(row.id))
        return LayerDirs(self.fs_dir(row), WhiteoutForm.OVERLAY, lowers=lowers)
