"""Record and compare: dockerd's config.json for a table of `docker create` flags vs skiff's.

A private dockerd (Debian's 20.10) creates and starts each case; the config.json it wrote for
runc is read from its exec root (captured while the task is being created, so cases that runc
then refuses here, like --privileged, are still recorded), together with `docker inspect` and
the host facts skiff's daemon would supply. skiff's builder runs on the same input and must
agree after tests.unit.test_spec_golden.normalise. With SKIFF_UPDATE_GOLDEN=1 (or when a file
is missing) the record is written to tests/golden/spec, which the unit tests replay offline.
"""

from __future__ import annotations

import glob
import http.client
import io
import json
import os
import socket
import stat
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skiff.devtools.images import (
    Dockerd,
    DockerdUnavailable,
    ToolMissing,
    docker_cli,
    private_dockerd,
)
from skiff.services.spec import apply_create_defaults, merge_image_config
from tests.unit.test_spec_golden import GOLDEN, build_from_record, normalise

BB = "skiff-test/bb:1"
CFG = "skiff-test/bbcfg:1"  # an image whose config sets everything merge_image_config reads
SLEEP = ["sleep", "100"]
NONE = ["--network", "none"]


def _block_device() -> str | None:
    for name in sorted(os.listdir("/sys/block")):
        if name.startswith(("loop", "zram", "ram")):
            continue
        if os.path.exists(f"/dev/{name}"):
            return f"/dev/{name}"
    return None


def cases(bind_dir: Path) -> dict[str, list[str]]:
    b = str(bind_dir)
    table: dict[str, list[str]] = {
        "default": [*NONE, BB, *SLEEP],
        "tty_stdin": ["-t", "-i", *NONE, BB, *SLEEP],
        "image_config": [*NONE, CFG],
        "env_merge": [*NONE, "-e", "FOO=ctr", "-e", "BAR=2", "-e", "PATH=/x:/bin", CFG,
                      "sleep 100"],
        "entrypoint_empty": [*NONE, "--entrypoint", "", CFG, *SLEEP],
        "entrypoint_override": [*NONE, "--entrypoint", "/bin/sleep", CFG, "100"],
        "user_uid": [*NONE, "-u", "1000", BB, *SLEEP],
        "user_uid_gid": [*NONE, "-u", "1000:5", BB, *SLEEP],
        "user_name_group": [*NONE, "-u", "app:tty", "--group-add", "users", "--group-add",
                            "42", BB, *SLEEP],
        "user_unknown_uid": [*NONE, "-u", "4242", BB, *SLEEP],
        "workdir": [*NONE, "-w", "/tmp/wd", BB, *SLEEP],
        "caps": [*NONE, "--cap-add", "SYS_ADMIN", "--cap-add", "cap_net_admin", "--cap-drop",
                 "NET_RAW", "--cap-drop", "mknod", BB, *SLEEP],
        "caps_drop_all": [*NONE, "--cap-drop", "ALL", "--cap-add", "chown", "--cap-add",
                          "KILL", BB, *SLEEP],
        "caps_add_all": [*NONE, "--cap-add", "ALL", "--cap-drop", "SYS_ADMIN", BB, *SLEEP],
        "privileged": [*NONE, "--privileged", BB, *SLEEP],
        "security_opts": [*NONE, "--security-opt", "no-new-privileges", "--security-opt",
                          "seccomp=unconfined", "--security-opt", "systempaths=unconfined",
                          "--security-opt", "apparmor=unconfined", BB, *SLEEP],
        "readonly_tmpfs": [*NONE, "--read-only", "--tmpfs", "/run:size=10m,noexec,mode=1700",
                           "--tmpfs", "/data", "--tmpfs", "/x:ro,uid=5,exec", BB, *SLEEP],
        "resources": [*NONE, "-m", "64m", "--memory-reservation", "32m", "--memory-swap",
                      "-1", "--memory-swappiness", "10", "--cpus", "1.5", "--cpu-shares",
                      "512", "--cpuset-cpus", "0", "--cpuset-mems", "0", "--pids-limit", "50",
                      "--oom-score-adj", "100", "--oom-kill-disable", BB, *SLEEP],
        "resources_quota": [*NONE, "-m", "64m", "--memory-swap", "128m", "--cpu-quota",
                            "50000", "--cpu-period", "100000", BB, *SLEEP],
        "memory_only": [*NONE, "-m", "32m", "--pids-limit", "0", BB, *SLEEP],
        "devices": [*NONE, "--device", "/dev/null:/dev/mynull:r", "--device", "/dev/zero",
                    "--device-cgroup-rule", "c 42:* rmw", "--device-cgroup-rule", "b 7:0 r",
                    BB, *SLEEP],
        "ulimits_sysctls": [*NONE, "--ulimit", "nofile=1024:2048", "--ulimit", "nproc=100",
                            "--sysctl", "net.core.somaxconn=1024", "--sysctl",
                            "kernel.msgmax=65536", "--sysctl",
                            "net.ipv4.ip_unprivileged_port_start=1024", BB, *SLEEP],
        "labels": [*NONE, "-l", "a=b", "-l", "com.x=y", BB, *SLEEP],
        "init": [*NONE, "--init", BB, *SLEEP],
        "ns_host": ["--network", "host", "--ipc", "host", "--pid", "host", "--uts", "host",
                    BB, *SLEEP],
        "ns_private": [*NONE, "--ipc", "private", "--cgroupns", "private", BB, *SLEEP],
        "ipc_none": [*NONE, "--ipc", "none", "--cgroupns", "host", BB, *SLEEP],
        "shm_shareable": [*NONE, "--shm-size", "128m", "--ipc", "shareable", BB, *SLEEP],
        "shm_size": [*NONE, "--shm-size", "16m", BB, *SLEEP],
        "hostname": [*NONE, "--hostname", "box", "--domainname", "example.org", BB, *SLEEP],
        "binds": [*NONE, "-v", f"{b}:/data:ro", "-v", f"{b}:/d2", "--mount",
                  f"type=bind,src={b},dst=/m1,bind-nonrecursive=true", "--mount",
                  "type=tmpfs,dst=/t1,tmpfs-size=1m,tmpfs-mode=0700", "-v", "vol1:/vol",
                  "--mount", "type=volume,src=vol2,dst=/vol2,readonly", "-v",
                  f"{b}:/etc/hosts:ro", BB, *SLEEP],
        "readonly_binds": [*NONE, "--read-only", "-v", f"{b}:/data", "--tmpfs", "/dev/shm",
                           BB, *SLEEP],
        "stop_signal": [*NONE, "--stop-signal", "SIGUSR1", "--stop-timeout", "3", BB, *SLEEP],
    }
    dev = _block_device()
    if dev is not None:
        table["blkio_throttle"] = [*NONE, "--device-read-bps", f"{dev}:1mb",
                                   "--device-write-iops", f"{dev}:100", BB, *SLEEP]
    return table


