"""The pure and fake-tree parts of skiffd's stats, top and exec: no root, no daemon.

Stats are read from fake cgroup v1 and v2 trees and a fake /proc (the same readers the
daemon uses on the real ones); top's ps parsing and a real unprivileged ``ps``; the exec
request and process-spec rules.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any, cast

import pytest

from skiff.daemon.containers.execs import (
    ExecRecord,
    Execs,
    console_size,
    exec_process,
    exit_code_for_start_error,
    merge_env,
    parse_create,
)
from skiff.daemon.containers.record import ZERO_TIME, Container
from skiff.daemon.containers.stats import (
    StatsReader,
    cgroup_path,
    empty_stats,
    parse_net_dev,
    system_cpu_usage,
    with_previous,
)
from skiff.daemon.containers.top import parse_ps, run_ps, top
from skiff.daemon.events import EventBus
from skiff.errors import Conflict, InvalidArgument, NotFound, SystemFailure
from skiff.services.spec import ALL_CAPS

CID = "c" * 64
NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     840      10    0    0    0     0          0         0      840      10    0    0    0     0       0          0
  eth0:  123456     100    1    2    0     0          0         0     6543      50    3    4    0     0       0          0
 veth9:       1       1    0    0    0     0          0         0        1       1    0    0    0     0       0          0
"""
PROC_STAT = "cpu  100 20 30 400 50 6 7 8 9 10\ncpu0 50 10 15 200 25 3 3 4 4 5\nintr 1 2\n"


def _write(d: Path, files: dict[str, str]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)


def _container(pid: int = 42, network: str = "default") -> Container:
    return Container(id=CID, name="web", image="busybox", image_id="sha256:" + "0" * 64,
                     config={}, host_config={"NetworkMode": network}, pid=pid)


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    b = tmp_path / "bundle"
    b.mkdir()
    (b / "config.json").write_text(json.dumps({"linux": {"cgroupsPath": "/skiff/" + CID}}))
    return b


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    p = tmp_path / "proc"
    _write(p, {"stat": PROC_STAT})
    _write(p / "42" / "net", {"dev": NET_DEV})
    return p


# --- host and netns counters ----------------------------------------------------------------


def test_system_cpu_usage_sums_the_first_seven_fields_in_ns() -> None:
    assert system_cpu_usage(PROC_STAT, 100) == (100 + 20 + 30 + 400 + 50 + 6 + 7) * 10_000_000
    with pytest.raises(SystemFailure, match="no \"cpu\" line"):
        system_cpu_usage("intr 1\n", 100)


def test_net_dev_keeps_eth_and_lo() -> None:
    nets = parse_net_dev(NET_DEV)
    assert sorted(nets) == ["eth0", "lo"]
    assert nets["eth0"] == {"rx_bytes": 123456, "rx_packets": 100, "rx_errors": 1,
                            "rx_dropped": 2, "tx_bytes": 6543, "tx_packets": 50,
                            "tx_errors": 3, "tx_dropped": 4}


def test_cgroup_path_from_the_bundle(bundle: Path, tmp_path: Path) -> None:
    assert cgroup_path(str(bundle), CID) == "/skiff/" + CID
    (bundle / "config.json").write_text(json.dumps({"linux": {}}))
    assert cgroup_path(str(bundle), CID) == "/skiff/" + CID  # the runtime's default
    with pytest.raises(SystemFailure, match="read the container's spec"):
        cgroup_path(str(tmp_path / "nowhere"), CID)


# --- cgroup v1 --------------------------------------------------------------------------------


def _v1_tree(root: Path) -> None:
    cg = "skiff/" + CID
    _write(root / "cpu,cpuacct" / cg, {
        "cpuacct.usage": "5000000000", "cpuacct.usage_percpu": "3000000000 2000000000",
        "cpuacct.stat": "user 300\nsystem 100\n",
        "cpu.stat": "nr_periods 10\nnr_throttled 3\nthrottled_time 777\n"})
    _write(root / "memory" / cg, {
        "memory.usage_in_bytes": "1048576", "memory.max_usage_in_bytes": "2097152",
        "memory.limit_in_bytes": "9223372036854771712", "memory.failcnt": "5",
        "memory.stat": "cache 4096\nrss 8192\ntotal_inactive_file 1024\n"})
    _write(root / "pids" / cg, {"pids.current": "3", "pids.max": "max"})
    _write(root / "blkio" / cg, {
        "blkio.throttle.io_service_bytes_recursive": "8:0 Read 4096\n8:0 Write 512\n"
                                                     "Total 4608\n",
        "blkio.throttle.io_serviced_recursive": "8:0 Read 1\n8:0 Write 2\n"})


