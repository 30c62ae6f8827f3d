"""Linux capabilities of the container process: validation, masks, and applying them.

The container init calls, in this order (runc's order)::

    drop_bounding(caps)            # while still root with CAP_SETPCAP
    prctl(PR_SET_KEEPCAPS, 1)      # so setuid() below does not wipe the permitted set
    <set groups, gid, uid>
    prctl(PR_SET_KEEPCAPS, 0)
    apply(caps)                    # effective/permitted/inheritable, then ambient

A missing ``process.capabilities`` (``None``) changes nothing, exactly like runc: the process
keeps what the init has (all of root's capabilities for uid 0; for another uid the kernel's
setuid rules already emptied the effective set, and execve empties the rest).
"""

from __future__ import annotations

import json

from skiff.errors import InvalidArgument, SystemFailure, os_error
from skiff.runtime import syscalls

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

# Where warnings go. Not stderr: in the container's init, stderr is the container's own.
# The CLI points this at its --log file.
def _drop(_msg: str) -> None:
    pass


on_warning: Callable[[str], None] = _drop

# capability(7) numbers; the kernel never renumbers them. Names above last_cap() of the running
# kernel are valid in a spec but cannot be granted here (mask() leaves them out).
CAPABILITIES: dict[str, int] = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_IPC_LOCK": 14,
    "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16,
    "CAP_SYS_RAWIO": 17,
    "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_BOOT": 22,
    "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24,
    "CAP_SYS_TIME": 25,
    "CAP_SYS_TTY_CONFIG": 26,
    "CAP_MKNOD": 27,
    "CAP_LEASE": 28,
    "CAP_AUDIT_WRITE": 29,
    "CAP_AUDIT_CONTROL": 30,
    "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33,
    "CAP_SYSLOG": 34,
    "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36,
    "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}

SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")

_LAST_CAP_PATH = "/proc/sys/kernel/cap_last_cap"
_last_cap: int | None = None


def last_cap() -> int:
    """The highest capability number the running kernel knows (read once per process)."""
    global _last_cap
    if _last_cap is None:
        try:
            with open(_LAST_CAP_PATH, "rb") as f:
                _last_cap = int(f.read().strip())
        except FileNotFoundError:
            # Kernels before 3.2 lack the file; they stop at CAP_BLOCK_SUSPEND at most, and
            # CAP_WAKE_ALARM is a safe floor for anything that can run containers.
            _last_cap = CAPABILITIES["CAP_WAKE_ALARM"]
        except (OSError, ValueError) as exc:
            raise SystemFailure(f"read {_LAST_CAP_PATH}: {exc}") from exc
    return _last_cap


def validate(caps: object, where: str = "process.capabilities") -> None:
    """Check the shape and the names of a ``process.capabilities`` object.

    ``None`` is allowed (no capabilities object). Unknown names are errors here, even though
    runc only warns, because a typo in a capability name silently grants or withholds power.
    """
    if caps is None:
        return
    if not isinstance(caps, dict):
        raise InvalidArgument(f"{where}: must be an object, got {type(caps).__name__}")
    for key, names in caps.items():
        w = f"{where}.{key}"
        if key not in SETS:
            raise InvalidArgument(f"{where}: unknown capability set {_json(key)} "
                                  f"(known: {', '.join(SETS)})")
        if names is None:
            continue
        if not isinstance(names, list):
            raise InvalidArgument(f"{w}: must be a list of capability names, "
                                  f"got {type(names).__name__}")
        for i, name in enumerate(names):
            if not isinstance(name, str):
                raise InvalidArgument(f"{w}[{i}]: must be a string, got {_json(name)}")
            if name not in CAPABILITIES:
                raise InvalidArgument(f"{w}: unknown capability {json.dumps(name)}")


def _json(v: object) -> str:
    try:
        return json.dumps(v)
    except (TypeError, ValueError):
        return repr(v)


def mask(names: list[str]) -> int:
    """The bit mask of ``names``; names the running kernel does not have are left out.

    runc does the same (with a warning) so that one spec runs on old and new kernels alike.
    """
    top = last_cap()
    bits = 0
    skipped = []
    for name in names:
        num = CAPABILITIES.get(name)
        if num is None:
            raise InvalidArgument(f"unknown capability {json.dumps(name)}")
        if num > top:
            skipped.append(name)
            continue
        bits |= 1 << num
    if skipped:
        on_warning(f"ignoring capabilities this kernel lacks: {', '.join(skipped)}")
    return bits


def _set(caps: dict[str, list[str]], name: str) -> list[str]:
    return caps.get(name) or []


def drop_bounding(caps: dict[str, list[str]] | None) -> None:
    """Drop from the bounding set every capability not listed in ``caps["bounding"]``.

    Must run while the process still has CAP_SETPCAP (before the user switch). The bounding
    set can only shrink, so this is what finally caps what any later execve can regain.
    """
    if caps is None:
        return
    keep = mask(_set(caps, "bounding"))
    for num in range(last_cap() + 1):
        if keep & (1 << num):
            continue
        try:
            syscalls.prctl(syscalls.PR_CAPBSET_DROP, num)
        except OSError as exc:
            raise os_error("drop from the bounding set capability", _name(num), exc) from exc


def apply(caps: dict[str, list[str]] | None) -> None:
    """Set the effective, permitted and inheritable sets, then raise the ambient ones.

    Runs after the user switch (with keep-caps set across it, so permitted survived).

    Capabilities the runtime itself does not hold (a nested or restricted host) are left out
    with a warning rather than failing the start, as runc has done: the kernel would refuse
    them anyway, and granting less than asked never widens what the container may do.

    Ambient capabilities are cleared and then raised one by one; a raise the kernel refuses
    (the cap is not in both permitted and inheritable) is logged and skipped, as runc does,
    because specs in the wild list ambient caps they do not grant elsewhere.
    """
    if caps is None:
        return
    try:
        _, held, held_inh = syscalls.capget()
    except OSError as exc:
        raise os_error("capget", "the container process", exc) from exc
    effective = mask(_set(caps, "effective"))
    permitted = mask(_set(caps, "permitted"))
    inheritable = mask(_set(caps, "inheritable"))
    missing = (effective | permitted) & ~held | inheritable & ~(held | held_inh)
    if missing:
        names = ", ".join(_name(n) for n in range(64) if missing & (1 << n))
        on_warning(f"the runtime lacks these capabilities, so the container will too: {names}")
        effective &= held
        permitted &= held
        inheritable &= held | held_inh
    try:
        syscalls.capset(effective, permitted, inheritable)
    except OSError as exc:
        raise os_error("capset", f"effective={effective:#x} permitted={permitted:#x} "
                       f"inheritable={inheritable:#x}", exc) from exc
    try:
        syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError as exc:
        raise os_error("clear ambient capabilities of", "the container process", exc) from exc
    top = last_cap()
    for name in _set(caps, "ambient"):
        num = CAPABILITIES[name]
        if num > top:
            continue
        try:
            syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_RAISE, num)
        except OSError as exc:
            on_warning(f"cannot raise ambient capability {name}: {exc.strerror} (it must also "
                       "be permitted and inheritable)")


def _name(num: int) -> str:
    for name, n in CAPABILITIES.items():
        if n == num:
            return name
    return f"capability {num}"
