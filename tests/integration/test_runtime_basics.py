"""skiff-runtime with real containers: isolation, lifecycle, and cleanup."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.support import (
    RuntimeDriver,
    cgroup_dirs,
    mounts_mentioning,
    new_id,
    read_config,
    write_config,
    write_hook,
)

Bundle = Callable[..., Path]


def run(runtime: RuntimeDriver, bundle: Path, cid: str | None = None) -> tuple[int, str, str]:
    res = runtime("run", "--bundle", str(bundle), cid or new_id(), check=False)
    return res.code, res.out, res.err


def test_pid_1_and_host_processes_invisible(runtime: RuntimeDriver, make_bundle: Bundle) -> None:
    b = make_bundle(["sh", "-c", "echo $$; ls /proc | grep -c '^[0-9]'; "
                     f"test -e /proc/{os.getpid()} && echo visible || echo invisible"])
    code, out, err = run(runtime, b)
    assert code == 0, err
    pid, nprocs, visible = out.split()
    assert pid == "1"
    # sh, ls and grep: nothing of the host's hundreds of processes.
    assert int(nprocs) <= 4
    assert visible == "invisible"


def test_hostname_domainname_env_cwd_user(runtime: RuntimeDriver, make_bundle: Bundle) -> None:
    b = make_bundle(["sh", "-c", "hostname; cat /proc/sys/kernel/domainname; echo $GREETING; "
                     "pwd; id -u; id -g; id -G; umask"],
                    hostname="box1", domainname="example.test")
    cfg = read_config(b)
    cfg["process"]["env"].append("GREETING=hello world")
    cfg["process"]["cwd"] = "/home/app/work"
    cfg["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [5, 100],
                              "umask": 0o027}
    write_config(b, cfg)
    code, out, err = run(runtime, b)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "box1"
    assert lines[1] == "example.test"
    assert lines[2] == "hello world"
    assert lines[3] == "/home/app/work"  # created because it did not exist
    assert lines[4:6] == ["1000", "1000"]
    assert set(lines[6].split()) == {"1000", "5", "100"}
    assert lines[7] == "0027"


def test_exit_status_and_signal_status(runtime: RuntimeDriver, make_bundle: Bundle) -> None:
    assert run(runtime, make_bundle(["sh", "-c", "exit 42"]))[0] == 42
    # pid 1 cannot be killed from inside its namespace: kill it from outside.
    cid = new_id("sig9")
    proc = runtime.popen("run", "--bundle", str(make_bundle(["sleep", "100"])), cid)
    runtime.wait_status(cid, "running")
    runtime("kill", cid, "KILL")
    assert proc.wait(timeout=10) == 137


def test_missing_executable_is_a_create_error(runtime: RuntimeDriver,
                                              make_bundle: Bundle) -> None:
    cid = new_id()
    res = runtime("create", "--bundle", str(make_bundle(["no-such-cmd"])), cid, check=False)
    assert res.code != 0
    assert 'exec: "no-such-cmd": executable file not found in $PATH' in res.err
    assert not (runtime.root / cid).exists()
    assert cgroup_dirs(cid) == []


def test_lifecycle_state_machine(runtime: RuntimeDriver, make_bundle: Bundle,
                                 tmp_path: Path) -> None:
    cid = new_id("life")
    b = make_bundle(["sh", "-c", "echo started > /tmp/marker; exec sleep 60"])
    pidfile = tmp_path / "pid"
    runtime("create", "--bundle", str(b), "--pid-file", str(pidfile), cid)
    st = runtime.state(cid)
    assert st["status"] == "created"
    assert st["id"] == cid and st["bundle"] == str(b)
    assert int(pidfile.read_text()) == st["pid"] > 0
    # The process has not run its command yet: it waits for `start`.
    assert not (Path(f"/proc/{st['pid']}/root/tmp/marker")).exists()
    listed = json.loads(runtime("list", "--format", "json").out)
    assert [c["id"] for c in listed] == [cid]
    assert runtime("list", "-q").out.split() == [cid]

    runtime("start", cid)
    st = runtime.wait_status(cid, "running")
    deadline = time.monotonic() + 5
    marker = Path(f"/proc/{st['pid']}/root/tmp/marker")
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.read_text() == "started\n"

    again = runtime("start", cid, check=False)
    assert again.code != 0 and "running" in again.err
    refused = runtime("delete", cid, check=False)
    assert refused.code != 0 and "not stopped" in refused.err

    runtime("pause", cid)
    assert runtime.state(cid)["status"] == "paused"
    assert runtime("pause", cid, check=False).code != 0
    runtime("resume", cid)
    assert runtime.state(cid)["status"] == "running"

    # pid 1 ignores SIGTERM without a handler (sleep has none): KILL it.
    runtime("kill", cid, "KILL")
    runtime.wait_status(cid, "stopped")
    assert runtime("kill", cid, "KILL", check=False).code != 0
    runtime("delete", cid)
    assert runtime("state", cid, check=False).code != 0
    assert not (runtime.root / cid).exists()
    assert cgroup_dirs(cid) == []


def test_kill_all_and_force_delete_leave_nothing(runtime: RuntimeDriver, make_bundle: Bundle
                                                 ) -> None:
    cid = new_id("kill")
    b = make_bundle(["sh", "-c", "sleep 100 & sleep 100 & exec sleep 100"])
    runtime("run", "-d", "--bundle", str(b), cid)
    st = runtime.wait_status(cid, "running")
    deadline = time.monotonic() + 5
    while len(json.loads(runtime("ps", "--format", "json", cid).out)) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    pids = json.loads(runtime("ps", "--format", "json", cid).out)
    assert st["pid"] in pids
    table = runtime("ps", cid).out.splitlines()
    assert "PID" in table[0] and len(table) == 1 + len(pids)
    runtime("kill", "--all", cid, "9")
    runtime.wait_status(cid, "stopped")
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid)
    runtime("delete", cid)
    assert cgroup_dirs(cid) == []

    cid2 = new_id("force")
    runtime("run", "-d", "--bundle", str(make_bundle(["sleep", "100"])), cid2)
    runtime("delete", "--force", cid2)
    assert runtime("state", cid2, check=False).code != 0
    assert cgroup_dirs(cid2) == []
    assert mounts_mentioning(str(b)) == []


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_run_forwards_signals(runtime: RuntimeDriver, make_bundle: Bundle) -> None:
    b = make_bundle(["sh", "-c", "trap 'echo got-term; exit 3' TERM; echo ready; "
                     "while true; do sleep 0.1; done"])
    proc = runtime.popen("run", "--bundle", str(b), new_id("sig"), stdout=-1, stderr=-1)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    assert "got-term" in out
    assert proc.returncode == 3


def test_readonly_rootfs_and_masked_paths(runtime: RuntimeDriver, make_bundle: Bundle) -> None:
    b = make_bundle(["sh", "-c", "touch /newfile 2>/dev/null && echo writable || echo ro; "
                     "touch /tmp/x 2>/dev/null && echo tmp-writable || echo tmp-ro; "
                     "wc -c < /proc/timer_list; cat /proc/keys | wc -c; ls /proc/acpi | wc -l; "
                     "echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo sys-rw || "
                     "echo sys-ro"])
    cfg = read_config(b)
    cfg["root"]["readonly"] = True
    cfg["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                          "options": ["nosuid", "nodev", "size=1m"]})
    write_config(b, cfg)
    code, out, err = run(runtime, b)
    assert code == 0, err
    assert out.split() == ["ro", "tmp-writable", "0", "0", "0", "sys-ro"]


def test_rootfs_writable_when_not_readonly(runtime: RuntimeDriver, make_bundle: Bundle) -> None:
    b = make_bundle(["sh", "-c", "echo data > /newfile && cat /newfile"])
    cfg = read_config(b)
    cfg["root"]["readonly"] = False
    write_config(b, cfg)
    code, out, err = run(runtime, b)
    assert code == 0, err
    assert out == "data\n"
    assert (b / "rootfs" / "newfile").read_text() == "data\n"


def test_devices_and_dev_symlinks(runtime: RuntimeDriver, make_bundle: Bundle) -> None:
    b = make_bundle(["sh", "-c", "ls -l /dev/null /dev/zero /dev/urandom /dev/tty; "
                     "readlink /dev/fd; readlink /dev/ptmx; head -c 4 /dev/zero | wc -c; "
                     "echo x > /dev/full 2>/dev/null && echo full-ok || echo full-enospc; "
                     "ls -l /dev/fuse2 2>&1; ls -l /dev/myfifo; ls /dev"])
    cfg = read_config(b)
    cfg["linux"]["devices"] = [{"path": "/dev/fuse2", "type": "c", "major": 10, "minor": 229,
                                "fileMode": 0o600, "uid": 0, "gid": 0},
                               {"path": "/dev/myfifo", "type": "p", "fileMode": 0o640}]
    write_config(b, cfg)
    code, out, err = run(runtime, b)
    assert code == 0, err
    assert "crw-rw-rw-" in out and "1,   3" in out
    assert "/proc/self/fd" in out and "pts/ptmx" in out
    assert "\n4\n" in out
    assert "full-enospc" in out
    assert "crw-------" in out and "10, 229" in out
    assert "prw-r-----" in out


def test_mounts_bind_ro_tmpfs_and_propagation(runtime: RuntimeDriver, make_bundle: Bundle,
                                              tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello.txt").write_text("from host\n")
    ro_file = tmp_path / "conf.txt"
    ro_file.write_text("config\n")
    b = make_bundle(["sh", "-c", "cat /data/hello.txt; echo out > /data/from-container; "
                     "cat /etc/app.conf; echo no > /etc/app.conf 2>/dev/null && echo file-rw "
                     "|| echo file-ro; df -k /scratch | tail -1 | awk '{print $2}'; "
                     "grep ' /scratch ' /proc/mounts"])
    cfg = read_config(b)
    cfg["mounts"] += [
        {"destination": "/data", "type": "bind", "source": str(shared),
         "options": ["rbind", "rw", "rprivate"]},
        {"destination": "/etc/app.conf", "type": "bind", "source": str(ro_file),
         "options": ["bind", "ro"]},
        {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
         "options": ["size=2m", "mode=1777", "noexec"]},
    ]
    write_config(b, cfg)
    code, out, err = run(runtime, b)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "from host"
    assert lines[1] == "config"
    assert lines[2] == "file-ro"
    assert lines[3] == "2048"
    assert "noexec" in lines[4]
    assert (shared / "from-container").read_text() == "out\n"
    assert mounts_mentioning(str(shared)) == []


def test_mount_target_symlink_cannot_escape_rootfs(runtime: RuntimeDriver, make_bundle: Bundle,
                                                   tmp_path: Path) -> None:
    # An image plants /evil -> /host-target (absolute) and /evil2 -> ../../../.. (relative).
    victim = tmp_path / "victim"
    victim.mkdir()
    b = make_bundle(["sh", "-c", "ls /evil-target; ls /rel-target"])
    os.symlink(str(victim), b / "rootfs" / "evil")
    os.symlink("../../../../../..", b / "rootfs" / "evil2")
    cfg = read_config(b)
    cfg["mounts"] += [
        {"destination": "/evil", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
        {"destination": "/evil2/tmp/escaped", "type": "tmpfs", "source": "tmpfs"},
    ]
    write_config(b, cfg)
    run(runtime, b)
    # Whatever the container saw, nothing was mounted or created outside its rootfs.
    assert mounts_mentioning(str(victim)) == []
    assert not Path("/tmp/escaped").exists()
    assert list(victim.iterdir()) == []


def test_a_dangling_symlink_on_a_mount_path_is_made_inside_the_root(
        runtime: RuntimeDriver, make_bundle: Bundle, tmp_path: Path) -> None:
    # /evil -> /missing/dir (absolute, target absent) and rel -> missing2 (relative): as runc,
    # the targets are created inside the rootfs and the mount lands there, never on the host.
    b = make_bundle(["sh", "-c", "grep -c ' /missing/dir/sub tmpfs' /proc/mounts; "
                     "grep -c ' /missing2 tmpfs' /proc/mounts"])
    os.symlink("/missing/dir", b / "rootfs" / "evil")
    os.symlink("missing2", b / "rootfs" / "rel")
    cfg = read_config(b)
    cfg["mounts"] += [
        {"destination": "/evil/sub", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
        {"destination": "/rel", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
    ]
    write_config(b, cfg)
    code, out, err = run(runtime, b)
    assert (code, out.split()) == (0, ["1", "1"]), err
    assert (b / "rootfs" / "missing" / "dir" / "sub").is_dir()
    assert not Path("/missing").exists()


def test_rlimits_oom_score_sysctl(runtime: RuntimeDriver, make_bundle: Bundle) -> None:
    b = make_bundle(["sh", "-c", "ulimit -n; ulimit -Hn; cat /proc/self/oom_score_adj; "
                     "cat /proc/sys/net/ipv4/ip_forward"])
    cfg = read_config(b)
    cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 321, "hard": 654}]
    cfg["process"]["oomScoreAdj"] = 123
    cfg["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    write_config(b, cfg)
    code, out, err = run(runtime, b)
    assert code == 0, err
    assert out.split() == ["321", "654", "123", "1"]


def test_exec_joins_every_namespace_and_the_cgroup(runtime: RuntimeDriver,
                                                   make_bundle: Bundle) -> None:
    cid = new_id("exec")
    runtime("run", "-d", "--bundle", str(make_bundle(["sleep", "100"], hostname="execbox")), cid)
    runtime.wait_status(cid, "running")
    script = ("for ns in cgroup ipc mnt net pid uts; do "
              "[ \"$(readlink /proc/self/ns/$ns)\" = \"$(readlink /proc/1/ns/$ns)\" ] "
              "&& echo same-$ns || echo diff-$ns; done; "
              "[ \"$(cat /proc/self/cgroup)\" = \"$(cat /proc/1/cgroup)\" ] && echo same-cgroup; "
              "hostname; echo $$")
    lines = runtime("exec", cid, "sh", "-c", script).out.split()
    assert lines[:6] == [f"same-{n}" for n in ("cgroup", "ipc", "mnt", "net", "pid", "uts")]
    assert lines[6] == "same-cgroup"
    assert lines[7] == "execbox"
    assert int(lines[8]) > 1  # a new process in the container's pid namespace, not pid 1
    res = runtime("exec", "--env", "FOO=bar", "--cwd", "/tmp", "--user", "1000:1000", cid,
                  "sh", "-c", "echo $FOO; pwd; id -u")
    assert res.out.split() == ["bar", "/tmp", "1000"]
    assert runtime("exec", cid, "sh", "-c", "exit 7", check=False).code == 7
    missing = runtime("exec", cid, "nope", check=False)
    assert missing.code != 0 and "executable file not found" in missing.err
    runtime("delete", "--force", cid)
    assert cgroup_dirs(cid) == []


def test_exec_process_json_and_detach(runtime: RuntimeDriver, make_bundle: Bundle,
                                      tmp_path: Path) -> None:
    cid = new_id("execd")
    runtime("run", "-d", "--bundle", str(make_bundle(["sleep", "100"])), cid)
    proc = {"args": ["sh", "-c", "echo detached > /tmp/out; sleep 100"], "cwd": "/",
            "env": ["PATH=/bin:/usr/bin"], "user": {"uid": 0, "gid": 0}}
    pj = tmp_path / "process.json"
    pj.write_text(json.dumps(proc))
    pidfile = tmp_path / "exec.pid"
    runtime("exec", "--process", str(pj), "--detach", "--pid-file", str(pidfile), cid)
    pid = int(pidfile.read_text())
    assert pid in json.loads(runtime("ps", "--format", "json", cid).out)
    st = runtime.state(cid)
    out = Path(f"/proc/{st['pid']}/root/tmp/out")
    deadline = time.monotonic() + 5
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert out.read_text() == "detached\n"
    runtime("delete", "--force", cid)


def test_join_existing_network_namespace_by_path(runtime: RuntimeDriver,
                                                 make_bundle: Bundle) -> None:
    first = new_id("netA")
    runtime("run", "-d", "--bundle", str(make_bundle(["sleep", "100"])), first)
    pid = runtime.wait_status(first, "running")["pid"]
    b = make_bundle(["readlink", "/proc/self/ns/net"])
    cfg = read_config(b)
    for ns in cfg["linux"]["namespaces"]:
        if ns["type"] == "network":
            ns["path"] = f"/proc/{pid}/ns/net"
    write_config(b, cfg)
    code, out, err = run(runtime, b)
    assert code == 0, err
    assert out.strip() == os.readlink(f"/proc/{pid}/ns/net")
    runtime("delete", "--force", first)


def test_user_namespace_mappings(runtime: RuntimeDriver, make_bundle: Bundle) -> None:
    # The mapped root (host uid 100000) must be able to reach the bundle: pytest's temp dirs
    # are 0700, so open the path up to the bundle.
    b = make_bundle(["sh", "-c", "id -u; cat /proc/self/uid_map; echo x > /tmp/f && "
                     "stat -c %u /tmp/f"])
    cfg = read_config(b)
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["root"]["readonly"] = False
    cfg["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"})
    # /sys/fs/cgroup cannot be mounted from a user namespace on cgroup v1 without cgroupns
    # privileges over the hierarchy; drop it as rootless runc configs do.
    cfg["mounts"] = [m for m in cfg["mounts"] if m["type"] != "cgroup"]
    write_config(b, cfg)
    for parent in [b, *b.parents]:
        if parent == Path("/tmp"):
            break
        parent.chmod(parent.stat().st_mode | 0o011)
    code, out, err = run(runtime, b)
    assert code == 0, err
    lines = out.split()
    assert lines[0] == "0"
    assert lines[1:4] == ["0", "100000", "65536"]
    assert lines[4] == "0"


def test_hooks_run_at_each_point_with_state(runtime: RuntimeDriver, make_bundle: Bundle,
                                            tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    hook = write_hook(tmp_path / "hook.sh", f"read -r state\necho \"$1 $state\" >> {log}")
    cid = new_id("hooks")
    b = make_bundle(["true"])
    cfg = read_config(b)
    cfg["hooks"] = {p: [{"path": str(hook), "args": ["hook.sh", p]}]
                    for p in ("prestart", "createRuntime", "poststart", "poststop")}
    write_config(b, cfg)
    code, _, err = run(runtime, b, cid)
    assert code == 0, err
    entries = [line.split(" ", 1) for line in log.read_text().splitlines()]
    assert [e[0] for e in entries] == ["prestart", "createRuntime", "poststart", "poststop"]
    for _, raw in entries:
        state = json.loads(raw)
        assert state["id"] == cid and state["bundle"] == str(b)
    assert json.loads(entries[0][1])["status"] == "creating"
    assert json.loads(entries[0][1])["pid"] > 0


def test_hooks_and_seccomp_together(runtime: RuntimeDriver, make_bundle: Bundle,
                                    tmp_path: Path) -> None:
    # Docker's specs always carry both: a prestart hook and a seccomp profile.
    from skiff.runtime.seccomp import default_profile

    log = tmp_path / "hook.log"
    hook = write_hook(tmp_path / "hook.sh", f"cat > {log}")
    b = make_bundle(["sh", "-c", "grep Seccomp: /proc/self/status"])
    cfg = read_config(b)
    cfg["hooks"] = {"prestart": [{"path": str(hook)}]}
    cfg["linux"]["seccomp"] = default_profile(cfg["process"]["capabilities"]["bounding"])
    write_config(b, cfg)
    res = runtime("run", "--bundle", str(b), new_id("hookseccomp"))
    assert res.out.split() == ["Seccomp:", "2"]
    assert json.loads(log.read_text())["status"] == "creating"


def test_failing_create_hook_leaves_nothing(runtime: RuntimeDriver, make_bundle: Bundle) -> None:
    cid = new_id("badhook")
    b = make_bundle(["true"])
    cfg = read_config(b)
    cfg["hooks"] = {"createRuntime": [{"path": "/bin/false"}]}
    write_config(b, cfg)
    res = runtime("create", "--bundle", str(b), cid, check=False)
    assert res.code != 0 and "createRuntime hook" in res.err
    assert not (runtime.root / cid).exists()
    assert cgroup_dirs(cid) == []


def test_no_pivot(runtime: RuntimeDriver, make_bundle: Bundle) -> None:
    res = runtime("run", "--no-pivot", "--bundle", str(make_bundle(["sh", "-c", "ls /bin/sh"])),
                  new_id("nopivot"))
    assert res.out.strip() == "/bin/sh"


def test_spec_and_features(runtime: RuntimeDriver, tmp_path: Path) -> None:
    runtime("spec", "--bundle", str(tmp_path))
    spec = json.loads((tmp_path / "config.json").read_text())
    assert spec["process"]["args"] == ["sh"]
    assert spec["root"]["path"] == "rootfs"
    assert runtime("spec", "--bundle", str(tmp_path), check=False).code != 0
    feats = json.loads(runtime("features").out)
    assert "user" in feats["linux"]["namespaces"]
    assert "CAP_SYS_ADMIN" in feats["linux"]["capabilities"]
    assert "SCMP_ACT_ERRNO" in feats["linux"]["seccomp"]["actions"]


def test_container_side_hooks(runtime: RuntimeDriver, make_bundle: Bundle,
                              tmp_path: Path) -> None:
    # createContainer runs in the container's mount namespace before pivot_root (so a host
    # path works); startContainer runs inside the container, after pivot_root, just before
    # the process: it can leave a file the process then sees.
    log = tmp_path / "cc.log"
    hook = write_hook(tmp_path / "cc.sh", f"read -r state\necho \"$state\" > {log}")
    b = make_bundle(["cat", "/tmp/started"])
    cfg = read_config(b)
    cfg["hooks"] = {
        "createContainer": [{"path": str(hook)}],
        "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "echo hooked > /tmp/started"]}],
    }
    write_config(b, cfg)
    cid = new_id("cc")
    code, out, err = run(runtime, b, cid)
    assert code == 0, err
    assert out == "hooked\n"
    state = json.loads(log.read_text())
    assert state["id"] == cid and state["pid"] > 0


def test_run_with_terminal_relays_the_pty(runtime: RuntimeDriver, make_bundle: Bundle) -> None:
    b = make_bundle(["sh", "-c", "tty; test -t 1 && echo out-is-tty"], terminal=True)
    res = runtime("run", "--bundle", str(b), new_id("tty"))
    lines = res.out.replace("\r", "").split()
    assert lines == ["/dev/pts/0", "out-is-tty"]


@pytest.mark.parametrize(("uid", "home"), [(0, "/root"), (1000, "/home/app"), (4242, "/")])
def test_home_comes_from_the_containers_passwd_when_unset(
        runtime: RuntimeDriver, make_bundle: Bundle, uid: int, home: str) -> None:
    from skiff.runtime.specgen import default_spec

    proc = default_spec(["sh", "-c", "echo $HOME"])["process"]
    proc["user"] = {"uid": uid, "gid": uid}
    proc["env"] = [e for e in proc["env"] if not e.startswith("HOME=")]
    code, out, err = run(runtime, make_bundle(process=proc))
    assert (code, out) == (0, home + "\n"), err


def test_an_explicit_home_is_kept(runtime: RuntimeDriver, make_bundle: Bundle) -> None:
    from skiff.runtime.specgen import default_spec

    proc = default_spec(["sh", "-c", "echo $HOME"])["process"]
    proc["env"] = [*proc["env"], "HOME=/custom"]
    code, out, err = run(runtime, make_bundle(process=proc))
    assert (code, out) == (0, "/custom\n"), err


def _cgroup_lines(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cgroup") as f:
        return f.read().splitlines()


@pytest.mark.parametrize("userns", [False, True], ids=["born-in-cgroup", "moved-by-parent"])
def test_container_process_alone_in_its_cgroup_in_every_hierarchy(
        runtime: RuntimeDriver, make_bundle: Bundle, userns: bool) -> None:
    # Stage 2 is made in the v2 cgroup by clone3 and joins each v1 hierarchy itself; in a
    # user namespace the parent moves it by cgroup.procs. Either way every hierarchy must
    # hold the container's process and nothing of the runtime's setup stages.
    b = make_bundle(["sleep", "100"])
    cfg = read_config(b)
    cfg["linux"]["resources"] = {"pids": {"limit": 1}}  # a stage left in it would not fit
    if userns:
        cfg["linux"]["namespaces"].append({"type": "user"})
        cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        cfg["mounts"] = [m for m in cfg["mounts"] if m["type"] != "cgroup"]
        for parent in [b, *b.parents]:
            if parent == Path("/tmp"):
                break
            parent.chmod(parent.stat().st_mode | 0o011)
    write_config(b, cfg)
    cid = new_id("cgjoin")
    runtime("run", "-d", "--bundle", str(b), cid)
    st = runtime.wait_status(cid, "running")
    lines = _cgroup_lines(int(st["pid"]))
    assert lines and all(line.endswith(f"/skiff/{cid}") for line in lines), lines
    for d in cgroup_dirs(cid):
        procs = (Path(d) / "cgroup.procs").read_text().split()
        assert procs == [str(st["pid"])], (d, procs)
    # an exec'd process is made the same way: it must land beside the init
    res = runtime("exec", "-d", "--pid-file", str(b / "exec.pid"), cid, "sleep", "100")
    exec_pid = int((b / "exec.pid").read_text())
    assert res.code == 0 and _cgroup_lines(exec_pid) == lines
    runtime("delete", "--force", cid)
    assert cgroup_dirs(cid) == []


def test_create_joining_another_containers_namespaces(runtime: RuntimeDriver,
                                                      make_bundle: Bundle) -> None:
    # Joining a pid namespace needs the two-stage fork; joining only others is done by the
    # container's process itself after a single clone3. Both must land where asked.
    host_cid = new_id("nshost")
    runtime("run", "-d", "--bundle", str(make_bundle(["sleep", "100"])), host_cid)
    host_pid = int(runtime.wait_status(host_cid, "running")["pid"])
    try:
        for joined in (["ipc", "uts"], ["pid", "ipc"]):
            b = make_bundle(["sh", "-c", "for ns in pid ipc uts; do readlink /proc/self/ns/$ns; "
                                         "done; cat /proc/1/cmdline | tr '\\0' ' '"])
            cfg = read_config(b)
            cfg["linux"]["namespaces"] = [
                ns if ns["type"] not in joined else
                {"type": ns["type"], "path": f"/proc/{host_pid}/ns/{ns['type']}"}
                for ns in cfg["linux"]["namespaces"]]
            write_config(b, cfg)
            code, out, err = run(runtime, b)
            assert code == 0, err
            lines = out.splitlines()
            for i, ns in enumerate(("pid", "ipc", "uts")):
                theirs = os.readlink(f"/proc/{host_pid}/ns/{ns}")
                assert (lines[i] == theirs) == (ns in joined), (joined, ns, lines)
            # in the joined pid namespace, pid 1 is the other container's sleep
            assert ("sleep 100" in lines[3]) == ("pid" in joined), lines
    finally:
        runtime("delete", "--force", host_cid)
