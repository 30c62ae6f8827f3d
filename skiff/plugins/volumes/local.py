"""The ``local`` volume driver: a directory per volume, or what Docker's options mount there.

Layout: ``<root>/<name>/_data`` is the volume (Docker's layout, so habits like looking under
``/var/lib/docker/volumes/<name>/_data`` carry over). Options, as Docker's local driver:

- none: the directory itself.
- ``type=tmpfs [o=size=64m,mode=1777,uid=..]``: a tmpfs mounted on ``_data`` for its users.
- ``type=none o=bind device=/host/dir``: a bind of a host directory.
- ``type=nfs o=addr=10.0.0.5,rw[,vers=4] device=:/export``: an NFS mount, so one export serves
  containers on several hosts; ``addr`` must be an address (as Docker, the kernel client
  takes no host names here).
  Without an NFS client in the kernel, skiff's userspace NFSv3 client serves the export
  through FUSE (docs/volumes-nfs.md).
- any other ``type`` with a ``device``: mount(2) with that type, device and ``o``.

A volume with options is mounted when its first user starts and unmounted after its last
(the service counts users); a plain directory needs neither.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
from collections.abc import Mapping
from typing import BinaryIO

from skiff.core.snapshots import Mount
from skiff.errors import InvalidArgument, NotFound, SystemFailure, os_error
from skiff.plugins.diff.tar import apply_layer
from skiff.plugins.snapshots.mount import is_mountpoint, mount_one, unmount
from skiff.plugins.volumes.nfs.launch import (
    kernel_has_nfs,
    mount_fuse,
    stale_fuse_mount,
    wait_helper_exit,
)

_KEYS = frozenset({"type", "device", "o"})
# mount(2) flags mount_one knows by name; everything else in `o` is filesystem data
_TMPFS_DATA = ("size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "huge")


def _split_o(o: str) -> list[str]:
    return [w for w in (p.strip() for p in o.split(",")) if w]


class LocalDriver:
    name = "local"

    def __init__(self, root: str) -> None:
        self.root = root
        try:
            os.makedirs(root, mode=0o701, exist_ok=True)
        except OSError as exc:
            raise os_error("create volumes directory", root, exc) from exc

    def _dir(self, name: str) -> str:
        return os.path.join(self.root, name)

    def path(self, name: str) -> str:
        return os.path.join(self._dir(name), "_data")

    # --- options ---------------------------------------------------------------------

    def validate(self, options: Mapping[str, str]) -> None:
        unknown = sorted(set(options) - _KEYS)
        if unknown:
            raise InvalidArgument(f"invalid option for the local volume driver: {unknown[0]!r} "
                                  "(known: type, device, o)")
        kind = options.get("type", "")
        words = _split_o(options.get("o", ""))
        device = options.get("device", "")
        if not options:
            return
        if not kind:
            raise InvalidArgument("local volume options need a type (e.g. type=tmpfs)")
        if "bind" in words or "rbind" in words:
            if not device.startswith("/"):
                raise InvalidArgument(f"bind volume: device must be an absolute host path, "
                                      f"not {device!r}")
        elif kind in ("nfs", "nfs4"):
            if not any(w.startswith("addr=") for w in words):
                raise InvalidArgument("nfs volume: o must name the server as addr=<IP>")
            if ":" not in device:
                raise InvalidArgument(f"nfs volume: device must be :<export path>, not "
                                      f"{device!r}")
            if not kernel_has_nfs():  # what skiff's userspace client cannot do, say now
                from skiff.plugins.volumes.nfs.helper import parse_config

                parse_config(device, options.get("o", ""))
        elif kind != "tmpfs" and not device:
            raise InvalidArgument(f"{kind} volume: a device is required")
        for w in words:
            if "=" not in w and w not in ("bind", "rbind", "ro", "rw", "nosuid", "nodev",
                                          "noexec", "noatime", "nodiratime", "relatime",
                                          "sync", "async", "hard", "soft", "nolock", "tcp",
                                          "udp", "private", "rprivate", "shared", "rshared",
                                          "slave", "rslave", "remount"):
                raise InvalidArgument(f"invalid mount option for the local volume driver: "
                                      f"{w!r}")

    # --- lifecycle -------------------------------------------------------------------

    def create(self, name: str, options: Mapping[str, str]) -> None:
        self.validate(options)
        data = self.path(name)
        try:
            os.makedirs(self._dir(name), mode=0o701, exist_ok=True)
            os.makedirs(data, mode=0o755, exist_ok=True)
        except OSError as exc:
            raise os_error("create volume directory", data, exc) from exc

    def remove(self, name: str) -> None:
        data = self.path(name)
        if os.path.isdir(data) and is_mountpoint(data):
            raise SystemFailure(f"remove volume {name}: {data} is still mounted")
        try:
            shutil.rmtree(self._dir(name))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise os_error("remove volume", self._dir(name), exc) from exc

    def rename(self, old: str, new: str) -> None:
        try:
            os.rename(self._dir(old), self._dir(new))
        except FileNotFoundError as exc:
            raise NotFound(f"no such volume: {old}") from exc
        except OSError as exc:
            raise os_error("rename volume", self._dir(old), exc) from exc

    # --- mounts ----------------------------------------------------------------------

    def mount(self, name: str, options: Mapping[str, str]) -> str:
        data = self.path(name)
        if not options:
            if not os.path.isdir(data):  # lost from under us: make it again, empty
                self.create(name, options)
            return data
        kind = options.get("type", "")
        if is_mountpoint(data):
            if not (kind in ("nfs", "nfs4") and stale_fuse_mount(data)):
                return data  # mounted by a daemon that was killed: still good
            unmount(data, detach=True)  # its userspace client died: mount afresh

        words = _split_o(options.get("o", ""))
        device = options.get("device", "")
        if "bind" in words or "rbind" in words:
            if not os.path.isdir(device):
                raise NotFound(f"mount volume {name}: bind device {device} does not exist")
            m = Mount("bind", device, tuple(words))
        elif kind in ("nfs", "nfs4"):
            if not kernel_has_nfs():  # skiff's userspace client through FUSE instead
                mount_fuse(device, data, words, pidfile=self._nfs_pidfile(name),
                           log=os.path.join(self._dir(name), "nfs-client.log"))
                return data
            m = Mount(kind, device, tuple(words))
        else:
            m = Mount(kind, device or kind, tuple(words))
        mount_one(m, data)
        return data

    def unmount(self, name: str, options: Mapping[str, str]) -> None:
        data = self.path(name)
        if options.get("type") in ("nfs", "nfs4"):
            # no isdir() first: with the server gone, stat of the mount fails (EIO)
            if is_mountpoint(data):
                unmount(data, detach=True)
            # a FUSE client exits once the kernel ends its connection; wait for that so no
            # helper outlives the volume's last user (unless files stay open on a detached
            # mount: then it serves them until they are closed)
            wait_helper_exit(self._nfs_pidfile(name))
            return
        if options and os.path.isdir(data) and is_mountpoint(data):
            unmount(data, detach=True)

    def _nfs_pidfile(self, name: str) -> str:
        return os.path.join(self._dir(name), "nfs-client.pid")

    # --- content ---------------------------------------------------------------------

    def size(self, name: str) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(self.path(name)):
            for f in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
        return total

    def export(self, name: str, out: BinaryIO) -> None:
        data = self.path(name)
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for entry in sorted(os.listdir(data)):
                tar.add(os.path.join(data, entry), arcname=entry, recursive=True)

    def import_tar(self, name: str, tar: BinaryIO) -> None:
        apply_layer(tar, self.path(name))
