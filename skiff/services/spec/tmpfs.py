"""tmpfs options the way Docker merges them (moby/sys/mount MergeTmpfsOptions).

Defaults ``noexec,nosuid,nodev,rprivate`` come first and the user's options after; walking
from the end, the last word for each flag (``exec`` vs ``noexec``, one propagation mode) and
for each ``key=value`` wins, so ``--tmpfs /x:exec`` drops the default ``noexec``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from skiff.errors import InvalidArgument

DEFAULTS = ("noexec", "nosuid", "nodev", "rprivate")

# Flag word -> the kernel flag it sets or clears (words sharing a key collide).
_FLAGS: dict[str, str] = {
    "ro": "rdonly", "rw": "rdonly", "suid": "nosuid", "nosuid": "nosuid", "dev": "nodev",
    "nodev": "nodev", "exec": "noexec", "noexec": "noexec", "sync": "sync", "async": "sync",
    "dirsync": "dirsync", "remount": "remount", "mand": "mand", "nomand": "mand",
    "atime": "noatime", "noatime": "noatime", "diratime": "nodiratime",
    "nodiratime": "nodiratime", "bind": "bind", "rbind": "rbind", "relatime": "relatime",
    "norelatime": "relatime", "strictatime": "strictatime", "nostrictatime": "strictatime",
}
_PROPAGATION = frozenset({"private", "rprivate", "shared", "rshared", "slave", "rslave",
                          "unbindable", "runbindable"})
_DATA_KEYS = frozenset({"size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "mpol"})


def merge_options(options: list[str]) -> list[str]:
    seen_flags: set[str] = set()
    seen_data: set[str] = set()
    out: list[str] = []
    for option in reversed(options):
        if option == "defaults":
            continue
        if option in _PROPAGATION or option in _FLAGS:
            key = "propagation" if option in _PROPAGATION else _FLAGS[option]
            if key not in seen_flags:
                seen_flags.add(key)
                out.insert(0, option)
            continue
        name, eq, _ = option.partition("=")
        if not eq or name not in _DATA_KEYS:
            raise InvalidArgument(f'invalid tmpfs option "{option}"')
        if name not in seen_data:
            seen_data.add(name)
            out.insert(0, option)
    return out


def tmpfs_options(data: str) -> list[str]:
    """``--tmpfs /dst:<data>`` -> the options Docker writes in the spec."""
    user = [o for o in data.split(",") if o] if data else []
    return merge_options([*DEFAULTS, *user])


def size_option(size: int) -> str:
    """Docker prints a tmpfs size with the largest suffix that divides it."""
    for suffix, div in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if size % div == 0:
            return f"size={size // div}{suffix}"
    return f"size={size}"


def mount_api_data(mount: Mapping[str, Any]) -> str:
    """HostConfig.Mounts entry of Type tmpfs -> the option string (moby ConvertTmpfsOptions)."""
    target = mount.get("Target")
    if mount.get("Source"):
        raise InvalidArgument('invalid mount config for type "tmpfs": '
                              "field Source must not be specified")
    if mount.get("BindOptions") or mount.get("VolumeOptions"):
        raise InvalidArgument('invalid mount config for type "tmpfs": '
                              "only TmpfsOptions may be given")
    opts: list[str] = []
    if mount.get("ReadOnly"):
        opts.append("ro")
    tmpfs = mount.get("TmpfsOptions") or {}
    if not isinstance(tmpfs, Mapping):
        raise InvalidArgument(f"invalid mount config for {target}: TmpfsOptions must be "
                              "an object")
    mode, size = tmpfs.get("Mode") or 0, tmpfs.get("SizeBytes") or 0
    if not isinstance(mode, int) or not isinstance(size, int) or size < 0 or mode < 0:
        raise InvalidArgument(f'invalid mount config for type "tmpfs": invalid '
                              f"TmpfsOptions {dict(tmpfs)!r}")
    if mode:
        opts.append(f"mode={mode & 0o7777:o}")
    if size:
        opts.append(size_option(size))
    return ",".join(opts)
