"""Read cgroup v1 statistics files into runc's stats shape."""

from __future__ import annotations

import os

from . import fs
from .stats import blkio_entries, cpu_list, empty_stats, memory_entry

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

NS_PER_SEC = 1_000_000_000


def _ints(text: str | None) -> list[int]:
    return [int(x) for x in (text or "").split()]


def _entry(d: str, prefix: str) -> dict[str, int]:
    return memory_entry(
        limit=fs.to_uint(fs.read_optional(d, f"{prefix}.limit_in_bytes")),
        usage=fs.to_uint(fs.read_optional(d, f"{prefix}.usage_in_bytes")),
        max_=fs.to_uint(fs.read_optional(d, f"{prefix}.max_usage_in_bytes")),
        failcnt=fs.to_uint(fs.read_optional(d, f"{prefix}.failcnt")),
    )


def collect_v1(dirs: dict[str, str]) -> dict[str, Any]:
    """Stats from the container's directory in each hierarchy (controller -> dir)."""
    s = empty_stats()
    if "cpuacct" in dirs:
        d = dirs["cpuacct"]
        usage = s["cpu"]["usage"]
        usage["total"] = fs.to_uint(fs.read_optional(d, "cpuacct.usage"))
        usage["percpu"] = _ints(fs.read_optional(d, "cpuacct.usage_percpu"))
        usage["percpu_kernel"] = _ints(fs.read_optional(d, "cpuacct.usage_percpu_sys"))
        usage["percpu_user"] = _ints(fs.read_optional(d, "cpuacct.usage_percpu_user"))
        # cpuacct.stat counts USER_HZ ticks; runc reports nanoseconds.
        ticks = fs.keyed(fs.read_optional(d, "cpuacct.stat"))
        hz = os.sysconf("SC_CLK_TCK")
        usage["user"] = ticks.get("user", 0) * NS_PER_SEC // hz
        usage["kernel"] = ticks.get("system", 0) * NS_PER_SEC // hz
    if "cpu" in dirs:
        st = fs.keyed(fs.read_optional(dirs["cpu"], "cpu.stat"))
        s["cpu"]["throttling"] = {"periods": st.get("nr_periods", 0),
                                  "throttledPeriods": st.get("nr_throttled", 0),
                                  "throttledTime": st.get("throttled_time", 0)}
    if "cpuset" in dirs:
        s["cpuset"] = {"cpus": cpu_list(fs.read_optional(dirs["cpuset"], "cpuset.cpus")),
                       "mems": cpu_list(fs.read_optional(dirs["cpuset"], "cpuset.mems"))}
    if "memory" in dirs:
        d = dirs["memory"]
        mem = s["memory"]
        raw = fs.keyed(fs.read_optional(d, "memory.stat"))
        mem["raw"] = raw
        mem["cache"] = raw.get("cache", 0)
        mem["usage"] = _entry(d, "memory")
        mem["swap"] = _entry(d, "memory.memsw")
        mem["kernel"] = _entry(d, "memory.kmem")
        mem["kernelTCP"] = _entry(d, "memory.kmem.tcp")
        mem["use_hierarchy"] = fs.read_optional(d, "memory.use_hierarchy") == "1"
    if "pids" in dirs:
        d = dirs["pids"]
        s["pids"] = {"current": fs.to_uint(fs.read_optional(d, "pids.current")),
                     "limit": _pids_limit(fs.read_optional(d, "pids.max"))}
    if "blkio" in dirs:
        s["blkio"].update(_blkio(dirs["blkio"]))
    if "hugetlb" in dirs:
        d = dirs["hugetlb"]
        for size in _hugepage_sizes(d, ".limit_in_bytes"):
            s["hugetlb"][size] = {
                "usage": fs.to_uint(fs.read_optional(d, f"hugetlb.{size}.usage_in_bytes")),
                "max": fs.to_uint(fs.read_optional(d, f"hugetlb.{size}.max_usage_in_bytes")),
                "failcnt": fs.to_uint(fs.read_optional(d, f"hugetlb.{size}.failcnt")),
            }
    return s


def _pids_limit(text: str | None) -> int:
    # runc reports an unlimited pids.max as 0, not as a huge number.
    return 0 if text in (None, "", "max") else int(text or 0)


def _hugepage_sizes(d: str, suffix: str) -> list[str]:
    try:
        names = os.listdir(d)
    except OSError:
        return []
    return sorted(n[len("hugetlb."):-len(suffix)] for n in names
                  if n.startswith("hugetlb.") and n.endswith(suffix) and n.count(".") == 2)


def _blkio(d: str) -> dict[str, list[dict[str, Any]]]:
    # CFQ files when the kernel still has them, else BFQ's, else the throttle layer's, which
    # every kernel has (the order runc uses).
    for prefix in ("blkio.", "blkio.bfq."):
        if fs.has(d, prefix + "io_service_bytes_recursive"):
            out = {
                "ioServiceBytesRecursive": prefix + "io_service_bytes_recursive",
                "ioServicedRecursive": prefix + "io_serviced_recursive",
                "ioQueueRecursive": prefix + "io_queued_recursive",
                "ioServiceTimeRecursive": prefix + "io_service_time_recursive",
                "ioWaitTimeRecursive": prefix + "io_wait_time_recursive",
                "ioMergedRecursive": prefix + "io_merged_recursive",
                "ioTimeRecursive": prefix + "time_recursive",
                "sectorsRecursive": prefix + "sectors_recursive",
            }
            return {k: blkio_entries(fs.read_optional(d, f)) for k, f in out.items()}
    return {
        "ioServiceBytesRecursive": blkio_entries(
            fs.read_optional(d, "blkio.throttle.io_service_bytes_recursive")),
        "ioServicedRecursive": blkio_entries(
            fs.read_optional(d, "blkio.throttle.io_serviced_recursive")),
    }
