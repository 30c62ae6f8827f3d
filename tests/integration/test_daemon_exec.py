"""skiffd's exec, top and stats, driven by the stock docker CLI, raw HTTP and docker-py.

One private daemon for the module and one long-running busybox container most tests exec
into; the fixture's teardown (daemon_support) checks that no container, mount, shim, cgroup
or bundle is left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skiff.devtools.daemon import UnixHTTP
from tests.integration.daemon_support import DOCKER, IMAGE, Skiffd, private_skiffd


@pytest.fixture(scope="module")
def skiffd(busybox_rootfs: Path) -> Iterator[Skiffd]:
    # other daemon tests run beside this module: the shared /skiff parent is not ours to check
    with private_skiffd(busybox_rootfs, check_parent_cgroup=False) as d:
        yield d


@pytest.fixture(scope="module")
def box(skiffd: Skiffd) -> Iterator[str]:
    """A running container with some env of its own, for the tests to exec into."""
    cid = skiffd.run_d("-e", "FROM_RUN=kept", "-e", "OVERRIDDEN=old", IMAGE, "sleep", "600")
    yield cid
    skiffd.docker("rm", "-f", cid)


def _exec_create(d: Skiffd, cid: str, body: dict[str, Any]) -> str:
    status, reply = d.api("POST", f"/containers/{cid}/exec", body)
    assert status == 201, reply
    exec_id = reply["Id"]
    assert isinstance(exec_id, str) and len(exec_id) == 64
    int(exec_id, 16)
    return exec_id


def _until_exited(d: Skiffd, exec_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        status, info = d.api("GET", f"/exec/{exec_id}/json")
        assert status == 200, info
        if not info["Running"] and info["ExitCode"] is not None:
            return dict(info)
        assert time.monotonic() < deadline, info
        time.sleep(0.05)


def _until_file(d: Skiffd, cid: str, path: str, content: bytes) -> None:
    deadline = time.monotonic() + 20
    while (got := d.docker("exec", cid, "cat", path, check=False).stdout) != content:
        assert time.monotonic() < deadline, (path, got)
        time.sleep(0.1)


# --- docker exec ------------------------------------------------------------------------------


def test_exec_output_and_exit_codes(skiffd: Skiffd, box: str) -> None:
    res = skiffd.docker("exec", box, "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert (res.returncode, res.stdout, res.stderr) == (3, b"out\n", b"err\n")
    # A command that cannot start: 126 or 127. Which one depends on the runtime's message:
    # skiff-runtime's exec can lose the child's error in a race (see the runc test below).
    for cmd in ("no-such-command", "/etc/passwd"):
        res = skiffd.docker("exec", box, cmd, check=False)
        assert res.returncode in (126, 127), res
        assert f"exec container {box}".encode() in res.stdout, res


def test_exec_exit_codes_126_127_with_runc(busybox_rootfs: Path) -> None:
    """The daemon's mapping, pinned with a runtime whose exec errors are reliable."""
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed (scripts/bootstrap installs Debian's runc)")
    with private_skiffd(busybox_rootfs, "--default-runtime", "runc",
                        check_parent_cgroup=False) as d:
        cid = d.run_d(IMAGE, "sleep", "600")
        try:
            for cmd, code, words in (("no-such-command", 127, b"executable file not found"),
                                     ("/no/such/path", 127, b"no such file or directory"),
                                     ("/etc/passwd", 126, b"permission denied")):
                res = d.docker("exec", cid, cmd, check=False)
                assert res.returncode == code, res
                assert words in res.stdout, res
            # the same through the API: the exit code is recorded on the exec
            status, reply = d.api("POST", f"/containers/{cid}/exec", {"Cmd": ["nope"]})
            assert status == 201
            status, err = d.api("POST", f"/exec/{reply['Id']}/start", {"Detach": True})
            assert status == 400 and "executable file not found" in err["message"], err
            info = d.api("GET", f"/exec/{reply['Id']}/json")[1]
            assert (info["Running"], info["ExitCode"]) == (False, 127)
            assert d.out("exec", cid, "echo", "fine") == "fine\n"
        finally:
            d.docker("rm", "-f", cid)


def test_exec_env_workdir_and_user(skiffd: Skiffd, box: str) -> None:
    out = skiffd.out("exec", "-e", "OVERRIDDEN=new", "-e", "ADDED=1", "-w", "/tmp", "-u",
                     "nobody", box, "sh", "-c",
                     "echo $FROM_RUN $OVERRIDDEN $ADDED $(pwd) $(id -u):$(id -g)")
    assert out == "kept new 1 /tmp 65534:65534\n"
    assert skiffd.out("exec", "-u", "1000:100", box, "id", "-G").split() == ["100"]
    unknown = skiffd.docker("exec", "-u", "nosuchuser", box, "true", check=False)
    assert unknown.returncode != 0
    assert unknown.returncode == 126
    assert b"unable to find user nosuchuser" in unknown.stdout


def test_exec_detached_and_inspect(skiffd: Skiffd, box: str) -> None:
    skiffd.out("exec", "-d", box, "sh", "-c", "sleep 0.2; echo done > /tmp/detached")
    _until_file(skiffd, box, "/tmp/detached", b"done\n")

    exec_id = _exec_create(skiffd, box, {"Cmd": ["sh", "-c", "exit 7"], "User": "app",
                                         "Privileged": True, "AttachStdout": True})
    status, info = skiffd.api("GET", f"/exec/{exec_id}/json")
    assert status == 200
    assert (info["Running"], info["ExitCode"], info["ContainerID"]) == (False, None, box)
    assert info["ProcessConfig"] == {"tty": False, "entrypoint": "sh", "arguments":
                                     ["-c", "exit 7"], "privileged": True, "user": "app"}
    assert (info["OpenStdin"], info["OpenStdout"]) == (False, True)
    status, _ = skiffd.api("POST", f"/exec/{exec_id}/start", {"Detach": True})
    assert status == 200
    info = _until_exited(skiffd, exec_id)
    assert info["ExitCode"] == 7 and info["Pid"] > 0
    # once started, never again
    status, reply = skiffd.api("POST", f"/exec/{exec_id}/start", {"Detach": True})
    assert status == 409 and "already" in reply["message"]


def test_exec_privileged_gets_every_capability(skiffd: Skiffd, box: str) -> None:
    plain = skiffd.out("exec", box, "grep", "CapEff", "/proc/self/status").split()[1]
    full = skiffd.out("exec", "--privileged", box, "grep", "CapEff", "/proc/self/status")
    assert int(full.split()[1], 16) > int(plain, 16)


def test_exec_interactive_stdin(skiffd: Skiffd, box: str) -> None:
    res = skiffd.docker("exec", "-i", box, "sh", "-c", "cat; echo end",
                        input=b"line one\nline two\n")
    assert res.stdout == b"line one\nline two\nend\n"
    res = skiffd.docker("exec", "-t", box, "tty")
    assert res.stdout.strip().startswith(b"/dev/pts/")


def test_exec_it_through_a_real_terminal(skiffd: Skiffd, box: str) -> None:
    script = shutil.which("script")
    if script is None:
        pytest.skip("script(1) is not installed (apt-get install bsdutils)")
    env = {**os.environ, "DOCKER_HOST": f"unix://{skiffd.sock}",
           "DOCKER_CONFIG": str(skiffd.base / "docker-config")}
    res = subprocess.run([script, "-qec", f"{DOCKER} exec -it {box} sh", "/dev/null"],
                         input=b"echo from-the-tty $TERM; exit 4\n",
                         capture_output=True, env=env, timeout=60, check=False)
    assert res.returncode == 4, res.stdout
    assert b"from-the-tty xterm\r\n" in res.stdout


def test_exec_events(skiffd: Skiffd, box: str) -> None:
    since = time.time()
    skiffd.out("exec", box, "true")
    filters = urllib.parse.quote(json.dumps({"container": [box]}))
    conn = UnixHTTP(str(skiffd.sock))
    try:
        conn.request("GET", f"/events?since={since:.3f}&until={time.time() + 0.1:.3f}"
                     f"&filters={filters}")
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status == 404:
        pytest.skip("this skiffd has no /events endpoint")
    assert resp.status == 200
    events = [json.loads(line) for line in body.splitlines() if line.strip()]
    actions = [e["Action"] for e in events]
    assert "exec_create: true" in actions and "exec_start: true" in actions
    died = [e for e in events if e["Action"] == "exec_die"]
    assert died and died[-1]["Actor"]["Attributes"]["exitCode"] == "0"


def test_exec_resize_and_bad_input(skiffd: Skiffd, box: str) -> None:
    unknown = "0" * 64
    for method, path in (("GET", f"/exec/{unknown}/json"), ("POST", f"/exec/{unknown}/start"),
                         ("POST", f"/exec/{unknown}/resize?h=10&w=10")):
        status, reply = skiffd.api(method, path, {})
        assert status == 404 and f"No such exec instance: {unknown}" in reply["message"]
    status, reply = skiffd.api("POST", "/containers/nosuchcontainer/exec", {"Cmd": ["true"]})
    assert status == 404
    for raw, wanted in ((b"{not json", "invalid JSON"), (b"[1]", "must be an object"),
                        (b'{"Cmd": "true"}', "Cmd must be a list"),
                        (b'{"Cmd": []}', "No exec command specified"),
                        (b'{"Cmd": ["true"], "Tty": "yes"}', "Tty must be a boolean"),
                        (b'{"Cmd": ["true"], "ConsoleSize": [1]}', "ConsoleSize")):
        status, reply = skiffd.api("POST", f"/containers/{box}/exec", raw=raw)
        assert status == 400 and wanted in reply["message"], (raw, reply)
    exec_id = _exec_create(skiffd, box, {
        # the trap lets the loop's current child finish: an orphan would become a zombie
        # of the container's init (sleep), which never reaps
        "Cmd": ["sh", "-c", "trap 'exit 7' TERM; while :; do stty size > /tmp/size.new;"
                " mv /tmp/size.new /tmp/size; sleep 0.05; done"],
        "Tty": True, "ConsoleSize": [12, 34]})
    status, reply = skiffd.api("POST", f"/exec/{exec_id}/start", raw=b'{"Detach": 1}')
    assert status == 400 and "Detach must be a boolean" in reply["message"]
    status, reply = skiffd.api("POST", f"/exec/{exec_id}/resize?h=10&w=20")
    assert status == 409  # not started yet
    assert skiffd.api("POST", f"/exec/{exec_id}/start", {"Detach": True})[0] == 200
    _until_file(skiffd, box, "/tmp/size", b"12 34\n")  # ConsoleSize is the first size
    status, _ = skiffd.api("POST", f"/exec/{exec_id}/resize?h=10&w=20")
    assert status == 200
    _until_file(skiffd, box, "/tmp/size", b"10 20\n")
    status, reply = skiffd.api("POST", f"/exec/{exec_id}/resize?h=-1&w=20")
    assert status == 400
    status, reply = skiffd.api("POST", f"/exec/{exec_id}/resize?h=x&w=20")
    assert status == 400
    status, info = skiffd.api("GET", f"/exec/{exec_id}/json")
    assert info["Running"] is True and info["ProcessConfig"]["tty"] is True
    os.kill(info["Pid"], signal.SIGTERM)  # a host pid, as Docker reports it
    info = _until_exited(skiffd, exec_id)
    assert info["ExitCode"] == 7, info


def test_exec_in_a_stopped_container_and_records_go_with_it(skiffd: Skiffd) -> None:
    cid = skiffd.run_d(IMAGE, "sleep", "600")
    exec_id = _exec_create(skiffd, cid, {"Cmd": ["true"]})
    skiffd.out("stop", "-t", "0", cid)
    status, reply = skiffd.api("POST", f"/containers/{cid}/exec", {"Cmd": ["true"]})
    assert status == 409 and reply["message"] == f"container {cid} is not running"
    status, reply = skiffd.api("POST", f"/exec/{exec_id}/start", {"Detach": True})
    assert status == 409 and "is not running" in reply["message"]
    res = skiffd.docker("exec", cid, "true", check=False)
    assert res.returncode != 0 and b"is not running" in res.stderr
    skiffd.out("rm", cid)
    assert skiffd.api("GET", f"/exec/{exec_id}/json")[0] == 404


# --- top --------------------------------------------------------------------------------------


def test_top(skiffd: Skiffd, box: str) -> None:
    out = skiffd.out("top", box).splitlines()
    assert out[0].split()[:2] == ["UID", "PID"]
    assert [line for line in out[1:] if "sleep 600" in line], out
    status, table = skiffd.api("GET", f"/containers/{box}/top?ps_args=-o%20pid,comm")
    assert status == 200
    assert table["Titles"] == ["PID", "COMMAND"]
    host_pid = skiffd.api("GET", f"/containers/{box}/json")[1]["State"]["Pid"]
    assert [str(host_pid), "sleep"] in table["Processes"]
    # nothing of the host: every row is a process of the container
    assert all(p[1] in ("sleep", "ps", "sh") for p in table["Processes"]), table
    status, reply = skiffd.api("GET", f"/containers/{box}/top?ps_args=--no-such-option")
    assert status == 400 and "Error running ps" in reply["message"], reply
    assert "no-such-option" in reply["message"] or "unsupported" in reply["message"]
    status, reply = skiffd.api("GET", f"/containers/{box}/top?ps_args=-o%20comm")
    assert status == 400 and "PID" in reply["message"]
    status, _ = skiffd.api("GET", "/containers/nosuch/top")
    assert status == 404


# --- stats ------------------------------------------------------------------------------------


def _check_sample(s: dict[str, Any], cid: str) -> None:
    assert s["id"] == cid and s["name"].startswith("/")
    assert s["read"] != "0001-01-01T00:00:00Z"
    cpu = s["cpu_stats"]
    assert cpu["cpu_usage"]["total_usage"] > 0
    assert cpu["system_cpu_usage"] > cpu["cpu_usage"]["total_usage"]
    assert cpu["online_cpus"] == os.sysconf("SC_NPROCESSORS_ONLN")
    assert set(cpu["throttling_data"]) == {"periods", "throttled_periods", "throttled_time"}
    mem = s["memory_stats"]
    assert 0 < mem["usage"] <= mem["limit"]
    assert isinstance(mem["stats"], dict) and mem["stats"]
    assert s["pids_stats"]["current"] >= 1
    assert "lo" in s["networks"]
    assert set(s["networks"]["lo"]) >= {"rx_bytes", "tx_bytes", "rx_packets", "tx_dropped"}
    assert "io_service_bytes_recursive" in s["blkio_stats"]


def test_stats_no_stream_and_memory_limit(skiffd: Skiffd, box: str) -> None:
    line = skiffd.out("stats", "--no-stream", "--format", "{{json .}}", box)
    row = json.loads(line)
    assert row["ID"] == box[:12]
    # pids.current counts what top lists (and zombies: there must be none)
    assert row["PIDs"] == str(len(skiffd.api("GET", f"/containers/{box}/top")[1]["Processes"]))
    assert row["MemUsage"].split(" / ")[0] != "0B"
    status, s = skiffd.api("GET", f"/containers/{box}/stats?stream=false")
    assert status == 200
    _check_sample(s, box)
    # one sample after another: precpu is the earlier one
    assert s["preread"] < s["read"]
    assert (s["precpu_stats"]["cpu_usage"]["total_usage"]
            <= s["cpu_stats"]["cpu_usage"]["total_usage"])
    status, s = skiffd.api("GET", f"/containers/{box}/stats?stream=false&one-shot=true")
    assert status == 200 and s["precpu_stats"]["cpu_usage"]["total_usage"] == 0
    limited = skiffd.run_d("--memory", "32m", "--pids-limit", "9", IMAGE, "sleep", "600")
    try:
        s = skiffd.api("GET", f"/containers/{limited}/stats?stream=false&one-shot=true")[1]
        assert s["memory_stats"]["limit"] == 32 * 1024 * 1024
        assert s["pids_stats"] == {"current": 1, "limit": 9}
    finally:
        skiffd.docker("rm", "-f", limited)
    status, reply = skiffd.api("GET", f"/containers/{box}/stats?stream=true&one-shot=true")
    assert status == 400 and "one-shot" in reply["message"]


def test_stats_stream_gives_a_sample_a_second(skiffd: Skiffd, box: str) -> None:
    conn = UnixHTTP(str(skiffd.sock), timeout=20)
    try:
        conn.request("GET", f"/containers/{box}/stats")
        resp = conn.getresponse()
        assert resp.status == 200
        first = json.loads(resp.readline())
        second = json.loads(resp.readline())
    finally:
        conn.close()
    _check_sample(first, box)
    _check_sample(second, box)
    assert first["preread"] == "0001-01-01T00:00:00Z"
    assert second["preread"] == first["read"] and second["precpu_stats"] == first["cpu_stats"]


def test_stats_of_a_stopped_container_are_zeros(skiffd: Skiffd) -> None:
    cid = skiffd.out("create", IMAGE, "true").strip()
    skiffd.seen.add(cid)
    try:
        status, s = skiffd.api("GET", f"/containers/{cid}/stats?stream=false")
        assert status == 200
        assert s["read"] == "0001-01-01T00:00:00Z" and s["id"] == cid
        assert s["cpu_stats"]["cpu_usage"]["total_usage"] == 0 and s["memory_stats"] == {}
        # a stream of a stopped container is that one sample, then the end
        status, body = skiffd.api("GET", f"/containers/{cid}/stats?stream=true")
        assert status == 200 and body["read"] == "0001-01-01T00:00:00Z"  # one JSON: one line
        assert skiffd.api("GET", f"/containers/{cid}/top")[0] == 409
    finally:
        skiffd.docker("rm", "-f", cid)


# --- docker-py --------------------------------------------------------------------------------


def test_docker_py(skiffd: Skiffd, box: str) -> None:
    docker = pytest.importorskip("docker", reason="docker-py is not installed")
    client = docker.DockerClient(base_url=f"unix://{skiffd.sock}", version="1.44")
    try:
        container = client.containers.get(box)
        code, (out, err) = container.exec_run(["sh", "-c", "echo o; echo e >&2; exit 2"],
                                              demux=True)
        assert (code, out, err) == (2, b"o\n", b"e\n")
        code, out = container.exec_run("pwd", workdir="/etc", environment={"X": "1"})
        assert (code, out) == (0, b"/etc\n")
        stats = container.stats(stream=False)
        assert stats["id"] == box and stats["memory_stats"]["usage"] > 0
        top = container.top()
        assert "PID" in top["Titles"] and top["Processes"]
    finally:
        client.close()
