"""The whole shim, without root: a stand-in OCI runtime that runs the "container" as a plain
process (no namespaces) but keeps runc's command line and its create/start split.

The real runtimes (skiff-runtime, runc) are driven in tests/integration/test_shim.py; this
keeps the shim's loop, protocol, logs and clean-up covered where there is no root.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from skiff.errors import Conflict, NotFound
from skiff.shim import exitfile
from skiff.shim.client import ShimClient, read_frames

FAKE_RUNTIME = '''
import json, os, signal, sys

argv = sys.argv[1:]
root, log = argv[argv.index("--root") + 1], argv[argv.index("--log") + 1]
rest = argv[argv.index("--log-format") + 2:]
cmd = rest[0]
cid = rest[-2] if cmd == "kill" else rest[-1]  # kill ID SIGNAL
state = os.path.join(root, cid)


def opt(name):
    return rest[rest.index(name) + 1] if name in rest else None


def fail(msg):
    with open(log, "a") as f:
        f.write(json.dumps({"level": "error", "msg": msg}) + "\\n")
    sys.exit(1)


def spawn(args, wait_fifo=None):
    pid = os.fork()
    if pid == 0:
        if wait_fifo:
            with open(wait_fifo) as f:  # blocks until start opens the other end
                f.read(1)
        os.execvp(args[0], args)
    return pid


if cmd == "create":
    try:
        with open(os.path.join(opt("--bundle"), "config.json")) as f:
            spec = json.load(f)
    except FileNotFoundError:
        fail(f"bundle {opt('--bundle')}: no config.json")
    if os.path.exists(state):
        fail(f"container {cid} already exists")
    os.makedirs(state)
    os.mkfifo(os.path.join(state, "fifo"))
    pid = spawn(spec["process"]["args"], os.path.join(state, "fifo"))
    for path in (opt("--pid-file"), os.path.join(state, "pid")):
        with open(path, "w") as f:
            f.write(str(pid))
elif cmd == "start":
    with open(os.path.join(state, "fifo"), "w") as f:
        f.write("x")
elif cmd == "kill":
    with open(os.path.join(state, "pid")) as f:
        os.kill(int(f.read()), int(rest[-1]))
elif cmd == "delete":
    with open(os.path.join(state, "pid")) as f:
        pid = int(f.read())
    if "--force" in rest:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for name in os.listdir(state):
        os.unlink(os.path.join(state, name))
    os.rmdir(state)
elif cmd == "exec":
    with open(opt("--process")) as f:
        proc = json.load(f)
    pid = spawn(proc["args"])
    with open(opt("--pid-file"), "w") as f:
        f.write(str(pid))
'''


@pytest.fixture
def fake_runtime(tmp_path: Path) -> str:
    path = tmp_path / "fake-runc"
    path.write_text(f"#!{sys.executable}\n{FAKE_RUNTIME}")
    path.chmod(0o755)
    return str(path)


def _bundle(tmp_path: Path, args: list[str]) -> Path:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"process": {"args": args,
                                                                "terminal": False}}))
    return bundle


def _start(fake: str, tmp_path: Path, bundle: Path, cid: str, *extra: str
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "skiff.shim", "start", "--id", cid, "--bundle", str(bundle),
         "--state-dir", str(tmp_path / "state"), "--runtime", fake, "--runtime-root",
         str(tmp_path / "root"), *extra], capture_output=True, text=True, timeout=60,
        check=False)


def _gone(pid: int) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


def test_shim_lifecycle_with_a_stand_in_runtime(fake_runtime: str, tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, ["sh", "-c", "echo hi; echo warn >&2; read x; echo \"got $x\"; "
                                            "exit 4"])
    res = _start(fake_runtime, tmp_path, bundle, "c1", "--stdin")
    assert res.returncode == 0, res.stderr
    client = ShimClient(str(tmp_path / "state"))
    state = client.state()
    shim_pid = state["shim_pid"]
    try:
        assert state["status"] == "created"
        with open(f"/proc/{shim_pid}/stat") as f:
            assert int(f.read().rsplit(")", 1)[1].split()[1]) != os.getpid()  # not our child
        sock = client.attach(stdin=True, logs=True)
        client.start()
        sock.sendall(b"input\n")
        frames = list(read_frames(sock))
        rec = client.wait(timeout=30)
        assert rec["exit_code"] == 4 and rec["pid"] == state["pid"]
        assert exitfile.read(str(tmp_path / "state")) == rec
        # stdout and stderr are separate pipes: their relative order is not fixed, and how a
        # stream's bytes are cut into frames depends on when the pipe was read.
        assert b"".join(d for k, d in frames if k == 1) == b"hi\ngot input\n"
        assert b"".join(d for k, d in frames if k == 2) == b"warn\n"
        logged = [json.loads(line) for line in
                  (tmp_path / "state" / "json.log").read_text().splitlines()]
        assert [(e["stream"], e["log"]) for e in logged if e["stream"] == "stdout"] == [
            ("stdout", "hi\n"), ("stdout", "got input\n")]
        with pytest.raises(Conflict):
            client.start()
        client.delete()
    finally:
        if not _gone(shim_pid):
            os.kill(shim_pid, 9)
    assert not (tmp_path / "state").exists()
    assert not (tmp_path / "root" / "c1").exists()
    assert _gone(shim_pid)


def test_exec_and_kill_with_a_stand_in_runtime(fake_runtime: str, tmp_path: Path) -> None:
    res = _start(fake_runtime, tmp_path, _bundle(tmp_path, ["sleep", "60"]), "c2")
    assert res.returncode == 0, res.stderr
    client = ShimClient(str(tmp_path / "state"))
    shim_pid = client.state()["shim_pid"]
    try:
        client.start()
        sock = client.exec_attached("e1", {"args": ["sh", "-c", "cat; exit 6"]}, stdin=True)
        sock.sendall(b"round trip\n")
        sock.shutdown(1)
        assert list(read_frames(sock)) == [(1, b"round trip\n")]
        assert client.wait(exec_id="e1", timeout=10)["exit_code"] == 6
        assert "e1" in client.state()["execs"]
        client.exec_delete("e1")  # collected: the shim forgets it
        assert "e1" not in client.state()["execs"]
        with pytest.raises(NotFound):
            client.exec_delete("e1")
        client.kill("SIGTERM")
        assert client.wait(timeout=10)["exit_code"] == 128 + 15
        client.delete()
    finally:
        if not _gone(shim_pid):
            os.kill(shim_pid, 9)
    assert not (tmp_path / "state").exists()


def test_create_error_reaches_the_starter(fake_runtime: str, tmp_path: Path) -> None:
    bundle = tmp_path / "empty-bundle"
    bundle.mkdir()
    res = _start(fake_runtime, tmp_path, bundle, "c3")
    assert res.returncode == 1
    assert res.stderr.strip() == f"create container c3: bundle {bundle}: no config.json"
    assert not (tmp_path / "state").exists()


def test_a_killed_shims_socket_does_not_block_a_new_start_nor_lose_the_container(
        fake_runtime: str, tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, ["sleep", "60"])
    assert _start(fake_runtime, tmp_path, bundle, "c4").returncode == 0
    client = ShimClient(str(tmp_path / "state"))
    state = client.state()
    try:
        os.kill(state["shim_pid"], 9)
        assert _gone(state["shim_pid"])
        res = _start(fake_runtime, tmp_path, bundle, "c4")
        # Not "one is running": the stale socket was noticed. The runtime refuses the name,
        # and the failed start does not delete the container that holds it.
        assert res.returncode == 1
        assert res.stderr.strip() == "create container c4: container c4 already exists"
        assert (tmp_path / "root" / "c4").exists()
        assert os.path.exists(f"/proc/{state['pid']}")  # its process too
    finally:
        os.kill(state["pid"], 9)
