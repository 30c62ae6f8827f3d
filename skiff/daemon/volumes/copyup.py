"""Copy-up: a new, empty volume takes the image's content at its mount point (Docker's rule).

The source is opened inside the container's root with openat2(RESOLVE_IN_ROOT), so a symlink
in the image (``/data -> /etc``) resolves inside that root and never reaches the host's files.
``cp -a`` then copies from the opened directory (passed by descriptor) into the volume, keeping
owners, modes, times, hard links, symlinks as links, and xattrs where the filesystem has them;
the volume's root directory takes the owner and mode of the image's directory.
"""

from __future__ import annotations

import errno
import os
import subprocess

from skiff.errors import SystemFailure, os_error
from skiff.linux.openat2 import RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS, openat2

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def is_empty(path: str) -> bool:
    try:
        with os.scandir(path) as it:
            return next(it, None) is None
    except FileNotFoundError:
        return True
    except OSError as exc:
        raise os_error("read volume directory", path, exc) from exc


def copy_up(rootfs: str, destination: str, volume: str) -> bool:
    """Copy ``rootfs``'s ``destination`` into the empty directory ``volume``; False when the
    image has nothing (or no directory) there."""
    try:
        root = os.open(rootfs, _DIR)
    except OSError as exc:
        raise os_error("open container root", rootfs, exc) from exc
    try:
        src = openat2(root, destination.lstrip("/") or ".", _DIR,
                      RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return False
        raise os_error("open image path for copy-up", destination, exc) from exc
    finally:
        os.close(root)
    try:
        # cp runs with the descriptor at the same number: its /proc/self/fd/N is our directory
        res = subprocess.run(["cp", "-a", "--", f"/proc/self/fd/{src}/.", volume + "/"],
                             pass_fds=(src,), capture_output=True, text=True, check=False,
                             timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SystemFailure(f"copy image content {destination} into volume {volume}: "
                            f"{exc}") from exc
    finally:
        os.close(src)
    if res.returncode != 0:
        raise SystemFailure(f"copy image content {destination} into volume {volume}: "
                            f"{res.stderr.strip()}")
    return True