@pytest.fixture(scope="module")
def dockerd(busybox_rootfs: Path) -> Iterator[Dockerd]:
    try:
        with private_dockerd() as d:
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                tar.add(busybox_rootfs, arcname=".")
            d.docker("import", "-", BB, stdin=buf.getvalue())
            d.docker("import", "-c", "ENV PATH=/usr/bin:/bin", "-c", "ENV FOO=img",
                     "-c", 'ENTRYPOINT ["/bin/sh","-c"]', "-c", 'CMD ["echo hi; sleep 100"]',
                     "-c", "WORKDIR /home/app", "-c", "USER app", "-c", "LABEL il=1",
                     "-", CFG, stdin=buf.getvalue())
            yield d
    except (ToolMissing, DockerdUnavailable) as exc:
        pytest.skip(str(exc))


def _capture_spec(d: Dockerd, cid: str) -> dict[str, Any]:
    """Start the container and grab config.json as soon as containerd writes it."""
    path = d.root / "exec/containerd/daemon/io.containerd.runtime.v2.task/moby" / cid / \
        "config.json"
    got: dict[str, Any] = {}

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "spec" not in got:
            try:
                got["spec"] = json.loads(path.read_text())
            except (OSError, ValueError):  # not there yet, or half written
                time.sleep(0.0005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    # runc may refuse the container here (e.g. capabilities this kernel's bounding set lacks
    # for --privileged); the spec was written before that and is what we compare.
    subprocess.run([docker_cli(), "start", cid], env=d.env, capture_output=True, timeout=120,
                   check=False)
    watcher.join()
    assert "spec" in got, f"config.json of {cid} never appeared at {path}"
    spec: dict[str, Any] = got["spec"]
    return spec


def _node(path: str) -> dict[str, Any]:
    st = os.stat(path)
    return {"type": "b" if stat.S_ISBLK(st.st_mode) else "c", "major": os.major(st.st_rdev),
            "minor": os.minor(st.st_rdev), "file_mode": stat.S_IMODE(st.st_mode),
            "uid": st.st_uid, "gid": st.st_gid}


def _daemon_file(mount: dict[str, Any] | None, inspect: dict[str, Any]) -> str | None:
    """The source of one of dockerd's /etc files (None where a user mount took its place)."""
    own_dir = os.path.dirname(inspect["HostnamePath"])
    if mount is None or os.path.dirname(mount["source"]) != own_dir:
        return None
    return str(mount["source"])


def _facts(inspect: dict[str, Any], spec: dict[str, Any], rootfs: Path) -> dict[str, Any]:
    """The host facts skiff's daemon would supply, taken from the host and from what
    dockerd decided (its own file paths, namespace files, device list)."""
    hc = inspect["HostConfig"]
    by_dest = {m["destination"]: m for m in spec["mounts"]}
    non_recursive = {m["Target"] for m in hc.get("Mounts") or []
                     if (m.get("BindOptions") or {}).get("NonRecursive")}
    mounts = [{"source": m["Source"], "destination": m["Destination"], "writable": m["RW"],
               "propagation": m["Propagation"],
               "non_recursive": m["Destination"] in non_recursive}
              for m in inspect["Mounts"] if m["Type"] in ("bind", "volume")]
    ns = {n["type"]: n["path"] for n in spec["linux"]["namespaces"] if "path" in n}
    facts: dict[str, Any] = {
        "container_id": inspect["Id"],
        "rootfs": spec["root"]["path"],
        "mounts": mounts,
        "etc_files": {key: _daemon_file(by_dest.get(dest), inspect)
                      for key, dest in (("resolv_conf", "/etc/resolv.conf"),
                                        ("hostname", "/etc/hostname"),
                                        ("hosts", "/etc/hosts"))},
        "netns_path": ns.get("network") if not hc["NetworkMode"].startswith("container:")
        else None,
        "namespace_paths": {k: v for k, v in ns.items() if k != "network" or
                            hc["NetworkMode"].startswith("container:")},
        "passwd": (rootfs / "etc/passwd").read_text(),
        "group": (rootfs / "etc/group").read_text(),
        "apparmor": os.path.exists("/sys/kernel/security/apparmor"),
    }
    shm = by_dest.get("/dev/shm")
    if hc.get("IpcMode") in ("shareable",) or (hc.get("IpcMode") or "").startswith("container:"):
        facts["shm_path"] = shm["source"] if shm else None
    init = by_dest.get("/sbin/docker-init")
    if init is not None:
        facts["init_path"] = init["source"]
    paths = [d["PathOnHost"] for d in hc.get("Devices") or []]
    for key in ("BlkioWeightDevice", "BlkioDeviceReadBps", "BlkioDeviceWriteBps",
                "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps"):
        paths += [e["Path"] for e in hc.get(key) or []]
    facts["device_nodes"] = {p: _node(p) for p in paths}
    if hc.get("Privileged"):
        # dockerd lists the host's /dev itself; that walk is the daemon's I/O, not spec.py's.
        facts["host_devices"] = [
            {"path": d["path"], "node": {"type": d["type"], "major": d["major"],
                                         "minor": d["minor"], "file_mode": d["fileMode"],
                                         "uid": d["uid"], "gid": d["gid"]}}
            for d in spec["linux"].get("devices", [])]
    return facts


def record_case(d: Dockerd, name: str, args: list[str], rootfs: Path) -> dict[str, Any]:
    cid = d.docker("create", *args).decode().strip()
    try:
        spec = _capture_spec(d, cid)
        inspect = json.loads(d.docker("inspect", cid))[0]
    finally:
        subprocess.run([docker_cli(), "rm", "-f", "-v", cid], env=d.env, capture_output=True,
                       timeout=120, check=False)
    return {"docker_args": args, "config": inspect["Config"],
            "host_config": inspect["HostConfig"], "facts": _facts(inspect, spec, rootfs),
            "expected": normalise(spec)}


def test_spec_matches_live_dockerd(dockerd: Dockerd, busybox_rootfs: Path,
                                   tmp_path: Path) -> None:
    bind_dir = tmp_path / "bind"
    bind_dir.mkdir()
    update = os.environ.get("SKIFF_UPDATE_GOLDEN") == "1"
    failures = []
    for name, args in cases(bind_dir).items():
        record = record_case(dockerd, name, args, busybox_rootfs)
        ours = normalise(build_from_record(record))
        differs = [k for k in sorted(set(ours) | set(record["expected"]))
                   if ours.get(k) != record["expected"].get(k)]
        if differs:
            failures.append(f"{name}: {differs}")
        target = GOLDEN / f"{name}.json"
        if update or not target.exists():
            GOLDEN.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    # Everything the cases made is gone with the containers (rm -f -v removes the volumes'
    # anonymous parts; the named ones go with the private dockerd's data root).
    left = dockerd.docker("ps", "-aq").decode().split()
    assert left == [], f"containers left behind: {left}"
    assert not failures, "skiff's spec differs from dockerd's:\n" + "\n".join(failures)
    assert glob.glob(str(GOLDEN / "*.json"))


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=60)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(60)
        sock.connect(self._path)
        self.sock = sock


