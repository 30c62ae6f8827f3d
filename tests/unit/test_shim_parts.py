"""The shim's small parts: protocol, exit record, runtime driver, OOM counter, arguments."""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time
from pathlib import Path

import pytest

from skiff import errors
from skiff.shim import exitfile, oom, protocol
from skiff.shim.__main__ import parse_start
from skiff.shim.ociruntime import OCIRuntime, error_from_log
from skiff.shim.server import parse_signal


def test_request_and_reply_lines() -> None:
    line = protocol.encode({"op": "state"})
    assert line.endswith(b"\n") and b"\n" not in line[:-1]
    assert protocol.decode_request(line) == {"v": 1, "op": "state"}
    assert protocol.decode_request(b'{"op": "kill"}')["op"] == "kill"  # v may be left out
    for bad in (b"not json", b"[1]", b'{"v": 1}', b'{"op": "state", "v": 99}'):
        with pytest.raises(errors.InvalidArgument):
            protocol.decode_request(bad)


def test_errors_travel_as_their_kind() -> None:
    reply = protocol.error_reply(errors.Conflict("start container x: it is running"))
    wire = json.loads(protocol.encode(reply))
    with pytest.raises(errors.Conflict, match="start container x: it is running"):
        protocol.raise_for(wire)
    with pytest.raises(errors.SystemFailure):
        protocol.raise_for({"ok": False, "error": {"kind": "KeyError", "message": "m"}})
    assert protocol.raise_for({"ok": True, "x": 1}) == {"ok": True, "x": 1}


def test_docker_stream_frames() -> None:
    data = b"x" * 300
    f = protocol.frame(protocol.STDERR, data)
    assert f[:8] == bytes([2, 0, 0, 0, 0, 0, 1, 44])  # big-endian 300
    assert protocol.parse_header(f[:8]) == (2, 300) and f[8:] == data


def test_signals_by_name_or_number() -> None:
    assert parse_signal("SIGKILL") == 9
    assert parse_signal("term") == int(signal.SIGTERM)
    assert parse_signal("9") == 9
    assert parse_signal(15) == 15
    for bad in ("SIGNOPE", True, None, 1.5):
        with pytest.raises(errors.InvalidArgument):
            parse_signal(bad)


def test_exit_record_is_written_whole(tmp_path: Path) -> None:
    assert exitfile.read(str(tmp_path)) is None
    rec = {"exit_code": 3, "exited_at": "2024-01-01T00:00:00Z", "oom_killed": False, "pid": 7}
    exitfile.write(str(tmp_path), rec)
    assert exitfile.read(str(tmp_path)) == rec
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exit.json"]  # no temp file left


def test_error_from_runtime_json_log() -> None:
    log = "\n".join([
        json.dumps({"level": "warning", "msg": "something odd", "time": "t"}),
        "not json",
        json.dumps({"level": "error", "msg": "first", "time": "t"}),
        json.dumps({"level": "error", "msg": "container_linux.go:1: starting\nexec: \"x\": "
                    "not found", "time": "t"}),
    ])
    assert error_from_log(log) == 'container_linux.go:1: starting exec: "x": not found'
    assert error_from_log('{"level":"info","msg":"fine"}') is None


def _fake_runtime(tmp_path: Path, body: str) -> str:
    script = tmp_path / "fake-runtime"
    # $4 is the --log path: argv is BIN --root R --log L --log-format json ...
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_runtime_failure_reports_the_logged_error_naming_the_container(tmp_path: Path) -> None:
    line = '{"level":"error","msg":"no such\\nbundle"}'  # JSON with an escaped newline
    binary = _fake_runtime(tmp_path, f"printf '%s\\n' '{line}' >> \"$4\"\nexit 1\n")
    rt = OCIRuntime(binary, str(tmp_path / "root"), str(tmp_path / "rt.log"), "c1")
    with pytest.raises(errors.SystemFailure) as info:
        rt.run("create", ["create", "c1"])
    assert str(info.value) == "create container c1: no such bundle"
    # An error logged by an earlier call is not blamed on this one.
    binary2 = _fake_runtime(tmp_path, "exit 2\n")
    rt2 = OCIRuntime(binary2, str(tmp_path / "root"), str(tmp_path / "rt.log"), "c1")
    with pytest.raises(errors.SystemFailure, match="start container c1: fake-runtime exited "
                                                   "with 2"):
        rt2.run("start", ["start", "c1"])


def test_runtime_gets_our_fds_and_default_signal_dispositions(tmp_path: Path) -> None:
    binary = _fake_runtime(tmp_path, 'echo "$@"; grep SigIgn /proc/$$/status >&2\n')
    rt = OCIRuntime(binary, "/r", str(tmp_path / "rt.log"), "c1")
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    old = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with open(os.devnull) as null:
            rt.run("kill", ["kill", "c1", "9"], (null.fileno(), out_w, err_w))
    finally:
        signal.signal(signal.SIGTERM, old)
        os.close(out_w)
        os.close(err_w)
    with os.fdopen(out_r) as out, os.fdopen(err_r) as err:
        argv, sigign = out.read(), err.read()
    assert argv.split() == ["--root", "/r", "--log", str(tmp_path / "rt.log"), "--log-format",
                            "json", "kill", "c1", "9"]
    mask = int(sigign.split()[1], 16)
    assert not mask & (1 << (signal.SIGTERM - 1)), "SIGTERM ignored in the runtime"
    assert not mask & (1 << (signal.SIGPIPE - 1)), "SIGPIPE ignored in the runtime"


def test_missing_runtime_binary(tmp_path: Path) -> None:
    rt = OCIRuntime(str(tmp_path / "nope"), "/r", str(tmp_path / "rt.log"), "c1")
    with pytest.raises(errors.SystemFailure, match="create container c1"):
        rt.run("create", ["create", "c1"])


