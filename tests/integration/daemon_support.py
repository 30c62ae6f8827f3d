"""A private skiffd for tests: the process, raw HTTP, the docker CLI pointed at it, and the
leak check its fixture runs at teardown (no containers, mounts, shims, cgroups, sockets)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from skiff.daemon.networks.leftovers import remove_leftovers
from skiff.daemon.networks.options import NetworkOptions
from skiff.devtools.daemon import UnixHTTP
from skiff.devtools.images import tar_tree
from tests.integration.support import cgroup_dirs, mounts_mentioning

DOCKER = shutil.which("docker")
IMAGE = "busybox:latest"


# Network safety: a test daemon may contact registries on this machine only (a short name
# such as "busybox" the daemon lacks would otherwise send it to Docker Hub).
LOOPBACK_REGISTRIES_ONLY = ("--registry-allow", "127.0.0.0/8", "--registry-allow", "localhost",
                            "--registry-allow", "::1")


class Skiffd:
    """One private skiffd process and the clients that talk to it."""

    def __init__(self, base: Path, *flags: str) -> None:
        self.base = base
        self.flags = flags
        self.sock = base / "s.sock"
        self.data = base / "data"
        self.run = base / "run"
        self.pidfile = base / "skiffd.pid"
        self.logfile = base / "skiffd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen: set[str] = set()  # every container id a test made, for the cgroup check

    def start(self) -> None:
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "skiff.daemon.main", "-H", f"unix://{self.sock}",
                 "--data-root", str(self.data), "--exec-root", str(self.run),
                 "--pidfile", str(self.pidfile), *LOOPBACK_REGISTRIES_ONLY, *self.flags],
                stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.logfile.read_text()
            try:
                if self.api("GET", "/_ping")[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"skiffd did not answer: {self.logfile.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=30)
        self.proc = None
        return code

    def api(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
            timeout: float = 30) -> tuple[int, Any]:
        conn = UnixHTTP(str(self.sock), timeout)
        try:
            data = raw if raw is not None else (None if body is None else json.dumps(body))
            conn.request(method, path, body=data,
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            payload = resp.read()
            ctype = resp.getheader("Content-Type", "")
            return resp.status, (json.loads(payload) if payload and ctype.startswith(
                "application/json") else payload)
        finally:
            conn.close()

    def docker(self, *args: str, input: bytes | None = None, timeout: float = 60,
               check: bool = True) -> subprocess.CompletedProcess[bytes]:
        assert DOCKER is not None
        env = {**os.environ, "DOCKER_HOST": f"unix://{self.sock}",
               "DOCKER_CONFIG": str(self.base / "docker-config")}
        res = subprocess.run([DOCKER, *args], input=input, capture_output=True, env=env,
                             timeout=timeout, check=False)
        if check:
            assert res.returncode == 0, (args, res.stdout, res.stderr)
        return res

    def out(self, *args: str, **kw: Any) -> str:
        return self.docker(*args, **kw).stdout.decode()

    def run_d(self, *args: str) -> str:
        cid = self.out("run", "-d", *args).strip()
        self.seen.add(cid)
        return cid

    def shim_pids(self) -> list[int]:
        """Processes whose command line names our exec root (shims and their runtime)."""
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if str(self.run).encode() in f.read():
                        found.append(int(pid))
            except OSError:
                continue
        return found


@contextmanager
def private_skiffd(busybox_rootfs: Path, *flags: str, check_parent_cgroup: bool = True
                   ) -> Iterator[Skiffd]:
    """A started skiffd with busybox imported; at exit, every container must be gone and
    nothing of the daemon's may be left on the machine."""
    if DOCKER is None:
        pytest.skip("the docker CLI is not installed (apt-get install docker.io)")
    base = Path(tempfile.mkdtemp(prefix="skd", dir="/tmp"))  # short: unix socket paths
    d = Skiffd(base, *flags)
    try:
        d.start()
        (base / "rootfs.tar").write_bytes(tar_tree(busybox_rootfs))
        d.docker("import", str(base / "rootfs.tar"), IMAGE)
        yield d
        leftover = d.out("ps", "-aq").split()
        for cid in leftover:
            d.docker("rm", "-f", cid, check=False)
        assert leftover == [], "a test left containers behind"
        assert d.stop() == 0
        assert not d.sock.exists() and not d.pidfile.exists()
        deadline = time.monotonic() + 5
        while d.shim_pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert d.shim_pids() == []
        assert mounts_mentioning(str(base)) == []
        assert [c for cid in d.seen for c in cgroup_dirs(cid)] == []
        # ... nor the shared parent, whichever runtime ran the containers (runc leaves it).
        if check_parent_cgroup:  # (off where other daemons may run beside this one)
            assert sorted(Path("/sys/fs/cgroup").glob("*/skiff")) == []
        assert entries(d.run / "shims") == []
        assert entries(d.run / "bundles") == []
    finally:
        if d.proc is not None:
            d.proc.kill()
            d.proc.wait()
            # a daemon killed on a failure path leaves its bridges, veths and nft table
            remove_leftovers(NetworkOptions(str(d.data), str(d.run)))
        for line in reversed(mounts_mentioning(str(base))):
            subprocess.run(["umount", "-l", line.split()[4]], check=False)
        shutil.rmtree(base, ignore_errors=True)


def entries(path: Path) -> list[Path]:
    return list(path.iterdir()) if path.exists() else []
