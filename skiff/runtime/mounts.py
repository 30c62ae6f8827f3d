"""Mount options: the OCI ``options`` list turned into mount(2) flags, propagation and data.

Pure parsing lives here (unit-tested without root); performing mounts is in rootfs.py.
"""

from __future__ import annotations

from skiff.errors import InvalidArgument
from skiff.runtime import syscalls as sc
from skiff.runtime.records import field, record

# option -> (clear?, flag). "clear" options turn a flag off (rw, suid, dev, exec, ...).
_FLAGS: dict[str, tuple[bool, int]] = {
    "defaults": (False, 0),
    "ro": (False, sc.MS_RDONLY),
    "rw": (True, sc.MS_RDONLY),
    "nosuid": (False, sc.MS_NOSUID),
    "suid": (True, sc.MS_NOSUID),
    "nodev": (False, sc.MS_NODEV),
    "dev": (True, sc.MS_NODEV),
    "noexec": (False, sc.MS_NOEXEC),
    "exec": (True, sc.MS_NOEXEC),
    "sync": (False, sc.MS_SYNCHRONOUS),
    "async": (True, sc.MS_SYNCHRONOUS),
    "dirsync": (False, sc.MS_DIRSYNC),
    "remount": (False, sc.MS_REMOUNT),
    "mand": (False, sc.MS_MANDLOCK),
    "nomand": (True, sc.MS_MANDLOCK),
    "atime": (True, sc.MS_NOATIME),
    "noatime": (False, sc.MS_NOATIME),
    "diratime": (True, sc.MS_NODIRATIME),
    "nodiratime": (False, sc.MS_NODIRATIME),
    "relatime": (False, sc.MS_RELATIME),
    "norelatime": (True, sc.MS_RELATIME),
    "strictatime": (False, sc.MS_STRICTATIME),
    "nostrictatime": (True, sc.MS_STRICTATIME),
    "lazytime": (False, sc.MS_LAZYTIME),
    "nolazytime": (True, sc.MS_LAZYTIME),
    "nosymfollow": (False, sc.MS_NOSYMFOLLOW),
    "symfollow": (True, sc.MS_NOSYMFOLLOW),
    "bind": (False, sc.MS_BIND),
    "rbind": (False, sc.MS_BIND | sc.MS_REC),
}

PROPAGATION: dict[str, int] = {
    "private": sc.MS_PRIVATE,
    "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED,
    "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE,
    "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE,
    "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}

# Recursive attribute options (mount_setattr(2) with AT_RECURSIVE), as runc spells them.
RECURSIVE = ("rro", "rrw", "rnosuid", "rsuid", "rnodev", "rdev", "rnoexec", "rexec",
             "rnodiratime", "rdiratime", "rrelatime", "rnorelatime", "rnoatime", "ratime",
             "rstrictatime", "rnostrictatime", "rnosymfollow", "rsymfollow")

# runc extensions we understand.
EXTENSIONS = ("tmpcopyup",)

UNSUPPORTED = ("idmap", "ridmap")

# Options every mount(2) caller treats as "no data".
ALL_OPTIONS = tuple(_FLAGS) + tuple(PROPAGATION) + RECURSIVE + EXTENSIONS


@record
class MountOptions:
    flags: int = 0
    propagation: list[int] = field(default_factory=list)
    data: list[str] = field(default_factory=list)
    recursive: list[str] = field(default_factory=list)
    extensions: list[str] = field(default_factory=list)

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & sc.MS_BIND)

    @property
    def data_string(self) -> str | None:
        return ",".join(self.data) if self.data else None


def parse_options(options: list[str] | None, where: str = "mount.options") -> MountOptions:
    out = MountOptions()
    for opt in options or []:
        if opt in _FLAGS:
            clear, flag = _FLAGS[opt]
            if clear:
                out.flags &= ~flag
            else:
                out.flags |= flag
        elif opt in PROPAGATION:
            out.propagation.append(PROPAGATION[opt])
        elif opt in RECURSIVE:
            out.recursive.append(opt)
        elif opt in EXTENSIONS:
            out.extensions.append(opt)
        elif opt in UNSUPPORTED:
            raise InvalidArgument(f"{where}: option {opt!r} (id-mapped mounts) is not supported")
        elif not opt or opt.startswith(",") or "\x00" in opt:
            raise InvalidArgument(f"{where}: invalid option {opt!r}")
        else:
            # Anything else is filesystem data (mode=755, size=64m, lowerdir=...), passed as is:
            # the kernel is the authority on which keys a filesystem accepts.
            out.data.append(opt)
    return out


def mount_type(m: dict[str, object]) -> str:
    """The mount's type, treating a missing type with bind options as a bind mount."""
    t = m.get("type")
    opts = m.get("options") or []
    assert isinstance(opts, list)
    if (not t or t == "none") and ("bind" in opts or "rbind" in opts):
        return "bind"
    return str(t or "")


# Attributes for mount_setattr(2).
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_NOSYMFOLLOW = 0x200000


def recursive_attrs(opts: list[str]) -> tuple[int, int]:
    """(attr_set, attr_clr) for mount_setattr from runc's r* options."""
    table = {
        "ro": MOUNT_ATTR_RDONLY, "nosuid": MOUNT_ATTR_NOSUID, "nodev": MOUNT_ATTR_NODEV,
        "noexec": MOUNT_ATTR_NOEXEC, "nodiratime": MOUNT_ATTR_NODIRATIME,
        "nosymfollow": MOUNT_ATTR_NOSYMFOLLOW,
    }
    inverse = {"rw": "ro", "suid": "nosuid", "dev": "nodev", "exec": "noexec",
               "diratime": "nodiratime", "symfollow": "nosymfollow"}
    attr_set = attr_clr = 0
    for opt in opts:
        name = opt[1:]
        if name in table:
            attr_set |= table[name]
        elif name in inverse:
            attr_clr |= table[inverse[name]]
        elif name in ("relatime", "noatime", "strictatime"):
            attr_clr |= MOUNT_ATTR__ATIME
            attr_set |= {"relatime": MOUNT_ATTR_RELATIME, "noatime": MOUNT_ATTR_NOATIME,
                         "strictatime": MOUNT_ATTR_STRICTATIME}[name]
        elif name in ("norelatime", "atime", "nostrictatime"):
            attr_clr |= MOUNT_ATTR__ATIME
    return attr_set, attr_clr
