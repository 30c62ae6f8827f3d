"""A private skiffd for benchmarks and demos: own socket, data root and exec root."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path


class UnixHTTP(http.client.HTTPConnection):
    """http.client over a unix socket (the daemon's API)."""

    def __init__(self, path: str, timeout: float = 30) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def ping(sock: Path) -> bool:
    conn = UnixHTTP(str(sock), timeout=5)
    try:
        conn.request("GET", "/_ping")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


class SkiffdProcess:
    """One skiffd with its own socket and roots. ``env`` adds to (or, with None values,
    removes from) the environment it and its zygote, shims and runtime get. It runs from
    ``base``: with ``python -m`` the current directory comes first on sys.path, so a daemon
    started inside a checkout would run that checkout's code whatever PYTHONPATH says."""

    def __init__(self, base: Path, *flags: str,
                 env: Mapping[str, str | None] | None = None) -> None:
        self.base = base
        self.env = dict(env or {})
        self.sock = base / "s.sock"
        self.data = base / "data"
        self.run = base / "run"
        self.log = base / "skiffd.log"
        self.flags = flags
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    def start(self, timeout: float = 30) -> None:
        env = {**os.environ, **self.env}
        self.base.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "skiff.daemon.main", "-H", self.host, "--data-root",
                 str(self.data), "--exec-root", str(self.run), "--registry-allow",
                 "127.0.0.0/8", "--registry-allow", "localhost", *self.flags],
                stdout=log, stderr=log, start_new_session=True, cwd=self.base,
                env={k: v for k, v in env.items() if v is not None})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"skiffd exited: {self.log.read_text()[-800:]}")
            if self.sock.exists() and ping(self.sock):
                return
            time.sleep(0.05)
        raise RuntimeError(f"skiffd did not answer: {self.log.read_text()[-800:]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def _mounts_under(base: Path) -> list[str]:
    with open("/proc/mounts") as f:
        return [line.split()[1] for line in f if str(base) in line.split()[1]]


@contextlib.contextmanager
def private_skiffd(*flags: str, parent: str = "/tmp",
                   env: Mapping[str, str | None] | None = None) -> Iterator[SkiffdProcess]:
    """A running skiffd under a new short directory; stopped and cleaned up on exit (the
    caller removes its containers first)."""
    base = Path(tempfile.mkdtemp(prefix="skb", dir=parent))
    d = SkiffdProcess(base, *flags, env=env)
    try:
        d.start()
        yield d
    finally:
        d.stop()
        for m in reversed(_mounts_under(base)):
            subprocess.run(["umount", "-l", m], check=False)
        shutil.rmtree(base, ignore_errors=True)


def pss_kib(pid: int) -> int:
    """Proportional set size of one process (what it costs, shared pages split fairly)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pids_matching(*needles: str) -> list[int]:
    """Processes whose command line contains any of ``needles``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if any(n.encode() in cmd for n in needles):
            found.append(int(entry))
    return found
