"""Filesystem export (``docker export``): a tar of a snapshot's merged view.

The snapshot is mounted read-only at a temporary directory and the mounted tree is written as a
tar by the diff writer as a whole tree against nothing (every entry, with ownership, modes,
xattrs, symlinks, hardlinks and devices). Going through the mount rather than the snapshot's
directories is what makes the output the container's view: overlay whiteouts and opaque
directories are resolved by the kernel, so no whiteout entry can reach the archive.

Services may not import plugins, so the mount and unmount operations (the snapshots plugin's
``mount_all``/``unmount_all``) and the tar writer (the diff plugin's ``TarDiffer``) are passed in.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO

from skiff.core.diff import AppliedLayer, DiffWriter
from skiff.core.snapshots import Kind, LayerDirs, Mount, Snapshotter, WhiteoutForm
from skiff.errors import NotFound, os_error

MountFn = Callable[[Sequence[Mount], str], None]
"""``mount(mounts, target)``: perform the mounts at ``target`` (undoing them on failure)."""
UnmountFn = Callable[[str], None]
"""``unmount(target)``: undo everything mounted at ``target``."""

_EXPORT_PREFIX = "export-"


def read_only(mounts: Sequence[Mount]) -> list[Mount]:
    """The same tree mounted read-only, never sharing a writable snapshot's upper/work dirs.

    An ACTIVE overlay snapshot may be a running container's root: mounting its upperdir and
    workdir a second time is refused (or unsafe), so its upper directory becomes the topmost
    lower directory instead, which shows the same merged tree with nothing writable.
    """
    out = []
    for m in mounts:
        if m.type == "overlay":
            upper = next((o[len("upperdir="):] for o in m.options if o.startswith("upperdir=")),
                         None)
            opts = []
            for o in m.options:
                if o.startswith(("upperdir=", "workdir=")) or o in ("rw", "ro"):
                    continue
                if o.startswith("lowerdir=") and upper is not None:
                    o = f"lowerdir={upper}:{o[len('lowerdir='):]}"
                opts.append(o)
            out.append(Mount(m.type, m.source, (*opts, "ro")))
        else:
            out.append(Mount(m.type, m.source, (*[o for o in m.options if o not in ("rw", "ro")], "ro")))
    return out


@contextlib.contextmanager
def _view_mounts(snapshotter: Snapshotter, key: str) -> Iterator[list[Mount]]:
    """Read-only mounts showing snapshot ``key``; a COMMITTED one gets a temporary view."""
    kind = snapshotter.stat(key).kind
    if kind is not Kind.COMMITTED:
        yield read_only(snapshotter.mounts(key))
        return
    view = f"{_EXPORT_PREFIX}{uuid.uuid4().hex}"
    mounts = snapshotter.view(view, key, labels={"skiff.export.of": key})
    try:
        yield read_only(mounts)
    finally:
        with contextlib.suppress(NotFound):
            snapshotter.remove(view)


def export_snapshot(snapshotter: Snapshotter, key: str, out: BinaryIO, *, writer: DiffWriter,
                    mount: MountFn, unmount: UnmountFn,
                    tmpdir: str | None = None) -> AppliedLayer:
    """Write snapshot ``key``'s merged tree to ``out`` as an uncompressed tar.

    ``key`` may be COMMITTED (an image's top chain ID), ACTIVE (a container's root; it may be
    in use) or a VIEW. Returns the tar's digest and size. NotFound for an unknown key; the
    temporary mount point and view are gone when this returns, whatever happened.
    """
    with _view_mounts(snapshotter, key) as mounts:
        try:
            where = tempfile.mkdtemp(prefix="skiff-export-", dir=tmpdir)
        except OSError as exc:
            raise os_error("create export mount point in", tmpdir or tempfile.gettempdir(),
                           exc) from exc
        try:
            mount(mounts, where)
            try:
                result = writer.write_diff(LayerDirs(where, WhiteoutForm.DELETE, None), out)
            finally:
                unmount(where)
        except BaseException:
            with contextlib.suppress(OSError):
                os.rmdir(where)  # the original error matters more
            raise
        try:
            os.rmdir(where)
        except OSError as exc:
            raise os_error("remove export mount point", where, exc) from exc
        return result


def is_export_view(key: str) -> bool:
    """Whether ``key`` is a temporary view this module made (for GC of crashed exports)."""
    return key.startswith(_EXPORT_PREFIX)
