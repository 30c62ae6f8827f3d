"""The container's root filesystem: spec mounts, /dev, pivot_root, masked and read-only paths.

Runs in the container's init, inside its new mount namespace. Every mount target inside the
rootfs is opened with openat2(RESOLVE_IN_ROOT) and mounted through its /proc/self/fd path, so a
symlink planted in an image (``/proc -> /etc``, ``/dev -> /``) is resolved inside the rootfs and
can never make the runtime mount over something on the host.
"""

from __future__ import annotations

import errno
import os
import stat

from skiff.errors import InvalidArgument, SystemFailure, os_error
from skiff.runtime import syscalls as sc
from skiff.runtime.mounts import PROPAGATION, mount_type, parse_options, recursive_attrs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

O_PATH = getattr(os, "O_PATH", 0o10000000)
_IN_ROOT = sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS

DEFAULT_DEVICES = (  # path, major, minor
    ("/dev/null", 1, 3), ("/dev/zero", 1, 5), ("/dev/full", 1, 7), ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9), ("/dev/tty", 5, 0),
)
DEV_SYMLINKS = (
    ("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr"),
)

_STATVFS_TO_MS = ((os.ST_RDONLY, sc.MS_RDONLY), (os.ST_NOSUID, sc.MS_NOSUID),
                  (os.ST_NODEV, sc.MS_NODEV), (os.ST_NOEXEC, sc.MS_NOEXEC),
                  (getattr(os, "ST_NOATIME", 1024), sc.MS_NOATIME),
                  (getattr(os, "ST_NODIRATIME", 2048), sc.MS_NODIRATIME),
                  (getattr(os, "ST_RELATIME", 4096), sc.MS_RELATIME))


def fdpath(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


class Rootfs:
    """Mount operations confined to one root directory."""

    def __init__(self, path: str, userns: bool = False) -> None:
        self.path = path
        self.userns = userns
        self.root_fd = os.open(path, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self.root_fd)

    # -- path resolution inside the rootfs ------------------------------------------------

    def open(self, dest: str, flags: int = O_PATH) -> int:
        return sc.openat2(self.root_fd, dest.lstrip("/") or ".", flags, _IN_ROOT)

    def ensure(self, dest: str, directory: bool = True, mode: int = 0o755,
               _depth: int = 0) -> int:
        """An O_PATH fd of ``dest`` inside the rootfs, creating it (and its parents) if missing.

        A dangling symlink on the way (``/evil -> /missing``) gets its target made inside
        the root, as runc does: resolution never leaves the root, whatever the link says.
        """
        if _depth > 40:
            raise InvalidArgument(f"mount destination {dest}: too many levels of symbolic links")
        parts = [p for p in dest.split("/") if p and p != "."]
        parent = os.dup(self.root_fd)
        try:
            for i, name in enumerate(parts):
                last = i == len(parts) - 1
                sub = "/".join(parts[: i + 1])
                try:
                    fd = sc.openat2(self.root_fd, sub, O_PATH, _IN_ROOT)
                except FileNotFoundError:
                    if name == "..":
                        raise InvalidArgument(f"mount destination {dest}: bad path") from None
                    try:
                        target = os.readlink(name, dir_fd=parent)
                    except OSError:
                        target = None
                    if target is not None:  # a dangling link: make what it names, in the root
                        base = "" if target.startswith("/") else "/".join(parts[:i])
                        os.close(self.ensure(f"{base}/{target}", directory or not last, mode,
                                             _depth + 1))
                        fd = sc.openat2(self.root_fd, sub, O_PATH, _IN_ROOT)
                        os.close(parent)
                        parent = fd
                        continue
                    # The parent was resolved inside the root and ``name`` has no slash: creating
                    # it relative to the parent fd cannot escape.
                    if last and not directory:
                        fd0 = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                                      | os.O_CLOEXEC, 0o644, dir_fd=parent)
                        os.close(fd0)
                    else:
                        os.mkdir(name, mode, dir_fd=parent)
                    fd = sc.openat2(self.root_fd, sub, O_PATH, _IN_ROOT)
                os.close(parent)
                parent = fd
            return parent
        except BaseException:
            os.close(parent)
            raise

    def is_dir(self, fd: int) -> bool:
        return stat.S_ISDIR(os.fstat(fd).st_mode)


def _statvfs_flags(path: str) -> int:
    try:
        f = os.statvfs(path).f_flag
    except OSError:
        return 0
    return sum(ms for st, ms in _STATVFS_TO_MS if f & st)