def _api_create(d: Dockerd, body: dict[str, Any]) -> dict[str, Any]:
    """POST /containers/create with exactly ``body`` (no CLI in between), then inspect."""
    conn = _UnixHTTP(str(d.sock))
    try:
        conn.request("POST", "/v1.41/containers/create", json.dumps(body),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        answer = json.loads(resp.read() or b"{}")
        assert resp.status == 201, f"create {body}: {resp.status} {answer}"
    finally:
        conn.close()
    try:
        inspect: dict[str, Any] = json.loads(d.docker("inspect", answer["Id"]))[0]
    finally:
        d.docker("rm", "-f", answer["Id"])
    return inspect


_HOST_CONFIGS: list[dict[str, Any]] = [
    {},
    {"Memory": 32 << 20},
    {"Memory": 32 << 20, "MemorySwap": -1, "ShmSize": 1 << 20, "IpcMode": "host"},
    {"Privileged": True},
    {"MaskedPaths": [], "ReadonlyPaths": ["/proc/x"]},
]
_DEFAULTED = ("MemorySwap", "ShmSize", "IpcMode", "CgroupnsMode", "MaskedPaths",
              "ReadonlyPaths")


def test_create_defaults_match_dockerd(dockerd: Dockerd) -> None:
    for extra in _HOST_CONFIGS:
        hc = {"NetworkMode": "none", **extra}
        stored = _api_create(dockerd, {"Image": BB, "Cmd": ["true"], "HostConfig": hc})
        ours = apply_create_defaults(hc)
        theirs = stored["HostConfig"]
        # Docker 25 masks /sys/devices/virtual/powercap too; 20.10 predates that.
        if isinstance(ours.get("MaskedPaths"), list) and extra.get("MaskedPaths") is None:
            ours["MaskedPaths"] = [p for p in ours["MaskedPaths"]
                                   if p != "/sys/devices/virtual/powercap"]
        # Fields absent from our dict are Go zero values in dockerd's (0, "", null).
        zero = {k: theirs.get(k) for k in _DEFAULTED if theirs.get(k) in (0, "", None)}
        assert {k: ours.get(k, zero.get(k)) for k in _DEFAULTED} == \
            {k: theirs.get(k) for k in _DEFAULTED}, f"HostConfig {extra}"


_CONFIGS: list[dict[str, Any]] = [
    {},
    {"Cmd": ["sleep", "1"]},
    {"Cmd": "echo a b"},
    {"Entrypoint": ["/bin/sleep"]},
    {"Entrypoint": [""], "Cmd": ["sleep", "1"]},
    {"Entrypoint": [], "Cmd": ["x"]},
    {"Entrypoint": []},
    {"Env": ["FOO=ctr", "NEW=1"], "User": "0", "WorkingDir": "/w", "Labels": {"il": "2"}},
]
_MERGED = ("User", "WorkingDir", "Env", "Entrypoint", "Cmd", "Labels")


def test_image_config_merge_matches_dockerd(dockerd: Dockerd) -> None:
    image = json.loads(dockerd.docker("image", "inspect", CFG))[0]["Config"]
    for body in _CONFIGS:
        stored = _api_create(dockerd, {"Image": CFG, "HostConfig": {"NetworkMode": "none"},
                                       **body})["Config"]
        ours = merge_image_config(body, image)
        assert {k: ours.get(k) for k in _MERGED} == {k: stored.get(k) for k in _MERGED}, \
            f"Config {body}"
