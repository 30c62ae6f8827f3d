"""skiffd's fast `run --rm` path: shims forked from the zygote, skiff-runtime run in-process by
the shim, no runtime process for a container the shim already deleted. The behaviour must be
the same as the slow path's: output, exit codes, nothing left behind, live restore, runc."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.daemon_support import IMAGE, Skiffd, private_skiffd


@pytest.fixture(scope="module")
def skiffd(busybox_rootfs: Path) -> Iterator[Skiffd]:
    with private_skiffd(busybox_rootfs, check_parent_cgroup=False) as d:
        yield d


def _zygotes(d: Skiffd) -> list[int]:
    """The daemon's zygote(s): its children running ``-m skiff.shim zygote`` (the shims it
    forks carry the same command line, but they are not the daemon's children)."""
    found = []
    for pid in d.shim_pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            parent = _ppid(pid)
        except (OSError, IndexError):
            continue
        if argv[1:4] == [b"-m", b"skiff.shim", b"zygote"] and d.proc is not None \
                and parent == d.proc.pid:
            found.append(pid)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _entries(path: Path) -> list[str]:
    return sorted(os.listdir(path)) if path.exists() else []


def test_run_rm_leaves_nothing_and_uses_one_zygote(skiffd: Skiffd) -> None:
    for _ in range(3):
        res = skiffd.docker("run", "--rm", "--network", "none", IMAGE, "true")
        assert res.returncode == 0
    res = skiffd.docker("run", "--rm", "--network", "none", IMAGE, "sh", "-c",
                        "echo out; echo err >&2; exit 3", check=False)
    assert (res.returncode, res.stdout, res.stderr) == (3, b"out\n", b"err\n")
    assert skiffd.out("ps", "-aq") == ""
    assert _entries(skiffd.run / "shims") == [] and _entries(skiffd.run / "bundles") == []
    for runtime_root in (skiffd.run / "runtime").glob("*"):
        # no runtime state left (the hidden seccomp cache stays, on purpose)
        assert [e for e in _entries(runtime_root) if not e.startswith(".")] == [], runtime_root
    assert len(_zygotes(skiffd)) == 1


def test_shims_are_out_of_the_daemons_session_and_group(skiffd: Skiffd) -> None:
    cid = skiffd.run_d("--network", "none", IMAGE, "sleep", "60")
    try:
        state = json.loads(skiffd.out("inspect", cid))[0]["State"]
        assert state["Running"]
        shim = _ppid(state["Pid"])  # the container's init is the shim's child
        [zygote] = _zygotes(skiffd)
        daemon = skiffd.proc.pid if skiffd.proc else 0
        assert shim != zygote and _ppid(shim) != daemon
        # the zygote's own session, not the daemon's (nor ours): a ^C for the daemon's group
        # never reaches a shim, which leads a process group and no session
        assert os.getsid(shim) == os.getsid(zygote) == zygote
        assert os.getsid(zygote) not in (os.getsid(daemon), os.getsid(0))
        assert os.getpgid(shim) == shim
        # exec and its exit code go through the shim's in-process runtime too
        res = skiffd.docker("exec", cid, "sh", "-c", "exit 5", check=False)
        assert res.returncode == 5
    finally:
        skiffd.docker("rm", "-f", cid)


def test_runc_container_beside_the_in_process_runtime(skiffd: Skiffd) -> None:
    res = skiffd.docker("run", "--rm", "--runtime", "runc", "--network", "none", IMAGE, "sh",
                        "-c", "echo via-runc; exit 4", check=False)
    assert (res.returncode, res.stdout) == (4, b"via-runc\n"), res.stderr
    assert _entries(skiffd.run / "runtime" / "runc") == []
    assert skiffd.out("ps", "-aq") == ""


def test_killed_daemon_takes_its_zygote_not_its_containers(busybox_rootfs: Path) -> None:
    with private_skiffd(busybox_rootfs, check_parent_cgroup=False) as d:
        d.docker("run", "--rm", "--network", "none", IMAGE, "true")  # the zygote is up
        [zygote] = _zygotes(d)
        cid = d.run_d("--network", "none", IMAGE, "sh", "-c", "echo up; sleep 60")
        pid = json.loads(d.out("inspect", cid))[0]["State"]["Pid"]
        assert d.stop(signal.SIGKILL) == -signal.SIGKILL
        deadline = time.monotonic() + 5
        while _alive(zygote) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(zygote)  # its stdin (the daemon's pipe) closed
        os.kill(pid, 0)  # the container runs on
        d.start()
        state = json.loads(d.out("inspect", cid))[0]["State"]
        assert state["Running"] and state["Pid"] == pid
        assert d.docker("logs", cid).stdout == b"up\n"
        # a new daemon starts a new zygote, on the same socket path
        d.docker("run", "--rm", "--network", "none", IMAGE, "true")
        assert len(_zygotes(d)) == 1 and _zygotes(d) != [zygote]
        d.docker("rm", "-f", cid)
