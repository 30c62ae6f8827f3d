"""The shim on real containers, driven by skiff-runtime and by runc.

The daemon does not exist yet; these tests play its part: a starter process runs
``python -m skiff.shim start``, gets SIGKILLed, and a fresh client reconnects to the shim.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from skiff.errors import Conflict, NotFound, SystemFailure
from skiff.shim import exitfile
from skiff.shim.client import ShimClient, read_frames
from skiff.shim.logs import read_logs
from tests.integration.support import cgroup_dirs, new_id, read_config, write_config

Bundle = Callable[..., Path]

PROC = {"args": ["true"], "cwd": "/", "env": ["PATH=/usr/bin:/bin"], "user": {"uid": 0, "gid": 0}}


def _runtimes() -> list[str]:
    return ["skiff-runtime", "runc"]


class Started:
    """One shim started by a test, with what it needs to check and clean up."""

    def __init__(self, cid: str, state: Path, runtime: list[str], root: Path) -> None:
        self.cid = cid
        self.state = state
        self.runtime = runtime
        self.root = root
        self.client = ShimClient(str(state), timeout=30)
        self.shim_pid = 0


@pytest.fixture(params=_runtimes())
def runtime_bin(request: pytest.FixtureRequest, venv_bin: Path) -> str:
    if request.param == "runc":
        path = shutil.which("runc")
        if path is None:
            pytest.fail("runc is not installed (scripts/bootstrap installs Debian's runc)")
        return path
    return str(venv_bin / "skiff-runtime")


@pytest.fixture
def shims(tmp_path: Path, runtime_bin: str) -> Iterator[Callable[..., Started]]:
    """Factory that starts shims; afterwards, whatever a failed test left is taken down."""
    made: list[Started] = []
    root = tmp_path / "rr"

    def start(bundle: Path, *extra: str, cid: str | None = None, starter: list[str] | None = None
              ) -> Started:
        s = Started(cid or new_id("shim"), tmp_path / f"st{len(made)}", [runtime_bin], root)
        made.append(s)
        argv = _start_argv(s, bundle, *extra)
        if starter is None:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
            assert res.returncode == 0, res.stderr
        s.shim_pid = s.client.state()["shim_pid"]
        return s

    yield start
    for s in made:
        if s.shim_pid and _alive(s.shim_pid):
            os.kill(s.shim_pid, signal.SIGKILL)
        subprocess.run([*s.runtime, "--root", str(root), "delete", "--force", s.cid],
                       capture_output=True, check=False)
        shutil.rmtree(s.state, ignore_errors=True)


def _start_argv(s: Started, bundle: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "skiff.shim", "start", "--id", s.cid, "--bundle", str(bundle),
            "--state-dir", str(s.state), "--runtime", s.runtime[0], "--runtime-root",
            str(s.root), *extra]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _assert_gone(s: Started, pids: list[int]) -> None:
    """After delete: no state dir, no runtime state, no cgroup, no process."""
    assert not s.state.exists(), list(s.state.iterdir())
    assert not (s.root / s.cid).exists()
    assert cgroup_dirs(s.cid) == []
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in [s.shim_pid, *pids]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not [p for p in [s.shim_pid, *pids] if _alive(p)]


def _pipes(pid: int) -> int:
    """How many pipes the shim has open (client sockets come and go; pipes must not leak)."""
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            continue
    return sum(link.startswith("pipe:") for link in links)


def _recv_until(sock: socket.socket, want: bytes, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    out = b""
    while want not in out:
        chunk = sock.recv(4096)
        if not chunk:
            break
        out += chunk
    return out


def test_shim_outlives_a_killed_starter_and_serves_a_reconnecting_client(
        runtime_bin: str, make_bundle: Bundle, tmp_path: Path) -> None:
    bundle = make_bundle(["sh", "-c", "echo hello; echo oops >&2; read line; "
                                      "echo \"got $line\"; exit 3"])
    s = Started(new_id("shim"), tmp_path / "st", [runtime_bin], tmp_path / "rr")
    # The starter runs under a stand-in daemon (a shell in its own process group) that is
    # SIGKILLed, with its whole group, once the container exists.
    daemon = subprocess.Popen(["sh", "-c", '"$@" && echo started; sleep 60', "sh",
                               *_start_argv(s, bundle, "--stdin")],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert daemon.stdout is not None
        assert daemon.stdout.readline().strip() == "started"
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait(timeout=10)

        # The "restarted daemon": a new client that knows only the state directory.
        state = s.client.state()
        s.shim_pid = state["shim_pid"]
        assert _alive(s.shim_pid)
        assert _ppid(s.shim_pid) not in (daemon.pid, os.getpid())
        assert state["status"] == "created" and state["id"] == s.cid
        init_pid = state["pid"]

        first = s.client.attach(stdin=True, logs=True)
        second = s.client.attach(stdout=True, stderr=False)
        s.client.start()
        assert s.client.state()["status"] in ("running", "stopped")
        first.sendall(b"over the wire\n")
        frames = list(read_frames(first))
        out_only = list(read_frames(second))
        exit_rec = s.client.wait(timeout=30)
        s.client.delete()
    finally:
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
        if s.shim_pid and _alive(s.shim_pid):
            os.kill(s.shim_pid, signal.SIGKILL)
        subprocess.run([runtime_bin, "--root", str(s.root), "delete", "--force", s.cid],
                       capture_output=True, check=False)

    assert b"".join(d for st, d in frames if st == 1) == b"hello\ngot over the wire\n"
    assert b"".join(d for st, d in frames if st == 2) == b"oops\n"
    assert {st for st, _ in out_only} == {1}
    assert b"".join(d for _, d in out_only) == b"hello\ngot over the wire\n"
    assert exit_rec["exit_code"] == 3 and exit_rec["pid"] == init_pid
    assert exit_rec["oom_killed"] is False
    _assert_gone(s, [init_pid])


def test_wait_logs_exit_record_and_delete_leave_nothing(
        shims: Callable[..., Started], make_bundle: Bundle, tmp_path: Path) -> None:
    logs = tmp_path / "logs" / "c.log"
    logs.parent.mkdir()
    s = shims(make_bundle(["sh", "-c", "echo one; echo two >&2; printf unfinished; exit 0"]),
              "--log-path", str(logs))
    init_pid = s.client.state()["pid"]
    with pytest.raises(Conflict):
        s.client.delete()  # created, not stopped: refused without force
    s.client.start()
    rec = s.client.wait(timeout=30)
    assert rec["exit_code"] == 0
    # The exit record on disk is the one wait returned; a second wait returns it at once.
    assert exitfile.read(str(s.state)) == rec
    assert s.client.wait(timeout=5) == rec
    assert s.client.state()["exit"] == rec
    lines = [json.loads(line) for line in logs.read_text().splitlines()]
    assert [(e["stream"], e["log"]) for e in lines if e["stream"] == "stdout"] == [
        ("stdout", "one\n"), ("stdout", "unfinished")]
    assert [e["log"] for e in lines if e["stream"] == "stderr"] == ["two\n"]
    got = [(e.stream, e.data) for e in read_logs(str(logs), tail=2)]
    assert len(got) == 2 and ("stdout", b"unfinished") in got
    # Attach after the exit with logs: the replay, then the shim closes the stream.
    replay = list(read_frames(s.client.attach(logs=True)))
    assert b"".join(d for st, d in replay if st == 1) == b"one\nunfinished"
    s.client.delete()
    _assert_gone(s, [init_pid])
    assert logs.exists()  # the log outside the state dir is the daemon's to remove


def test_tty_resize_attach_and_exec_with_tty(shims: Callable[..., Started],
                                             make_bundle: Bundle) -> None:
    s = shims(make_bundle(["sh", "-c", "stty size; read x; echo \"got $x\"; sleep 100"],
                          terminal=True), "--stdin")
    assert s.client.state()["tty"] is True
    s.client.resize(30, 100)
    sock = s.client.attach(stdin=True)
    s.client.start()
    sock.sendall(b"typed\n")
    out = _recv_until(sock, b"got typed")
    assert b"30 100" in out and b"got typed" in out
    exec_id = "e" * 64  # Docker's exec ids are this long; the console socket must still fit
    ex = s.client.exec_attached(exec_id, {**PROC, "args": ["sh", "-c", "read a; tty"]},
                                tty=True, stdin=True)
    s.client.resize(12, 34, exec_id=exec_id)
    ex.sendall(b"x\n")
    assert b"/dev/pts/" in _recv_until(ex, b"/dev/pts/")
    assert s.client.wait(exec_id=exec_id, timeout=10)["exit_code"] == 0
    s.client.kill("SIGKILL")
    assert s.client.wait(timeout=10)["exit_code"] == 137
    sock.settimeout(10)
    while sock.recv(65536):  # the shim closes the stream after the exit
        pass
    s.client.delete()
    _assert_gone(s, [])


def test_exec_streams_wait_kill_and_errors(shims: Callable[..., Started],
                                           make_bundle: Bundle) -> None:
    s = shims(make_bundle(["sleep", "1000"]))
    s.client.start()
    # A wait pending on one connection does not hold up requests on the others.
    waited: list[dict[str, object]] = []
    waiter = threading.Thread(target=lambda: waited.append(s.client.wait(timeout=60)))
    pipes_before = _pipes(s.shim_pid)
    with pytest.raises(SystemFailure, match=f"exec container {s.cid}"):
        s.client.exec("bad", {**PROC, "args": ["/no/such/binary"]})
    assert _pipes(s.shim_pid) == pipes_before  # the failed exec's stdio pipes are closed
    waiter.start()
    assert "bad" not in s.client.state()["execs"]
    ex = s.client.exec_attached("cat", {**PROC, "args": ["sh", "-c", "cat; echo bye >&2"]},
                                stdin=True)
    ex.sendall(b"echoed back\n")
    ex.shutdown(socket.SHUT_WR)  # stdin_once: the client's end closes the process's stdin
    frames = list(read_frames(ex))
    assert b"".join(d for k, d in frames if k == 1) == b"echoed back\n"
    assert b"".join(d for k, d in frames if k == 2) == b"bye\n"
    assert s.client.wait(exec_id="cat", timeout=10)["exit_code"] == 0

    pid = s.client.exec("five", {**PROC, "args": ["sh", "-c", "exit 5"]})
    assert pid > 0
    assert s.client.wait(exec_id="five", timeout=10)["exit_code"] == 5
    s.client.exec("sleeper", {**PROC, "args": ["sleep", "100"]})
    s.client.kill(signal.SIGTERM, exec_id="sleeper")
    assert s.client.wait(exec_id="sleeper", timeout=10)["exit_code"] == 128 + signal.SIGTERM
    execs = s.client.state()["execs"]
    assert execs["five"]["exit_code"] == 5 and not execs["sleeper"]["running"]
    with pytest.raises(Conflict):
        s.client.exec("five", PROC)
    with pytest.raises(NotFound):
        s.client.wait(exec_id="nope")
    with pytest.raises(Conflict):
        s.client.start()  # already running
    s.client.kill("SIGKILL", all=True)
    assert s.client.wait(timeout=10)["exit_code"] == 137
    waiter.join(timeout=10)
    assert waited and waited[0]["exit_code"] == 137
    with pytest.raises(Conflict, match="not running"):
        s.client.kill("SIGKILL")
    s.client.delete()
    _assert_gone(s, [pid])


def test_create_failure_is_one_line_naming_the_container_and_leaves_nothing(
        make_bundle: Bundle, tmp_path: Path, runtime_bin: str) -> None:
    bundle = make_bundle(["true"])
    cfg = read_config(bundle)
    cfg["root"]["path"] = "no-such-rootfs"
    write_config(bundle, cfg)
    s = Started(new_id("bad"), tmp_path / "st", [runtime_bin], tmp_path / "rr")
    res = subprocess.run(_start_argv(s, bundle), capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and s.cid in lines[0] and "create" in lines[0], res.stderr
    assert "no-such-rootfs" in lines[0] or "no such file" in lines[0].lower()
    assert not s.state.exists()
    assert not (s.root / s.cid).exists()
    assert cgroup_dirs(s.cid) == []


def test_second_start_for_the_same_state_dir_is_refused(
        shims: Callable[..., Started], make_bundle: Bundle) -> None:
    s = shims(make_bundle(["sleep", "100"]))
    res = subprocess.run(_start_argv(s, make_bundle(["true"])), capture_output=True,
                         text=True, timeout=60, check=False)
    assert res.returncode == 1 and "running" in res.stderr
    assert s.client.state()["status"] == "created"
    s.client.delete(force=True)
    _assert_gone(s, [])


def test_oom_kill_is_reported_by_wait(shims: Callable[..., Started],
                                      make_bundle: Bundle) -> None:
    bundle = make_bundle(["tail", "/dev/zero"])  # no newline ever: tail's buffer grows
    cfg = read_config(bundle)
    cfg["linux"]["resources"] = {**cfg["linux"].get("resources", {}),
                                 "memory": {"limit": 32 << 20, "swap": 32 << 20}}
    write_config(bundle, cfg)
    s = shims(bundle)
    s.client.start()
    rec = s.client.wait(timeout=60)
    assert rec["exit_code"] == 137 and rec["oom_killed"] is True
    s.client.delete()
    _assert_gone(s, [])


def test_logs_rotate_and_follow_reads_across_files(shims: Callable[..., Started],
                                                    make_bundle: Bundle) -> None:
    script = "i=0; while [ $i -lt 400 ]; do echo line-$i; i=$((i+1)); done"
    s = shims(make_bundle(["sh", "-c", script]), "--log-max-size", "4k",
              "--log-max-file", "3")
    log = s.state / "json.log"
    follower = read_logs(str(log), follow=True, poll=0.01,
                         stop=lambda: exitfile.read(str(s.state)) is not None)
    s.client.start()
    seen = [e.data for e in follower]
    s.client.wait(timeout=30)
    files = sorted(p.name for p in s.state.iterdir() if p.name.startswith("json.log"))
    assert files == ["json.log", "json.log.1", "json.log.2"]
    assert all(p.stat().st_size <= 4096 for p in s.state.glob("json.log*"))
    # The container outruns the follower here, and files rotated away before it got to them
    # are gone (as with Docker): it sees lines in order, none twice, from the first file it
    # held open, and everything still on disk at the end.
    numbers = [int(d.decode().strip().split("-")[1]) for d in seen]
    assert numbers == sorted(set(numbers)) and numbers[0] == 0 and numbers[-1] == 399
    kept = [e.data for e in read_logs(str(log))]
    assert 0 < len(kept) < 400
    assert kept == [f"line-{i}\n".encode() for i in range(400 - len(kept), 400)]
    assert [e.data for e in read_logs(str(log), tail=3)] == seen[-3:]
    s.client.delete()
    _assert_gone(s, [])


def test_idle_shim_memory(shims: Callable[..., Started], make_bundle: Bundle) -> None:
    s = shims(make_bundle(["sleep", "100"]))
    s.client.start()
    with open(f"/proc/{s.shim_pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    rss_kib = int(fields["VmRSS"].split()[0])
    anon_kib = int(fields["RssAnon"].split()[0])
    print(f"idle shim: VmRSS {rss_kib} KiB, RssAnon {anon_kib} KiB")
    # The budget the 50-container benchmark rests on; Go's containerd-shim is ~10 MiB.
    assert anon_kib < 12 * 1024, fields["RssAnon"]
    s.client.delete(force=True)
    _assert_gone(s, [])


def test_close_stdin_ends_the_input_and_detached_clients_do_not(
        shims: Callable[..., Started], make_bundle: Bundle) -> None:
    s = shims(make_bundle(["sh", "-c", "cat; echo done"]), "--stdin")
    s.client.start()
    writer = s.client.attach(stdin=True, stdout=False, stderr=False)
    writer.sendall(b"first\n")
    writer.close()  # without stdin_once, a client leaving does not end the input
    reader = s.client.attach(stdin=True, logs=True)  # logs: "first" may be echoed already
    reader.sendall(b"second\n")
    time.sleep(0.2)
    assert s.client.state()["status"] == "running"
    s.client.close_stdin()
    frames = list(read_frames(reader))
    assert b"".join(d for _, d in frames) == b"first\nsecond\ndone\n"
    assert s.client.wait(timeout=10)["exit_code"] == 0
    s.client.delete()
    _assert_gone(s, [])
