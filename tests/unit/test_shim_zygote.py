"""The shim's fast paths without containers: which runtime runs in-process, and the zygote's
request handling, readiness and life tied to its stdin."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from skiff import errors
from skiff.daemon.zygote import Zygote
from skiff.shim import zygote
from skiff.shim.ociruntime import RUNTIME, OCIRuntime, is_own_runtime

OWN = os.path.join(os.path.dirname(sys.executable), RUNTIME)


def test_only_this_installations_skiff_runtime_runs_in_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert os.path.exists(OWN), "the venv has no skiff-runtime console script"
    assert is_own_runtime(OWN)
    assert OCIRuntime(OWN, "/r", "/l", "c").in_process
    # a bare name is what PATH finds, as posix_spawnp would
    monkeypatch.setenv("PATH", os.path.dirname(OWN))
    assert is_own_runtime(RUNTIME)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert not is_own_runtime(RUNTIME)
    # another file of that name (another installation) is exec'd, as is any other runtime
    other = tmp_path / RUNTIME
    other.write_text("#!/bin/sh\nexit 0\n")
    other.chmod(0o755)
    assert not is_own_runtime(str(other))
    assert not is_own_runtime("/usr/sbin/runc")
    assert not OCIRuntime("/usr/sbin/runc", "/r", "/l", "c").in_process
    monkeypatch.setenv("SKIFF_SHIM_EXEC_RUNTIME", "1")
    assert not is_own_runtime(OWN)


def test_zygote_refuses_bad_requests_with_a_message() -> None:
    assert zygote.handle(b"not json", -1)[0] == 2
    code, message = zygote.handle(json.dumps({"argv": "start"}).encode(), -1)
    assert code == 2 and "argv" in message
    code, message = zygote.handle(json.dumps({"argv": ["--id", "x"]}).encode(), -1)
    assert (code, message) == (2, "skiff-shim: start: --bundle is required")


def _zygote_pids(sock: Path) -> list[int]:
    """Our children serving ``sock`` (not its starters: they carry the same command line)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if str(sock).encode() in cmdline and ppid == os.getpid():
            found.append(int(pid))
    return found


def test_zygote_answers_starts_and_exits_with_its_daemon(tmp_path: Path) -> None:
    sock = tmp_path / "z.sock"
    z = Zygote(str(sock))
    try:
        # a start refused by the shim's argument parsing: the answer is the starter's
        code, message = z.start_shim(["--id", "c1", "--bundle", str(tmp_path)])
        assert (code, message) == (2, "skiff-shim: start: --state-dir is required")
        assert sock.exists() and oct(sock.stat().st_mode & 0o777) == "0o600"
        [pid] = _zygote_pids(sock)
        # a raw client gets one answer line per request, and the connection is closed
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.settimeout(10)
            c.connect(str(sock))
            c.sendall(b"{}\n")
            reply = b""
            while chunk := c.recv(4096):
                reply += chunk
        assert json.loads(reply)["code"] == 2
        assert _zygote_pids(sock) == [pid]  # one zygote serves every request
    finally:
        z.close()
    # stdin closed (the daemon gone): the zygote exits and takes its socket with it
    assert _zygote_pids(sock) == []
    assert not sock.exists()
    # used again, it starts a new one
    try:
        assert z.start_shim(["--nope"])[0] == 2
    finally:
        z.close()
    assert _zygote_pids(sock) == []


def test_zygote_that_cannot_listen_is_unavailable(tmp_path: Path) -> None:
    z = Zygote(str(tmp_path / "no-such-dir" / "z.sock"))
    with pytest.raises(errors.Unavailable, match="zygote"):
        z.start_shim(["--id", "x"])
    z.close()


def test_zygote_command_line_usage() -> None:
    res = subprocess.run([sys.executable, "-m", "skiff.shim", "zygote"], capture_output=True,
                         text=True, timeout=30, check=False)
    assert res.returncode == 2 and "--socket PATH" in res.stderr


def test_a_forked_shim_can_show_its_own_command_line() -> None:
    # a child with room in its argument area (as the daemon starts the zygote) renames itself
    code = ("import sys; from skiff.shim.proctitle import set_title; "
            "assert set_title(['python', '-m', 'skiff.shim', 'start', '--id', 'c' * 64]); "
            "sys.stdout.buffer.write(open('/proc/self/cmdline', 'rb').read())")
    res = subprocess.run([sys.executable, "-c", code, " " * 1024], capture_output=True,
                         timeout=30, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.rstrip(b"\0").split(b"\0") == [
        b"python", b"-m", b"skiff.shim", b"start", b"--id", b"c" * 64]
    # without the room, what does not fit is cut off (never written past the area)
    res = subprocess.run([sys.executable, "-c", code.replace("* 64", "* 4000")],
                         capture_output=True, timeout=30, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(b"python\0-m\0skiff.shim\0start\0--id\0ccc")
    assert len(res.stdout) < 4000


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _wait_for(cond: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_spare_child_waits_for_each_request_and_dies_with_the_zygote(
        tmp_path: Path) -> None:
    sock = tmp_path / "z.sock"
    z = Zygote(str(sock))
    try:
        assert z.start_shim(["--nope"])[0] == 2  # taken by the first spare
        [zpid] = _zygote_pids(sock)
        # the spare that answered has exited; a new one waits for the next request
        spare = _the_spare(zpid)
        assert z.start_shim(["--nope"])[0] == 2
        assert _wait_for(lambda: _one_other(zpid, spare))
        # a spare killed while idle is replaced
        spare = _the_spare(zpid)
        os.kill(spare, signal.SIGKILL)
        assert _wait_for(lambda: _one_other(zpid, spare))
        assert z.start_shim(["--nope"])[0] == 2
        # the zygote killed outright: its idle spare must not live on holding the socket
        spare = _the_spare(zpid)
        os.kill(zpid, signal.SIGKILL)
        assert _wait_for(lambda: _gone(spare))
    finally:
        z.close()


def _the_spare(zygote: int) -> int:
    """The zygote's only child, once it has only one: a shim that just answered is its
    child (or zombie) for a moment after its reply."""
    found: list[int] = []

    def one() -> bool:
        found[:] = _children(zygote)
        return len(found) == 1

    assert _wait_for(one), found
    return found[0]


def _one_other(zygote: int, old: int) -> bool:
    """The zygote has exactly one child, and it is not ``old``."""
    children = _children(zygote)
    return len(children) == 1 and children != [old]


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
