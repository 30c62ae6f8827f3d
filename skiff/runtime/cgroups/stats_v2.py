"""Read cgroup v2 statistics files into runc's (v1-shaped) stats object."""

from __future__ import annotations

import os

from . import fs
from .stats import cpu_list, empty_stats, memory_entry

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

NS_PER_USEC = 1000


def _add(a: int, b: int) -> int:
    return min(a + b, fs.UINT64_MAX)


def collect_v2(d: str) -> dict[str, Any]:
    """Stats of the cgroup at ``d``; files of controllers not enabled there read as zero."""
    s = empty_stats()
    cpu = fs.keyed(fs.read_optional(d, "cpu.stat"))  # core file: present even without "cpu"
    s["cpu"]["usage"].update(total=cpu.get("usage_usec", 0) * NS_PER_USEC,
                             user=cpu.get("user_usec", 0) * NS_PER_USEC,
                             kernel=cpu.get("system_usec", 0) * NS_PER_USEC)
    s["cpu"]["throttling"] = {"periods": cpu.get("nr_periods", 0),
                              "throttledPeriods": cpu.get("nr_throttled", 0),
                              "throttledTime": cpu.get("throttled_usec", 0) * NS_PER_USEC}
    s["cpuset"] = {"cpus": cpu_list(fs.read_optional(d, "cpuset.cpus.effective")),
                   "mems": cpu_list(fs.read_optional(d, "cpuset.mems.effective"))}

    current = fs.read_optional(d, "memory.current")
    if current is not None:
        mem = s["memory"]
        raw = fs.keyed(fs.read_optional(d, "memory.stat"))
        mem["raw"] = raw
        mem["cache"] = raw.get("file", 0)
        events = fs.keyed(fs.read_optional(d, "memory.events"))
        limit = fs.to_uint(fs.read_optional(d, "memory.max"))
        usage = fs.to_uint(current)
        mem["usage"] = memory_entry(limit=limit, usage=usage,
                                    max_=fs.to_uint(fs.read_optional(d, "memory.peak")),
                                    failcnt=events.get("max", 0))
        # v1's memsw counted memory+swap; runc keeps that meaning on v2 by adding them up.
        swap_usage = fs.to_uint(fs.read_optional(d, "memory.swap.current"))
        swap_limit = fs.to_uint(fs.read_optional(d, "memory.swap.max"))
        mem["swap"] = memory_entry(limit=_add(limit, swap_limit), usage=_add(usage, swap_usage),
                                   max_=fs.to_uint(fs.read_optional(d, "memory.swap.peak")))
        mem["use_hierarchy"] = True
    pids_max = fs.read_optional(d, "pids.max")
    s["pids"] = {"current": fs.to_uint(fs.read_optional(d, "pids.current")),
                 "limit": 0 if pids_max in (None, "max") else int(pids_max or 0)}
    s["blkio"].update(_io(fs.read_optional(d, "io.stat")))
    for size in _hugepage_sizes(d):
        events = fs.keyed(fs.read_optional(d, f"hugetlb.{size}.events"))
        s["hugetlb"][size] = {
            "usage": fs.to_uint(fs.read_optional(d, f"hugetlb.{size}.current")),
            "max": fs.to_uint(fs.read_optional(d, f"hugetlb.{size}.max")),
            "failcnt": events.get("max", 0),
        }
    return s


def _hugepage_sizes(d: str) -> list[str]:
    try:
        names = os.listdir(d)
    except OSError:
        return []
    return sorted(n.split(".")[1] for n in names
                  if n.startswith("hugetlb.") and n.endswith(".current") and n.count(".") == 2)


def _io(text: str | None) -> dict[str, list[dict[str, Any]]]:
    """io.stat ``8:0 rbytes=1 wbytes=2 rios=3 wios=4 ...`` as v1-style Read/Write entries."""
    service_bytes: list[dict[str, Any]] = []
    serviced: list[dict[str, Any]] = []
    for line in (text or "").splitlines():
        parts = line.split()
        if not parts or ":" not in parts[0]:
            continue
        major, minor = (int(x) for x in parts[0].split(":", 1))
        fields = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        for key, op, out in (("rbytes", "Read", service_bytes), ("wbytes", "Write", service_bytes),
                             ("rios", "Read", serviced), ("wios", "Write", serviced)):
            if key in fields:
                out.append({"major": major, "minor": minor, "op": op, "value": int(fields[key])})
    return {"ioServiceBytesRecursive": service_bytes, "ioServicedRecursive": serviced}