def remount(target: str, flags: int, data: str | None = None) -> None:
    """Bind-remount ``target`` with ``flags``; keep flags the kernel has locked (user ns)."""
    try:
        sc.mount(None, target, None, sc.MS_BIND | sc.MS_REMOUNT | flags, data)
    except PermissionError:
        locked = _statvfs_flags(target) & (sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
                                           | sc.MS_NOATIME | sc.MS_NODIRATIME | sc.MS_RELATIME)
        sc.mount(None, target, None, sc.MS_BIND | sc.MS_REMOUNT | flags | locked, data)


def make_private_root(propagation: str | None) -> None:
    """Stop our mounts from propagating back to the host (rslave unless the spec says else)."""
    flags = PROPAGATION.get(propagation or "rslave", sc.MS_SLAVE | sc.MS_REC)
    # shared propagation of the root is applied only after setup (see finish()).
    if flags & sc.MS_SHARED:
        flags = sc.MS_SLAVE | sc.MS_REC
    try:
        sc.mount(None, "/", None, flags, None)
    except OSError as exc:
        raise os_error("make / private", "in the container mount namespace", exc) from exc


def bind_root(rootfs: str) -> None:
    try:
        sc.mount(rootfs, rootfs, "bind", sc.MS_BIND | sc.MS_REC, None)
    except OSError as exc:
        raise os_error("bind mount rootfs", rootfs, exc) from exc


def mount_all(rfs: Rootfs, mounts: list[dict[str, Any]], bundle: str,
              cgroup_mode: str, cgroup_path: str, cgroupns: bool,
              before_cgroup: Callable[[], None] | None = None) -> None:
    """Perform the spec's mounts in order; ``before_cgroup`` runs before a cgroupfs mount."""
    for i, m in enumerate(mounts):
        if before_cgroup is not None and mount_type(m) in ("cgroup", "cgroup2"):
            before_cgroup()
        try:
            _mount_one(rfs, m, bundle, cgroup_mode, cgroup_path, cgroupns)
        except OSError as exc:
            raise os_error(f"mounts[{i}]: mount {mount_type(m)} {m.get('source', '')} on",
                           m["destination"], exc) from exc


def _mount_one(rfs: Rootfs, m: dict[str, Any], bundle: str, cgroup_mode: str,
               cgroup_path: str, cgroupns: bool) -> None:
    dest = m["destination"]
    mtype = mount_type(m)
    opts = parse_options(m.get("options"))
    if mtype == "cgroup" or mtype == "cgroup2":
        _mount_cgroup(rfs, dest, opts.flags & ~sc.MS_BIND, cgroup_mode, cgroup_path, cgroupns)
        return
    if opts.is_bind or mtype == "bind":
        src = m.get("source", "")
        if not os.path.isabs(src):
            src = os.path.join(bundle, src)
        try:
            src_dir = stat.S_ISDIR(os.stat(src).st_mode)
        except FileNotFoundError:
            raise SystemFailure(f"bind mount source {src} for {dest}: does not exist") from None
        fd = rfs.ensure(dest, directory=src_dir)
        try:
            sc.mount(src, fdpath(fd), "bind", sc.MS_BIND | (opts.flags & sc.MS_REC), None)
        finally:
            os.close(fd)
        extra = opts.flags & ~(sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT)
        if extra or opts.data:
            fd = rfs.open(dest)
            try:
                remount(fdpath(fd), extra, opts.data_string)
            finally:
                os.close(fd)
    else:
        fd = rfs.ensure(dest, directory=True)
        try:
            _mount_fs(m.get("source") or mtype, fd, mtype, opts.flags & ~sc.MS_REMOUNT,
                      opts.data_string, rfs.userns)
        finally:
            os.close(fd)
    if opts.propagation or opts.recursive or "tmpcopyup" in opts.extensions:
        fd = rfs.open(dest)
        try:
            for prop in opts.propagation:
                sc.mount(None, fdpath(fd), None, prop, None)
            if opts.recursive:
                attr_set, attr_clr = recursive_attrs(opts.recursive)
                sc.mount_setattr(fdpath(fd), attr_set, attr_clr, recursive=True)
        finally:
            os.close(fd)


