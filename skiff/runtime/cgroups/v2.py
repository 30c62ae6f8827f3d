"""The cgroup v2 manager: one directory in the unified hierarchy."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping

from skiff.errors import InvalidArgument, SystemFailure, Unavailable, os_error

from . import bpf, convert, fs
from .join import CgroupJoin, open_join
from .resources import PREFIX, BlockIO, Cpu, Memory, parse_resources
from .stats_v2 import collect_v2

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class V2Manager:
    """cgroup v2. Resources whose controller is not enabled are Unavailable only if asked for."""

    freeze_timeout = 10.0

    def __init__(self, path: str, root: str = "/sys/fs/cgroup") -> None:
        self.path = path
        self._root = root
        self._dir = os.path.join(root, path.lstrip("/")) if path.strip("/") else root

    def paths(self) -> dict[str, str]:
        return {"": self._dir}

    def exists(self) -> bool:
        return os.path.isdir(self._dir)

    def create(self) -> None:
        fs.make_dirs(self._dir)
        self._enable_controllers()

    def _enable_controllers(self) -> None:
        # Each level's subtree_control decides what its children get; walk from the root down
        # to our parent, delegating every controller the level itself has. A level that holds
        # processes refuses (no internal processes): that controller then stays unavailable
        # and set() says so if it is asked for.
        parts = [p for p in self.path.split("/") if p]
        level = self._root
        for part in parts:
            available = (fs.read_optional(level, "cgroup.controllers") or "").split()
            enabled = set((fs.read_optional(level, "cgroup.subtree_control") or "").split())
            for controller in available:
                if controller not in enabled:
                    try:
                        fs.write(level, "cgroup.subtree_control", f"+{controller}")
                    except SystemFailure:
                        pass
            level = os.path.join(level, part)

    def apply(self, pid: int) -> None:
        fs.write(self._dir, "cgroup.procs", str(pid))

    def open_join(self) -> CgroupJoin:
        return open_join([], self._dir)

    def destroy(self) -> None:
        fs.remove_tree(self._dir)

    def pids(self) -> list[int]:
        return fs.procs_recursive(self._dir)

    # --- freezer ------------------------------------------------------------------------------

    def frozen(self) -> bool:
        return fs.keyed(fs.read_optional(self._dir, "cgroup.events")).get("frozen") == 1

    def freeze(self) -> None:
        self._set_frozen(True)

    def thaw(self) -> None:
        self._set_frozen(False)

    def _set_frozen(self, frozen: bool) -> None:
        if not fs.has(self._dir, "cgroup.freeze"):
            raise Unavailable(f"freeze {self._dir}: cgroup.freeze missing (kernel < 5.2?)")
        fs.write(self._dir, "cgroup.freeze", "1" if frozen else "0")
        # The write only asks; cgroup.events says when every task has actually stopped.
        deadline = time.monotonic() + self.freeze_timeout
        delay = 0.001
        while self.frozen() != frozen:
            if time.monotonic() > deadline:
                if frozen:
                    fs.write(self._dir, "cgroup.freeze", "0")  # do not leave it half frozen
                raise fs.timeout_error(f"set cgroup.freeze={int(frozen)} in", self._dir,
                                       self.freeze_timeout)
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    def kill_all(self, sig: int) -> None:
        if sig == signal.SIGKILL and fs.has(self._dir, "cgroup.kill"):
            # The kernel kills the whole subtree atomically: nothing can fork away.
            fs.write(self._dir, "cgroup.kill", "1")
            return
        self.freeze()
        try:
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
                except OSError as exc:
                    raise os_error(f"send signal {signal.Signals(sig).name} to pid", str(pid),
                                   exc) from exc
        finally:
            self.thaw()

    # --- stats --------------------------------------------------------------------------------

    def oom_kill_count(self) -> int:
        return fs.keyed(fs.read_optional(self._dir, "memory.events")).get("oom_kill", 0)

    def stats(self) -> dict[str, Any]:
        return collect_v2(self._dir)

    # --- resources ----------------------------------------------------------------------------

    def _need(self, controller: str, field: str) -> None:
        available = (fs.read_optional(self._dir, "cgroup.controllers") or "").split()
        if controller not in available:
            raise Unavailable(f"{field}: the {controller} cgroup controller is not enabled for "
                              f"{self._dir} (available: {' '.join(available) or 'none'})")

    def set(self, resources: Mapping[str, Any]) -> None:
        r = parse_resources(resources)
        if r.memory is not None:
            self._set_memory(r.memory)
        if r.cpu is not None:
            self._set_cpu(r.cpu)
        if r.pids_limit is not None:
            field = f"{PREFIX}.pids.limit"
            self._need("pids", field)
            fs.write_required(self._dir, "pids.max",
                              str(r.pids_limit) if r.pids_limit > 0 else "max", field)
        if r.block_io is not None:
            self._set_io(r.block_io)
        if r.hugepages:
            self._need("hugetlb", f"{PREFIX}.hugepageLimits")
            for hp in r.hugepages:
                fs.write_required(self._dir, f"hugetlb.{hp.page_size}.max", str(hp.limit),
                                  f"{PREFIX}.hugepageLimits")
        if r.network is not None and (r.network.class_id or r.network.priorities):
            raise Unavailable(f"{PREFIX}.network: net_cls/net_prio do not exist on cgroup v2")
        if r.devices:
            bpf.apply_device_rules(self._dir, r.devices)
        # Last, so that explicit v2 keys win over the values converted from v1 fields.
        for key, value in (r.unified or {}).items():
            fs.write_required(self._dir, key, value, f"{PREFIX}.unified.{key}")

    def _set_memory(self, m: Memory) -> None:
        f = f"{PREFIX}.memory"
        if m.swappiness is not None:
            raise Unavailable(f"{f}.swappiness: not supported on cgroup v2")
        if m.kernel_tcp is not None:
            raise Unavailable(f"{f}.kernelTCP: not supported on cgroup v2")
        if m.disable_oom_killer:
            raise Unavailable(f"{f}.disableOOMKiller: not supported on cgroup v2")
        if m.use_hierarchy is False:
            raise Unavailable(f"{f}.useHierarchy: cgroup v2 is always hierarchical")
        # m.kernel is deprecated in OCI and has no v2 counterpart: ignored, as runc does.
        if m.limit is None and m.swap is None and m.reservation is None:
            return
        self._need("memory", f)
        if m.limit is not None and m.check_before_update and m.limit > 0:
            usage = fs.to_uint(fs.read_optional(self._dir, "memory.current"))
            if usage > m.limit:
                raise InvalidArgument(f"{f}.limit: {m.limit} is below the current usage {usage}")
        if m.swap is not None:
            if m.limit is not None:
                mem_limit = m.limit
            else:
                current = fs.read(self._dir, "memory.max")
                mem_limit = -1 if current == "max" else int(current)
            swap = convert.swap_max(m.swap, mem_limit)
            if swap is not None:
                fs.write_required(self._dir, "memory.swap.max", swap, f"{f}.swap")
        if m.limit is not None:
            fs.write_required(self._dir, "memory.max", convert.limit(m.limit), f"{f}.limit")
        if m.reservation is not None:
            fs.write_required(self._dir, "memory.low", convert.limit(m.reservation),
                              f"{f}.reservation")

    def _set_cpu(self, c: Cpu) -> None:
        f = f"{PREFIX}.cpu"
        if c.realtime_runtime or c.realtime_period:
            raise Unavailable(f"{f}.realtimeRuntime/realtimePeriod: not supported on cgroup v2")
        if c.shares or c.quota or c.period or c.burst is not None or c.idle is not None:
            self._need("cpu", f)
            if c.shares:
                fs.write_required(self._dir, "cpu.weight",
                                  str(convert.shares_to_weight(c.shares)), f"{f}.shares")
            if c.quota or c.period:
                current = fs.read(self._dir, "cpu.max")
                fs.write(self._dir, "cpu.max",
                         convert.cpu_max(c.quota or None, c.period or None, current))
            if c.burst is not None:
                fs.write_required(self._dir, "cpu.max.burst", str(c.burst), f"{f}.burst")
            if c.idle is not None:
                fs.write_required(self._dir, "cpu.idle", str(c.idle), f"{f}.idle")
        if c.cpus or c.mems:
            self._need("cpuset", f)
            if c.cpus:
                fs.write_required(self._dir, "cpuset.cpus", c.cpus, f"{f}.cpus")
            if c.mems:
                fs.write_required(self._dir, "cpuset.mems", c.mems, f"{f}.mems")

    def _set_io(self, b: BlockIO) -> None:
        f = f"{PREFIX}.blockIO"
        if b.leaf_weight is not None or any(w.leaf_weight is not None for w in b.weight_device):
            raise Unavailable(f"{f}.leafWeight: not supported on cgroup v2")
        throttles = (("rbps", b.read_bps), ("wbps", b.write_bps), ("riops", b.read_iops),
                     ("wiops", b.write_iops))
        if b.weight is None and not b.weight_device and not any(t for _, t in throttles):
            return
        self._need("io", f)
        # BFQ takes blkio-range weights unconverted; the generic io.weight wants 1..10000.
        bfq = fs.has(self._dir, "io.bfq.weight")
        name = "io.bfq.weight" if bfq else "io.weight"

        def weight(w: int) -> int:
            return w if bfq else convert.blkio_to_io_weight(w)

        if b.weight is not None:
            fs.write_required(self._dir, name, f"default {weight(b.weight)}", f"{f}.weight")
        for wd in b.weight_device:
            if wd.weight is not None:
                fs.write_required(self._dir, name,
                                  f"{wd.major}:{wd.minor} {weight(wd.weight)}", f"{f}.weightDevice")
        for key, items in throttles:
            for t in items:
                # v1 removes a throttle written as 0; v2 spells that "max".
                rate = str(t.rate) if t.rate else "max"
                fs.write_required(self._dir, "io.max", f"{t.major}:{t.minor} {key}={rate}",
                                  f"{f}.throttle")
