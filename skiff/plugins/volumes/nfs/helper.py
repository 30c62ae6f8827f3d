"""``python -m skiff.plugins.volumes.nfs mount ADDR:EXPORT TARGET [-o OPTIONS]``: the process
behind one userspace NFS mount.

It resolves the server's ports (portmapper, or ``port=``/``mountport=``), gets the export's
root handle from MOUNT3, mounts FUSE on TARGET, and only then forks the serving process and
exits 0, so the caller can rely on the mount existing once the command has returned. Any
failure before that is one line on stderr and an exit status naming its kind (``EXIT_*``),
with nothing mounted. The serving process has its own session, logs to ``--log`` and exits
when TARGET is unmounted (the kernel ends the FUSE connection).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from skiff.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    SkiffError,
    Unavailable,
)
from skiff.plugins.volumes.nfs import nfs3
from skiff.plugins.volumes.nfs.fs import NfsFilesystem
from skiff.plugins.volumes.nfs.fuse import Session
from skiff.plugins.volumes.nfs.rpc import AuthSys, RpcClient

FSTYPE = "fuse.skiff-nfs"
EXIT_FAILURE, EXIT_INVALID, EXIT_NOT_FOUND, EXIT_UNAVAILABLE, EXIT_DENIED = 1, 2, 3, 4, 5
_EXIT_OF = ((InvalidArgument, EXIT_INVALID), (NotFound, EXIT_NOT_FOUND),
            (Unavailable, EXIT_UNAVAILABLE), (PermissionDenied, EXIT_DENIED))

# mount(2) flags the FUSE mount takes over from the options
_FLAGS = frozenset({"ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec",
                    "noatime", "nodiratime", "relatime", "strictatime", "sync", "async"})
# kernel NFS client tunables that do not apply to this client (TCP only, one request at a
# time, soft semantics with timeo/retrans): accepted so Docker-style option strings work
_IGNORED = frozenset({"rsize", "wsize", "hard", "soft", "intr", "nointr", "nolock", "lock",
                      "tcp", "retry", "namlen", "acregmin", "acregmax", "acdirmin",
                      "acdirmax", "noac", "cto", "nocto", "local_lock", "clientaddr",
                      "lookupcache", "fsc", "nofsc", "sharecache", "nosharecache",
                      "resvport", "noresvport", "rdirplus", "nordirplus", "mountaddr",
                      "private", "rprivate", "shared", "rshared", "slave", "rslave"})


@dataclass
class MountConfig:
    host: str
    export: str
    port: int = 0  # 0: ask the portmapper
    mountport: int = 0
    timeout: float = 10.0  # per call, seconds (timeo is in tenths)
    retries: int = 2
    cache: float = 1.0  # how long the kernel trusts attributes and names (actimeo)
    flags: list[str] = field(default_factory=list)


def _int(key: str, value: str) -> int:
    try:
        n = int(value)
    except ValueError as exc:
        raise InvalidArgument(f"nfs option {key}={value}: not a number") from exc
    if n < 0:
        raise InvalidArgument(f"nfs option {key}={value}: must not be negative")
    return n


def parse_config(source: str, options: str) -> MountConfig:
    """``source`` is ``[ADDR]:EXPORT``; ``options`` the comma-separated ``o`` of the volume."""
    host, colon, export = source.rpartition(":")
    if not colon or not export.startswith("/"):
        raise InvalidArgument(f"nfs source {source!r}: want [ADDR]:/export/path")
    cfg = MountConfig(host=host, export=export)
    for word in (w.strip() for w in options.split(",")):
        if not word:
            continue
        key, eq, value = word.partition("=")
        if key == "addr":
            cfg.host = value
        elif key == "port":
            cfg.port = _int(key, value)
        elif key == "mountport":
            cfg.mountport = _int(key, value)
        elif key == "timeo":
            cfg.timeout = max(0.1, _int(key, value) / 10)
        elif key == "retrans":
            cfg.retries = _int(key, value)
        elif key == "actimeo":
            cfg.cache = float(_int(key, value))
        elif key in ("vers", "nfsvers", "mountvers"):
            if value not in ("3", "3.0"):
                raise InvalidArgument(
                    f"nfs option {word}: this kernel has no NFS client and skiff's userspace "
                    "client speaks NFSv3 only (use vers=3 or leave it out)")
        elif key in ("proto", "mountproto"):
            if value != "tcp":
                raise InvalidArgument(f"nfs option {word}: the userspace client uses TCP only")
        elif key == "sec":
            if value != "sys":
                raise InvalidArgument(f"nfs option {word}: only sec=sys (AUTH_SYS) is "
                                      "supported by the userspace client")
        elif key in _FLAGS and not eq:
            cfg.flags.append(key)
        elif key in _IGNORED:
            pass
        else:
            raise InvalidArgument(f"nfs option {word!r} is not supported by skiff's userspace "
                                  "NFS client")
    if not cfg.host:
        raise InvalidArgument(f"nfs source {source!r}: no server address (give addr=)")
    return cfg


def connect(cfg: MountConfig) -> tuple[NfsFilesystem, int]:
    """The filesystem over the export's root, and the MOUNT port (for the goodbye UMNT)."""
    root = AuthSys(0, 0)
    nfs_port = cfg.port or nfs3.getport(cfg.host, nfs3.NFS_PROG, nfs3.NFS_VERS,
                                        timeout=cfg.timeout)
    mnt_port = cfg.mountport or nfs3.getport(cfg.host, nfs3.MOUNT_PROG, nfs3.MOUNT_VERS,
                                             timeout=cfg.timeout)
    root_fh = nfs3.mount_export(cfg.host, cfg.export, mnt_port, root, timeout=cfg.timeout)
    client = nfs3.Nfs3Client(RpcClient(cfg.host, nfs_port, nfs3.NFS_PROG, nfs3.NFS_VERS,
                                       timeout=cfg.timeout, retries=cfg.retries))
    info = client.fsinfo(root_fh, root)
    if client.getattr(root_fh, root).type != nfs3.NF3DIR:
        raise InvalidArgument(f"nfs {cfg.host}:{cfg.export}: the export is not a directory")
    return NfsFilesystem(client, root_fh, rtmax=info.rtmax, wtmax=info.wtmax), mnt_port