def _mount_fs(source: str, fd: int, mtype: str, flags: int, data: str | None,
              userns: bool) -> None:
    target = fdpath(fd)
    try:
        sc.mount(source, target, mtype, flags, data)
    except PermissionError:
        # In a user namespace without its own network namespace the kernel refuses sysfs;
        # runc binds the host's /sys instead, read-only. Do the same.
        if mtype == "sysfs" and userns:
            sc.mount("/sys", target, "bind", sc.MS_BIND | sc.MS_REC, None)
            remount(target, sc.MS_RDONLY | (flags & (sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)))
        else:
            raise


def host_cgroup_mounts() -> list[tuple[str, str, str]]:
    """(mountpoint, fstype, super options) of every cgroup hierarchy we can see."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fields = post.split()
            if len(fields) >= 3 and fields[0] in ("cgroup", "cgroup2"):
                out.append((pre.split()[4], fields[0], fields[2]))
    return out


def _mount_cgroup(rfs: Rootfs, dest: str, flags: int, mode: str, cgroup_path: str,
                  cgroupns: bool) -> None:
    ro = flags & sc.MS_RDONLY
    base = flags & ~sc.MS_RDONLY
    if mode == "v2":
        fd = rfs.ensure(dest)
        try:
            if cgroupns:
                sc.mount("cgroup2", fdpath(fd), "cgroup2", flags, None)
            else:
                host = "/sys/fs/cgroup" + cgroup_path
                sc.mount(host, fdpath(fd), "bind", sc.MS_BIND, None)
        finally:
            os.close(fd)
        if ro and not cgroupns:
            _remount_at(rfs, dest, sc.MS_RDONLY | base)
        return
    # v1 / hybrid: a tmpfs with one directory per hierarchy, as on the host.
    fd = rfs.ensure(dest)
    try:
        sc.mount("tmpfs", fdpath(fd), "tmpfs", base, "mode=755")
    finally:
        os.close(fd)
    for mountpoint, fstype, superopts in host_cgroup_mounts():
        name = os.path.basename(mountpoint)
        # The unified hierarchy of a hybrid host stays out of the container, as with runc:
        # v1 containers are managed through the v1 controllers.
        if not mountpoint.startswith("/sys/fs/cgroup/") or fstype == "cgroup2":
            continue
        sub = f"{dest.rstrip('/')}/{name}"
        fd = rfs.ensure(sub)
        try:
            if cgroupns:
                if fstype == "cgroup2":
                    sc.mount("cgroup2", fdpath(fd), "cgroup2", flags, None)
                else:
                    subsys = ",".join(o for o in superopts.split(",")
                                      if o not in ("rw", "ro") and not o.startswith("release_"))
                    sc.mount("cgroup", fdpath(fd), "cgroup", flags, subsys)
            else:
                host = mountpoint + cgroup_path
                if not os.path.isdir(host):
                    continue
                sc.mount(host, fdpath(fd), "bind", sc.MS_BIND, None)
        finally:
            os.close(fd)
        if ro and not cgroupns:
            _remount_at(rfs, sub, sc.MS_RDONLY | base)
    if ro:
        _remount_at(rfs, dest, sc.MS_RDONLY | base)


def _remount_at(rfs: Rootfs, dest: str, flags: int) -> None:
    # Open the target afresh: an fd taken before a mount names what is underneath it, and a
    # remount through it would hit the wrong mount (EINVAL).
    fd = rfs.open(dest)
    try:
        remount(fdpath(fd), flags)
    finally:
        os.close(fd)


def dev_is_mounted(mounts: list[dict[str, Any]]) -> bool:
    """Whether the spec gives /dev its own (non-bind) filesystem for us to populate."""
    for m in mounts:
        if os.path.normpath(m["destination"]) == "/dev":
            return mount_type(m) != "bind"
    return False


def setup_dev(rfs: Rootfs, devices: list[dict[str, Any]]) -> None:
    """Default devices, the spec's devices, and the /dev symlinks, inside the rootfs."""
    wanted: dict[str, dict[str, Any]] = {}
    for path, major, minor in DEFAULT_DEVICES:
        wanted[path] = {"path": path, "type": "c", "major": major, "minor": minor,
                        "fileMode": 0o666, "uid": 0, "gid": 0}
    for d in devices:
        wanted[d["path"]] = d
    for d in wanted.values():
        _make_device(rfs, d)
    for target, link in DEV_SYMLINKS:
        _symlink(rfs, target, link)
    if os.path.exists("/proc/kcore"):
        _symlink(rfs, "/proc/kcore", "/dev/core")
    _symlink(rfs, "pts/ptmx", "/dev/ptmx")