def test_oom_counters_v1_and_v2(tmp_path: Path) -> None:
    v1 = tmp_path / "v1"
    v1.mkdir()
    (v1 / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")
    assert oom.oom_kills(str(v1)) == 2
    assert oom.oom_kills(str(v2)) == 1
    assert oom.oom_kills(str(tmp_path / "gone")) == 0
    assert oom.oom_kills(None) == 0


def test_memory_cgroup_of_a_process() -> None:
    found = oom.memory_cgroup(os.getpid(), root="/fake")
    with open("/proc/self/cgroup") as f:
        lines = f.read().splitlines()
    v1 = [line.split(":", 2)[2] for line in lines if "memory" in line.split(":")[1].split(",")]
    if v1:
        assert found == "/fake/memory/" + v1[0].lstrip("/")
    else:
        assert found is None  # v2: /fake has no memory.events
    assert oom.memory_cgroup(2**22 + 12345) is None  # no such process


def test_start_arguments(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"process": {"terminal": True}}))
    cfg = parse_start(["--id", "c1", "--bundle", str(bundle), "--state-dir", "s",
                       "--runtime-root=/rr", "--stdin", "--log-max-size", "1m"])
    assert (cfg.id, cfg.tty, cfg.stdin, cfg.log_max_size, cfg.log_max_file) == (
        "c1", True, True, 1024 * 1024, 3)
    assert cfg.state_dir == os.path.abspath("s")
    assert cfg.log_path == os.path.join(os.path.abspath("s"), "json.log")
    assert cfg.runtime == "skiff-runtime" and cfg.runtime_args == ()
    cfg = parse_start(["--id", "c1", "--bundle", str(bundle), "--state-dir", "s",
                       "--runtime-root=/rr", "--runtime", "crun", "--runtime-arg=--debug",
                       "--runtime-arg", "--systemd-cgroup"])
    assert (cfg.runtime, cfg.runtime_args) == ("crun", ("--debug", "--systemd-cgroup"))
    for bad in (["--id", "c1"], ["--bogus"], ["--id"], ["positional"],
                ["--id", "c", "--bundle", "b", "--state-dir", "s", "--runtime-root", "r",
                 "--log-max-file", "x"]):
        with pytest.raises(errors.InvalidArgument):
            parse_start(bad)


def test_a_hung_runtime_is_killed_after_the_timeout(tmp_path: Path) -> None:
    binary = _fake_runtime(tmp_path, "echo $$ > \"$2.pid\"; exec sleep 30\n")
    rt = OCIRuntime(binary, str(tmp_path / "root"), str(tmp_path / "rt.log"), "c1", timeout=0.3)
    started = time.monotonic()
    with pytest.raises(errors.SystemFailure, match=r"kill container c1: fake-runtime did not "
                                                   r"finish in 0\.3s"):
        rt.run("kill", ["kill", "c1"])
    assert time.monotonic() - started < 5
    pid = int((tmp_path / "root.pid").read_text())
    assert not os.path.exists(f"/proc/{pid}")  # killed and reaped, not left as a zombie


def test_own_runtime_start_and_delete_run_in_place_unless_the_spec_has_hooks(
        tmp_path: Path) -> None:
    own = os.path.join(os.path.dirname(sys.executable), "skiff-runtime")
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"process": {}, "hooks": {
        "poststop": [{"path": "/bin/true"}]}}))
    args = ["--id", "c1", "--bundle", str(bundle), "--state-dir", str(tmp_path / "s"),
            "--runtime-root", str(tmp_path / "rr"), "--runtime", own]
    cfg = parse_start(args)
    assert cfg.hooks and not cfg.tty
    assert not OCIRuntime(own, "r", "l", "c1", hooks=cfg.hooks).in_place
    (bundle / "config.json").write_text(json.dumps({"process": {"terminal": True}}))
    cfg = parse_start(args)
    assert not cfg.hooks and cfg.tty
    rt = OCIRuntime(own, str(tmp_path / "rr"), str(tmp_path / "rt.log"), "c1")
    assert rt.in_place
    # in place, a runtime error still comes back as the logged message, naming the container
    pid_before = os.getpid()
    with pytest.raises(errors.SystemFailure, match=r"start container c1: .*c1.*does not exist"):
        rt.run("start", ["start", "c1"])
    assert os.getpid() == pid_before
    rt.run("delete", ["delete", "--force", "c1"])  # a forced delete of nothing is no error


def test_a_forked_runtimes_reported_exit_code_is_read_without_waiting_for_its_exit() -> None:
    from skiff.shim.ociruntime import _reported_code

    def child(body: str) -> tuple[int, int]:
        r, w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            try:
                if body == "report":
                    os.write(w, bytes([5]))
                elif body == "grandchild-holds-pipe":  # as a container's init would
                    if os.fork() == 0:
                        time.sleep(1)
                        os._exit(0)
                elif body == "hang":
                    time.sleep(3)
            finally:
                os._exit(0)
        os.close(w)
        return r, pid

    r, pid = child("report")
    assert _reported_code(r, pid, timeout=5) == 5
    os.waitpid(pid, 0)
    os.close(r)
    # died without a word while its child keeps the pipe open: no hang, the wait status tells
    r, pid = child("grandchild-holds-pipe")
    t0 = time.monotonic()
    assert _reported_code(r, pid, timeout=5) is None
    assert time.monotonic() - t0 < 0.8
    os.waitpid(pid, 0)
    os.close(r)
    r, pid = child("hang")
    assert _reported_code(r, pid, timeout=0.2) == -1
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(r)
