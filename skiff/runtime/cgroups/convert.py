"""OCI values (cgroup v1 semantics) to cgroup v2 file values, with the formulas runc uses."""

from __future__ import annotations

from skiff.errors import InvalidArgument

from .resources import PREFIX


def shares_to_weight(shares: int) -> int:
    """cpu.shares (2..262144) to cpu.weight (1..10000), linearly; 0 stays "unset" (0)."""
    if shares == 0:
        return 0
    shares = min(max(shares, 2), 262144)
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_to_io_weight(weight: int) -> int:
    """blkio.weight (10..1000) to io.weight (1..10000); 0 stays "unset" (0)."""
    if weight == 0:
        return 0
    return 1 + ((weight - 10) * 9999) // 990


def limit(value: int) -> str:
    """A v1-style limit where -1 means unlimited, as a v2 file value."""
    return "max" if value < 0 else str(value)


def swap_max(swap: int, memory_limit: int | None) -> str | None:
    """OCI memory.swap (memory+swap, v1 memsw) to memory.swap.max (swap alone).

    ``memory_limit`` is the memory limit in force after this update, -1 if unlimited.
    None means "do not write".
    """
    if swap == -1:
        return "max"
    if swap == 0:
        return None  # Go-built configs send 0 for "unset": leave memory.swap.max alone
    if memory_limit is None or memory_limit < 0:
        raise InvalidArgument(f"{PREFIX}.memory.swap: a swap limit ({swap}) needs a memory "
                              "limit on cgroup v2")
    if swap < memory_limit:
        raise InvalidArgument(f"{PREFIX}.memory.swap: memory+swap limit ({swap}) must be >= "
                              f"the memory limit ({memory_limit})")
    return str(swap - memory_limit)


def cpu_max(quota: int | None, period: int | None, current: str) -> str:
    """The cpu.max line after changing quota and/or period, keeping what was not given."""
    parts = current.split()
    cur_quota = parts[0] if parts else "max"
    cur_period = parts[1] if len(parts) > 1 else "100000"
    q = cur_quota if quota is None else ("max" if quota < 0 else str(quota))
    p = cur_period if period is None else str(period)
    return f"{q} {p}"
