"""V1Manager against a fake cgroupfs tree: the files a v1 kernel would show, as plain files."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from skiff.errors import InvalidArgument, SystemFailure, Unavailable
from skiff.runtime.cgroups import V1Manager, new_manager
from skiff.runtime.cgroups.v1 import discover_hierarchies

CG = "/skiff/abc"

# Per hierarchy: the files the kernel creates in every new cgroup, with initial contents.
FILES: dict[str, dict[str, str]] = {
    "memory": {"memory.limit_in_bytes": "9223372036854771712",
               "memory.memsw.limit_in_bytes": "9223372036854771712",
               "memory.soft_limit_in_bytes": "9223372036854771712",
               "memory.kmem.limit_in_bytes": "9223372036854771712",
               "memory.kmem.tcp.limit_in_bytes": "9223372036854771712",
               "memory.swappiness": "60", "memory.use_hierarchy": "1",
               "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
               "memory.usage_in_bytes": "4096", "memory.max_usage_in_bytes": "8192",
               "memory.failcnt": "2", "memory.memsw.usage_in_bytes": "5000",
               "memory.stat": "cache 100\nrss 200\ntotal_cache 100\n"},
    "cpu,cpuacct": {"cpu.shares": "1024", "cpu.cfs_period_us": "100000",
                    "cpu.cfs_quota_us": "-1", "cpu.cfs_burst_us": "0", "cpu.rt_period_us": "1000000",
                    "cpu.rt_runtime_us": "0", "cpu.idle": "0",
                    "cpu.stat": "nr_periods 10\nnr_throttled 4\nthrottled_time 999\n",
                    "cpuacct.usage": "123456", "cpuacct.usage_percpu": "100000 23456 \n",
                    "cpuacct.usage_percpu_sys": "1 2\n", "cpuacct.usage_percpu_user": "3 4\n",
                    "cpuacct.stat": "user 5\nsystem 7\n"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "pids": {"pids.max": "max", "pids.current": "3"},
    "blkio": {"blkio.bfq.weight": "100", "blkio.bfq.weight_device": "",
              "blkio.throttle.read_bps_device": "", "blkio.throttle.write_bps_device": "",
              "blkio.throttle.read_iops_device": "", "blkio.throttle.write_iops_device": "",
              "blkio.throttle.io_service_bytes_recursive":
                  "8:0 Read 4096\n8:0 Write 512\n8:0 Total 4608\nTotal 4608\n",
              "blkio.throttle.io_serviced_recursive": "8:0 Read 1\n8:0 Write 2\n"},
    "devices": {"devices.allow": "", "devices.deny": ""},
    "freezer": {"freezer.state": "THAWED"},
    "hugetlb": {"hugetlb.2MB.limit_in_bytes": "0", "hugetlb.2MB.usage_in_bytes": "2097152",
                "hugetlb.2MB.max_usage_in_bytes": "4194304", "hugetlb.2MB.failcnt": "1"},
    "net_cls": {"net_cls.classid": "0"},
    "net_prio": {"net_prio.ifpriomap": ""},
    "systemd": {},
}


class Tree:
    """A fake /sys/fs/cgroup whose leaf files appear when the manager creates the leaf."""

    def __init__(self, root: Path, hierarchies: dict[str, dict[str, str]]) -> None:
        self.root = root
        self.hierarchies = hierarchies
        for name in hierarchies:
            (root / name).mkdir(parents=True)
            (root / name / "cgroup.procs").write_text("")
            if name == "cpuset":
                (root / name / "cpuset.cpus").write_text("0-3\n")
                (root / name / "cpuset.mems").write_text("0\n")
            if "," in name:
                for alias in name.split(","):
                    (root / alias).symlink_to(name)

    def populate(self, path: str = CG) -> None:
        """What the kernel does on mkdir: every control file, at its default."""
        parts = path.strip("/").split("/")
        for name, files in self.hierarchies.items():
            for depth in range(1, len(parts) + 1):
                d = self.root / name / "/".join(parts[:depth])
                d.mkdir(exist_ok=True)
                (d / "cgroup.procs").write_text("")
                for fname, content in files.items():
                    (d / fname).write_text(content)

    def read(self, hierarchy: str, fname: str, path: str = CG) -> str:
        return (self.root / hierarchy / path.lstrip("/") / fname).read_text()


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path / "cgroup", FILES)


@pytest.fixture
def mgr(tree: Tree) -> V1Manager:
    tree.populate()
    return V1Manager(CG, str(tree.root))


def test_discovery_follows_joined_hierarchy_symlinks(tree: Tree) -> None:
    found = discover_hierarchies(str(tree.root))
    assert found["cpu"] == found["cpuacct"] == str(tree.root / "cpu,cpuacct")
    assert found["name=systemd"] == str(tree.root / "systemd")
    assert "unified" not in found and len(set(found.values())) == len(FILES)


def test_paths_name_every_controller(tree: Tree) -> None:
    m = new_manager(CG, root=str(tree.root), mode="v1")
    paths = m.paths()
    assert paths["memory"] == str(tree.root / "memory/skiff/abc")
    assert paths["cpu"] == paths["cpuacct"] == str(tree.root / "cpu,cpuacct/skiff/abc")
    assert paths["name=systemd"] == str(tree.root / "systemd/skiff/abc")


def test_create_makes_every_hierarchy_dir_and_fills_cpuset(tree: Tree) -> None:
    m = V1Manager(CG, str(tree.root))
    assert not m.exists()
    # The kernel gives a new cpuset empty cpus/mems files; simulate it for both levels.
    for level in ("skiff", "skiff/abc"):
        d = tree.root / "cpuset" / level
        d.mkdir(parents=True)
        (d / "cpuset.cpus").write_text("")
        (d / "cpuset.mems").write_text("")
    m.create()
    m.create()  # idempotent
    for name in FILES:
        assert (tree.root / name / "skiff/abc").is_dir()
    assert tree.read("cpuset", "cpuset.cpus", "/skiff") == "0-3"
    assert tree.read("cpuset", "cpuset.cpus") == "0-3"
    assert tree.read("cpuset", "cpuset.mems") == "0"
    assert m.exists()


def test_apply_writes_pid_to_every_hierarchy(mgr: V1Manager, tree: Tree) -> None:
    mgr.apply(4242)
    for name in FILES:
        assert tree.read(name, "cgroup.procs") == "4242"


def test_hybrid_also_joins_the_unified_hierarchy(tree: Tree) -> None:
    (tree.root / "unified").mkdir()
    tree.populate()
    m = V1Manager(CG, str(tree.root), hybrid=True)
    m.create()
    (tree.root / "unified/skiff/abc/cgroup.procs").write_text("")  # as the kernel would
    m.apply(7)
    assert (tree.root / "unified/skiff/abc/cgroup.procs").read_text() == "7"
    assert "unified" not in str(m.paths())  # state.json keys stay v1 controllers


def test_memory_values(mgr: V1Manager, tree: Tree) -> None:
    mgr.set({"memory": {"limit": 1 << 20, "swap": 2 << 20, "reservation": 1 << 19,
                        "kernel": 1 << 22, "kernelTCP": 1 << 21, "swappiness": 0,
                        "disableOOMKiller": True, "useHierarchy": True}})
    assert tree.read("memory", "memory.limit_in_bytes") == str(1 << 20)
    assert tree.read("memory", "memory.memsw.limit_in_bytes") == str(2 << 20)
    assert tree.read("memory", "memory.soft_limit_in_bytes") == str(1 << 19)
    assert tree.read("memory", "memory.kmem.limit_in_bytes") == str(1 << 22)
    assert tree.read("memory", "memory.kmem.tcp.limit_in_bytes") == str(1 << 21)
    assert tree.read("memory", "memory.swappiness") == "0"
    assert tree.read("memory", "memory.oom_control") == "1"
    assert tree.read("memory", "memory.use_hierarchy") == "1"


def test_memory_unlimited_is_minus_one_on_v1(mgr: V1Manager, tree: Tree) -> None:
    mgr.set({"memory": {"limit": -1, "swap": -1}})
    assert tree.read("memory", "memory.limit_in_bytes") == "-1"
    assert tree.read("memory", "memory.memsw.limit_in_bytes") == "-1"


def test_memory_pair_falls_back_to_the_other_order(mgr: V1Manager, tree: Tree,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Model the kernel's rule limit <= memsw: refuse any write that would break it.
    from skiff.runtime.cgroups import fs
    real_write = fs.write
    order: list[str] = []

    def strict_write(dirpath: str, name: str, value: str) -> None:
        limit = int(tree.read("memory", "memory.limit_in_bytes"))
        memsw = int(tree.read("memory", "memory.memsw.limit_in_bytes"))
        if name == "memory.limit_in_bytes" and int(value) > memsw:
            raise SystemFailure(f"write {name}: EINVAL")
        if name == "memory.memsw.limit_in_bytes" and int(value) < limit:
            raise SystemFailure(f"write {name}: EINVAL")
        order.append(name)
        real_write(dirpath, name, value)

    monkeypatch.setattr(fs, "write", strict_write)
    (tree.root / "memory/skiff/abc/memory.limit_in_bytes").write_text("1000")
    (tree.root / "memory/skiff/abc/memory.memsw.limit_in_bytes").write_text("2000")
    mgr.set({"memory": {"limit": 5000, "swap": 8000}})  # growing: memsw must go first
    assert order == ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]
    order.clear()
    mgr.set({"memory": {"limit": 100, "swap": 200}})  # shrinking: limit must go first
    assert order == ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
    assert tree.read("memory", "memory.limit_in_bytes") == "100"
    assert tree.read("memory", "memory.memsw.limit_in_bytes") == "200"


def test_cpu_values(mgr: V1Manager, tree: Tree) -> None:
    mgr.set({"cpu": {"shares": 512, "quota": 50000, "period": 200000, "burst": 1000,
                     "realtimePeriod": 500000, "realtimeRuntime": 1000, "idle": 1,
                     "cpus": "1-2", "mems": "0"}})
    h = "cpu,cpuacct"
    assert tree.read(h, "cpu.shares") == "512"
    assert tree.read(h, "cpu.cfs_quota_us") == "50000"
    assert tree.read(h, "cpu.cfs_period_us") == "200000"
    assert tree.read(h, "cpu.cfs_burst_us") == "1000"
    assert tree.read(h, "cpu.rt_period_us") == "500000"
    assert tree.read(h, "cpu.rt_runtime_us") == "1000"
    assert tree.read(h, "cpu.idle") == "1"
    assert tree.read("cpuset", "cpuset.cpus") == "1-2"
    assert tree.read("cpuset", "cpuset.mems") == "0"


def test_partial_update_touches_only_given_fields(mgr: V1Manager, tree: Tree) -> None:
    mgr.set({"cpu": {"quota": 20000}})
    assert tree.read("cpu,cpuacct", "cpu.cfs_quota_us") == "20000"
    assert tree.read("cpu,cpuacct", "cpu.cfs_period_us") == "100000"
    assert tree.read("cpu,cpuacct", "cpu.shares") == "1024"
    assert tree.read("memory", "memory.limit_in_bytes") == "9223372036854771712"


def test_pids_limit(mgr: V1Manager, tree: Tree) -> None:
    mgr.set({"pids": {"limit": 42}})
    assert tree.read("pids", "pids.max") == "42"
    mgr.set({"pids": {"limit": -1}})
    assert tree.read("pids", "pids.max") == "max"
    mgr.set({"pids": {"limit": 0}})
    assert tree.read("pids", "pids.max") == "max"


def test_blkio_uses_bfq_when_cfq_is_gone(mgr: V1Manager, tree: Tree) -> None:
    mgr.set({"blockIO": {"weight": 300, "weightDevice": [{"major": 8, "minor": 0, "weight": 50}],
                         "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                         "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 10}]}})
    assert tree.read("blkio", "blkio.bfq.weight") == "300"
    assert tree.read("blkio", "blkio.bfq.weight_device") == "8:0 50"
    assert tree.read("blkio", "blkio.throttle.read_bps_device") == "8:0 1048576"
    assert tree.read("blkio", "blkio.throttle.write_iops_device") == "8:16 10"
    with pytest.raises(Unavailable, match=r"blockIO.leafWeight: blkio.leaf_weight does not exist"):
        mgr.set({"blockIO": {"leafWeight": 100}})


def test_devices_are_written_in_order(mgr: V1Manager, tree: Tree,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from skiff.runtime.cgroups import fs
    writes: list[tuple[str, str]] = []
    real_write = fs.write

    def record(dirpath: str, name: str, value: str) -> None:
        writes.append((name, value))
        real_write(dirpath, name, value)

    monkeypatch.setattr(fs, "write", record)
    mgr.set({"devices": [{"allow": False, "access": "rwm"},
                         {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                         {"allow": True, "type": "c", "major": 136, "access": "rw"},
                         {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"}]})
    assert writes == [("devices.deny", "a"), ("devices.allow", "c 1:3 rwm"),
                      ("devices.allow", "c 136:* rw"), ("devices.deny", "c 1:3 w")]


def test_hugetlb_and_network(mgr: V1Manager, tree: Tree) -> None:
    mgr.set({"hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],
             "network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 3}]}})
    assert tree.read("hugetlb", "hugetlb.2MB.limit_in_bytes") == "4194304"
    assert tree.read("net_cls", "net_cls.classid") == "1048577"
    assert tree.read("net_prio", "net_prio.ifpriomap") == "eth0 3"
    with pytest.raises(Unavailable, match=r"hugetlb.1GB.limit_in_bytes does not exist"):
        mgr.set({"hugepageLimits": [{"pageSize": "1GB", "limit": 0}]})


def test_unified_is_refused_on_pure_v1(mgr: V1Manager) -> None:
    with pytest.raises(InvalidArgument, match="unified: cgroup v2 settings cannot be used"):
        mgr.set({"unified": {"memory.high": "1"}})


def test_missing_controller_is_unavailable_naming_it(tmp_path: Path) -> None:
    tree = Tree(tmp_path / "cg", {"memory": FILES["memory"], "freezer": FILES["freezer"]})
    tree.populate()
    m = V1Manager(CG, str(tree.root))
    with pytest.raises(Unavailable, match=r"pids.*the pids cgroup controller is not mounted"):
        m.set({"pids": {"limit": 5}})
    m.set({"memory": {"limit": 10}})  # what is there still works


def test_invalid_input_writes_nothing(mgr: V1Manager, tree: Tree) -> None:
    with pytest.raises(InvalidArgument, match=r"linux.resources.devices"):
        mgr.set({"memory": {"limit": 77}, "devices": [{"allow": True, "access": "z"}]})
    assert tree.read("memory", "memory.limit_in_bytes") == "9223372036854771712"


def test_write_errors_name_file_and_directory(mgr: V1Manager, tree: Tree) -> None:
    os.remove(tree.root / "pids/skiff/abc/pids.max")
    os.mkdir(tree.root / "pids/skiff/abc/pids.max")  # writing a directory: EISDIR
    with pytest.raises(SystemFailure) as info:
        mgr.set({"pids": {"limit": 5}})
    msg = str(info.value)
    assert "write pids.max='5' in" in msg and str(tree.root / "pids/skiff/abc") in msg
    assert "EISDIR" in msg


def test_freeze_thaw_through_freezer_state(mgr: V1Manager, tree: Tree) -> None:
    assert not mgr.frozen()
    mgr.freeze()
    assert tree.read("freezer", "freezer.state") == "FROZEN" and mgr.frozen()
    mgr.thaw()
    assert tree.read("freezer", "freezer.state") == "THAWED" and not mgr.frozen()


def test_pids_are_collected_recursively(mgr: V1Manager, tree: Tree) -> None:
    (tree.root / "freezer/skiff/abc/cgroup.procs").write_text("10\n11\n")
    sub = tree.root / "freezer/skiff/abc/sub"
    sub.mkdir()
    (sub / "cgroup.procs").write_text("12\n")
    assert sorted(mgr.pids()) == [10, 11, 12]


def test_kill_all_freezes_signals_and_thaws(mgr: V1Manager, tree: Tree,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tree.root / "freezer/skiff/abc/cgroup.procs").write_text("10\n11\n")
    seen: list[tuple[int, int, str]] = []

    def fake_kill(pid: int, sig: int) -> None:
        seen.append((pid, sig, tree.read("freezer", "freezer.state")))
        if pid == 11:
            raise ProcessLookupError  # exited meanwhile: not an error

    monkeypatch.setattr(os, "kill", fake_kill)
    mgr.kill_all(signal.SIGTERM)
    assert seen == [(10, signal.SIGTERM, "FROZEN"), (11, signal.SIGTERM, "FROZEN")]
    assert tree.read("freezer", "freezer.state") == "THAWED"


def test_oom_kill_count(mgr: V1Manager) -> None:
    assert mgr.oom_kill_count() == 3


def test_stats_shape_and_values(mgr: V1Manager) -> None:
    s = mgr.stats()
    usage = s["cpu"]["usage"]
    assert usage["total"] == 123456 and usage["percpu"] == [100000, 23456]
    assert usage["percpu_kernel"] == [1, 2] and usage["percpu_user"] == [3, 4]
    hz = os.sysconf("SC_CLK_TCK")
    assert usage["user"] == 5 * 10**9 // hz and usage["kernel"] == 7 * 10**9 // hz
    assert s["cpu"]["throttling"] == {"periods": 10, "throttledPeriods": 4, "throttledTime": 999}
    mem = s["memory"]
    assert mem["usage"] == {"limit": 9223372036854771712, "usage": 4096, "max": 8192,
                            "failcnt": 2}
    assert mem["swap"]["usage"] == 5000 and mem["cache"] == 100
    assert mem["raw"] == {"cache": 100, "rss": 200, "total_cache": 100}
    assert mem["use_hierarchy"] is True
    assert s["pids"] == {"current": 3, "limit": 0}
    assert s["blkio"]["ioServiceBytesRecursive"] == [
        {"major": 8, "minor": 0, "op": "Read", "value": 4096},
        {"major": 8, "minor": 0, "op": "Write", "value": 512},
        {"major": 8, "minor": 0, "op": "Total", "value": 4608}]
    assert s["blkio"]["ioServicedRecursive"][1]["value"] == 2
    assert s["hugetlb"] == {"2MB": {"usage": 2097152, "max": 4194304, "failcnt": 1}}
    assert s["cpuset"] == {"cpus": [], "mems": []}


def test_destroy_removes_nested_dirs_and_tolerates_absence(tree: Tree) -> None:
    m = V1Manager(CG, str(tree.root))
    m.create()
    (tree.root / "memory/skiff/abc/child/grandchild").mkdir(parents=True)
    m.destroy()
    assert not m.exists()
    assert not (tree.root / "memory/skiff/abc").exists()
    assert (tree.root / "memory/skiff").is_dir()  # parents are not ours to remove
    m.destroy()  # already gone: fine


def test_hybrid_writes_unified_keys_to_the_v2_dir(tree: Tree) -> None:
    (tree.root / "unified").mkdir()
    tree.populate()
    m = V1Manager(CG, str(tree.root), hybrid=True)
    m.create()
    (tree.root / "unified/skiff/abc/cgroup.max.depth").write_text("max")
    m.set({"unified": {"cgroup.max.depth": "3"}})
    assert (tree.root / "unified/skiff/abc/cgroup.max.depth").read_text() == "3"
    with pytest.raises(Unavailable, match=r"unified\.memory\.high: memory\.high does not exist"):
        m.set({"unified": {"memory.high": "1"}})


def test_kill_all_without_freezer_still_signals(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    tree = Tree(tmp_path / "cg", {"pids": FILES["pids"]})
    tree.populate()
    (tree.root / "pids/skiff/abc/cgroup.procs").write_text("21\n")
    seen: list[int] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: seen.append(pid))
    V1Manager(CG, str(tree.root)).kill_all(signal.SIGKILL)
    assert seen == [21]


def test_freeze_timeout_thaws_and_fails(mgr: V1Manager, tree: Tree,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from skiff.runtime.cgroups import fs
    real_read = fs.read

    def stuck(dirpath: str, name: str) -> str:
        return "FREEZING" if name == "freezer.state" else real_read(dirpath, name)

    monkeypatch.setattr(fs, "read", stuck)
    mgr.freeze_timeout = 0.05
    with pytest.raises(SystemFailure, match=r"freezer\.state=FROZEN .*timed out"):
        mgr.freeze()
    assert tree.read("freezer", "freezer.state") == "THAWED"


def test_remove_tree_retries_busy_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from skiff.runtime.cgroups import fs
    (tmp_path / "cg/sub").mkdir(parents=True)
    real_rmdir = os.rmdir
    calls: list[str] = []

    def busy_twice(path: str) -> None:
        calls.append(path)
        if len(calls) <= 2:
            raise OSError(errno.EBUSY, "busy")
        real_rmdir(path)

    monkeypatch.setattr(os, "rmdir", busy_twice)
    fs.remove_tree(str(tmp_path / "cg"))
    assert not (tmp_path / "cg").exists()
    assert calls[:3] == [str(tmp_path / "cg/sub")] * 3  # deepest first, retried

    calls.clear()
    (tmp_path / "cg").mkdir()

    def always_busy(path: str) -> None:
        raise OSError(errno.EBUSY, "busy")

    monkeypatch.setattr(os, "rmdir", always_busy)
    with pytest.raises(SystemFailure, match=r"remove cgroup .*EBUSY"):
        fs.remove_tree(str(tmp_path / "cg"), timeout=0.05)


def test_discovered_hierarchies_are_remembered_until_the_root_changes(tmp_path: Path) -> None:
    from skiff.runtime.cgroups import v1

    (tmp_path / "memory").mkdir()
    (tmp_path / "cpu,cpuacct").mkdir()
    first = v1.discover_hierarchies(str(tmp_path))
    assert set(first) == {"memory", "cpu", "cpuacct"}
    first["memory"] = "/elsewhere"  # a caller's copy: the remembered one is untouched
    calls = []
    real = v1._discover
    v1._discover = lambda root: calls.append(root) or real(root)  # type: ignore[assignment]
    try:
        assert v1.discover_hierarchies(str(tmp_path))["memory"] == str(tmp_path / "memory")
        assert calls == []  # remembered
        (tmp_path / "pids").mkdir()  # a new hierarchy changes the root directory
        assert "pids" in v1.discover_hierarchies(str(tmp_path))
        assert calls == [str(tmp_path)]
    finally:
        v1._discover = real  # type: ignore[assignment]
