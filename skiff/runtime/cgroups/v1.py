"""The cgroup v1 manager: one directory per hierarchy (plus the unified one in hybrid mode)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping

from skiff.errors import InvalidArgument, SystemFailure, Unavailable, os_error

from . import fs
from .join import CgroupJoin, open_join
from .resources import PREFIX, BlockIO, Cpu, Memory, Network, Resources, parse_resources
from .stats_v1 import collect_v1

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# What the name=systemd hierarchy is called in paths(), as runc records it in state.json.
SYSTEMD = "name=systemd"


# root -> ((st_dev, st_ino, st_nlink, st_mtime_ns) of root, what was found there); nlink too:
# a new directory changes it even within the timestamp's granularity
_DISCOVERED: dict[str, tuple[tuple[int, int, int, int], dict[str, str]]] = {}


def discover_hierarchies(root: str) -> dict[str, str]:
    """controller -> mount directory, from the conventional layout under ``root``.

    Each directory is named after the controllers mounted there ("cpu,cpuacct", with "cpu"
    and "cpuacct" symlinks to it on systemd hosts); "unified" is the v2 mount of hybrid hosts
    and is handled separately. Remembered while ``root`` itself is unchanged (a hierarchy
    comes and goes with its directory there): a zygote-forked shim finds it already known
    instead of resolving a dozen symlinks at every container start.
    """
    try:
        st = os.stat(root)
        stamp = (st.st_dev, st.st_ino, st.st_nlink, st.st_mtime_ns)
    except OSError:
        stamp = None
    known = _DISCOVERED.get(root)
    if known is not None and known[0] == stamp:
        return dict(known[1])
    found = _discover(root)
    if stamp is not None:
        _DISCOVERED[root] = (stamp, dict(found))
    return found


def _discover(root: str) -> dict[str, str]:
    found: dict[str, str] = {}
    try:
        entries = sorted(os.listdir(root))
    except OSError as exc:
        raise os_error("list cgroup hierarchies in", root, exc) from exc
    for entry in entries:
        path = os.path.join(root, entry)
        if entry == "unified" or not os.path.isdir(path):
            continue
        real = os.path.realpath(path)
        for name in os.path.basename(real).split(","):
            controller = SYSTEMD if name in ("systemd", SYSTEMD) else name
            found.setdefault(controller, real)
    return found


class V1Manager:
    """cgroup v1 (and hybrid: also joins the cgroup2 mount at ``root/unified``)."""

    freeze_timeout = 10.0

    def __init__(self, path: str, root: str = "/sys/fs/cgroup", hybrid: bool = False) -> None:
        self.path = path
        self._root = root
        self._mounts = discover_hierarchies(root)
        self._unified = os.path.join(root, "unified") + path if hybrid else None

    # --- layout ------------------------------------------------------------------------

    def paths(self) -> dict[str, str]:
        return {c: mount + self.path for c, mount in sorted(self._mounts.items())}

    def _v1_dirs(self) -> list[str]:
        """One directory per v1 hierarchy (joined controllers share one)."""
        return sorted({mount + self.path for mount in self._mounts.values()})

    def _dirs(self) -> list[str]:
        """The v1 directories, then the unified one."""
        return self._v1_dirs() + ([self._unified] if self._unified else [])

    def _dir(self, controller: str, field: str) -> str:
        mount = self._mounts.get(controller)
        if mount is None:
            raise Unavailable(f"{field}: the {controller} cgroup controller is not mounted "
                              f"under {self._root}")
        return mount + self.path

    def exists(self) -> bool:
        return any(os.path.isdir(d) for d in self._dirs())

    def create(self) -> None:
        for d in self._dirs():
            fs.make_dirs(d)
        if "cpuset" in self._mounts:
            self._init_cpuset(self._mounts["cpuset"])

    def _init_cpuset(self, mount: str) -> None:
        # A new v1 cpuset starts with no CPUs and no memory nodes and refuses tasks until
        # given some; inherit the parent's at every level we may have just created.
        parent = mount
        for part in [p for p in self.path.split("/") if p]:
            child = os.path.join(parent, part)
            for name in ("cpuset.cpus", "cpuset.mems"):
                if fs.has(child, name) and not fs.read(child, name):
                    fs.write(child, name, fs.read(parent, name))
            parent = child

    def apply(self, pid: int) -> None:
        for d in self._dirs():
            fs.write(d, "cgroup.procs", str(pid))

    def open_join(self) -> CgroupJoin:
        return open_join(self._v1_dirs(), self._unified)

    def destroy(self) -> None:
        for d in self._dirs():
            fs.remove_tree(d)

    # --- processes -------------------------------------------------------------------------

    def _procs_dir(self) -> str:
        for controller in ("freezer", "pids", "memory", "devices", SYSTEMD):
            if controller in self._mounts:
                return self._mounts[controller] + self.path
        dirs = self._dirs()
        if not dirs:
            raise Unavailable(f"no cgroup hierarchy under {self._root}")
        return dirs[0]

    def pids(self) -> list[int]:
        return fs.procs_recursive(self._procs_dir())

    def frozen(self) -> bool:
        d = self._dir("freezer", "freeze")
        return fs.read_optional(d, "freezer.state") == "FROZEN"

    def freeze(self) -> None:
        self._set_freezer("FROZEN")

    def thaw(self) -> None:
        self._set_freezer("THAWED")

    def _set_freezer(self, state: str) -> None:
        d = self._dir("freezer", "freeze")
        fs.write(d, "freezer.state", state)
        deadline = time.monotonic() + self.freeze_timeout
        tries = 0
        while fs.read(d, "freezer.state") != state:
            if time.monotonic() > deadline:
                if state == "FROZEN":
                    fs.write(d, "freezer.state", "THAWED")  # do not leave it half frozen
                raise fs.timeout_error(f"set freezer.state={state} in", d, self.freeze_timeout)
            tries += 1
            # A task in an uninterruptible sleep can make FREEZING stick; asking again
            # retries the tasks that were not caught the first time.
            if tries % 50 == 0:
                fs.write(d, "freezer.state", state)
            time.sleep(0.002 if tries < 50 else 0.01)

    def kill_all(self, sig: int) -> None:
        # Freeze first so no process forks a child we would miss between listing and killing.
        use_freezer = "freezer" in self._mounts and os.path.isdir(self._mounts["freezer"]
                                                                  + self.path)
        if use_freezer:
            self.freeze()
        try:
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
                except OSError as exc:
                    raise os_error(f"send signal {signal.Signals(sig).name} to pid",
                                      str(pid), exc) from exc
        finally:
            if use_freezer:
                self.thaw()

    def oom_kill_count(self) -> int:
        if "memory" not in self._mounts:
            return 0
        text = fs.read_optional(self._mounts["memory"] + self.path, "memory.oom_control")
        return fs.keyed(text).get("oom_kill", 0)

    def stats(self) -> dict[str, Any]:
        return collect_v1({c: m + self.path for c, m in self._mounts.items()})

    # --- resources -------------------------------------------------------------------------

    def set(self, resources: Mapping[str, Any]) -> None:
        r = parse_resources(resources)
        if r.unified:
            self._set_unified(r)
        if r.memory is not None:
            self._set_memory(r.memory)
        if r.cpu is not None:
            self._set_cpu(r.cpu)
        if r.pids_limit is not None:
            d = self._dir("pids", f"{PREFIX}.pids")
            fs.write_required(d, "pids.max", str(r.pids_limit) if r.pids_limit > 0 else "max",
                              f"{PREFIX}.pids.limit")
        if r.block_io is not None:
            self._set_blkio(r.block_io)
        if r.devices:
            d = self._dir("devices", f"{PREFIX}.devices")
            for rule in r.devices:
                for line in rule.v1_lines():
                    fs.write(d, "devices.allow" if rule.allow else "devices.deny", line)
        for hp in r.hugepages or ():
            d = self._dir("hugetlb", f"{PREFIX}.hugepageLimits")
            fs.write_required(d, f"hugetlb.{hp.page_size}.limit_in_bytes", str(hp.limit),
                              f"{PREFIX}.hugepageLimits")
        if r.network is not None:
            self._set_network(r.network)

    def _set_unified(self, r: Resources) -> None:
        if self._unified is None:
            raise InvalidArgument(f"{PREFIX}.unified: cgroup v2 settings cannot be used on a "
                                  "cgroup v1 host")
        for key, value in (r.unified or {}).items():
            fs.write_required(self._unified, key, value, f"{PREFIX}.unified.{key}")

    def _set_memory(self, m: Memory) -> None:
        f = f"{PREFIX}.memory"
        d = self._dir("memory", f)
        if m.limit is not None and m.swap is not None:
            # The kernel keeps limit <= memsw limit at every instant, so which one goes first
            # depends on whether the pair grows or shrinks; try one order, then the other.
            for name, field in (("memory.limit_in_bytes", "limit"),
                                ("memory.memsw.limit_in_bytes", "swap")):
                if not fs.has(d, name):
                    raise Unavailable(f"{f}.{field}: {name} does not exist in {d} "
                                      "(controller or swap accounting not available)")
            pair = [("memory.limit_in_bytes", str(m.limit)),
                    ("memory.memsw.limit_in_bytes", str(m.swap))]
            try:
                for name, value in pair:
                    fs.write(d, name, value)
            except SystemFailure:
                for name, value in reversed(pair):
                    fs.write(d, name, value)
        elif m.limit is not None:
            fs.write_required(d, "memory.limit_in_bytes", str(m.limit), f"{f}.limit")
        elif m.swap is not None:
            fs.write_required(d, "memory.memsw.limit_in_bytes", str(m.swap), f"{f}.swap")
        if m.reservation is not None:
            fs.write_required(d, "memory.soft_limit_in_bytes", str(m.reservation),
                              f"{f}.reservation")
        if m.kernel is not None and fs.has(d, "memory.kmem.limit_in_bytes"):
            # Deprecated in OCI and ignored by kernels >= 5.16; skipped like runc when gone.
            fs.write(d, "memory.kmem.limit_in_bytes", str(m.kernel))
        if m.kernel_tcp is not None:
            fs.write_required(d, "memory.kmem.tcp.limit_in_bytes", str(m.kernel_tcp),
                              f"{f}.kernelTCP")
        if m.swappiness is not None:
            fs.write_required(d, "memory.swappiness", str(m.swappiness), f"{f}.swappiness")
        if m.disable_oom_killer is not None:
            fs.write_required(d, "memory.oom_control", "1" if m.disable_oom_killer else "0",
                              f"{f}.disableOOMKiller")
        if m.use_hierarchy is not None:
            fs.write_required(d, "memory.use_hierarchy", "1" if m.use_hierarchy else "0",
                              f"{f}.useHierarchy")

    def _set_cpu(self, c: Cpu) -> None:
        f = f"{PREFIX}.cpu"
        if any(v is not None for v in (c.shares, c.quota, c.period, c.burst, c.idle,
                                       c.realtime_period, c.realtime_runtime)):
            d = self._dir("cpu", f)
            if c.shares:
                fs.write_required(d, "cpu.shares", str(c.shares), f"{f}.shares")
            _write_pair(d, [("cpu.cfs_period_us", c.period or None, f"{f}.period"),
                            ("cpu.cfs_quota_us", c.quota or None, f"{f}.quota")])
            if c.burst is not None:
                fs.write_required(d, "cpu.cfs_burst_us", str(c.burst), f"{f}.burst")
            _write_pair(d, [("cpu.rt_period_us", c.realtime_period or None,
                             f"{f}.realtimePeriod"),
                            ("cpu.rt_runtime_us", c.realtime_runtime, f"{f}.realtimeRuntime")])
            if c.idle is not None:
                fs.write_required(d, "cpu.idle", str(c.idle), f"{f}.idle")
        if c.cpus or c.mems:
            d = self._dir("cpuset", f)
            if c.cpus:
                fs.write_required(d, "cpuset.cpus", c.cpus, f"{f}.cpus")
            if c.mems:
                fs.write_required(d, "cpuset.mems", c.mems, f"{f}.mems")

    def _set_blkio(self, b: BlockIO) -> None:
        f = f"{PREFIX}.blockIO"
        d = self._dir("blkio", f)
        # CFQ's blkio.weight is gone from modern kernels; BFQ offers the same knob.
        bfq = not fs.has(d, "blkio.weight") and fs.has(d, "blkio.bfq.weight")
        weight_file = "blkio.bfq.weight" if bfq else "blkio.weight"
        if b.weight is not None:
            fs.write_required(d, weight_file, str(b.weight), f"{f}.weight")
        if b.leaf_weight is not None:
            fs.write_required(d, "blkio.leaf_weight", str(b.leaf_weight), f"{f}.leafWeight")
        for wd in b.weight_device:
            if wd.weight is not None:
                fs.write_required(d, weight_file + "_device", f"{wd.major}:{wd.minor} {wd.weight}",
                                  f"{f}.weightDevice")
            if wd.leaf_weight is not None:
                fs.write_required(d, "blkio.leaf_weight_device",
                                  f"{wd.major}:{wd.minor} {wd.leaf_weight}", f"{f}.weightDevice")
        for name, items, key in (
            ("blkio.throttle.read_bps_device", b.read_bps, "throttleReadBpsDevice"),
            ("blkio.throttle.write_bps_device", b.write_bps, "throttleWriteBpsDevice"),
            ("blkio.throttle.read_iops_device", b.read_iops, "throttleReadIOPSDevice"),
            ("blkio.throttle.write_iops_device", b.write_iops, "throttleWriteIOPSDevice"),
        ):
            for t in items:
                fs.write_required(d, name, f"{t.major}:{t.minor} {t.rate}", f"{f}.{key}")

    def _set_network(self, n: Network) -> None:
        f = f"{PREFIX}.network"
        if n.class_id is not None:
            fs.write_required(self._dir("net_cls", f), "net_cls.classid", str(n.class_id),
                              f"{f}.classID")
        for name, prio in n.priorities:
            fs.write_required(self._dir("net_prio", f), "net_prio.ifpriomap", f"{name} {prio}",
                              f"{f}.priorities")


def _write_pair(d: str, pair: list[tuple[str, int | None, str]]) -> None:
    """Write two interdependent files (period/quota); on refusal, the other order."""
    todo = [(name, value, field) for name, value, field in pair if value is not None]
    if not todo:
        return
    try:
        for name, value, field in todo:
            fs.write_required(d, name, str(value), field)
    except SystemFailure:
        if len(todo) < 2:
            raise
        for name, value, field in reversed(todo):
            fs.write_required(d, name, str(value), field)
