"""V1Manager on the real kernel: this host's v1 hierarchies (hybrid: plus the unified mount)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from skiff.runtime.cgroups import V1Manager, detect_mode, new_manager

ROOT = "/sys/fs/cgroup"


def _skip_unless_v1() -> None:
    try:
        mode = detect_mode(ROOT)
    except Exception as exc:  # no cgroupfs at all
        pytest.skip(f"no cgroup filesystem at {ROOT}: {exc}")
    if mode == "v2":
        pytest.skip("host runs pure cgroup v2: no v1 hierarchies to test")


def _all_dirs(m: V1Manager) -> list[str]:
    dirs = set(m.paths().values())
    unified = os.path.join(ROOT, "unified") + m.path
    return sorted(dirs | ({unified} if os.path.isdir(os.path.join(ROOT, "unified")) else set()))


@pytest.fixture
def mgr() -> Iterator[V1Manager]:
    _skip_unless_v1()
    m = new_manager("/skiff-test-" + secrets.token_hex(4))
    assert isinstance(m, V1Manager)
    m.create()
    dirs = _all_dirs(m)
    yield m
    if m.exists():
        m.kill_all(signal.SIGKILL)
        m.destroy()
    leftovers = [d for d in dirs if os.path.exists(d)]
    assert not leftovers, f"cgroup dirs left behind: {leftovers}"


Spawn = Callable[[str], subprocess.Popen[bytes]]


@pytest.fixture
def gated() -> Iterator[Spawn]:
    """Start a Python child that waits for a line on stdin before running ``code``.

    The test moves it into the cgroup first, so everything ``code`` does is accounted there.
    """
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(code: str) -> subprocess.Popen[bytes]:
        p = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.readline()\n" + code],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        procs.append(p)
        return p

    yield spawn
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=10)


def go(p: subprocess.Popen[bytes]) -> None:
    assert p.stdin is not None
    p.stdin.write(b"go\n")
    p.stdin.flush()


def proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_create_makes_a_dir_in_every_hierarchy(mgr: V1Manager) -> None:
    for controller, d in mgr.paths().items():
        assert os.path.isdir(d), controller
    assert {"memory", "pids", "freezer", "devices", "name=systemd"} <= set(mgr.paths())


def test_apply_moves_the_process_everywhere(mgr: V1Manager) -> None:
    p = subprocess.Popen(["sleep", "30"])
    try:
        mgr.apply(p.pid)
        assert mgr.pids() == [p.pid]
        with open(f"/proc/{p.pid}/cgroup") as f:
            lines = f.read().splitlines()
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if controllers in ("memory", "pids", "freezer", "name=systemd", ""):
                assert path == mgr.path, line
    finally:
        p.kill()
        p.wait()


def test_memory_limit_is_read_back(mgr: V1Manager) -> None:
    mgr.set({"memory": {"limit": 64 << 20, "swap": 128 << 20, "reservation": 32 << 20}})
    d = mgr.paths()["memory"]
    with open(os.path.join(d, "memory.limit_in_bytes")) as f:
        assert int(f.read()) == 64 << 20
    with open(os.path.join(d, "memory.soft_limit_in_bytes")) as f:
        assert int(f.read()) == 32 << 20
    # Shrinking needs the other write order than growing; both must work.
    mgr.set({"memory": {"limit": 16 << 20, "swap": 16 << 20}})
    mgr.set({"memory": {"limit": 256 << 20, "swap": 512 << 20}})
    s = mgr.stats()["memory"]
    assert s["usage"]["limit"] == 256 << 20 and s["swap"]["limit"] == 512 << 20


def test_pids_limit_is_enforced(mgr: V1Manager, gated: Spawn) -> None:
    mgr.set({"pids": {"limit": 5}})
    p = gated(
        "import os, signal\n"
        "kids = []\n"
        "try:\n"
        "    while len(kids) < 50:\n"
        "        pid = os.fork()\n"
        "        if pid == 0:\n"
        "            signal.pause(); os._exit(0)\n"
        "        kids.append(pid)\n"
        "except BlockingIOError:\n"
        "    pass\n"
        "print(len(kids), flush=True)\n"
        "for k in kids: os.kill(k, 9); os.waitpid(k, 0)\n")
    mgr.apply(p.pid)
    go(p)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert int(out) == 4  # the limit counts the forking process itself


def test_freeze_and_thaw(mgr: V1Manager) -> None:
    p = subprocess.Popen(["sleep", "30"])
    try:
        mgr.apply(p.pid)
        mgr.freeze()
        assert mgr.frozen()
        assert proc_state(p.pid) == "D"  # the v1 freezer parks tasks uninterruptibly
        mgr.thaw()
        assert not mgr.frozen()
        # Thawed tasks run (R) for a moment before sleep parks them again (S).
        deadline = time.monotonic() + 5
        while proc_state(p.pid) != "S" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc_state(p.pid) == "S"
    finally:
        p.kill()
        p.wait()


def test_stats_count_real_work(mgr: V1Manager, gated: Spawn) -> None:
    p = gated(
        "import time\n"
        "buf = bytearray(8 << 20)\n"
        "for i in range(0, len(buf), 4096): buf[i] = 1\n"
        "end = time.monotonic() + 0.3\n"
        "while time.monotonic() < end: pass\n"
        "print('done', flush=True)\n"
        "sys.stdin.readline()\n")
    mgr.apply(p.pid)
    go(p)
    assert p.stdout is not None and p.stdout.readline() == b"done\n"
    s = mgr.stats()
    assert s["cpu"]["usage"]["total"] > 100_000_000  # > 0.1 s of the 0.3 s busy loop
    assert sum(s["cpu"]["usage"]["percpu"]) > 0
    assert s["memory"]["usage"]["usage"] >= 8 << 20
    assert s["memory"]["raw"]["rss"] + s["memory"]["raw"]["cache"] > 0
    assert s["pids"]["current"] == 1
    go(p)
    p.wait(timeout=10)


def test_oom_kill_is_counted(mgr: V1Manager, gated: Spawn) -> None:
    mgr.set({"memory": {"limit": 32 << 20, "swap": 32 << 20}})
    assert mgr.oom_kill_count() == 0
    p = gated("buf = bytearray(256 << 20)\n")
    mgr.apply(p.pid)
    go(p)
    p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL
    assert mgr.oom_kill_count() == 1


def test_device_rules_deny_writes(mgr: V1Manager, gated: Spawn) -> None:
    mgr.set({"devices": [{"allow": True, "access": "rwm"},
                         {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"}]})
    p = gated(
        "open('/dev/null', 'rb').close()\n"
        "try:\n"
        "    open('/dev/null', 'wb')\n"
        "    print('wrote')\n"
        "except PermissionError:\n"
        "    print('denied')\n")
    mgr.apply(p.pid)
    go(p)
    out, err = p.communicate(timeout=10)
    assert out == b"denied\n", err


def test_kill_all_reaches_forked_children(mgr: V1Manager) -> None:
    p = subprocess.Popen(["sh", "-c", "read x; sleep 30 & sleep 30 & wait"],
                         stdin=subprocess.PIPE)
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
    deadline = time.monotonic() + 5
    while mgr.pids() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert mgr.pids() == []
    assert not mgr.frozen()


def test_destroy_removes_every_dir(mgr: V1Manager) -> None:
    p = subprocess.Popen(["sleep", "30"])
    mgr.apply(p.pid)
    p.kill()
    p.wait()
    dirs = _all_dirs(mgr)
    mgr.destroy()  # right after the kill: EBUSY retries cover the dying task
    assert not mgr.exists()
    assert [d for d in dirs if os.path.exists(d)] == []
    mgr.destroy()
