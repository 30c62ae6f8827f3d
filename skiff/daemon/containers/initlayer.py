"""The init layer: a committed snapshot between a container's image and its writable layer.

The runtime bind-mounts /etc/hosts, /etc/resolv.conf and /etc/hostname over files that must
exist, and mounts /proc, /sys, /dev over directories. An image without them would get them
created in the container's own layer, and every `docker diff`, commit and export would show
them. Docker keeps them in an "-init" layer below the container's; so does skiff: what is
made here is part of the container's view but never of its changes. One init layer serves
every container of an image.

Everything is created through descriptors resolved inside the layer's mounted root
(openat2 RESOLVE_IN_ROOT) with O_NOFOLLOW|O_EXCL: an image whose /etc is a symlink to
somewhere on the host cannot make us create files there.
"""

from __future__ import annotations

import contextlib
import os
import uuid

from skiff.core.snapshots import Snapshotter
from skiff.errors import Conflict, NotFound, os_error
from skiff.linux.openat2 import RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS, openat2
from skiff.plugins.snapshots.mount import mounted

DIRS = ("proc", "sys", "dev", "dev/pts", "dev/shm", "etc")
FILES = ("etc/hosts", "etc/resolv.conf", "etc/hostname")
_RESOLVE = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


def _open_dir(root_fd: int, rel: str) -> int:
    return openat2(root_fd, rel, _DIR, _RESOLVE)


def populate(root: str) -> None:
    """Create the mount points the runtime needs that the image lacks, confined to ``root``."""
    root_fd = os.open(root, _DIR)
    try:
        for rel in DIRS:
            parent, _, name = rel.rpartition("/")
            pfd = _open_dir(root_fd, parent or ".")
            try:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=pfd)
            finally:
                os.close(pfd)
        for rel in FILES:
            parent, _, name = rel.rpartition("/")
            pfd = _open_dir(root_fd, parent)
            try:
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o644, dir_fd=pfd)
                os.close(fd)
            except FileExistsError:
                pass  # the image's own (or a symlink of its own): the runtime mounts over it
            finally:
                os.close(pfd)
    except OSError as exc:
        raise os_error("prepare the init layer in", root, exc) from exc
    finally:
        os.close(root_fd)


def make(snapshotter: Snapshotter, parent: str | None) -> str:
    """The init layer on ``parent`` (an image's top chain ID, None for scratch); its key, the
    parent of a new container's snapshot.

    Its content depends only on the image, so containers of one image share it: it is made
    by the first and found by the rest (a stat, not a mount, on the start path). Unused ones
    go with image GC like any committed snapshot without children.
    """
    key = f"init-{(parent or 'scratch').replace(':', '-')}"
    with contextlib.suppress(NotFound):
        snapshotter.stat(key)
        return key
    active = f"{key}-{uuid.uuid4().hex[:12]}"  # concurrent creates of one image: one wins
    snapshotter.prepare(active, parent, {"skiff.init": "1"})
    try:
        with mounted(snapshotter.mounts(active)) as root:
            populate(root)
        try:
            snapshotter.commit(key, active, {"skiff.init": "1"})
        except Conflict:  # another create committed it first: use theirs
            snapshotter.remove(active)
    except BaseException:
        with contextlib.suppress(NotFound):
            snapshotter.remove(active)
        raise
    return key
