"""Published-port throughput and what bridge networking adds to a start: skiffd vs dockerd.

Throughput: a busybox `nc -l` sink in a container published on 127.0.0.1; the host sends
SIZE MiB to it and the clock stops when the sink has closed the connection (all bytes read).
Docker carries connections from the host itself through its userland proxy (docker-proxy);
skiff's published ports are kernel DNAT for every source (docs/network.md).
Start cost: `run --rm busybox true` with the default bridge network vs `--network none`.
Both daemons are private (own roots); dockerd gets its stock networking (docker0 on
10.213.251.0/24, iptables rules), removed again at the end. Only loopback traffic. Needs root.
Usage: .venv/bin/python bench/network.py [-n 5] [--size 512]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from skiff.devtools.busybox import make_rootfs
from skiff.devtools.daemon import private_skiffd
from skiff.devtools.images import docker_cli, private_dockerd, tar_tree
from skiff.devtools.machine import compile_package, describe

IMAGE = "busybox:latest"


def _docker(env: dict[str, str], *args: str) -> str:
    res = subprocess.run([docker_cli(), *args], capture_output=True, env=env, check=False)
    if res.returncode != 0:
        sys.exit(f"docker {' '.join(args)}: {res.stderr.decode()[-600:]}")
    return res.stdout.decode()


def _published_port(env: dict[str, str], cid: str) -> int:
    out = _docker(env, "port", cid, "80/tcp").split()[0]  # 127.0.0.1:49153
    return int(out.rsplit(":", 1)[1])


def send_through(env: dict[str, str], mib: int) -> float:
    """Seconds to push ``mib`` MiB into a fresh sink container through its published port."""
    cid = _docker(env, "run", "-d", "-p", "127.0.0.1::80", IMAGE, "sh", "-c",
                  "nc -l -p 80 > /dev/null").strip()
    try:
        port = _published_port(env, cid)
        chunk = b"\0" * (1 << 20)
        deadline = time.monotonic() + 10
        while True:  # the sink needs a moment to listen
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=30)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        with sock:
            t0 = time.perf_counter()
            for _ in range(mib):
                sock.sendall(chunk)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):  # the sink read everything and went away
                pass
            return time.perf_counter() - t0
    finally:
        _docker(env, "rm", "-f", cid)


def start_cost(env: dict[str, str], n: int) -> tuple[float, float]:
    none, bridge = [], []
    for _ in range(n):
        for mode, into in (("none", none), ("bridge", bridge)):
            t0 = time.perf_counter()
            _docker(env, "run", "--rm", "--network", mode, IMAGE, "true")
            into.append(time.perf_counter() - t0)
    return statistics.median(none), statistics.median(bridge)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=5)
    ap.add_argument("--size", type=int, default=512, help="MiB per throughput run")
    args = ap.parse_args()
    compile_package()
    rows: dict[str, tuple[float, float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tar = Path(tmp) / "busybox.tar"
        tar.write_bytes(tar_tree(make_rootfs(Path(tmp) / "rootfs")))
        with private_skiffd() as sk:
            env = {**os.environ, "DOCKER_HOST": sk.host}
            _docker(env, "import", str(tar), IMAGE)
            secs = [send_through(env, args.size) for _ in range(args.n)]
            rows["skiffd"] = (statistics.median(secs), *start_cost(env, args.n * 2))
        with private_dockerd("overlay2", bridge_cidr="10.213.251.1/24") as dk:
            dk.docker("import", str(tar), IMAGE)
            secs = [send_through(dk.env, args.size) for _ in range(args.n)]
            rows["dockerd"] = (statistics.median(secs), *start_cost(dk.env, args.n * 2))
    print(describe())
    print(f"host -> 127.0.0.1 published port, {args.size} MiB, median of {args.n}; "
          f"`run --rm true` none vs bridge, median of {args.n * 2}:")
    for name, (secs, none, bridge) in rows.items():
        print(f"  {name:8} {args.size / secs:8.0f} MiB/s   start none {none * 1000:6.0f} ms, "
              f"bridge {bridge * 1000:6.0f} ms (+{(bridge - none) * 1000:.0f} ms)")
    ratio = rows["dockerd"][0] / rows["skiffd"][0]
    print(f"  published-port throughput: skiff {ratio:.2f}x docker")


if __name__ == "__main__":
    main()
