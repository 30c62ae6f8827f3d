"""A container's resource usage in Docker's stats JSON (``GET /containers/{id}/stats``).

The numbers come from the container's cgroup, found from ``linux.cgroupsPath`` in its bundle's
``config.json`` (so whichever runtime made it, the daemon reads the same place), through the
runtime's cgroup readers (runc's stats shape, v1 and v2), then reshaped the way dockerd does:
v1 gives ``percpu_usage``, ``max_usage`` and ``failcnt``, v2 does not; an unlimited memory
limit is reported as the machine's memory. ``system_cpu_usage`` is /proc/stat's total and the
network counters are the container's netns's /proc/<pid>/net/dev.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from skiff.daemon.containers.manager import ContainerManager
from skiff.daemon.containers.record import ZERO_TIME, Container
from skiff.daemon.containers.top import top
from skiff.errors import Conflict, SkiffError, SystemFailure, os_error
from skiff.runtime.cgroups import V2Manager, cgroup_path_for, new_manager

_NS = 1_000_000_000
# runc's blkio keys -> Docker's
_BLKIO = {
    "ioServiceBytesRecursive": "io_service_bytes_recursive",
    "ioServicedRecursive": "io_serviced_recursive",
    "ioQueueRecursive": "io_queue_recursive",
    "ioServiceTimeRecursive": "io_service_time_recursive",
    "ioWaitTimeRecursive": "io_wait_time_recursive",
    "ioMergedRecursive": "io_merged_recursive",
    "ioTimeRecursive": "io_time_recursive",
    "sectorsRecursive": "sectors_recursive",
}
_NET_FIELDS = ("rx_bytes", "rx_packets", "rx_errors", "rx_dropped")
_NET_TX = ("tx_bytes", "tx_packets", "tx_errors", "tx_dropped")


def now_rfc3339nano() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- host and netns counters ----------------------------------------------------------------


def system_cpu_usage(proc_stat: str, clk_tck: int) -> int:
    """Host CPU time in ns: the "cpu" line of /proc/stat (its first 7 fields, as dockerd)."""
    for line in proc_stat.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            ticks = sum(int(v) for v in parts[1:8])
            return ticks * _NS // clk_tck
    raise SystemFailure("read /proc/stat: no \"cpu\" line")


def parse_net_dev(text: str) -> dict[str, dict[str, int]]:
    """/proc/net/dev -> Docker's ``networks``: eth* and lo, rx/tx bytes, packets, errors,
    drops."""
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines()[2:]:  # two header lines
        name, sep, rest = line.partition(":")
        name = name.strip()
        if not sep or not (name.startswith("eth") or name == "lo"):
            continue
        v = [int(x) for x in rest.split()]
        if len(v) < 12:
            continue
        # receive: bytes packets errs drop fifo frame compressed multicast; then transmit
        out[name] = {**dict(zip(_NET_FIELDS, (v[0], v[1], v[2], v[3]), strict=True)),
                     **dict(zip(_NET_TX, (v[8], v[9], v[10], v[11]), strict=True))}
    return out


def _machine_memory() -> int:
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError):
        return 0


# --- reshaping ------------------------------------------------------------------------------


def zero_cpu() -> dict[str, Any]:
    return {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}


def empty_stats(name: str, cid: str) -> dict[str, Any]:
    """What Docker answers for a container that is not running: zero times, zero counters."""
    return {
        "name": "/" + name, "id": cid, "read": ZERO_TIME, "preread": ZERO_TIME,
        "pids_stats": {}, "num_procs": 0, "storage_stats": {},
        "blkio_stats": {key: None for key in _BLKIO.values()},
        "cpu_stats": zero_cpu(), "precpu_stats": zero_cpu(), "memory_stats": {},
    }


def docker_stats(raw: Mapping[str, Any], *, v2: bool, system_cpu: int, online_cpus: int,
                 machine_memory: int = 0) -> dict[str, Any]:
    """runc's stats object -> Docker's pids_stats, cpu_stats, memory_stats, blkio_stats."""
    cpu, mem = raw["cpu"], raw["memory"]
    usage: dict[str, Any] = {"total_usage": cpu["usage"]["total"],
                             "usage_in_kernelmode": cpu["usage"]["kernel"],
                             "usage_in_usermode": cpu["usage"]["user"]}
    if not v2 and cpu["usage"]["percpu"]:
        usage["percpu_usage"] = list(cpu["usage"]["percpu"])
    throttling = cpu["throttling"]
    limit = mem["usage"]["limit"]
    if machine_memory and (limit == 0 or limit > machine_memory):
        limit = machine_memory  # unlimited: the machine is the limit (as dockerd reports)
    memory: dict[str, Any] = {"usage": mem["usage"]["usage"], "stats": dict(mem["raw"]),
                              "limit": limit}
    if not v2:
        memory["max_usage"] = mem["usage"]["max"]
        memory["failcnt"] = mem["usage"]["failcnt"]
    pids: dict[str, int] = {"current": raw["pids"]["current"]}
    if raw["pids"]["limit"]:
        pids["limit"] = raw["pids"]["limit"]
    return {
        "pids_stats": pids,
        "cpu_stats": {"cpu_usage": usage, "system_cpu_usage": system_cpu,
                      "online_cpus": online_cpus,
                      "throttling_data": {"periods": throttling["periods"],
                                          "throttled_periods": throttling["throttledPeriods"],
                                          "throttled_time": throttling["throttledTime"]}},
        "memory_stats": memory,
        # Go's nil slices: Docker sends null for a list the kernel did not give
        "blkio_stats": {dk: (list(raw["blkio"].get(rk) or []) or None)
                        for rk, dk in _BLKIO.items()},
        "num_procs": 0, "storage_stats": {},
    }


def with_previous(sample: dict[str, Any], previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """Fill ``precpu_stats`` and ``preread`` from the sample before (zeros for the first)."""
    if previous is None or previous.get("read") == ZERO_TIME:
        return {**sample, "precpu_stats": zero_cpu(), "preread": ZERO_TIME}
    return {**sample, "precpu_stats": previous["cpu_stats"], "preread": previous["read"]}


# --- reading a container ----------------------------------------------------------------------


def cgroup_path(bundle: str, cid: str) -> str:
    """The container's cgroup path (under each hierarchy root) from its bundle's config.json."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
    except OSError as exc:
        raise os_error("read the container's spec", path, exc) from exc
    except ValueError as exc:
        raise SystemFailure(f"read the container's spec {path}: {exc}") from exc
    linux = spec.get("linux") or {}
    return cgroup_path_for(linux.get("cgroupsPath"), cid)


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise os_error("read", path, exc) from exc


