"""Which cgroup layout the host has, told apart by filesystem magic (statfs f_type)."""

from __future__ import annotations

import ctypes
import os

from skiff.errors import os_error
from skiff.runtime import syscalls

CGROUP2_SUPER_MAGIC = 0x63677270
CGROUP_SUPER_MAGIC = 0x0027E0EB
TMPFS_MAGIC = 0x01021994

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

    Mode = Literal["v1", "hybrid", "v2"]


class _Statfs(ctypes.Structure):
    # x86_64/aarch64 struct statfs: f_type first, then fields we do not need; the padding
    # keeps the kernel's 120-byte write inside our buffer.
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 112)]


def fs_magic(path: str) -> int:
    """statfs(2) f_type of the filesystem holding ``path``."""
    buf = _Statfs()
    if syscalls.libc().statfs(path.encode(), ctypes.byref(buf)) != 0:
        err = ctypes.get_errno()
        raise os_error("statfs", path, OSError(err, os.strerror(err)))
    return int(buf.f_type) & 0xFFFFFFFF


def detect_mode(root: str = "/sys/fs/cgroup") -> Mode:
    """v2 when ``root`` is a cgroup2 mount; hybrid when it is not but ``root/unified`` is."""
    if fs_magic(root) == CGROUP2_SUPER_MAGIC:
        return "v2"
    unified = os.path.join(root, "unified")
    if os.path.isdir(unified) and fs_magic(unified) == CGROUP2_SUPER_MAGIC:
        return "hybrid"
    return "v1"
