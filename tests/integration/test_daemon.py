"""skiffd end to end: a private daemon driven by the stock docker CLI, raw HTTP and docker-py.

One daemon per module (private socket, data root and exec root under a short /tmp dir); each
test removes what it made, and the fixture's teardown checks that nothing is left: no
containers, mounts, shims, cgroups, sockets or pidfile.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiff.core.content import Digest
from skiff.devtools.images import build_image
from tests.integration.daemon_support import (
    DOCKER,
    IMAGE,
    Skiffd,
    UnixHTTP,
    entries,
    private_skiffd,
)


@pytest.fixture(scope="module")
def skiffd(busybox_rootfs: Path) -> Iterator[Skiffd]:
    with private_skiffd(busybox_rootfs) as d:
        yield d


def _container_ids(d: Skiffd) -> list[str]:
    return d.out("ps", "-aq", "--no-trunc").split()


# --- the docker CLI ------------------------------------------------------------------------


def test_version_info_and_images(skiffd: Skiffd) -> None:
    version = json.loads(skiffd.out("version", "--format", "{{json .Server}}"))
    assert version["ApiVersion"] == "1.44"
    assert version["Components"][0]["Name"] == "Engine"
    info = skiffd.out("info")
    assert f"Docker Root Dir: {skiffd.data}" in info
    assert "Default Runtime: skiff-runtime" in info
    images = skiffd.out("images", "--format", "{{.Repository}}:{{.Tag}}").split()
    assert IMAGE in images


def test_ping_headers(skiffd: Skiffd) -> None:
    assert stat.S_IMODE(os.stat(skiffd.sock).st_mode) == 0o660
    conn = UnixHTTP(str(skiffd.sock))
    for method in ("GET", "HEAD"):
        conn.request(method, "/_ping")
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200
        assert resp.getheader("Api-Version") == "1.44"
        assert resp.getheader("Ostype") == "linux"
        assert resp.getheader("Docker-Experimental") == "false"
        assert "no-cache" in (resp.getheader("Cache-Control") or "")
        assert body == (b"OK" if method == "GET" else b"")
    conn.close()


def test_run_rm_prints_and_leaves_nothing(skiffd: Skiffd) -> None:
    before = _container_ids(skiffd)
    res = skiffd.docker("run", "--rm", IMAGE, "echo", "hi")
    assert res.stdout == b"hi\n"
    assert _container_ids(skiffd) == before
    assert entries(skiffd.run / "bundles") == []


def test_exit_code_propagates(skiffd: Skiffd) -> None:
    res = skiffd.docker("run", "--name", "exit3", IMAGE, "sh", "-c", "echo out; exit 3",
                        check=False)
    assert res.returncode == 3, res.stderr
    assert res.stdout == b"out\n"
    state = json.loads(skiffd.out("inspect", "exit3"))[0]["State"]
    assert (state["Status"], state["ExitCode"], state["Running"]) == ("exited", 3, False)
    assert state["FinishedAt"] > state["StartedAt"]
    skiffd.docker("rm", "exit3")


def test_command_not_found_is_127(skiffd: Skiffd) -> None:
    res = skiffd.docker("run", "--rm", IMAGE, "no-such-command", check=False)
    assert res.returncode == 127, res.stderr
    assert b"no-such-command" in res.stderr


def test_env_workdir_user_stdin_and_tty(skiffd: Skiffd) -> None:
    res = skiffd.docker("run", "--rm", "-e", "GREETING=ahoy", "-w", "/tmp", "-u", "1000",
                        IMAGE, "sh", "-c", "echo $GREETING $(pwd) $(id -u)")
    assert res.stdout == b"ahoy /tmp 1000\n"
    res = skiffd.docker("run", "--rm", "-i", IMAGE, "cat", input=b"through stdin\n")
    assert res.stdout == b"through stdin\n"
    res = skiffd.docker("run", "--rm", "-t", IMAGE, "tty")
    assert res.stdout.strip().startswith(b"/dev/pts/")


def test_interactive_tty_through_a_real_terminal(skiffd: Skiffd) -> None:
    script = shutil.which("script")
    if script is None:
        pytest.skip("script(1) is not installed (apt-get install bsdutils)")
    env = {**os.environ, "DOCKER_HOST": f"unix://{skiffd.sock}",
           "DOCKER_CONFIG": str(skiffd.base / "docker-config")}
    res = subprocess.run([script, "-qec", f"{DOCKER} run -it --rm {IMAGE} sh", "/dev/null"],
                         input=b"echo from-the-tty; exit 5\n", capture_output=True, env=env,
                         timeout=60, check=False)
    assert res.returncode == 5, res.stdout
    assert b"from-the-tty\r\n" in res.stdout


def _attach_raw(d: Skiffd, cid: str, query: str) -> socket.socket:
    """An upgraded attach connection, past its 101 headers."""
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(10)
    sock.connect(str(d.sock))
    sock.sendall(f"POST /containers/{cid}/attach?stream=1&stdin=1&stdout=1&stderr=1{query} "
                 "HTTP/1.1\r\nHost: skiffd\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
                 .encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _read_until(sock: socket.socket, want: bytes) -> bytes:
    got = b""
    while want not in got:
        chunk = sock.recv(4096)
        assert chunk, f"stream ended before {want!r}: {got!r}"
        got += chunk
    return got


def test_detach_keys_leave_the_container_running_with_stdin_open(skiffd: Skiffd) -> None:
    cid = skiffd.run_d("-it", IMAGE, "sh")
    try:
        for query, seq in (("", b"\x10\x11"), ("&detachKeys=ctrl-a,x", b"\x01x")):
            sock = _attach_raw(skiffd, cid, query)
            try:
                sock.sendall(b"echo before-detach\n")
                _read_until(sock, b"before-detach\r\n")
                sock.sendall(seq)
                deadline = time.monotonic() + 10
                while sock.recv(4096):  # the daemon ends the stream: detached
                    assert time.monotonic() < deadline, "no detach"
            finally:
                sock.close()
            assert skiffd.out("inspect", "-f", "{{.State.Running}}", cid) == "true\n"
        # stdin stayed open and the sequence never reached the shell: it still reads
        sock = _attach_raw(skiffd, cid, "")
        try:
            sock.sendall(b"exit 7\n")
            assert skiffd.out("wait", cid) == "7\n"
        finally:
            sock.close()
        status, body = skiffd.api("POST", f"/containers/{cid}/attach?stream=1&stdin=1"
                                  "&detachKeys=ctrl-%3F%3F")
        assert status == 400 and "detach keys" in body["message"]
    finally:
        skiffd.docker("rm", "-f", cid)


def test_limits_and_confinement_reach_the_container(skiffd: Skiffd) -> None:
    out = skiffd.out("run", "--rm", "--memory", "64m", "--pids-limit", "20", IMAGE, "sh", "-c",
                     "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null "
                     "|| cat /sys/fs/cgroup/memory.max; cat /sys/fs/cgroup/pids/pids.max "
                     "2>/dev/null || cat /sys/fs/cgroup/pids.max; grep Seccomp: /proc/self/status")
    assert out.split() == ["67108864", "20", "Seccomp:", "2"]


def test_network_modes(skiffd: Skiffd) -> None:
    count = "ip -o link | wc -l"
    none = skiffd.out("run", "--rm", "--network", "none", IMAGE, "sh", "-c", count)
    host = skiffd.out("run", "--rm", "--network", "host", IMAGE, "sh", "-c", count)
    with open("/proc/net/dev") as f:
        host_links = len(f.readlines()) - 2
    assert int(none) == 1  # loopback only
    assert int(host) == host_links


def test_detached_logs_ps_inspect_stop_rm(skiffd: Skiffd) -> None:
    cid = skiffd.run_d("--name", "talker", IMAGE, "sh", "-c",
                       "echo one; echo two >&2; while true; do sleep 0.1; done")
    deadline = time.monotonic() + 10
    while b"two" not in skiffd.docker("logs", "talker").stderr:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    logs = skiffd.docker("logs", "talker")
    assert (logs.stdout, logs.stderr) == (b"one\n", b"two\n")
    tail = skiffd.docker("logs", "-t", "--tail", "1", "talker")
    assert tail.stdout == b"" and tail.stderr.endswith(b" two\n")
    assert tail.stderr[:4].isdigit()  # RFC3339 timestamp first
    ps = skiffd.out("ps", "--format", "{{.Names}} {{.Status}}")
    assert "talker Up" in ps
    info = json.loads(skiffd.out("inspect", "talker"))[0]
    assert info["Id"] == cid and info["Name"] == "/talker"
    assert info["State"]["Running"] and info["State"]["Pid"] > 0
    assert os.path.exists(f"/proc/{info['State']['Pid']}")
    assert info["Config"]["Cmd"][0] == "sh"
    started = time.monotonic()
    skiffd.docker("stop", "-t", "1", "talker")  # sh as pid 1 ignores SIGTERM: SIGKILL after 1 s
    assert time.monotonic() - started < 10
    state = json.loads(skiffd.out("inspect", "talker"))[0]["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 137)
    assert "talker Exited (137)" in skiffd.out("ps", "-a", "--format",
                                               "{{.Names}} {{.Status}}")
    assert "talker" not in skiffd.out("ps", "--format", "{{.Names}}")
    skiffd.docker("rm", "talker")
    assert cid not in _container_ids(skiffd)


def test_logs_follow_ends_with_the_container(skiffd: Skiffd) -> None:
    cid = skiffd.run_d(IMAGE, "sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.2; done")
    started = time.monotonic()
    assert skiffd.out("logs", "-f", cid) == "1\n2\n3\n"
    assert time.monotonic() - started < 10
    skiffd.docker("rm", cid)


def test_restart_of_an_exited_container_with_start_attach(skiffd: Skiffd) -> None:
    res = skiffd.docker("run", "--name", "again", IMAGE, "sh", "-c", "echo run; exit 2",
                        check=False)
    assert (res.returncode, res.stdout) == (2, b"run\n")
    res = skiffd.docker("start", "-a", "again", check=False)
    assert (res.returncode, res.stdout) == (2, b"run\n")
    assert skiffd.out("logs", "again") == "run\nrun\n"
    skiffd.docker("rm", "again")


def test_create_then_rm_and_detached_auto_remove(skiffd: Skiffd) -> None:
    cid = skiffd.out("create", "--name", "idle", IMAGE, "true").strip()
    skiffd.seen.add(cid)
    assert "idle Created" in skiffd.out("ps", "-a", "--format", "{{.Names}} {{.Status}}")
    skiffd.docker("rm", "idle")
    gone = skiffd.run_d("--rm", IMAGE, "true")
    deadline = time.monotonic() + 10
    while gone in _container_ids(skiffd):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert entries(skiffd.run / "bundles") == []


def test_kill_wait_and_force_rm(skiffd: Skiffd) -> None:
    cid = skiffd.run_d(IMAGE, "sh", "-c", "trap 'exit 9' USR1; while true; do sleep 0.1; done")
    time.sleep(0.3)  # let the shell install its trap
    skiffd.docker("kill", "-s", "USR1", cid)
    assert skiffd.out("wait", cid).strip() == "9"
    cid2 = skiffd.run_d(IMAGE, "sleep", "60")
    res = skiffd.docker("rm", cid2, check=False)
    assert res.returncode != 0 and b"running" in res.stderr
    skiffd.docker("rm", "-f", cid, cid2)
    assert not set(_container_ids(skiffd)) & {cid, cid2}


def test_load_oci_archive(skiffd: Skiffd, busybox_rootfs: Path, tmp_path: Path) -> None:
    built = build_image(tmp_path / "layout", [{"hello.txt": b"loaded\n"}],
                        rootfs=busybox_rootfs)
    archive = tmp_path / "img.tar"
    with tarfile.open(archive, "w") as tf:
        for entry in sorted(built.layout.iterdir()):
            tf.add(entry, arcname=entry.name)
    res = skiffd.docker("load", "-i", str(archive))
    assert b"Loaded image" in res.stdout
    image_id = str(Digest.from_bytes(built.config))
    assert image_id in skiffd.out("images", "-q", "--no-trunc").split()
    assert skiffd.out("run", "--rm", image_id, "cat", "/hello.txt") == "loaded\n"


# --- the API directly: malformed requests --------------------------------------------------


@pytest.mark.parametrize("method,path,raw,status,words", [
    ("POST", "/v1.44/containers/create", b"{bad", 400, "invalid JSON"),
    ("POST", "/containers/create", b"[1, 2]", 400, "object"),
    ("POST", "/containers/create", b'{"Image": "busybox", "Cmd": 5}', 400, "Cmd"),
    ("POST", "/containers/create",
     b'{"Image": "busybox", "Cmd": ["true"], "HostConfig": {"Memory": "lots"}}', 400, "Memory"),
    ("POST", "/containers/create", b'{"Image": "no-such-image"}', 404, "No such image"),
    ("POST", "/containers/create?name=bad%20name", b'{"Image": "busybox", "Cmd": ["true"]}',
     400, "Invalid container name"),
    ("GET", "/containers/no-such/json", None, 404, "No such container"),
    ("POST", "/v1.30/containers/no-such/start", None, 404, "No such container"),
    ("POST", "/containers/no-such/wait?condition=removed", None, 404, "No such container"),
    ("GET", "/containers/json?filters=%7Bnot-json", None, 400, "filters"),
    ("GET", "/containers/json?filters=%7B%22bogus%22%3A%5B%22x%22%5D%7D", None, 400, "bogus"),
    ("GET", "/v1.99/_ping", None, 400, "too new"),
    ("GET", "/v1.12/version", None, 400, "too old"),
    ("GET", "/no/such/endpoint", None, 404, ""),
])
def test_malformed_requests_get_a_status_and_a_message(
        skiffd: Skiffd, method: str, path: str, raw: bytes | None, status: int,
        words: str) -> None:
    got, body = skiffd.api(method, path, raw=raw)
    assert got == status, body
    assert isinstance(body, dict) and isinstance(body.get("message"), str), body
    assert words in body["message"]
    assert skiffd.api("GET", "/_ping")[0] == 200  # and the daemon still serves


def test_failed_creates_leave_nothing(skiffd: Skiffd) -> None:
    before = _container_ids(skiffd)
    for body in ({"Image": "busybox", "Cmd": ["true"], "HostConfig": {"Memory": "x"}},
                 {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"Memory": 1024}}):
        status, reply = skiffd.api("POST", "/containers/create", body)
        assert status == 400, reply
    assert _container_ids(skiffd) == before
    assert entries(skiffd.run / "bundles") == []


def test_wait_conditions_and_bad_condition(skiffd: Skiffd) -> None:
    status, reply = skiffd.api("POST", "/containers/create",
                               {"Image": IMAGE, "Cmd": ["sh", "-c", "exit 5"]})
    assert status == 201, reply
    cid = reply["Id"]
    skiffd.seen.add(cid)
    assert skiffd.api("POST", f"/containers/{cid}/wait?condition=bogus")[0] == 400
    # a created container is "not running": the wait answers at once with its code
    assert skiffd.api("POST", f"/containers/{cid}/wait")[1]["StatusCode"] == 0
    assert skiffd.api("POST", f"/containers/{cid}/start")[0] == 204
    assert skiffd.api("POST", f"/containers/{cid}/wait?condition=not-running")[1] == {
        "StatusCode": 5, "Error": None}
    assert skiffd.api("POST", f"/containers/{cid}/kill")[0] == 409
    assert skiffd.api("DELETE", f"/containers/{cid}")[0] == 204
    assert skiffd.api("GET", f"/containers/{cid}/json")[0] == 404


# --- docker-py -----------------------------------------------------------------------------


def test_docker_py(skiffd: Skiffd) -> None:
    docker = pytest.importorskip("docker", reason="docker-py is a dev dependency "
                                 "(pip install docker)")
    client = docker.DockerClient(base_url=f"unix://{skiffd.sock}", version="1.44")
    try:
        assert client.ping()
        assert client.containers.run(IMAGE, ["echo", "from docker-py"], remove=True) == \
            b"from docker-py\n"
        c = client.containers.run(IMAGE, ["sh", "-c", "echo x; exit 2"], detach=True)
        skiffd.seen.add(c.id)
        assert c.wait()["StatusCode"] == 2
        assert c.logs() == b"x\n"
        c.remove()
        assert IMAGE in [t for img in client.images.list() for t in img.tags]
    finally:
        client.close()


# --- live restore --------------------------------------------------------------------------


def test_sigkilled_daemon_restarts_and_finds_its_containers(skiffd: Skiffd) -> None:
    live = skiffd.run_d("--name", "survivor", IMAGE, "sh", "-c",
                        "trap 'exit 7' TERM; echo up; while true; do sleep 0.1; done")
    brief = skiffd.run_d("--name", "brief", IMAGE, "sh", "-c", "sleep 1; exit 4")
    pid = json.loads(skiffd.out("inspect", live))[0]["State"]["Pid"]
    assert skiffd.stop(signal.SIGKILL) == -signal.SIGKILL
    time.sleep(1.5)  # "brief" exits while no daemon is running
    assert os.path.exists(f"/proc/{pid}")
    skiffd.start()
    state = json.loads(skiffd.out("inspect", live))[0]["State"]
    assert (state["Status"], state["Pid"]) == ("running", pid)
    deadline = time.monotonic() + 10
    while json.loads(skiffd.out("inspect", brief))[0]["State"]["Status"] != "exited":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert json.loads(skiffd.out("inspect", brief))[0]["State"]["ExitCode"] == 4
    assert skiffd.docker("logs", live).stdout == b"up\n"
    skiffd.docker("stop", live)
    assert json.loads(skiffd.out("inspect", live))[0]["State"]["ExitCode"] == 7
    skiffd.docker("rm", live, brief)


def test_second_daemon_side_by_side_with_runc(skiffd: Skiffd) -> None:
    runc = shutil.which("runc")
    if runc is None:
        pytest.fail("runc is not installed (scripts/bootstrap installs Debian's runc)")
    other = Skiffd(Path(tempfile.mkdtemp(prefix="skd", dir="/tmp")), "--default-runtime",
                   runc)
    try:
        other.start()
        assert other.out("images", "-q") == ""
        assert IMAGE in skiffd.out("images", "--format", "{{.Repository}}:{{.Tag}}")
        other.docker("import", str(skiffd.base / "rootfs.tar"), IMAGE)
        assert "Default Runtime: runc" in other.out("info")
        assert other.out("run", "--rm", IMAGE, "echo", "via runc") == "via runc\n"
        assert other.out("ps", "-aq") == ""
        # the same socket cannot be served twice
        clash = subprocess.run([sys.executable, "-m", "skiff.daemon.main", "-H",
                                f"unix://{skiffd.sock}", "--data-root", str(other.data),
                                "--exec-root", str(other.run)], capture_output=True,
                               text=True, timeout=30, check=False)
        assert clash.returncode == 1 and "another daemon" in clash.stderr
        assert other.stop() == 0
    finally:
        if other.proc is not None:
            other.proc.kill()
        shutil.rmtree(other.base, ignore_errors=True)