def _symlink(rfs: Rootfs, target: str, link: str) -> None:
    parent, name = os.path.split(link)
    pfd = rfs.ensure(parent)
    try:
        dfd = os.open(fdpath(pfd), os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.symlink(target, name, dir_fd=dfd)
        except FileExistsError:
            pass
        finally:
            os.close(dfd)
    finally:
        os.close(pfd)


def _make_device(rfs: Rootfs, d: dict[str, Any]) -> None:
    path = d["path"]
    parent, name = os.path.split(path)
    kind = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}[d["type"]]
    mode = d.get("fileMode", 0o666) & 0o7777
    pfd = rfs.ensure(parent)
    try:
        dfd = os.open(fdpath(pfd), os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(pfd)
    try:
        try:
            os.unlink(name, dir_fd=dfd)
        except FileNotFoundError:
            pass
        if rfs.userns and kind != stat.S_IFIFO:
            # mknod is not allowed in a user namespace: bind the host's node over an empty file.
            fd0 = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644,
                          dir_fd=dfd)
            os.close(fd0)
            fd = sc.openat2(dfd, name, O_PATH, _IN_ROOT)
            try:
                sc.mount(path, fdpath(fd), "bind", sc.MS_BIND, None)
            finally:
                os.close(fd)
            return
        dev = os.makedev(d.get("major", 0), d.get("minor", 0)) if kind != stat.S_IFIFO else 0
        try:
            os.mknod(name, kind | mode, dev, dir_fd=dfd)
        except OSError as exc:
            raise os_error("mknod", path, exc) from exc
        os.chmod(name, mode, dir_fd=dfd)  # mknod honours the umask; the spec's mode is exact
        os.chown(name, d.get("uid", 0), d.get("gid", 0), dir_fd=dfd)
    finally:
        os.close(dfd)


def pivot(rootfs: str, no_pivot: bool) -> None:
    os.chdir(rootfs)
    if not no_pivot:
        try:
            _pivot_root(rootfs)
            return
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise os_error("pivot_root to", rootfs, exc) from exc
            # EINVAL: the current root is not a mount we may pivot away from (an initramfs).
    try:
        sc.mount(rootfs, "/", None, sc.MS_MOVE, None)
        os.chroot(".")
        os.chdir("/")
    except OSError as exc:
        raise os_error("move rootfs to / and chroot", rootfs, exc) from exc


def _pivot_root(rootfs: str) -> None:
    # pivot_root(".", ".") stacks the old root on top of the new one; detach it from there.
    # No directory for the old root is needed inside the image, so a read-only image works.
    oldroot = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        sc.pivot_root(".", ".")
        os.fchdir(oldroot)
        sc.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC, None)
        sc.umount2(".", sc.MNT_DETACH)
    finally:
        os.close(oldroot)
    os.chdir("/")


def write_sysctls(sysctls: dict[str, str]) -> None:
    for key, value in sysctls.items():
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            with open(path, "w") as f:
                f.write(value)
        except OSError as exc:
            raise os_error(f"set sysctl {key}={value}:", path, exc) from exc


def mask_paths(paths: list[str]) -> None:
    for p in paths:
        try:
            st = os.stat(p)
        except (FileNotFoundError, NotADirectoryError):
            continue
        try:
            if stat.S_ISDIR(st.st_mode):
                sc.mount("tmpfs", p, "tmpfs", sc.MS_RDONLY, None)
            else:
                sc.mount("/dev/null", p, "bind", sc.MS_BIND, None)
        except OSError as exc:
            raise os_error("mask", p, exc) from exc


def readonly_paths(paths: list[str]) -> None:
    for p in paths:
        if not os.path.exists(p):
            continue
        try:
            sc.mount(p, p, "bind", sc.MS_BIND | sc.MS_REC, None)
            remount(p, sc.MS_RDONLY | sc.MS_REC)
        except OSError as exc:
            raise os_error("make read-only", p, exc) from exc


def readonly_root() -> None:
    try:
        remount("/", sc.MS_RDONLY)
    except OSError as exc:
        raise os_error("remount rootfs read-only", "/", exc) from exc


def root_propagation(propagation: str | None) -> None:
    if propagation and PROPAGATION[propagation] & sc.MS_SHARED:
        try:
            sc.mount(None, "/", None, PROPAGATION[propagation], None)
        except OSError as exc:
            raise os_error(f"make rootfs {propagation}", "/", exc) from exc