def test_v1_sample_in_dockers_shape(tmp_path: Path, bundle: Path, proc: Path) -> None:
    root = tmp_path / "cgroup"
    _v1_tree(root)
    s = StatsReader(str(root), str(proc), cgroup_mode="v1").sample(_container(), str(bundle))
    assert (s["id"], s["name"]) == (CID, "/web")
    assert s["read"] != ZERO_TIME
    hz = os.sysconf("SC_CLK_TCK")
    assert s["cpu_stats"]["cpu_usage"] == {
        "total_usage": 5_000_000_000, "percpu_usage": [3_000_000_000, 2_000_000_000],
        "usage_in_usermode": 300 * 1_000_000_000 // hz,
        "usage_in_kernelmode": 100 * 1_000_000_000 // hz}
    assert s["cpu_stats"]["throttling_data"] == {"periods": 10, "throttled_periods": 3,
                                                 "throttled_time": 777}
    assert s["cpu_stats"]["system_cpu_usage"] == system_cpu_usage(PROC_STAT, hz)
    assert s["cpu_stats"]["online_cpus"] == os.sysconf("SC_NPROCESSORS_ONLN")
    mem = s["memory_stats"]
    assert (mem["usage"], mem["max_usage"], mem["failcnt"]) == (1048576, 2097152, 5)
    assert mem["stats"] == {"cache": 4096, "rss": 8192, "total_inactive_file": 1024}
    # unlimited: the machine's memory, as dockerd reports it
    assert mem["limit"] == os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert s["pids_stats"] == {"current": 3}  # no limit: none reported
    assert s["blkio_stats"]["io_service_bytes_recursive"] == [
        {"major": 8, "minor": 0, "op": "Read", "value": 4096},
        {"major": 8, "minor": 0, "op": "Write", "value": 512}]
    assert s["blkio_stats"]["io_queue_recursive"] is None
    assert sorted(s["networks"]) == ["eth0", "lo"]


def test_host_network_has_no_network_stats(tmp_path: Path, bundle: Path, proc: Path) -> None:
    root = tmp_path / "cgroup"
    _v1_tree(root)
    s = StatsReader(str(root), str(proc), cgroup_mode="v1").sample(
        _container(network="host"), str(bundle))
    assert "networks" not in s


def test_a_process_gone_mid_sample_gives_no_networks(tmp_path: Path, bundle: Path,
                                                     proc: Path) -> None:
    root = tmp_path / "cgroup"
    _v1_tree(root)
    s = StatsReader(str(root), str(proc), cgroup_mode="v1").sample(_container(pid=99),
                                                                   str(bundle))
    assert "networks" not in s and s["memory_stats"]["usage"] == 1048576


# --- cgroup v2 --------------------------------------------------------------------------------


def test_v2_sample_in_dockers_shape(tmp_path: Path, bundle: Path, proc: Path) -> None:
    root = tmp_path / "cgroup"
    _write(root, {"cgroup.controllers": "cpu memory pids io"})
    _write(root / "skiff" / CID, {
        "cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 7\n"
                    "nr_throttled 2\nthrottled_usec 30\n",
        "memory.current": "8192", "memory.max": "33554432", "memory.peak": "16384",
        "memory.events": "max 4\n", "memory.stat": "anon 4096\nfile 2048\ninactive_file 100\n",
        "pids.current": "2", "pids.max": "20",
        "io.stat": "8:0 rbytes=4096 wbytes=512 rios=1 wios=2\n"})
    s = StatsReader(str(root), str(proc), cgroup_mode="v2").sample(_container(), str(bundle))
    usage = s["cpu_stats"]["cpu_usage"]
    assert usage == {"total_usage": 1_500_000, "usage_in_usermode": 1_000_000,
                     "usage_in_kernelmode": 500_000}  # no percpu on v2
    assert s["cpu_stats"]["throttling_data"] == {"periods": 7, "throttled_periods": 2,
                                                 "throttled_time": 30_000}
    assert s["memory_stats"] == {"usage": 8192, "limit": 33554432,
                                 "stats": {"anon": 4096, "file": 2048, "inactive_file": 100}}
    assert s["pids_stats"] == {"current": 2, "limit": 20}
    assert s["blkio_stats"]["io_serviced_recursive"] == [
        {"major": 8, "minor": 0, "op": "Read", "value": 1},
        {"major": 8, "minor": 0, "op": "Write", "value": 2}]


# --- samples in sequence, stopped containers ------------------------------------------------


def test_previous_sample_fills_precpu() -> None:
    first = {"read": "2026-01-01T00:00:00.000001Z", "cpu_stats": {"cpu_usage": {"total_usage": 1}}}
    second = {"read": "2026-01-01T00:00:01.000001Z", "cpu_stats": {"cpu_usage": {"total_usage": 5}}}
    a = with_previous(first, None)
    assert a["preread"] == ZERO_TIME and a["precpu_stats"]["cpu_usage"]["total_usage"] == 0
    b = with_previous(second, a)
    assert b["preread"] == first["read"] and b["precpu_stats"] == first["cpu_stats"]
    # after a zero sample (container stopped), there is nothing to compare with
    assert with_previous(second, empty_stats("x", CID))["preread"] == ZERO_TIME


def test_empty_stats_are_dockers_zeros() -> None:
    s = empty_stats("web", CID)
    assert (s["name"], s["id"], s["read"], s["preread"]) == ("/web", CID, ZERO_TIME, ZERO_TIME)
    assert s["cpu_stats"]["cpu_usage"]["total_usage"] == 0 and s["memory_stats"] == {}
    assert all(v is None for v in s["blkio_stats"].values())


# --- top --------------------------------------------------------------------------------------

PS_EF = """UID          PID    PPID  C STIME TTY          TIME CMD
root           1       0  0 10:00 ?        00:00:01 /sbin/init splash
root         100       1  0 10:01 ?        00:00:00 sleep 600
root         101     100  0 10:01 pts/0    00:00:00 sh -c echo a  b
"""


def test_parse_ps_keeps_the_containers_rows_and_the_whole_command() -> None:
    table = parse_ps(PS_EF, {100, 101})
    assert table["Titles"] == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert table["Processes"] == [
        ["root", "100", "1", "0", "10:01", "?", "00:00:00", "sleep 600"],
        ["root", "101", "100", "0", "10:01", "pts/0", "00:00:00", "sh -c echo a  b"]]
    assert parse_ps(PS_EF, set())["Processes"] == []


def test_parse_ps_refuses_output_without_pids() -> None:
    with pytest.raises(InvalidArgument, match="Couldn't find PID field"):
        parse_ps("COMMAND\nsleep\n", {1})
    with pytest.raises(InvalidArgument, match="Unexpected pid"):
        parse_ps("PID CMD\nx sleep\n", {1})
    with pytest.raises(InvalidArgument, match="no output"):
        parse_ps("", {1})


def test_real_ps_for_our_own_pid_and_bad_args() -> None:
    table = top([os.getpid()], "-o pid,comm")
    assert table["Titles"] == ["PID", "COMMAND"]
    assert [row[0] for row in table["Processes"]] == [str(os.getpid())]
    table = top([os.getpid()])  # the default: -ef
    assert table["Titles"][:2] == ["UID", "PID"] and len(table["Processes"]) == 1
    with pytest.raises(InvalidArgument, match="Error running ps with ps_args '--bogus'"):
        run_ps("--bogus")


# --- exec -------------------------------------------------------------------------------------

BASE: dict[str, Any] = {
    "terminal": False, "user": {"uid": 0, "gid": 0, "umask": 18},
    "args": ["sleep", "600"], "env": ["PATH=/bin", "HOSTNAME=web", "KEEP=1", "DROP=1"],
    "cwd": "/srv", "capabilities": {"bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"]},
    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
    "noNewPrivileges": True, "apparmorProfile": "docker-default",
    "consoleSize": {"height": 1, "width": 1},
}


