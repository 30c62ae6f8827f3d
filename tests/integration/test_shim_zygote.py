"""Shims forked from the zygote, running skiff-runtime in-process, on real containers.

What exec'ing a fresh runtime gave for free must still hold: the container gets no
descriptor of the shim's or the zygote's, no ignored signal, and the shim is nobody's child
and holds nothing of the zygote's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from skiff.daemon.zygote import Zygote
from skiff.shim.client import ShimClient
from tests.integration.support import cgroup_dirs, new_id, read_config, write_config

Bundle = Callable[..., Path]


@pytest.fixture
def zyg(tmp_path: Path) -> Iterator[Zygote]:
    z = Zygote(str(tmp_path / "z.sock"))
    yield z
    z.close()


def _argv(cid: str, bundle: Path, state: Path, root: Path, runtime: str,
          log: Path) -> list[str]:
    return ["--id", cid, "--bundle", str(bundle), "--state-dir", str(state), "--runtime",
            runtime, "--runtime-root", str(root), "--log-path", str(log)]


def _fd_links(pid: int) -> list[str]:
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            continue
    return links


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_zygote_shim_with_in_process_runtime_is_clean(
        zyg: Zygote, make_bundle: Bundle, tmp_path: Path, venv_bin: Path) -> None:
    runtime, root = str(venv_bin / "skiff-runtime"), tmp_path / "rr"
    cid, state, log = new_id("zyg"), tmp_path / "st", tmp_path / "c.log"
    # (`; true`: busybox sh execs a last command, passing on its own SIGQUIT ignore as pid 1)
    bundle = make_bundle(["sh", "-c", "ls /proc/self/fd; grep -E '^Sig(Ign|Blk)' "
                                      "/proc/self/status; true"])
    code, message = zyg.start_shim(_argv(cid, bundle, state, root, runtime, log))
    assert (code, message) == (0, "")
    client = ShimClient(str(state), timeout=30)
    st = client.state()
    shim_pid, init_pid = st["shim_pid"], st["pid"]
    try:
        assert st["status"] == "created"
        zygote_pid = zyg._proc.pid if zyg._proc else 0
        assert zygote_pid and os.getppid() != shim_pid
        # one fork: the zygote's child is the shim, in a process group of its own and in the
        # zygote's session (not the caller's); the zygote never waits for it, and its going
        # away must not take the shim along
        assert _ppid(shim_pid) == zygote_pid
        assert os.getpgid(shim_pid) == shim_pid
        assert os.getsid(shim_pid) == os.getsid(zygote_pid) == zygote_pid != os.getsid(0)
        # The shim holds its listener and no socket of the zygote's (wait for our state
        # connection to be closed on its side).
        deadline = time.monotonic() + 5
        while sum(x.startswith("socket:") for x in _fd_links(shim_pid)) > 1 \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sum(x.startswith("socket:") for x in _fd_links(shim_pid)) == 1
        client.start()
        assert client.wait(timeout=30)["exit_code"] == 0
        out = "".join(json.loads(line)["log"] for line in log.read_text().splitlines())
        lines = out.split()
        fds = lines[:lines.index("SigBlk:")] if "SigBlk:" in lines else lines
        # ls's own: 0-2, and 3 for the directory it reads; nothing inherited
        assert set(fds) <= {"0", "1", "2", "3"}, out
        assert "SigIgn:\t0000000000000000" in out and "SigBlk:\t0000000000000000" in out, out
        # the zygote going away (the daemon died) leaves the shim serving
        zyg.close()
        assert not _alive(zygote_pid)
        assert _ppid(shim_pid) != zygote_pid  # reparented
        assert client.state()["status"] == "stopped"
        client.delete()
    finally:
        if _alive(shim_pid):
            os.kill(shim_pid, 9)
        subprocess.run([runtime, "--root", str(root), "delete", "--force", cid],
                       capture_output=True, check=False)
    deadline = time.monotonic() + 5
    while _alive(shim_pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(shim_pid) and not _alive(init_pid)
    assert not state.exists() and not (root / cid).exists()
    assert cgroup_dirs(cid) == []


@pytest.mark.parametrize("runtime_name", ["skiff-runtime", "runc"])
def test_create_failure_through_the_zygote_is_one_line_and_leaves_nothing(
        zyg: Zygote, make_bundle: Bundle, tmp_path: Path, venv_bin: Path,
        runtime_name: str) -> None:
    runtime = str(venv_bin / "skiff-runtime") if runtime_name == "skiff-runtime" \
        else shutil.which("runc")
    if runtime is None:
        pytest.fail("runc is not installed (scripts/bootstrap installs Debian's runc)")
    bundle = make_bundle(["true"])
    cfg = read_config(bundle)
    cfg["root"]["path"] = "no-such-rootfs"
    write_config(bundle, cfg)
    cid, state, root = new_id("zbad"), tmp_path / "st", tmp_path / "rr"
    code, message = zyg.start_shim(_argv(cid, bundle, state, root, runtime,
                                         tmp_path / "c.log"))
    assert code == 1
    assert "\n" not in message and cid in message and "create" in message, message
    assert "no-such-rootfs" in message or "no such file" in message.lower(), message
    assert not state.exists() and not (root / cid).exists()
    assert cgroup_dirs(cid) == []
