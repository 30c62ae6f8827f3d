"""The shape of runc's ``events --stats`` data object (runc's types.Stats), shared by v1 and v2.

Every key is always present (zeros and empty lists rather than Go's omitempty gaps) so that
callers can index without guessing which kernel produced the numbers.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

BLKIO_KEYS = ("ioServiceBytesRecursive", "ioServicedRecursive", "ioQueueRecursive",
              "ioServiceTimeRecursive", "ioWaitTimeRecursive", "ioMergedRecursive",
              "ioTimeRecursive", "sectorsRecursive")


def memory_entry(limit: int = 0, usage: int = 0, max_: int = 0, failcnt: int = 0) -> dict[str, int]:
    return {"limit": limit, "usage": usage, "max": max_, "failcnt": failcnt}


def empty_stats() -> dict[str, Any]:
    return {
        "cpu": {
            "usage": {"total": 0, "percpu": [], "percpu_kernel": [], "percpu_user": [],
                      "kernel": 0, "user": 0},
            "throttling": {"periods": 0, "throttledPeriods": 0, "throttledTime": 0},
        },
        "cpuset": {"cpus": [], "mems": []},
        "memory": {
            "cache": 0, "usage": memory_entry(), "swap": memory_entry(),
            "kernel": memory_entry(), "kernelTCP": memory_entry(), "raw": {},
            "use_hierarchy": False,
        },
        "pids": {"current": 0, "limit": 0},
        "blkio": {key: [] for key in BLKIO_KEYS},
        "hugetlb": {},
    }


def blkio_entries(text: str | None) -> list[dict[str, Any]]:
    """v1 blkio recursive files: ``8:0 Read 4096`` lines (``Total N`` lines dropped)."""
    out: list[dict[str, Any]] = []
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) < 2 or ":" not in parts[0]:
            continue
        major, minor = (int(x) for x in parts[0].split(":", 1))
        if len(parts) == 3:
            out.append({"major": major, "minor": minor, "op": parts[1], "value": int(parts[2])})
        else:  # blkio.time / blkio.sectors: no op column
            out.append({"major": major, "minor": minor, "op": "", "value": int(parts[1])})
    return out


def cpu_list(text: str | None) -> list[int]:
    """Expand a cpuset list ("0-2,5") to [0, 1, 2, 5]."""
    out: list[int] = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out
