"""openat2(2): open a path under resolution restrictions (Linux 5.6+).

The one wrapper of the system call for the engine: the layer extractor confines every path
to a snapshot with RESOLVE_BENEATH. Errors are plain OSError with the errno, because callers
decide from it (ENOSYS: fall back to a manual walk; EXDEV/ELOOP: an escape attempt).
"""

from __future__ import annotations

import ctypes
import errno
import os

SYS_OPENAT2 = 437  # the same number on x86_64 and aarch64 (the unified syscall table)
AT_FDCWD = -100

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10


class OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def openat2(dirfd: int, path: bytes | str, flags: int, resolve: int, mode: int = 0) -> int:
    """A new fd for ``path`` relative to ``dirfd``; OSError with the errno on failure.

    EAGAIN (a concurrent rename raced the lookup; the kernel asks to retry) and EINTR are
    retried here, so callers only see final answers.
    """
    raw = path.encode() if isinstance(path, str) else path
    how = OpenHow(flags, mode, resolve)
    while True:
        fd = _libc.syscall(ctypes.c_long(SYS_OPENAT2), ctypes.c_int(dirfd), ctypes.c_char_p(raw),
                           ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err in (errno.EAGAIN, errno.EINTR):
            continue
        raise OSError(err, os.strerror(err))  # callers name the entry in their own message
