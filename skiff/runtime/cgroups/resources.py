"""Parse and validate OCI ``linux.resources`` into typed records, before anything is written.

Validating the whole object up front means a bad value never leaves a cgroup half-configured.
``None`` everywhere means "not given": ``set()`` is also used by ``update`` with a partial
object, and only the given fields may be touched. Values keep OCI's (cgroup v1) semantics; the
v2 manager converts them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from skiff.errors import InvalidArgument, Unavailable
from skiff.runtime.records import record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PREFIX = "linux.resources"
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
UINT32_MAX = 2**32 - 1

# Files the runtime itself manages; letting `unified` write them would bypass the manager.
_RESERVED_UNIFIED = frozenset({
    "cgroup.procs", "cgroup.threads", "cgroup.subtree_control", "cgroup.kill", "cgroup.freeze",
    "cgroup.type",
})


@record(frozen=True)
class DeviceRule:
    allow: bool
    type: str          # "a", "c" or "b"
    major: int         # -1 = any
    minor: int         # -1 = any
    access: str        # non-empty subset of "rwm", canonical order

    @property
    def is_everything(self) -> bool:
        """True for the rule that covers every device with every access (``a *:* rwm``)."""
        return self.type == "a" and self.major < 0 and self.minor < 0 and self.access == "rwm"

    def v1_lines(self) -> list[str]:
        """The lines the v1 devices.allow / devices.deny files take, e.g. ``c 1:3 rw``.

        The kernel reads any ``a`` line as "reset to allow/deny everything" and ignores the
        rest of it, so a narrower ``a`` rule is spelled as one char and one block rule.
        """
        if self.is_everything:
            return ["a"]
        major = "*" if self.major < 0 else str(self.major)
        minor = "*" if self.minor < 0 else str(self.minor)
        types = ["c", "b"] if self.type == "a" else [self.type]
        return [f"{t} {major}:{minor} {self.access}" for t in types]


@record(frozen=True)
class Memory:
    limit: int | None = None
    reservation: int | None = None
    swap: int | None = None
    kernel: int | None = None
    kernel_tcp: int | None = None
    swappiness: int | None = None
    disable_oom_killer: bool | None = None
    use_hierarchy: bool | None = None
    check_before_update: bool | None = None


@record(frozen=True)
class Cpu:
    shares: int | None = None
    quota: int | None = None
    period: int | None = None
    burst: int | None = None
    realtime_runtime: int | None = None
    realtime_period: int | None = None
    cpus: str | None = None
    mems: str | None = None
    idle: int | None = None


@record(frozen=True)
class WeightDevice:
    major: int
    minor: int
    weight: int | None
    leaf_weight: int | None


@record(frozen=True)
class Throttle:
    major: int
    minor: int
    rate: int


@record(frozen=True)
class BlockIO:
    weight: int | None = None
    leaf_weight: int | None = None
    weight_device: tuple[WeightDevice, ...] = ()
    read_bps: tuple[Throttle, ...] = ()
    write_bps: tuple[Throttle, ...] = ()
    read_iops: tuple[Throttle, ...] = ()
    write_iops: tuple[Throttle, ...] = ()


@record(frozen=True)
class HugepageLimit:
    page_size: str     # as the kernel names it in file names: "2MB", "1GB", "64KB"
    limit: int


@record(frozen=True)
class Network:
    class_id: int | None = None
    priorities: tuple[tuple[str, int], ...] = ()


@record(frozen=True)
class Resources:
    memory: Memory | None = None
    cpu: Cpu | None = None
    pids_limit: int | None = None
    block_io: BlockIO | None = None
    devices: tuple[DeviceRule, ...] | None = None
    hugepages: tuple[HugepageLimit, ...] | None = None
    network: Network | None = None
    unified: dict[str, str] | None = None


def _bad(field: str, what: str, value: Any) -> InvalidArgument:
    try:
        shown = json.dumps(value)
    except (TypeError, ValueError):
        shown = repr(value)
    return InvalidArgument(f"{field}: {what}, got {shown}")


def _obj(raw: Any, field: str, keys: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise _bad(field, "must be an object", raw)
    for key in raw:
        if key not in keys:
            raise InvalidArgument(f"{field}.{key}: unknown field")
    return raw


def _int(raw: Mapping[str, Any], key: str, field: str, lo: int, hi: int = INT64_MAX) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    # bool is an int subclass in Python; JSON true is never a valid number here.
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        bound = f">= {lo}" if hi in (INT64_MAX, UINT64_MAX) else f"in {lo}..{hi}"
        raise _bad(f"{field}.{key}", f"must be an integer {bound}", value)
    return value


def _bool(raw: Mapping[str, Any], key: str, field: str) -> bool | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise _bad(f"{field}.{key}", "must be a boolean", value)
    return value


def _str(raw: Mapping[str, Any], key: str, field: str, pattern: str | None = None) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or (pattern is not None and not re.fullmatch(pattern, value)):
        what = "must be a string" if pattern is None else f"must match {pattern}"
        raise _bad(f"{field}.{key}", what, value)
    return value


def _list(raw: Mapping[str, Any], key: str, field: str) -> list[Any] | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise _bad(f"{field}.{key}", "must be an array", value)
    return value


# A cpuset list like "0-3,7"; the kernel does the range checking against the real CPUs.
_CPUSET = r"\s*|\d+(-\d+)?(,\d+(-\d+)?)*"


def _memory(raw: Any) -> Memory:
    f = f"{PREFIX}.memory"
    m = _obj(raw, f, frozenset({"limit", "reservation", "swap", "kernel", "kernelTCP",
                                "swappiness", "disableOOMKiller", "useHierarchy",
                                "checkBeforeUpdate"}))
    return Memory(
        limit=_int(m, "limit", f, -1), reservation=_int(m, "reservation", f, -1),
        swap=_int(m, "swap", f, -1), kernel=_int(m, "kernel", f, -1),
        kernel_tcp=_int(m, "kernelTCP", f, -1), swappiness=_int(m, "swappiness", f, 0, 100),
        disable_oom_killer=_bool(m, "disableOOMKiller", f),
        use_hierarchy=_bool(m, "useHierarchy", f),
        check_before_update=_bool(m, "checkBeforeUpdate", f),
    )


def _cpu(raw: Any) -> Cpu:
    f = f"{PREFIX}.cpu"
    c = _obj(raw, f, frozenset({"shares", "quota", "period", "burst", "realtimeRuntime",
                                "realtimePeriod", "cpus", "mems", "idle"}))
    return Cpu(
        shares=_int(c, "shares", f, 0, UINT64_MAX), quota=_int(c, "quota", f, -1),
        period=_int(c, "period", f, 0, UINT64_MAX), burst=_int(c, "burst", f, 0, UINT64_MAX),
        realtime_runtime=_int(c, "realtimeRuntime", f, -1),
        realtime_period=_int(c, "realtimePeriod", f, 0, UINT64_MAX),
        cpus=_str(c, "cpus", f, _CPUSET), mems=_str(c, "mems", f, _CPUSET),
        idle=_int(c, "idle", f, 0, 1),
    )


def _device_numbers(d: Mapping[str, Any], field: str) -> tuple[int, int]:
    major = _int(d, "major", field, 0)
    minor = _int(d, "minor", field, 0)
    if major is None or minor is None:
        raise InvalidArgument(f"{field}: major and minor are required")
    return major, minor


def _throttles(b: Mapping[str, Any], key: str, field: str) -> tuple[Throttle, ...]:
    out = []
    for i, item in enumerate(_list(b, key, field) or []):
        fi = f"{field}.{key}[{i}]"
        d = _obj(item, fi, frozenset({"major", "minor", "rate"}))
        major, minor = _device_numbers(d, fi)
        rate = _int(d, "rate", fi, 0, UINT64_MAX)
        if rate is None:
            raise InvalidArgument(f"{fi}.rate: required")
        out.append(Throttle(major, minor, rate))
    return tuple(out)


def _block_io(raw: Any) -> BlockIO:
    f = f"{PREFIX}.blockIO"
    b = _obj(raw, f, frozenset({"weight", "leafWeight", "weightDevice", "throttleReadBpsDevice",
                                "throttleWriteBpsDevice", "throttleReadIOPSDevice",
                                "throttleWriteIOPSDevice"}))
    weights = []
    for i, item in enumerate(_list(b, "weightDevice", f) or []):
        fi = f"{f}.weightDevice[{i}]"
        d = _obj(item, fi, frozenset({"major", "minor", "weight", "leafWeight"}))
        major, minor = _device_numbers(d, fi)
        weights.append(WeightDevice(major, minor, _weight(d, "weight", fi),
                                    _weight(d, "leafWeight", fi)))

    return BlockIO(
        weight=_weight(b, "weight", f), leaf_weight=_weight(b, "leafWeight", f),
        weight_device=tuple(weights),
        read_bps=_throttles(b, "throttleReadBpsDevice", f),
        write_bps=_throttles(b, "throttleWriteBpsDevice", f),
        read_iops=_throttles(b, "throttleReadIOPSDevice", f),
        write_iops=_throttles(b, "throttleWriteIOPSDevice", f),
    )


def _weight(d: Mapping[str, Any], key: str, field: str) -> int | None:
    # blkio weights are 10..1000; 0 is what Go-built configs send for "unset".
    value = _int(d, key, field, 0, 1000)
    if value is not None and 0 < value < 10:
        raise _bad(f"{field}.{key}", "must be 0 (unset) or in 10..1000", value)
    return value or None


def _devices(raw: Any) -> tuple[DeviceRule, ...]:
    f = f"{PREFIX}.devices"
    if not isinstance(raw, list):
        raise _bad(f, "must be an array", raw)
    rules = []
    for i, item in enumerate(raw):
        fi = f"{f}[{i}]"
        d = _obj(item, fi, frozenset({"allow", "type", "major", "minor", "access"}))
        allow = _bool(d, "allow", fi)
        if allow is None:
            raise InvalidArgument(f"{fi}.allow: required")
        dtype = _str(d, "type", fi) or "a"
        if dtype not in ("a", "c", "b"):
            raise _bad(f"{fi}.type", 'must be one of "a", "c", "b"', dtype)
        access = _str(d, "access", fi) or "rwm"
        if not access or set(access) - set("rwm"):
            raise _bad(f"{fi}.access", 'must be letters from "rwm"', access)
        major = _int(d, "major", fi, -1)
        minor = _int(d, "minor", fi, -1)
        rules.append(DeviceRule(
            allow=allow, type=dtype,
            major=-1 if major is None else major, minor=-1 if minor is None else minor,
            access="".join(c for c in "rwm" if c in access),
        ))
    return tuple(rules)


def _hugepages(raw: Any) -> tuple[HugepageLimit, ...]:
    f = f"{PREFIX}.hugepageLimits"
    if not isinstance(raw, list):
        raise _bad(f, "must be an array", raw)
    out = []
    for i, item in enumerate(raw):
        fi = f"{f}[{i}]"
        d = _obj(item, fi, frozenset({"pageSize", "limit"}))
        size = _str(d, "pageSize", fi, r"[1-9][0-9]*[KMG]B")
        limit = _int(d, "limit", fi, 0, UINT64_MAX)
        if size is None or limit is None:
            raise InvalidArgument(f"{fi}: pageSize and limit are required")
        out.append(HugepageLimit(size, limit))
    return tuple(out)


def _network(raw: Any) -> Network:
    f = f"{PREFIX}.network"
    n = _obj(raw, f, frozenset({"classID", "priorities"}))
    prios = []
    for i, item in enumerate(_list(n, "priorities", f) or []):
        fi = f"{f}.priorities[{i}]"
        d = _obj(item, fi, frozenset({"name", "priority"}))
        # The name goes into a "name prio" line: whitespace would forge another entry.
        name = _str(d, "name", fi, r"[^\s/]{1,15}")
        prio = _int(d, "priority", fi, 0, UINT32_MAX)
        if name is None or prio is None:
            raise InvalidArgument(f"{fi}: name and priority are required")
        prios.append((name, prio))
    return Network(class_id=_int(n, "classID", f, 0, UINT32_MAX), priorities=tuple(prios))


def _unified(raw: Any) -> dict[str, str]:
    f = f"{PREFIX}.unified"
    if not isinstance(raw, Mapping):
        raise _bad(f, "must be an object of strings", raw)
    out = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z0-9_]+\.[A-Za-z0-9_.]+", key):
            raise _bad(f, "keys must be cgroup file names like memory.high", key)
        if key in _RESERVED_UNIFIED:
            raise InvalidArgument(f"{f}.{key}: managed by the runtime, cannot be set")
        if not isinstance(value, str):
            raise _bad(f"{f}.{key}", "must be a string", value)
        out[key] = value
    return out


_TOP = frozenset({"memory", "cpu", "pids", "blockIO", "devices", "hugepageLimits", "network",
                  "unified", "rdma"})


def parse_resources(raw: Mapping[str, Any] | None) -> Resources:
    """Validate an OCI ``linux.resources`` object (possibly partial) into :class:`Resources`."""
    if raw is None:
        return Resources()
    r = _obj(raw, PREFIX, _TOP)
    if r.get("rdma"):
        raise Unavailable(f"{PREFIX}.rdma: the rdma controller is not supported by skiff")
    pids_limit = None
    if r.get("pids") is not None:
        p = _obj(r["pids"], f"{PREFIX}.pids", frozenset({"limit"}))
        pids_limit = _int(p, "limit", f"{PREFIX}.pids", -(2**63))
    return Resources(
        memory=_memory(r["memory"]) if r.get("memory") is not None else None,
        cpu=_cpu(r["cpu"]) if r.get("cpu") is not None else None,
        pids_limit=pids_limit,
        block_io=_block_io(r["blockIO"]) if r.get("blockIO") is not None else None,
        devices=_devices(r["devices"]) if r.get("devices") is not None else None,
        hugepages=_hugepages(r["hugepageLimits"]) if r.get("hugepageLimits") is not None else None,
        network=_network(r["network"]) if r.get("network") is not None else None,
        unified=_unified(r["unified"]) if r.get("unified") is not None else None,
    )


def effective_device_rules(rules: tuple[DeviceRule, ...]) -> tuple[bool, tuple[DeviceRule, ...]]:
    """Reduce a rule list to (default verdict, exceptions checked last-match-wins).

    This mirrors how the v1 devices controller digests the same writes: a new cgroup allows
    everything, and an ``a`` (all devices) rule resets the default and forgets every earlier
    exception. The v2 eBPF program is built from this so both versions agree.
    """
    default = True
    kept: list[DeviceRule] = []
    for rule in rules:
        if rule.is_everything:
            default = rule.allow
            kept = []
        else:
            kept.append(rule)
    return default, tuple(kept)
