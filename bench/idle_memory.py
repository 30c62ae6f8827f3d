"""Memory of the engine around N idle containers: skiffd + its shims vs dockerd + containerd +
containerd-shim-runc-v2 (Debian's docker.io), measured as PSS (shared pages split fairly).

The containers' own processes (`sleep`) are left out of both sides: what is compared is what
the engine costs. Prints the engine's PSS with 0 and with N containers and the per-container
overhead ((with N - with 0) / N). Needs root.
Usage: .venv/bin/python bench/idle_memory.py [-n 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from skiff.devtools.busybox import make_rootfs
from skiff.devtools.daemon import pids_matching, private_skiffd, pss_kib
from skiff.devtools.images import docker_cli, private_dockerd, tar_tree
from skiff.devtools.machine import describe


def _docker(env: dict[str, str], *args: str) -> str:
    res = subprocess.run([docker_cli(), *args], capture_output=True, env=env, check=False)
    if res.returncode != 0:
        sys.exit(f"docker {' '.join(args)}: {res.stderr.decode()[-500:]}")
    return res.stdout.decode()


def _engine_kib(needles: tuple[str, ...], exclude: set[int]) -> int:
    return sum(pss_kib(p) for p in pids_matching(*needles) if p not in exclude)


def _workload_pids(env: dict[str, str]) -> set[int]:
    """The containers' own processes (and their children), left out of the engine's sum."""
    ids = _docker(env, "ps", "-q").split()
    pids: set[int] = set()
    for cid in ids:
        pid = int(_docker(env, "inspect", "-f", "{{.State.Pid}}", cid).strip() or 0)
        if pid:
            pids.add(pid)
    return pids


def settle() -> None:
    time.sleep(3)  # let start-up garbage be collected and pages settle


def measure(env: dict[str, str], needles: tuple[str, ...], n: int) -> tuple[int, int]:
    settle()
    before = _engine_kib(needles, set())
    for _ in range(n):
        _docker(env, "run", "-d", "--network", "none", "busybox:latest", "sleep", "3600")
    settle()
    after = _engine_kib(needles, _workload_pids(env))
    ids = _docker(env, "ps", "-aq").split()
    if ids:
        _docker(env, "rm", "-f", *ids)
    return before, after


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    results: dict[str, list[tuple[int, int]]] = {"skiffd": [], "dockerd": []}
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = make_rootfs(Path(tmp) / "rootfs")
        tar = Path(tmp) / "busybox.tar"
        tar.write_bytes(tar_tree(rootfs))
        for _ in range(args.repeat):
            with private_skiffd() as sk:
                env = {**os.environ, "DOCKER_HOST": sk.host}
                _docker(env, "import", str(tar), "busybox:latest")
                # the daemon and every shim name the daemon's private directory
                results["skiffd"].append(measure(env, (str(sk.base),), args.n))
            with private_dockerd("overlay2") as dk:
                dk.docker("import", str(tar), "busybox:latest")
                results["dockerd"].append(measure(dk.env, (str(dk.root),), args.n))
    print(describe())
    print(f"engine PSS around {args.n} idle `sleep` containers (median of {args.repeat}):")
    per = {}
    for name, runs in results.items():
        before = statistics.median(b for b, _ in runs)
        after = statistics.median(a for _, a in runs)
        per[name] = (after - before) / args.n
        print(f"  {name:8} idle {before / 1024:7.1f} MiB   with {args.n}: {after / 1024:7.1f} MiB"
              f"   per container {per[name] / 1024:5.2f} MiB")
    print(f"  per-container overhead: skiff {per['skiffd'] / per['dockerd']:.2f}x docker")


if __name__ == "__main__":
    main()
