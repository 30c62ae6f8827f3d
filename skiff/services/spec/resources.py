"""linux.resources, linux.devices, rlimits and sysctls from HostConfig, with dockerd's checks.

Limits Docker leaves unset stay out of the spec; the few it always writes (cpu shares,
blkio weight, disableOOMKiller) are written as 0/false the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from skiff.errors import InvalidArgument

from .fields import integer, objects, strings
from .inputs import DeviceNode, HostDevice

MIN_MEMORY = 6 * 1024 * 1024  # dockerd's floor for limits and reservations
_CFS_PERIOD = 100_000  # 100ms, the kernel's default period Docker uses for --cpus

# The devices every container may use: moby's default cgroup allow list.
_DEFAULT_DEVICE_RULES: tuple[tuple[bool, str | None, int | None, int | None], ...] = (
    (False, None, None, None),
    (True, "c", 1, 5), (True, "c", 1, 3), (True, "c", 1, 9), (True, "c", 1, 8),
    (True, "c", 5, 0), (True, "c", 5, 1),
    (False, "c", 10, 229),  # /dev/fuse: explicitly denied
)

_RLIMITS = frozenset({"as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue",
                      "nice", "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending",
                      "stack"})
_CPUSET = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*\Z")
_RULE = re.compile(r"([acb]) ([0-9]+|\*):([0-9]+|\*) ([rwm]{1,3})\Z")


def _int(hc: Mapping[str, Any], key: str) -> int:
    return integer(hc.get(key), key)


def _check_memory(hc: Mapping[str, Any]) -> None:
    memory, swap = _int(hc, "Memory"), _int(hc, "MemorySwap")
    reservation = _int(hc, "MemoryReservation")
    if memory != 0 and memory < MIN_MEMORY:
        raise InvalidArgument("Minimum memory limit allowed is 6MB")
    if swap > 0 and memory == 0:
        raise InvalidArgument("You should always set the Memory limit when using "
                              "Memoryswap limit, see usage")
    if memory > 0 and swap > 0 and swap < memory:
        raise InvalidArgument("Minimum memoryswap limit should be larger than memory limit, "
                              "see usage")
    if reservation != 0 and reservation < MIN_MEMORY:
        raise InvalidArgument("Minimum memory reservation allowed is 6MB")
    if memory > 0 and reservation > 0 and memory < reservation:
        raise InvalidArgument("Minimum memory limit can not be less than memory reservation "
                              "limit, see usage")
    swappiness = hc.get("MemorySwappiness")
    if swappiness is not None and swappiness != -1 and not (
            isinstance(swappiness, int) and not isinstance(swappiness, bool)
            and 0 <= swappiness <= 100):
        raise InvalidArgument(f"Invalid value: {swappiness}, valid memory swappiness range "
                              "is 0-100")


def memory(hc: Mapping[str, Any]) -> dict[str, Any]:
    _check_memory(hc)
    out: dict[str, Any] = {}
    for key, name in (("Memory", "limit"), ("MemoryReservation", "reservation"),
                      ("MemorySwap", "swap")):
        # MemorySwap -1 (unlimited) is the absence of a swap limit.
        if _int(hc, key) > 0:
            out[name] = _int(hc, key)
    swappiness = hc.get("MemorySwappiness")
    if swappiness is not None and swappiness != -1:
        out["swappiness"] = swappiness
    out["disableOOMKiller"] = bool(hc.get("OomKillDisable"))
    return out


def cpu(hc: Mapping[str, Any], ncpu: int | None) -> dict[str, Any]:
    nano, period, quota = _int(hc, "NanoCpus"), _int(hc, "CpuPeriod"), _int(hc, "CpuQuota")
    shares = _int(hc, "CpuShares")
    if shares < 0:
        raise InvalidArgument("invalid CpuShares: shares can not be negative")
    if nano > 0 and period > 0:
        raise InvalidArgument("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    if nano > 0 and quota > 0:
        raise InvalidArgument("Conflicting options: Nano CPUs and CPU Quota cannot both be set")
    if nano < 0 and ncpu is None:
        raise InvalidArgument("invalid NanoCpus: the number of CPUs can not be negative")
    if ncpu is not None and not 0 <= nano <= ncpu * 10**9:
        raise InvalidArgument(f"Range of CPUs is from 0.01 to {ncpu}.00, as there are only "
                              f"{ncpu} CPUs available")
    if period != 0 and not 1000 <= period <= 1_000_000:
        raise InvalidArgument("CPU cfs period can not be less than 1ms (i.e. 1000) or larger "
                              "than 1s (i.e. 1000000)")
    if quota > 0 and quota < 1000:
        raise InvalidArgument("CPU cfs quota can not be less than 1ms (i.e. 1000)")
    out: dict[str, Any] = {"shares": shares}
    if nano > 0:
        out["quota"] = nano * _CFS_PERIOD // 10**9
        out["period"] = _CFS_PERIOD
    if quota != 0:
        out["quota"] = quota
    if period != 0:
        out["period"] = period
    if _int(hc, "CpuRealtimeRuntime"):
        out["realtimeRuntime"] = _int(hc, "CpuRealtimeRuntime")
    if _int(hc, "CpuRealtimePeriod"):
        out["realtimePeriod"] = _int(hc, "CpuRealtimePeriod")
    for key, name in (("CpusetCpus", "cpus"), ("CpusetMems", "mems")):
        value = hc.get(key) or ""
        if value:
            if not isinstance(value, str) or not _CPUSET.match(value):
                raise InvalidArgument(f"Invalid value {value} for cpuset "
                                      f"{'cpus' if name == 'cpus' else 'mems'}")
            out[name] = value
    return out


def _node(nodes: Mapping[str, DeviceNode], path: object, what: str) -> DeviceNode:
    if not isinstance(path, str) or path not in nodes:
        raise InvalidArgument(f"error gathering device information while adding {what} "
                              f'"{path}": no such file or directory')
    return nodes[path]


def block_io(hc: Mapping[str, Any], nodes: Mapping[str, DeviceNode]) -> dict[str, Any]:
    weight = _int(hc, "BlkioWeight")
    if weight > 0 and not 10 <= weight <= 1000:
        raise InvalidArgument("Range of blkio weight is from 10 to 1000")
    out: dict[str, Any] = {"weight": weight}
    weights = []
    for entry in objects(hc.get("BlkioWeightDevice"), "BlkioWeightDevice"):
        node = _node(nodes, entry.get("Path"), "blkio weight device")
        w = entry.get("Weight")
        if not isinstance(w, int) or not 10 <= w <= 1000:
            raise InvalidArgument("Range of blkio weight is from 10 to 1000")
        weights.append({"major": node.major, "minor": node.minor, "weight": w})
    if weights:
        out["weightDevice"] = weights
    for key, name in (("BlkioDeviceReadBps", "throttleReadBpsDevice"),
                      ("BlkioDeviceWriteBps", "throttleWriteBpsDevice"),
                      ("BlkioDeviceReadIOps", "throttleReadIOPSDevice"),
                      ("BlkioDeviceWriteIOps", "throttleWriteIOPSDevice")):
        rates = []
        for entry in objects(hc.get(key), key):
            node = _node(nodes, entry.get("Path"), "throttle device")
            rate = entry.get("Rate")
            if not isinstance(rate, int) or rate < 0:
                raise InvalidArgument(f"invalid {key} rate {rate!r} for {entry.get('Path')}")
            rates.append({"major": node.major, "minor": node.minor, "rate": rate})
        if rates:
            out[name] = rates
    return out


def _rule(allow: bool, dtype: str | None, major: int | None, minor: int | None,
          access: str) -> dict[str, Any]:
    rule: dict[str, Any] = {"allow": allow}
    if dtype is not None:
        rule["type"] = dtype
    if major is not None:
        rule["major"] = major
    if minor is not None:
        rule["minor"] = minor
    rule["access"] = access
    return rule


def parse_device_rule(text: str) -> dict[str, Any]:
    """``c 42:* rmw`` -> an allow rule; ``*`` is -1, as Docker writes it."""
    m = _RULE.match(text.strip())
    if m is None:
        raise InvalidArgument(f"invalid device cgroup rule format: '{text}'")
    major = -1 if m.group(2) == "*" else int(m.group(2))
    minor = -1 if m.group(3) == "*" else int(m.group(3))
    return _rule(True, m.group(1), major, minor, m.group(4))


def devices(hc: Mapping[str, Any], nodes: Mapping[str, DeviceNode], privileged: bool,
            host_devices: Sequence[HostDevice]) -> tuple[list[dict[str, Any]],
                                                         list[dict[str, Any]]]:
    """(linux.devices, linux.resources.devices)."""
    if privileged:
        created = [_device(d.path, d.node) for d in host_devices]
        return created, [{"allow": True, "access": "rwm"}]
    rules = [_rule(a, t, ma, mi, "rwm") for a, t, ma, mi in _DEFAULT_DEVICE_RULES]
    created = []
    for entry in objects(hc.get("Devices"), "Devices"):
        host = entry.get("PathOnHost")
        inside = entry.get("PathInContainer") or host
        perms = entry.get("CgroupPermissions") or "rwm"
        if not isinstance(perms, str) or not perms or any(c not in "rwm" for c in perms):
            raise InvalidArgument(f"invalid device mode: {perms}")
        if not isinstance(inside, str) or not inside.startswith("/"):
            raise InvalidArgument(f"invalid device path in container: {inside}")
        node = _node(nodes, host, "custom device")
        created.append(_device(inside, node))
        rules.append(_rule(True, node.type, node.major, node.minor, perms))
    for text in strings(hc.get("DeviceCgroupRules"), "DeviceCgroupRules"):
        rules.append(parse_device_rule(text))
    return created, rules


def _device(path: str, node: DeviceNode) -> dict[str, Any]:
    return {"path": path, "type": node.type, "major": node.major, "minor": node.minor,
            "fileMode": node.file_mode, "uid": node.uid, "gid": node.gid}


def pids(hc: Mapping[str, Any]) -> dict[str, int] | None:
    limit = hc.get("PidsLimit")
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise InvalidArgument("invalid PidsLimit: must be an integer")
    # 0 and negatives mean unlimited; -1 is how runtimes are told to lift a limit.
    return {"limit": limit if limit > 0 else -1}


def rlimits(hc: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for u in objects(hc.get("Ulimits"), "Ulimits"):
        name, soft, hard = u.get("Name"), u.get("Soft"), u.get("Hard")
        if not isinstance(name, str) or name not in _RLIMITS:
            raise InvalidArgument(f"invalid ulimit type: {name}")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (soft, hard)):
            raise InvalidArgument(f"invalid ulimit {name}: Soft and Hard must be integers")
        soft, hard = integer(soft, "Soft"), integer(hard, "Hard")
        if soft > hard:
            raise InvalidArgument(f"ulimit soft limit must be less than or equal to hard "
                                  f"limit: {soft} > {hard}")
        out.append({"type": f"RLIMIT_{name.upper()}", "hard": hard, "soft": soft})
    return out


def oom_score_adj(hc: Mapping[str, Any]) -> int:
    value = _int(hc, "OomScoreAdj")
    if not -1000 <= value <= 1000:
        raise InvalidArgument(f"Invalid value {value}, range for oom score adj is "
                              "[-1000, 1000]")
    return value