def _rec(**body: Any) -> ExecRecord:
    return parse_create(CID, {"Cmd": ["sh"], **body})


def test_exec_process_keeps_the_containers_confinement() -> None:
    p = exec_process(BASE, _rec(Env=["KEEP=2", "NEW=x", "DROP"], WorkingDir="/tmp"), None)
    assert p["args"] == ["sh"]
    assert p["env"] == ["PATH=/bin", "HOSTNAME=web", "KEEP=2", "NEW=x"]
    assert p["cwd"] == "/tmp" and p["terminal"] is False and "consoleSize" not in p
    for key in ("user", "capabilities", "rlimits", "noNewPrivileges", "apparmorProfile"):
        assert p[key] == BASE[key]
    assert exec_process(BASE, _rec(), None)["cwd"] == "/srv"


def test_exec_process_user_tty_and_privileged() -> None:
    rec = _rec(Tty=True, ConsoleSize=[24, 80], Privileged=True, User="app")
    p = exec_process(BASE, rec, {"uid": 1000, "gid": 1000, "additionalGids": [1000]})
    assert p["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [1000], "umask": 18}
    assert p["terminal"] is True and p["consoleSize"] == {"height": 24, "width": 80}
    assert "TERM=xterm" in p["env"]
    assert p["capabilities"]["bounding"] == list(ALL_CAPS)
    assert set(p["capabilities"]) == {"bounding", "effective", "inheritable", "permitted",
                                      "ambient"}
    # a TERM of the exec's own wins
    assert "TERM=xterm" not in exec_process(BASE, _rec(Tty=True, Env=["TERM=vt100"]),
                                            None)["env"]


def test_merge_env_replaces_in_place() -> None:
    assert merge_env(["A=1", "B=2"], ["A=3"]) == ["A=3", "B=2"]
    assert merge_env(["A=1", "B=2"], ["A"]) == ["B=2"]
    assert merge_env([], ["C=1", "C=2"]) == ["C=2"]


def test_exec_create_body_checks() -> None:
    rec = _rec(AttachStdin=True, AttachStdout=True, DetachKeys="ctrl-x")
    assert len(rec.id) == 64 and int(rec.id, 16) >= 0
    info = rec.inspect()
    assert (info["OpenStdin"], info["OpenStdout"], info["OpenStderr"]) == (True, True, False)
    assert (info["Running"], info["ExitCode"], info["DetachKeys"]) == (False, None, "ctrl-x")
    assert info["ProcessConfig"]["entrypoint"] == "sh"
    assert _rec().id != _rec().id
    for body, message in (({"Cmd": []}, "No exec command"), ({}, "No exec command"),
                          ({"Cmd": "ls"}, "Cmd must be a list"),
                          ({"Cmd": ["ls"], "Env": [1]}, "Env must be a list"),
                          ({"Cmd": ["ls"], "User": 0}, "User must be a string"),
                          ({"Cmd": ["ls"], "Tty": "true"}, "Tty must be a boolean")):
        with pytest.raises(InvalidArgument, match=message):
            parse_create(CID, body)


def test_console_size_and_start_error_codes() -> None:
    assert console_size(None, "x") is None
    assert console_size([24, 80], "x") == (24, 80)
    assert console_size([0, 0], "x") is None  # the CLI sends zeros without a terminal
    for bad in ([1], [1, -1], ["1", "2"], "24x80", [True, 1]):
        with pytest.raises(InvalidArgument, match="ConsoleSize"):
            console_size(bad, "exec create")
    assert exit_code_for_start_error('exec: "x": executable file not found in $PATH') == 127
    assert exit_code_for_start_error("stat /x: no such file or directory") == 127
    assert exit_code_for_start_error('exec: "/etc/passwd": permission denied') == 126
    assert exit_code_for_start_error("Broken pipe") is None


class _FakeStore:
    def __init__(self, containers: list[Container]) -> None:
        self.containers = {c.id: c for c in containers}

    def all(self) -> list[Container]:
        return list(self.containers.values())


class _FakeManager:
    """What Execs uses of the ContainerManager for its records (no shim is reached here)."""

    def __init__(self, c: Container) -> None:
        self.store = _FakeStore([c])
        self.running = {c.id}
        self.events = EventBus()

    def get(self, ref: str) -> Container:
        if ref not in self.store.containers:
            raise NotFound(f"No such container: {ref}")
        return self.store.containers[ref]

    def is_running(self, cid: str) -> bool:
        return cid in self.running


def test_exec_records_live_and_die_with_their_container() -> None:
    c = _container()
    manager = _FakeManager(c)
    execs = Execs(cast(Any, manager))

    async def scenario() -> None:
        rec = await execs.create(CID, {"Cmd": ["ls", "-l"]})
        assert execs.get(rec.id) is rec and execs.ids_for(CID) == [rec.id]
        assert [e.action for e in manager.events.history(0, None, {})] == ["exec_create: ls -l"]
        with pytest.raises(NotFound, match="No such exec instance: nope"):
            execs.get("nope")
        # an exec that has exited leaves ExecIDs but can still be inspected
        rec.exit_code = 0
        assert execs.ids_for(CID) == [] and execs.get(rec.id).inspect()["ExitCode"] == 0
        with pytest.raises(Conflict, match="has already run"):
            await execs.prepare(rec.id)
        manager.running.clear()
        with pytest.raises(Conflict, match=f"container {CID} is not running"):
            await execs.create(CID, {"Cmd": ["ls"]})
        del manager.store.containers[CID]  # removed: its execs go with it
        with pytest.raises(NotFound, match="No such exec instance"):
            execs.get(rec.id)

    asyncio.run(scenario())
