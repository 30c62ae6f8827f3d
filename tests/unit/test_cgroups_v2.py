"""V2Manager against a fake unified tree, and the v1 -> v2 value conversions."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from skiff.errors import InvalidArgument, SystemFailure, Unavailable
from skiff.runtime.cgroups import V2Manager, convert

CG = "/skiff/abc"
ALL = "cpuset cpu io memory hugetlb pids"

LEAF_FILES = {
    "cgroup.procs": "", "cgroup.controllers": ALL, "cgroup.subtree_control": "",
    "cgroup.freeze": "0", "cgroup.events": "populated 1\nfrozen 0\n", "cgroup.kill": "",
    "cpu.weight": "100", "cpu.max": "max 100000", "cpu.max.burst": "0", "cpu.idle": "0",
    "cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 7\n"
                "nr_throttled 2\nthrottled_usec 30\n",
    "cpuset.cpus": "", "cpuset.mems": "", "cpuset.cpus.effective": "0-1",
    "cpuset.mems.effective": "0",
    "memory.max": "max", "memory.low": "0", "memory.swap.max": "max", "memory.current": "8192",
    "memory.peak": "16384", "memory.swap.current": "100",
    "memory.events": "low 0\nhigh 0\nmax 4\noom 1\noom_kill 2\n",
    "memory.stat": "anon 4096\nfile 2048\n", "memory.high": "max",
    "pids.max": "max", "pids.current": "2",
    "io.weight": "default 100", "io.max": "",
    "io.stat": "8:0 rbytes=4096 wbytes=512 rios=1 wios=2 dbytes=0 dios=0\n",
    "hugetlb.2MB.max": "max", "hugetlb.2MB.current": "0", "hugetlb.2MB.events": "max 5\n",
}


class Tree:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        (root / "cgroup.controllers").write_text(ALL)
        (root / "cgroup.subtree_control").write_text("")
        (root / "cgroup.procs").write_text("")

    def populate(self, files: dict[str, str] = LEAF_FILES) -> None:
        mid = self.root / "skiff"
        mid.mkdir(exist_ok=True)
        (mid / "cgroup.controllers").write_text(ALL)
        (mid / "cgroup.subtree_control").write_text("")
        leaf = self.leaf
        leaf.mkdir(exist_ok=True)
        for name, content in files.items():
            (leaf / name).write_text(content)

    @property
    def leaf(self) -> Path:
        return self.root / "skiff/abc"

    def read(self, name: str) -> str:
        return (self.leaf / name).read_text()


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path / "unified")


@pytest.fixture
def mgr(tree: Tree) -> V2Manager:
    tree.populate()
    return V2Manager(CG, str(tree.root))


def test_conversions() -> None:
    assert convert.shares_to_weight(0) == 0
    assert convert.shares_to_weight(2) == 1
    assert convert.shares_to_weight(1024) == 39
    assert convert.shares_to_weight(262144) == 10000
    assert convert.shares_to_weight(1) == 1  # below the kernel's minimum: clamped
    assert convert.blkio_to_io_weight(0) == 0
    assert convert.blkio_to_io_weight(10) == 1
    assert convert.blkio_to_io_weight(500) == 4950
    assert convert.blkio_to_io_weight(1000) == 10000
    assert convert.limit(-1) == "max" and convert.limit(5) == "5"
    assert convert.swap_max(-1, 100) == "max"
    assert convert.swap_max(0, 100) is None
    assert convert.swap_max(300, 100) == "200"
    assert convert.swap_max(100, 100) == "0"
    with pytest.raises(InvalidArgument, match="must be >= the memory limit"):
        convert.swap_max(50, 100)
    with pytest.raises(InvalidArgument, match="needs a memory limit"):
        convert.swap_max(50, -1)
    assert convert.cpu_max(50000, None, "max 100000") == "50000 100000"
    assert convert.cpu_max(None, 20000, "30000 100000") == "30000 20000"
    assert convert.cpu_max(-1, 10000, "30000 100000") == "max 10000"


def test_create_enables_controllers_down_the_path(tree: Tree) -> None:
    m = V2Manager(CG, str(tree.root))
    m.create()
    assert m.exists() and tree.leaf.is_dir()
    # A fake file keeps only the last write; the kernel would accumulate. Each controller was
    # written on its own, so the last one is the last available controller.
    assert (tree.root / "cgroup.subtree_control").read_text() == "+pids"
    assert m.paths() == {"": str(tree.leaf)}


def test_memory_conversions(mgr: V2Manager, tree: Tree) -> None:
    mgr.set({"memory": {"limit": 1 << 20, "swap": 3 << 20, "reservation": 1 << 19,
                        "kernel": 5, "useHierarchy": True, "disableOOMKiller": False}})
    assert tree.read("memory.max") == str(1 << 20)
    assert tree.read("memory.swap.max") == str(2 << 20)
    assert tree.read("memory.low") == str(1 << 19)
    mgr.set({"memory": {"limit": -1, "swap": -1}})
    assert tree.read("memory.max") == "max" and tree.read("memory.swap.max") == "max"


def test_swap_alone_uses_the_current_limit(mgr: V2Manager, tree: Tree) -> None:
    (tree.leaf / "memory.max").write_text("1000\n")
    mgr.set({"memory": {"swap": 1500}})
    assert tree.read("memory.swap.max") == "500"
    (tree.leaf / "memory.max").write_text("max\n")
    with pytest.raises(InvalidArgument, match="needs a memory limit"):
        mgr.set({"memory": {"swap": 1500}})


def test_check_before_update(mgr: V2Manager) -> None:
    with pytest.raises(InvalidArgument, match="below the current usage 8192"):
        mgr.set({"memory": {"limit": 4096, "checkBeforeUpdate": True}})


@pytest.mark.parametrize("memory", [{"swappiness": 10}, {"kernelTCP": 1},
                                    {"disableOOMKiller": True}, {"useHierarchy": False}])
def test_v1_only_memory_knobs_are_unavailable(mgr: V2Manager, memory: dict[str, object]) -> None:
    with pytest.raises(Unavailable, match=r"linux.resources.memory"):
        mgr.set({"memory": memory})


def test_cpu_conversions(mgr: V2Manager, tree: Tree) -> None:
    mgr.set({"cpu": {"shares": 1024, "quota": 50000, "period": 200000, "burst": 10,
                     "idle": 1, "cpus": "0", "mems": "0"}})
    assert tree.read("cpu.weight") == "39"
    assert tree.read("cpu.max") == "50000 200000"
    assert tree.read("cpu.max.burst") == "10"
    assert tree.read("cpu.idle") == "1"
    assert tree.read("cpuset.cpus") == "0" and tree.read("cpuset.mems") == "0"
    mgr.set({"cpu": {"period": 100000}})  # update keeps the quota
    assert tree.read("cpu.max") == "50000 100000"
    mgr.set({"cpu": {"quota": -1}})
    assert tree.read("cpu.max") == "max 100000"
    with pytest.raises(Unavailable, match="realtime"):
        mgr.set({"cpu": {"realtimeRuntime": 5}})


def test_pids_and_hugetlb(mgr: V2Manager, tree: Tree) -> None:
    mgr.set({"pids": {"limit": 10}, "hugepageLimits": [{"pageSize": "2MB", "limit": 2097152}]})
    assert tree.read("pids.max") == "10"
    assert tree.read("hugetlb.2MB.max") == "2097152"
    mgr.set({"pids": {"limit": -1}})
    assert tree.read("pids.max") == "max"


def test_io_conversions(mgr: V2Manager, tree: Tree,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    from skiff.runtime.cgroups import fs
    writes: list[tuple[str, str]] = []
    real_write = fs.write

    def record(dirpath: str, name: str, value: str) -> None:
        writes.append((name, value))
        real_write(dirpath, name, value)

    monkeypatch.setattr(fs, "write", record)
    mgr.set({"blockIO": {"weight": 500, "weightDevice": [{"major": 8, "minor": 0, "weight": 10}],
                         "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 100}],
                         "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 0}],
                         "throttleReadIOPSDevice": [{"major": 8, "minor": 0, "rate": 7}],
                         "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 8}]}})
    assert writes == [("io.weight", "default 4950"), ("io.weight", "8:0 1"),
                      ("io.max", "8:0 rbps=100"), ("io.max", "8:0 wbps=max"),
                      ("io.max", "8:0 riops=7"), ("io.max", "8:0 wiops=8")]
    with pytest.raises(Unavailable, match="leafWeight"):
        mgr.set({"blockIO": {"leafWeight": 100}})


def test_bfq_weight_is_not_converted(mgr: V2Manager, tree: Tree) -> None:
    (tree.leaf / "io.bfq.weight").write_text("default 100")
    mgr.set({"blockIO": {"weight": 500}})
    assert tree.read("io.bfq.weight") == "default 500"


def test_unified_is_written_last_and_wins(mgr: V2Manager, tree: Tree) -> None:
    mgr.set({"memory": {"limit": 100}, "unified": {"memory.max": "200", "memory.high": "150"}})
    assert tree.read("memory.max") == "200" and tree.read("memory.high") == "150"
    with pytest.raises(Unavailable, match=r"unified.io.latency: io.latency does not exist"):
        mgr.set({"unified": {"io.latency": "8:0 target=10"}})


def test_network_is_unavailable(mgr: V2Manager) -> None:
    with pytest.raises(Unavailable, match="net_cls"):
        mgr.set({"network": {"classID": 5}})


def test_missing_controller_only_matters_when_requested(tree: Tree) -> None:
    files = {k: v for k, v in LEAF_FILES.items() if not k.startswith("memory.")}
    files["cgroup.controllers"] = "pids"
    tree.populate(files)
    m = V2Manager(CG, str(tree.root))
    m.set({"pids": {"limit": 3}, "memory": {"kernel": 5}})  # no memory write requested
    assert tree.read("pids.max") == "3"
    with pytest.raises(Unavailable, match="the memory cgroup controller is not enabled"):
        m.set({"memory": {"limit": 100}})
    with pytest.raises(Unavailable, match="the cpu cgroup controller"):
        m.set({"cpu": {"shares": 100}})


def test_freeze_waits_for_events_and_times_out(mgr: V2Manager, tree: Tree) -> None:
    # A fake cgroup.events never turns "frozen 1" by itself: freeze must not trust the write.
    mgr.freeze_timeout = 0.05
    with pytest.raises(SystemFailure, match=r"cgroup.freeze=1 .*timed out"):
        mgr.freeze()
    assert tree.read("cgroup.freeze") == "0"  # rolled back
    (tree.leaf / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    assert mgr.frozen()


def test_kill_all_with_sigkill_uses_cgroup_kill(mgr: V2Manager, tree: Tree,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def no_kill(pid: int, sig: int) -> None:
        raise AssertionError("cgroup.kill should have been used")

    monkeypatch.setattr(os, "kill", no_kill)
    mgr.kill_all(signal.SIGKILL)
    assert tree.read("cgroup.kill") == "1"


def test_pids_and_oom_count(mgr: V2Manager, tree: Tree) -> None:
    (tree.leaf / "cgroup.procs").write_text("5\n6\n")
    (tree.leaf / "child").mkdir()
    (tree.leaf / "child/cgroup.procs").write_text("7\n")
    assert sorted(mgr.pids()) == [5, 6, 7]
    assert mgr.oom_kill_count() == 2


def test_stats(mgr: V2Manager) -> None:
    s = mgr.stats()
    assert s["cpu"]["usage"] == {"total": 1_500_000, "percpu": [], "percpu_kernel": [],
                                 "percpu_user": [], "kernel": 500_000, "user": 1_000_000}
    assert s["cpu"]["throttling"] == {"periods": 7, "throttledPeriods": 2,
                                      "throttledTime": 30_000}
    mem = s["memory"]
    assert mem["usage"] == {"limit": 2**64 - 1, "usage": 8192, "max": 16384, "failcnt": 4}
    assert mem["swap"]["usage"] == 8292 and mem["swap"]["limit"] == 2**64 - 1
    assert mem["cache"] == 2048 and mem["raw"] == {"anon": 4096, "file": 2048}
    assert s["pids"] == {"current": 2, "limit": 0}
    assert s["blkio"]["ioServiceBytesRecursive"] == [
        {"major": 8, "minor": 0, "op": "Read", "value": 4096},
        {"major": 8, "minor": 0, "op": "Write", "value": 512}]
    assert [e["value"] for e in s["blkio"]["ioServicedRecursive"]] == [1, 2]
    assert s["hugetlb"] == {"2MB": {"usage": 0, "max": 2**64 - 1, "failcnt": 5}}
    assert s["cpuset"] == {"cpus": [0, 1], "mems": [0]}


def test_destroy(tree: Tree) -> None:
    m = V2Manager(CG, str(tree.root))
    m.create()
    (tree.leaf / "sub").mkdir()
    m.destroy()
    assert not m.exists() and (tree.root / "skiff").is_dir()
    m.destroy()