class StatsReader:
    """One sample of a running container's usage (blocking: call from a worker thread)."""

    def __init__(self, cgroup_root: str = "/sys/fs/cgroup", proc: str = "/proc",
                 cgroup_mode: str | None = None) -> None:
        self.cgroup_root = cgroup_root
        self.proc = proc
        self.cgroup_mode = cgroup_mode

    def sample(self, c: Container, bundle: str) -> dict[str, Any]:
        cg = new_manager(cgroup_path(bundle, c.id), self.cgroup_root, self.cgroup_mode)
        read = now_rfc3339nano()
        system = system_cpu_usage(_read(os.path.join(self.proc, "stat")),
                                  int(os.sysconf("SC_CLK_TCK")))
        out = docker_stats(cg.stats(), v2=isinstance(cg, V2Manager), system_cpu=system,
                           online_cpus=int(os.sysconf("SC_NPROCESSORS_ONLN")),
                           machine_memory=_machine_memory())
        out.update(name="/" + c.name, id=c.id, read=read)
        # the host's network is not the container's to report (Docker gives none either)
        if c.pid and (c.host_config.get("NetworkMode") or "") != "host":
            try:
                out["networks"] = parse_net_dev(
                    _read(os.path.join(self.proc, str(c.pid), "net", "dev")))
            except SystemFailure:
                pass  # the process exited between the checks: no network numbers
        return out


class Metrics:
    """The stats and top backend: a container's usage sample and its process table."""

    def __init__(self, manager: ContainerManager, reader: StatsReader | None = None) -> None:
        self.manager = manager
        self.reader = reader or StatsReader()

    def get(self, ref: str) -> Container:
        return self.manager.get(ref)

    def is_running(self, cid: str) -> bool:
        return self.manager.is_running(cid)

    def sample(self, c: Container) -> dict[str, Any]:
        """One sample (blocking); zeros for a container that is not running."""
        if not self.manager.is_running(c.id):
            return empty_stats(c.name, c.id)
        try:
            return self.reader.sample(c, self.manager.runner.paths.bundle(c.id))
        except SkiffError:
            if not self.manager.is_running(c.id):  # it stopped while we read
                return empty_stats(c.name, c.id)
            raise

    def top(self, c: Container, ps_args: str) -> dict[str, Any]:
        """``ps`` rows of the container's processes (blocking)."""
        if not self.manager.is_running(c.id):
            raise Conflict(f"Container {c.id} is not running")
        bundle = self.manager.runner.paths.bundle(c.id)
        cg = new_manager(cgroup_path(bundle, c.id), self.reader.cgroup_root,
                         self.reader.cgroup_mode)
        return top(cg.pids(), ps_args)
