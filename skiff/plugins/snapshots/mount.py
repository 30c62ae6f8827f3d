"""Perform the mounts a snapshotter returns at a target, and undo them.

Overlay mounts of images with many layers can exceed the one page of option data mount(2)
accepts. Rather than shortening names everywhere, the helper notices the overflow, moves to the
deepest directory all lower directories share and mounts with lowerdir paths relative to it (the
kernel resolves them against the caller's working directory), the trick Docker and containerd
use. The working directory is per process, so that mount happens in a short-lived forked child
and never disturbs the caller's threads.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import tempfile
from collections.abc import Iterator, Sequence

from skiff.core.snapshots import Mount
from skiff.errors import InvalidArgument, SystemFailure, os_error

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 0x2

# option -> (flags to set, flags to clear)
_FLAGS: dict[str, tuple[int, int]] = {
    "ro": (MS_RDONLY, 0), "rw": (0, MS_RDONLY),
    "nosuid": (MS_NOSUID, 0), "suid": (0, MS_NOSUID),
    "nodev": (MS_NODEV, 0), "dev": (0, MS_NODEV),
    "noexec": (MS_NOEXEC, 0), "exec": (0, MS_NOEXEC),
    "sync": (MS_SYNCHRONOUS, 0), "async": (0, MS_SYNCHRONOUS),
    "noatime": (MS_NOATIME, 0), "nodiratime": (MS_NODIRATIME, 0),
    "relatime": (MS_RELATIME, 0), "strictatime": (MS_STRICTATIME, 0),
    "bind": (MS_BIND, 0), "rbind": (MS_BIND | MS_REC, 0),
}
_PROPAGATION = {"private": MS_PRIVATE, "rprivate": MS_PRIVATE | MS_REC,
                "slave": MS_SLAVE, "rslave": MS_SLAVE | MS_REC}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    rc = _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                     flags, data.encode() if data else None)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def parse_options(options: Sequence[str]) -> tuple[int, int, list[str]]:
    """(mount flags, propagation flags, data options) of an OCI-style option list."""
    flags = 0
    propagation = 0
    data: list[str] = []
    for opt in options:
        if opt in _FLAGS:
            add, clear = _FLAGS[opt]
            flags = (flags | add) & ~clear
        elif opt in _PROPAGATION:
            propagation |= _PROPAGATION[opt]
        else:
            data.append(opt)
    return flags, propagation, data


def _page_limit() -> int:
    return int(os.sysconf("SC_PAGE_SIZE")) - 1  # the kernel copies one page, NUL included


def _compact_lowerdir(data: list[str]) -> tuple[str, list[str]] | None:
    """(directory to work in, data with lowerdir relative to it), or None if no gain."""
    lowers = [o for o in data if o.startswith("lowerdir=")]
    if len(lowers) != 1:
        return None
    dirs = lowers[0][len("lowerdir="):].split(":")
    if len(dirs) < 2 or not all(os.path.isabs(d) for d in dirs):
        return None
    base = os.path.commonpath(dirs)
    rel = ":".join(os.path.relpath(d, base) for d in dirs)
    return base, [f"lowerdir={rel}" if o is lowers[0] else o for o in data]


def _mount_in_dir(workdir: str, source: str, target: str, fstype: str, flags: int, data: str) -> None:
    """mount(2) from a forked child whose working directory is ``workdir``."""
    target = os.path.abspath(target)
    pid = os.fork()
    if pid == 0:  # child: only async-signal-safe-ish work, then _exit
        code = 0
        try:
            os.chdir(workdir)
            _mount(source, target, fstype, flags, data)
        except OSError as exc:
            code = exc.errno or 1
        except BaseException:
            code = 255
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise OSError(code, os.strerror(code) if 0 < code < 255 else "mount helper failed")


def mount_one(m: Mount, target: str) -> None:
    """Perform one Mount at ``target``; errors name the mount type and target."""
    flags, propagation, data = parse_options(m.options)
    what = f"{m.type} ({m.source})"
    try:
        if flags & MS_BIND:
            _mount(m.source, target, None, flags & (MS_BIND | MS_REC), None)
            if flags & ~(MS_BIND | MS_REC):  # bind ignores other flags: apply them by remount
                _mount("", target, None, flags | MS_REMOUNT, None)
        else:
            text = ",".join(data)
            if len(text.encode()) > _page_limit():
                compact = _compact_lowerdir(data)
                if compact is None:
                    raise InvalidArgument(f"mount {what} on {target}: options longer than a page")
                workdir, data = compact
                text = ",".join(data)
                if len(text.encode()) > _page_limit():
                    raise InvalidArgument(f"mount {what} on {target}: too many layers "
                                          f"({text.count(':') + 1}) even with relative paths")
                _mount_in_dir(workdir, m.source, target, m.type, flags, text)
            else:
                _mount(m.source, target, m.type, flags, text or None)
        if propagation:
            _mount("", target, None, propagation, None)
    except OSError as exc:
        raise os_error(f"mount {what} on", target, exc) from exc


def mount_all(mounts: Sequence[Mount], target: str) -> None:
    """Perform ``mounts`` in order at ``target``; on failure undo the ones already done."""
    done = 0
    try:
        for m in mounts:
            mount_one(m, target)
            done += 1
    except BaseException:
        for _ in range(done):
            with contextlib.suppress(SystemFailure):
                unmount(target, detach=True)
        raise


def unmount(target: str, detach: bool = False) -> None:
    """Unmount the top mount at ``target``; SystemFailure naming it if that fails."""
    rc = _libc.umount2(target.encode(), MNT_DETACH if detach else 0)
    if rc != 0:
        err = ctypes.get_errno()
        raise os_error("unmount", target, OSError(err, os.strerror(err)))


def unmount_all(target: str, detach: bool = False) -> None:
    """Unmount everything stacked at ``target`` (EINVAL: nothing (more) mounted there)."""
    for _ in range(64):
        rc = _libc.umount2(target.encode(), MNT_DETACH if detach else 0)
        if rc != 0:
            err = ctypes.get_errno()
            if err in (errno.EINVAL, errno.ENOENT):
                return
            raise os_error("unmount", target, OSError(err, os.strerror(err)))
    raise SystemFailure(f"unmount {target}: still mounted after 64 unmounts")


def _mount_id(path: str) -> int:
    """The id of the mount ``path`` (a directory) is on, from its fd's /proc fdinfo."""
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as f:
            for line in f:
                if line.startswith(b"mnt_id:"):
                    return int(line.split()[1])
    finally:
        os.close(fd)
    raise SystemFailure(f"mount id of {path}: no mnt_id in its fdinfo (a kernel before 3.15?)")


def is_mountpoint(path: str) -> bool:
    """Whether ``path`` is a mount point: on another mount than its parent (exact for bind
    mounts of the same filesystem too). Two small reads, where scanning mountinfo would
    grow with every container's mounts. A path that does not exist is not one."""
    real = os.path.realpath(path)
    if real == "/":
        return True
    try:
        return _mount_id(real) != _mount_id(os.path.dirname(real))
    except (FileNotFoundError, NotADirectoryError):
        return False


@contextlib.contextmanager
def mounted(mounts: Sequence[Mount], target: str | None = None) -> Iterator[str]:
    """Mount at ``target`` (or a fresh temporary directory) for the duration of the block."""
    made = target is None
    where = tempfile.mkdtemp(prefix="skiff-mount-") if target is None else target
    try:
        mount_all(mounts, where)
        try:
            yield where
        finally:
            unmount_all(where)
    finally:
        if made:
            os.rmdir(where)
