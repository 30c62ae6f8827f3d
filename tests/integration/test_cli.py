"""The `skiff` CLI end to end against a private skiffd, and next to the stock docker CLI.

One daemon per module (its own socket and roots); skiff runs as a subprocess with
``-H unix://...``. Each test removes what it made; the fixture's teardown checks that nothing
is left (containers, mounts, shims, cgroups).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiff.core.content import Digest
from skiff.devtools.images import build_image, tar_tree
from tests.integration.daemon_support import IMAGE, Skiffd, private_skiffd

SKIFF = [sys.executable, "-m", "skiff.cli.main"]


@pytest.fixture(scope="module")
def skiffd(busybox_rootfs: Path) -> Iterator[Skiffd]:
    with private_skiffd(busybox_rootfs, check_parent_cgroup=False) as d:
        yield d


def skiff(d: Skiffd, *args: str, input: bytes | None = None, timeout: float = 60,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    full_env = {**os.environ, "DOCKER_CONFIG": str(d.base / "skiff-config"), **(env or {})}
    full_env.pop("DOCKER_HOST", None)
    full_env.pop("SKIFF_HOST", None)
    return subprocess.run([*SKIFF, "-H", f"unix://{d.sock}", *args], input=input,
                          capture_output=True, env=full_env, timeout=timeout, check=False)


def out(d: Skiffd, *args: str, **kw: object) -> str:
    res = skiff(d, *args, **kw)  # type: ignore[arg-type]
    assert res.returncode == 0, (args, res.stdout, res.stderr)
    return res.stdout.decode()


def all_ids(d: Skiffd) -> list[str]:
    return out(d, "ps", "-aq", "--no-trunc").split()


# --- run -----------------------------------------------------------------------------------


def test_run_exit_codes_and_output(skiffd: Skiffd) -> None:
    before = all_ids(skiffd)
    res = skiff(skiffd, "run", "--rm", IMAGE, "sh", "-c", "echo out; echo err >&2")
    assert (res.returncode, res.stdout, res.stderr) == (0, b"out\n", b"err\n")
    res = skiff(skiffd, "run", "--rm", IMAGE, "sh", "-c", "exit 3")
    assert res.returncode == 3, res.stderr
    res = skiff(skiffd, "run", "--rm", IMAGE, "no-such-command")
    assert res.returncode == 127, res.stderr
    assert b"Error response from daemon:" in res.stderr and b"no-such-command" in res.stderr
    res = skiff(skiffd, "run", "--rm", IMAGE, "/etc")
    assert res.returncode == 126, res.stderr
    res = skiff(skiffd, "run", "--rm", "--memory", "lots", IMAGE, "true")
    assert res.returncode == 125 and b"invalid size" in res.stderr
    res = skiff(skiffd, "run", "--rm", "--bogus-flag", IMAGE, "true")
    assert res.returncode == 125 and b"--bogus-flag" in res.stderr
    assert all_ids(skiffd) == before  # --rm removed every one of them, failures included


def test_run_env_workdir_user_name_stdin_tty(skiffd: Skiffd, tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("FROM_FILE=f\n")
    res = skiff(skiffd, "run", "--rm", "-e", "GREETING=ahoy", "--env-file", str(env_file),
                "-e", "FROM_CALLER", "-w", "/tmp", "-u", "1000", IMAGE, "sh", "-c",
                "echo $GREETING $FROM_FILE $FROM_CALLER $(pwd) $(id -u)",
                env={"FROM_CALLER": "c"})
    assert res.stdout == b"ahoy f c /tmp 1000\n", res.stderr
    assert out(skiffd, "run", "--rm", "-i", IMAGE, "cat", input=b"via stdin\n") == "via stdin\n"
    assert out(skiffd, "run", "--rm", "-t", IMAGE, "tty").startswith("/dev/pts/")
    assert out(skiffd, "run", "--name", "named", "-l", "team=a", IMAGE, "true") == ""
    info = json.loads(out(skiffd, "inspect", "named"))[0]
    assert info["Name"] == "/named" and info["Config"]["Labels"] == {"team": "a"}
    assert info["State"]["ExitCode"] == 0
    assert out(skiffd, "rm", "named") == "named\n"


def test_run_it_through_a_real_terminal(skiffd: Skiffd) -> None:
    script = shutil.which("script")
    if script is None:
        pytest.skip("script(1) is not installed (apt-get install bsdutils)")
    cmd = " ".join([*SKIFF, "-H", f"unix://{skiffd.sock}", "run", "-it", "--rm", IMAGE, "sh"])
    # our terminal (script's pty) gets a size the container's pty must take on
    res = subprocess.run([script, "-qec", f"stty rows 33 cols 101; {cmd}", "/dev/null"],
                         input=b"stty size; echo from-the-tty; exit 5\n", capture_output=True,
                         timeout=60, check=False)
    assert res.returncode == 5, res.stdout
    assert b"from-the-tty\r\n" in res.stdout
    assert b"\r\n33 101\r\n" in res.stdout


def test_detach_keys_end_the_cli_at_once(skiffd: Skiffd) -> None:
    script = shutil.which("script")
    if script is None:
        pytest.skip("script(1) is not installed (apt-get install bsdutils)")
    cmd = " ".join([*SKIFF, "-H", f"unix://{skiffd.sock}", "run", "-it", "--name", "det",
                    IMAGE, "sh"])
    proc = subprocess.Popen([script, "-qec", cmd, "/dev/null"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    time.sleep(1.5)  # let the shell start before typing
    proc.stdin.write(b"\x10\x11")
    proc.stdin.flush()
    try:
        assert proc.wait(timeout=20) == 0  # the shell never exits by itself: we detached
    finally:
        proc.kill()
        proc.wait()
    # Whether the container keeps running is the daemon's part: with StdinOnce (set for an
    # attached -i, as Docker does) skiffd closes its stdin when the client goes, until the
    # daemon learns detach keys itself (dockerd does).
    assert json.loads(out(skiffd, "inspect", "det"))[0]["Config"]["StdinOnce"] is True
    assert out(skiffd, "rm", "-f", "det") == "det\n"


def test_signals_are_proxied_without_a_tty(skiffd: Skiffd) -> None:
    proc = subprocess.Popen(
        [*SKIFF, "-H", f"unix://{skiffd.sock}", "run", "--rm", IMAGE, "sh", "-c",
         "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.1; done"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 7
    assert proc.stdout.read() == b"got-term\n"


# --- the container verbs -------------------------------------------------------------------


def test_detached_ps_logs_stop_rm(skiffd: Skiffd) -> None:
    cid = out(skiffd, "run", "-d", "--name", "bg", IMAGE, "sh", "-c",
              "echo one; echo two >&2; sleep 100").strip()
    skiffd.seen.add(cid)
    assert len(cid) == 64
    assert cid[:12] in out(skiffd, "ps", "-q").split()
    assert out(skiffd, "ps", "--format", "{{.Names}} {{.State}} {{.Image}}") \
        .splitlines() == [f"bg running {IMAGE}"]
    lines = out(skiffd, "ps", "--filter", "name=bg", "--format",
                "{{.ID}}|{{.Names}}|{{.State}}").splitlines()
    assert lines == [f"{cid[:12]}|bg|running"]
    row = json.loads(out(skiffd, "ps", "-l", "--format", "{{json .}}"))
    assert row["Names"] == "bg" and row["Command"].startswith('"sh -c')
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        res = skiff(skiffd, "logs", "bg")
        if res.stdout == b"one\n" and res.stderr == b"two\n":
            break
        time.sleep(0.1)
    assert (res.stdout, res.stderr) == (b"one\n", b"two\n")
    assert out(skiffd, "logs", "--tail", "1", "bg") == ""  # stdout's tail-1 is stderr's line
    stamped = out(skiffd, "logs", "-t", "bg").split()
    assert stamped[1] == "one" and stamped[0].endswith("Z")
    assert out(skiffd, "inspect", "-f", "{{.State.Status}} {{.Config.Cmd}}", "bg") == \
        "running [sh -c echo one; echo two >&2; sleep 100]\n"
    assert out(skiffd, "stop", "-t", "1", "bg") == "bg\n"
    assert out(skiffd, "inspect", "-f", "{{.State.Running}}", cid) == "false\n"
    assert out(skiffd, "rm", "bg") == "bg\n"
    assert cid not in all_ids(skiffd)


def test_logs_follow_ends_with_the_container(skiffd: Skiffd) -> None:
    cid = out(skiffd, "run", "-d", IMAGE, "sh", "-c", "echo a; sleep 1; echo b").strip()
    skiffd.seen.add(cid)
    started = time.monotonic()
    assert out(skiffd, "logs", "-f", cid) == "a\nb\n"
    assert time.monotonic() - started < 20
    assert out(skiffd, "wait", cid) == "0\n"
    out(skiffd, "rm", cid)


def test_kill_wait_rm_force_and_create_start_attach(skiffd: Skiffd) -> None:
    cid = out(skiffd, "run", "-d", IMAGE, "sleep", "100").strip()
    skiffd.seen.add(cid)
    assert out(skiffd, "kill", "-s", "KILL", cid) == f"{cid}\n"
    assert out(skiffd, "wait", cid) == "137\n"
    out(skiffd, "rm", cid)
    cid = out(skiffd, "run", "-d", IMAGE, "sleep", "100").strip()
    skiffd.seen.add(cid)
    res = skiff(skiffd, "rm", cid)
    assert res.returncode == 1 and b"Error response from daemon:" in res.stderr
    out(skiffd, "rm", "-f", cid)
    created = out(skiffd, "create", "--name", "later", IMAGE, "sh", "-c", "echo hi; exit 4")
    skiffd.seen.add(created.strip())
    res = skiff(skiffd, "start", "-a", "later")
    assert (res.returncode, res.stdout) == (4, b"hi\n"), res.stderr
    assert out(skiffd, "container", "rm", "later") == "later\n"


def test_errors_of_missing_objects_and_unserved_endpoints(skiffd: Skiffd) -> None:
    res = skiff(skiffd, "inspect", "nope")
    assert res.returncode == 1 and b"No such object: nope" in res.stderr
    res = skiff(skiffd, "logs", "nope")
    assert res.returncode == 125
    assert res.stderr == b"Error response from daemon: No such container: nope\n"
    # An image the daemon cannot find: the CLI tries to pull it and reports why it failed.
    # (A registry on loopback port 1, where nothing listens: no traffic leaves the machine.)
    missing = "127.0.0.1:1/no-such-image:1"
    res = skiff(skiffd, "run", "--rm", missing, "true")
    assert res.returncode == 125
    assert f"Unable to find image '{missing}' locally".encode() in res.stderr
    assert b"Error response from daemon:" in res.stderr
    res = skiff(skiffd, "run", "--rm", "--pull", "never", missing, "true")
    assert res.returncode == 125 and b"Unable to find" not in res.stderr
    cid = out(skiffd, "run", "-d", IMAGE, "sleep", "100").strip()
    skiffd.seen.add(cid)
    try:
        for args in (["top", cid], ["diff", cid], ["rename", cid, "other"],
                     ["system", "df"]):
            res = skiff(skiffd, *args)
            if res.returncode != 0:  # endpoints other helpers are adding: not served yet
                assert res.returncode == 125, (args, res.stderr)
                assert res.stderr.startswith(b"Error response from daemon: "), args
    finally:
        out(skiffd, "rm", "-f", cid)


def test_no_daemon_is_reported_with_how_to_start_one(tmp_path: Path) -> None:
    res = subprocess.run([*SKIFF, "-H", f"unix://{tmp_path}/none.sock", "ps"],
                         capture_output=True, timeout=30, check=False)
    assert res.returncode == 125
    assert b"skiffd -H unix://" in res.stderr


# --- images ----------------------------------------------------------------------------------


def test_import_images_load_and_inspect(skiffd: Skiffd, busybox_rootfs: Path,
                                        tmp_path: Path) -> None:
    (tmp_path / "rootfs.tar").write_bytes(tar_tree(busybox_rootfs))
    image_id = out(skiffd, "import", "-c", "CMD [\"echo\", \"imported\"]",
                   str(tmp_path / "rootfs.tar"), "imported:v1").strip()
    assert image_id.startswith("sha256:")
    assert "imported:v1" in out(skiffd, "images", "--format",
                                "{{.Repository}}:{{.Tag}}").split()
    assert image_id in out(skiffd, "images", "-q", "--no-trunc").split()
    assert out(skiffd, "image", "inspect", "-f", "{{.Id}}", "imported:v1") == image_id + "\n"
    assert out(skiffd, "inspect", "--type", "image", "-f", "{{json .Config.Cmd}}",
               "imported:v1") == '["echo","imported"]\n'
    assert out(skiffd, "run", "--rm", "imported:v1") == "imported\n"

    built = build_image(tmp_path / "layout", [{"hello.txt": b"loaded\n"}],
                        rootfs=busybox_rootfs)
    archive = tmp_path / "img.tar"
    with tarfile.open(archive, "w") as tf:
        for entry in sorted(built.layout.iterdir()):
            tf.add(entry, arcname=entry.name)
    assert "Loaded image" in out(skiffd, "load", "-i", str(archive))
    loaded = str(Digest.from_bytes(built.config))
    assert loaded in out(skiffd, "images", "-q", "--no-trunc").split()
    assert out(skiffd, "run", "--rm", loaded, "cat", "/hello.txt") == "loaded\n"
    with open(archive, "rb") as f:  # load from stdin
        assert "Loaded image" in out(skiffd, "load", input=f.read())


# --- next to the docker CLI -------------------------------------------------------------


def test_same_tables_as_the_docker_cli(skiffd: Skiffd) -> None:
    cid = out(skiffd, "run", "-d", "--name", "cmp", "-l", "k=v", IMAGE, "sleep", "100").strip()
    skiffd.seen.add(cid)
    try:
        for args in (["ps"], ["ps", "-a"], ["ps", "--no-trunc"], ["images"],
                     ["ps", "--format", "table {{.Names}}\t{{.Labels}}\t{{.State}}"],
                     ["ps", "--format", "{{.ID}} {{.Command}} {{.Ports}}"],
                     ["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}"],
                     ["inspect", "-f", "{{.Name}} {{json .Config.Labels}}", "cmp"]):
            # Byte for byte; "5 seconds ago" may tick over between the two runs (and widen
            # its column), so a mismatch is retried a few times before it counts.
            for _ in range(4):
                theirs, ours = skiffd.out(*args), out(skiffd, *args)
                if ours == theirs:
                    break
                time.sleep(0.3)
            assert ours == theirs, args
        assert json.loads(out(skiffd, "inspect", "cmp"))[0]["Id"] == cid
    finally:
        out(skiffd, "rm", "-f", "cmp")


def test_exec_cp_diff_top_stats_commit(skiffd: Skiffd, tmp_path: Path) -> None:
    cid = out(skiffd, "run", "-d", "--name", "work", IMAGE, "sh", "-c",
              "echo hi > /made; sleep 100").strip()
    skiffd.seen.add(cid)
    try:
        deadline = time.monotonic() + 10
        while skiff(skiffd, "exec", "work", "test", "-f", "/made").returncode != 0:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert out(skiffd, "exec", "work", "cat", "/made") == "hi\n"
        assert skiff(skiffd, "exec", "work", "sh", "-c", "exit 4").returncode == 4
        assert out(skiffd, "exec", "-i", "work", "cat", input=b"to exec\n") == "to exec\n"
        assert out(skiffd, "exec", "-e", "X=1", "-w", "/tmp", "-u", "1000", "work", "sh", "-c",
                   "echo $X $(pwd) $(id -u)") == "1 /tmp 1000\n"
        res = skiff(skiffd, "exec", "work", "no-such-command")
        assert res.returncode in (126, 127), res  # the exec'd command could not run
        # cp both ways
        out(skiffd, "cp", "work:/made", str(tmp_path / "got"))
        assert (tmp_path / "got").read_text() == "hi\n"
        (tmp_path / "put.txt").write_text("put\n")
        out(skiffd, "cp", str(tmp_path / "put.txt"), "work:/tmp/")
        assert out(skiffd, "exec", "work", "cat", "/tmp/put.txt") == "put\n"
        # the same as the docker CLI prints
        for args in (["diff", "work"], ["top", "work"], ["system", "df"],
                     ["stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", "work"]):
            assert out(skiffd, *args) == skiffd.out(*args), args
        image = out(skiffd, "commit", "-c", 'CMD ["cat", "/made"]', "-m", "msg", "work",
                    "committed:1").strip()
        assert image.startswith("sha256:")
        assert out(skiffd, "run", "--rm", "committed:1") == "hi\n"
        assert out(skiffd, "history", "committed:1").splitlines()[0] == \
            skiffd.out("history", "committed:1").splitlines()[0]
        out(skiffd, "tag", "committed:1", "committed:2")
        assert out(skiffd, "rmi", "committed:2") == "Untagged: committed:2\n"
        assert out(skiffd, "image", "rm", "committed:1").startswith("Untagged: committed:1\n")
    finally:
        out(skiffd, "rm", "-f", "work")


def test_events_since_until_match_the_docker_cli(skiffd: Skiffd) -> None:
    start = time.time()
    out(skiffd, "run", "--rm", "--name", "evt", IMAGE, "true")
    time.sleep(1.1)
    window = ["--since", f"{start:.3f}", "--until", f"{time.time():.3f}"]
    ours = out(skiffd, "events", *window, "--filter", "container=evt")
    assert "container start" in ours and "name=evt" in ours
    assert ours == skiffd.out("events", *window, "--filter", "container=evt")
    fmt = ["--format", "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}"]
    assert out(skiffd, "events", *window, *fmt) == skiffd.out("events", *window, *fmt)


def test_push_and_pull_through_a_loopback_registry(skiffd: Skiffd, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a free loopback port for the registry
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    registry = subprocess.Popen([*SKIFF, "registry", "serve", "--addr", f"127.0.0.1:{port}",
                                 "--root", str(tmp_path / "registry")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ref = f"127.0.0.1:{port}/cli/bb:1"
    try:
        assert registry.stderr is not None
        assert b"serving" in registry.stderr.readline()
        out(skiffd, "tag", IMAGE, ref)
        pushed = out(skiffd, "push", ref)
        assert f"The push refers to repository [127.0.0.1:{port}/cli/bb]" in pushed
        assert "1: digest: sha256:" in pushed
        out(skiffd, "rmi", ref)
        pulled = out(skiffd, "pull", ref).splitlines()
        assert pulled[0] == "1: Pulling from cli/bb"
        assert pulled[-2] == f"Status: Downloaded newer image for {ref}"
        assert pulled[-1] == ref
        assert ref in out(skiffd, "images", "--format", "{{.Repository}}:{{.Tag}}").split()
        assert out(skiffd, "pull", "-q", ref) == ref + "\n"
        out(skiffd, "rmi", ref)
        # login: checked by the daemon, kept in $DOCKER_CONFIG/config.json; logout forgets
        assert out(skiffd, "login", "-u", "me", "--password-stdin", f"127.0.0.1:{port}",
                   input=b"pw\n") == "Login Succeeded\n"
        config = skiffd.base / "skiff-config" / "config.json"
        assert json.loads(config.read_text())["auths"][f"127.0.0.1:{port}"] == {
            "auth": "bWU6cHc="}  # base64("me:pw")
        out(skiffd, "logout", f"127.0.0.1:{port}")
        assert json.loads(config.read_text())["auths"] == {}
    finally:
        registry.terminate()
        registry.wait(timeout=30)


def test_attach_gets_the_output_and_the_exit_status(skiffd: Skiffd) -> None:
    cid = out(skiffd, "run", "-d", IMAGE, "sh", "-c", "sleep 1; echo late; exit 6").strip()
    skiffd.seen.add(cid)
    res = skiff(skiffd, "attach", cid)
    assert (res.returncode, res.stdout) == (6, b"late\n"), res.stderr
    res = skiff(skiffd, "attach", cid)
    assert res.returncode == 125 and b"start it first" in res.stderr
    out(skiffd, "rm", cid)


def test_terminal_resize_reaches_the_container(skiffd: Skiffd) -> None:
    import fcntl
    import pty
    import select
    import struct
    import termios

    def set_size(fd: int, rows: int, cols: int) -> None:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def read_until(fd: int, needle: bytes, timeout: float = 20) -> bytes:
        seen = b""
        deadline = time.monotonic() + timeout
        while needle not in seen:
            left = deadline - time.monotonic()
            assert left > 0, seen
            if select.select([fd], [], [], left)[0]:
                try:
                    seen += os.read(fd, 4096)
                except OSError:  # EIO: the child is gone
                    break
        assert needle in seen, seen
        return seen

    pid, fd = pty.fork()
    if pid == 0:  # the child: skiff on a terminal of its own
        os.execv(sys.executable, [*SKIFF, "-H", f"unix://{skiffd.sock}", "run", "-it",
                                  "--rm", IMAGE, "sh"])
    try:
        set_size(fd, 20, 70)
        read_until(fd, b"# ")
        os.write(fd, b"stty size\n")
        read_until(fd, b"20 70")
        set_size(fd, 31, 93)  # the kernel sends SIGWINCH to skiff, which resizes
        time.sleep(0.5)
        os.write(fd, b"stty size\n")
        read_until(fd, b"31 93")
        os.write(fd, b"exit 3\n")
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 3
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