def _detach(log: str | None) -> None:
    """Become a daemon: own session, stdio away from the caller's pipes."""
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600) if log else null
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    for fd in {null, out}:
        if fd > 2:
            os.close(fd)


def mount(cfg: MountConfig, target: str, *, pidfile: str | None, log: str | None,
          foreground: bool = False) -> int:
    if not os.path.isdir(target):
        raise NotFound(f"nfs mount: target {target} is not a directory")
    fs, mnt_port = connect(cfg)
    wtmax = min(fs.wtmax, 128 * 1024)
    session = Session(fs, timeout=cfg.cache, max_write=wtmax)
    session.mount(f"{cfg.host}:{cfg.export}", target, fstype=FSTYPE, options=cfg.flags)
    if not foreground:
        pid = os.fork()
        if pid:  # the caller's process: the mount is up, the child answers it
            if pidfile:
                with open(pidfile, "w", encoding="ascii") as f:
                    f.write(f"{pid}\n")
            session.close()
            return 0
        _detach(log)
    try:
        session.serve()
    finally:
        session.close()
        nfs3.unmount_export(cfg.host, cfg.export, mnt_port, AuthSys(0, 0),
                            timeout=min(cfg.timeout, 2.0))
        # the pidfile stays: whoever waits for our exit removes it once we are gone (removing
        # it here would tell them we are gone while we still run)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m skiff.plugins.volumes.nfs",
                                description="mount an NFSv3 export through FUSE")
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mount", help="mount ADDR:EXPORT on TARGET and serve it")
    m.add_argument("source", help="[ADDR]:/export")
    m.add_argument("target")
    m.add_argument("-o", dest="options", default="", help="comma-separated NFS options")
    m.add_argument("--pidfile", help="where the serving process writes its pid")
    m.add_argument("--log", help="the serving process's log (errors after the mount)")
    m.add_argument("--foreground", action="store_true", help="serve without forking")
    args = p.parse_args(argv)
    try:
        cfg = parse_config(args.source, args.options)
        return mount(cfg, args.target, pidfile=args.pidfile, log=args.log,
                     foreground=args.foreground)
    except SkiffError as exc:
        print(f"skiff-nfs: {exc}", file=sys.stderr)
        for kind, code in _EXIT_OF:
            if isinstance(exc, kind):
                return code
        return EXIT_FAILURE
