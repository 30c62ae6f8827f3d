"""The ctypes seam: every system call the runtime makes that the os module does not offer.

Everything else in the runtime calls these functions rather than ctypes, so that a unit test can
swap in :class:`FakeSyscalls` (see ``tests/unit``) and so that errors come back as ``OSError``
with the right errno, ready to be translated by the caller that knows the object involved.

libc is loaded on first use: ``skiff-runtime state`` never pays for it.
"""

from __future__ import annotations

import ctypes
import os

# The one wrapper of openat2(2) is shared with the layer extractor; re-exported for the runtime.
from skiff.linux.openat2 import RESOLVE_BENEATH as RESOLVE_BENEATH
from skiff.linux.openat2 import RESOLVE_IN_ROOT as RESOLVE_IN_ROOT
from skiff.linux.openat2 import RESOLVE_NO_MAGICLINKS as RESOLVE_NO_MAGICLINKS
from skiff.linux.openat2 import RESOLVE_NO_SYMLINKS as RESOLVE_NO_SYMLINKS
from skiff.linux.openat2 import RESOLVE_NO_XDEV as RESOLVE_NO_XDEV
from skiff.linux.openat2 import openat2 as _openat2

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# clone(2)/unshare(2) namespace flags.
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080

# mount(2) flags.
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000
MS_LAZYTIME = 0x2000000

MNT_FORCE = 0x1
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

# prctl(2) options.
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

# x86_64 syscall numbers for calls glibc does not wrap (or wraps awkwardly).
SYS_CAPGET = 125
SYS_CAPSET = 126
SYS_PIVOT_ROOT = 155
SYS_SECCOMP = 317
SYS_CLONE3 = 435  # the same number on every architecture (new calls share one table)

CLONE_INTO_CGROUP = 0x200000000
_SIGCHLD = 17  # the exit signal fork gives (17 on x86 and arm)

_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc: Any = None
_pylibc: Any = None


def libc() -> Any:
    """The process's libc, loaded once, with errno captured for every call."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    return _libc


class _CloneArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size",
        "tls", "set_tid", "set_tid_size", "cgroup")]


def clone_process(flags: int, cgroup_fd: int | None = None) -> int:
    """os.fork() through clone3: ``flags`` (new namespaces) and, with ``cgroup_fd``, born in
    the cgroup (v2) of that directory fd. 0 in the child, its pid in the parent; OSError if
    refused (ENOSYS/EINVAL on old kernels, EACCES/EPERM where the caller may not write the
    cgroup). Being born in the cgroup costs the kernel nothing like a later write to
    cgroup.procs does (see cgroups.join).

    The call is made with the GIL held and wrapped in the interpreter's own before/after-fork
    steps, exactly as os.fork does, so the child is a normal forked interpreter.
    """
    if cgroup_fd is not None:
        flags |= CLONE_INTO_CGROUP
    args = _CloneArgs(flags=flags, exit_signal=_SIGCHLD,
                      cgroup=cgroup_fd if cgroup_fd is not None else 0)
    global _pylibc
    if _pylibc is None:
        _pylibc = ctypes.PyDLL(None, use_errno=True)  # PyDLL: the GIL stays held, as os.fork
        _pylibc.syscall.restype = ctypes.c_long
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid = _pylibc.syscall(ctypes.c_long(SYS_CLONE3), ctypes.byref(args),
                         ctypes.c_size_t(ctypes.sizeof(args)))
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, f"clone3: {os.strerror(err)}")
    return int(pid)


def _check(ret: int, what: str, path: str | None = None) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return ret


def _b(s: str | bytes | None) -> bytes | None:
    if s is None:
        return None
    return s if isinstance(s, bytes) else s.encode()


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    _check(libc().mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)),
           "mount", target)


def umount2(target: str, flags: int = 0) -> None:
    _check(libc().umount2(_b(target), flags), "umount2", target)


def pivot_root(new_root: str, put_old: str) -> None:
    _check(libc().syscall(SYS_PIVOT_ROOT, _b(new_root), _b(put_old)), "pivot_root", new_root)


def unshare(flags: int) -> None:
    _check(libc().unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(libc().setns(fd, nstype), "setns")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(libc().sethostname(raw, len(raw)), "sethostname")


def setdomainname(name: str) -> None:
    raw = name.encode()
    _check(libc().setdomainname(raw, len(raw)), "setdomainname")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(
        libc().prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(arg4),
                     ctypes.c_ulong(arg5)),
        "prctl",
    )


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def capget(pid: int = 0) -> tuple[int, int, int]:
    """(effective, permitted, inheritable) as 64-bit masks."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, pid)
    data = (_CapData * 2)()
    _check(libc().syscall(SYS_CAPGET, ctypes.byref(hdr), data), "capget")
    return (
        data[0].effective | (data[1].effective << 32),
        data[0].permitted | (data[1].permitted << 32),
        data[0].inheritable | (data[1].inheritable << 32),
    )


def capset(effective: int, permitted: int, inheritable: int) -> None:
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    m = 0xFFFFFFFF
    data[0].effective, data[1].effective = effective & m, (effective >> 32) & m
    data[0].permitted, data[1].permitted = permitted & m, (permitted >> 32) & m
    data[0].inheritable, data[1].inheritable = inheritable & m, (inheritable >> 32) & m
    _check(libc().syscall(SYS_CAPSET, ctypes.byref(hdr), data), "capset")


def set_child_subreaper() -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1)






def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2) with O_CLOEXEC, and the path in the error.

    With RESOLVE_IN_ROOT every symlink and ``..`` is resolved as if ``dirfd`` were ``/``, which
    is how the runtime opens mount targets inside a container's rootfs without escaping it.
    """
    try:
        return _openat2(dirfd, path, flags | os.O_CLOEXEC, resolve, mode)
    except OSError as exc:
        raise OSError(exc.errno, f"openat2: {exc.strerror}", path) from None


def personality(persona: int) -> int:
    return _check(libc().personality(ctypes.c_ulong(persona)), "personality")


SYS_MOUNT_SETATTR = 442
AT_RECURSIVE = 0x8000
AT_EMPTY_PATH = 0x1000


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(path: str, attr_set: int, attr_clr: int, recursive: bool = True) -> None:
    """mount_setattr(2) on ``path`` (and, with ``recursive``, every mount below it)."""
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    flags = AT_RECURSIVE if recursive else 0
    _check(libc().syscall(SYS_MOUNT_SETATTR, -100, _b(path), flags, ctypes.byref(attr),
                          ctypes.sizeof(attr)), "mount_setattr", path)
