"""V2Manager on a real cgroup2 mount: the hybrid host's /sys/fs/cgroup/unified (no controllers).

The v2 core works without controllers: cgroup.procs, cgroup.freeze/events, cgroup.kill,
cpu.stat, and device filtering by eBPF. Controller-backed resources must be Unavailable.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiff.errors import Unavailable
from skiff.runtime.cgroups import V2Manager, bpf, detect, detect_mode, new_manager

ROOT = "/sys/fs/cgroup"


def _unified_root() -> str:
    try:
        if detect_mode(ROOT) == "v2":
            return ROOT
    except Exception as exc:
        pytest.skip(f"no cgroup filesystem at {ROOT}: {exc}")
    unified = os.path.join(ROOT, "unified")
    if not os.path.isdir(unified) or detect.fs_magic(unified) != detect.CGROUP2_SUPER_MAGIC:
        pytest.skip("no cgroup2 mount on this host (pure v1)")
    return unified


@pytest.fixture
def mgr() -> Iterator[V2Manager]:
    root = _unified_root()
    m = new_manager("/skiff-test-" + secrets.token_hex(4), root=root, mode="v2")
    assert isinstance(m, V2Manager)
    m.create()
    d = m.paths()[""]
    yield m
    if m.exists():
        m.kill_all(signal.SIGKILL)
        m.destroy()
    assert not os.path.exists(d), f"cgroup dir left behind: {d}"


def _child(script: str) -> subprocess.Popen[bytes]:
    """A shell that waits for a line on stdin before running ``script``."""
    return subprocess.Popen(["sh", "-c", "read x; " + script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _go(p: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    return p.communicate(b"go\n", timeout=20)


def test_procs_and_apply(mgr: V2Manager) -> None:
    p = subprocess.Popen(["sleep", "30"])
    try:
        mgr.apply(p.pid)
        assert mgr.pids() == [p.pid]
        with open(f"/proc/{p.pid}/cgroup") as f:
            assert f"0::{mgr.path}" in f.read().splitlines()
    finally:
        p.kill()
        p.wait()


def test_freeze_thaw_via_cgroup_events(mgr: V2Manager) -> None:
    p = subprocess.Popen([sys.executable, "-c",
                          "import time\nwhile True: time.sleep(0.001)"])
    try:
        mgr.apply(p.pid)
        mgr.freeze()
        assert mgr.frozen()
        with open(os.path.join(mgr.paths()[""], "cgroup.events")) as f:
            assert "frozen 1" in f.read()
        before = _cpu_ticks(p.pid)
        time.sleep(0.1)
        assert _cpu_ticks(p.pid) == before  # a frozen task does not run
        mgr.thaw()
        assert not mgr.frozen()
        deadline = time.monotonic() + 5
        while _cpu_ticks(p.pid) == before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _cpu_ticks(p.pid) > before
    finally:
        p.kill()
        p.wait()


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])  # ns on cpu


def test_kill_all_uses_cgroup_kill(mgr: V2Manager) -> None:
    p = _child("sleep 30 & sleep 30 & wait")
    mgr.apply(p.pid)
    assert p.stdin is not None
    p.stdin.write(b"go\n")
    p.stdin.flush()
    deadline = time.monotonic() + 5
    while len(mgr.pids()) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(mgr.pids()) == 3
    mgr.kill_all(signal.SIGKILL)
    p.wait(timeout=10)
    assert p.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while mgr.pids() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert mgr.pids() == []


def test_kill_all_other_signal_freezes_around_it(mgr: V2Manager) -> None:
    p = subprocess.Popen(["sleep", "30"])
    mgr.apply(p.pid)
    mgr.kill_all(signal.SIGTERM)
    assert p.wait(timeout=10) == -signal.SIGTERM
    assert not mgr.frozen()


def test_cpu_stat_counts_work(mgr: V2Manager) -> None:
    p = _child("i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done")
    mgr.apply(p.pid)
    _go(p)
    s = mgr.stats()
    assert s["cpu"]["usage"]["total"] > 0
    assert s["cpu"]["usage"]["user"] + s["cpu"]["usage"]["kernel"] > 0
    assert s["memory"]["usage"]["usage"] == 0  # no memory controller here: zeros, not errors


def test_controller_resources_are_unavailable(mgr: V2Manager) -> None:
    with open(os.path.join(mgr.paths()[""], "cgroup.controllers")) as f:
        available = f.read().split()
    if "memory" in available:
        pytest.skip("this cgroup2 mount has the memory controller")
    with pytest.raises(Unavailable, match="memory cgroup controller is not enabled"):
        mgr.set({"memory": {"limit": 1 << 20}})
    mgr.set({"memory": {"kernel": 5}})  # nothing v2 would write: no error
    if "pids" not in available:
        with pytest.raises(Unavailable, match="pids"):
            mgr.set({"pids": {"limit": 5}})


def test_device_filter_denies_and_is_replaced_on_update(mgr: V2Manager) -> None:
    d = mgr.paths()[""]
    mgr.set({"devices": [{"allow": True, "access": "rwm"},
                         {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"}]})
    first = bpf.attached_programs(d)
    assert len(first) == 1
    p = _child("cat /dev/null && echo read-ok; echo x > /dev/null && echo write-ok")
    mgr.apply(p.pid)
    out, err = _go(p)
    assert out == b"read-ok\n"
    assert b"Operation not permitted" in err

    # Update: deny everything but /dev/null; the old program must be gone, not stacked.
    mgr.set({"devices": [{"allow": False, "access": "rwm"},
                         {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}]})
    second = bpf.attached_programs(d)
    assert len(second) == 1 and second != first
    p = _child("echo x > /dev/null && echo null-ok; head -c1 /dev/zero >/dev/null && echo zero-ok")
    mgr.apply(p.pid)
    out, err = _go(p)
    assert out == b"null-ok\n", err
    assert b"Operation not permitted" in err


def test_destroy(mgr: V2Manager) -> None:
    p = subprocess.Popen(["sleep", "30"])
    mgr.apply(p.pid)
    p.kill()
    p.wait()
    mgr.destroy()
    assert not mgr.exists()
    mgr.destroy()


def test_fork_into_cgroup_makes_the_child_inside() -> None:
    # clone3(CLONE_INTO_CGROUP) from Python: the child is a normal forked interpreter that
    # starts life in the cgroup, with no write to cgroup.procs.
    from skiff.runtime import syscalls as sc

    d = Path(_unified_root()) / f"skiff-clone-{os.getpid()}"
    d.mkdir()
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    r, w = os.pipe()
    try:
        pid = sc.clone_process(0, fd)
        if pid == 0:
            try:
                with open("/proc/self/cgroup") as f:
                    os.write(w, f.read().encode())
            finally:
                os._exit(0)
        os.close(w)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        out = os.read(r, 4096).decode()
        assert f"0::/{d.name}" in out.splitlines()
    finally:
        os.close(fd)
        os.close(r)
        d.rmdir()
