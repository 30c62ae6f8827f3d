"""End-to-end `run --rm busybox true` latency: client + daemon + runtime, against the peers.

Rows (each a private daemon with its own roots; every row uses `--network none` so that no
row pays for bridge networking the others skip):
  skiff CLI  -> skiffd           `skiff run --rm --network none busybox true`
  docker CLI -> skiffd           `docker run --rm --network none busybox true`
  docker CLI -> dockerd          (Debian's docker.io, overlay2, runc)
  podman                         (Debian's podman, overlay, crun/runc)
  --slow-paths: docker CLI -> skiffd with a fresh interpreter per shim and skiff-runtime
                exec'd per call (SKIFF_SHIM_ZYGOTE=0, SKIFF_SHIM_EXEC_RUNTIME=1), to show
                what the zygote and the in-process runtime save
Prints the median of N interleaved runs per row and each row's ratio to docker on dockerd.
Needs root. Install the peers first: apt-get install docker.io podman.
Usage: .venv/bin/python bench/run_latency.py [-n 20] [--gap 0.1] [--slow-paths]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from skiff.devtools.busybox import make_rootfs
from skiff.devtools.daemon import SkiffdProcess, private_skiffd
from skiff.devtools.images import docker_cli, private_dockerd, tar_tree
from skiff.devtools.machine import compile_package, describe

Runner = Callable[[], None]


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    res = subprocess.run(argv, capture_output=True, env=env, check=False)
    if res.returncode != 0:
        sys.exit(f"{' '.join(argv)}: exit {res.returncode}: {res.stderr.decode()[-500:]}")


def _env(host: str) -> dict[str, str]:
    return {**os.environ, "DOCKER_HOST": host}


@contextlib.contextmanager
def podman_row(rootfs_tar: Path) -> Iterator[Runner | None]:
    exe = shutil.which("podman")
    if exe is None:
        print("(podman is not installed: apt-get install podman; its row is left out)")
        yield None
        return
    base = Path(tempfile.mkdtemp(prefix="skbp", dir="/tmp"))
    cmd = [exe, "--root", str(base / "root"), "--runroot", str(base / "run"),
           "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
    try:
        _run([*cmd, "import", str(rootfs_tar), "busybox:latest"])
        # Root here lacks CAP_SYS_RESOURCE, so podman's default rlimits (above ours) would be
        # refused by its runtime: give it the limits this process has.
        limits = []
        for name, which in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
            soft, hard = resource.getrlimit(which)
            limits += ["--ulimit", f"{name}={soft}:{hard}"]
        argv = [*cmd, "run", "--rm", "--network", "none", *limits, "busybox:latest", "true"]
        trial = subprocess.run(argv, capture_output=True, check=False)
        if trial.returncode != 0:
            print(f"(podman cannot run containers here, its row is left out: "
                  f"{trial.stderr.decode().strip()[-300:]})")
            yield None
        else:
            yield lambda: _run(argv)
    finally:
        subprocess.run([*cmd, "system", "reset", "-f"], capture_output=True, check=False)
        with open("/proc/mounts") as f:
            for m in reversed([ln.split()[1] for ln in f if str(base) in ln]):
                subprocess.run(["umount", "-l", m], check=False)
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def slow_skiffd(wanted: bool) -> Iterator[SkiffdProcess | None]:
    """A second skiffd whose shims start and run skiff-runtime the old way (the daemon's
    environment reaches its shims)."""
    if not wanted:
        yield None
        return
    with private_skiffd(env=_SLOW_ENV) as sk:
        yield sk


_SLOW_ENV = {"SKIFF_SHIM_ZYGOTE": "0", "SKIFF_SHIM_EXEC_RUNTIME": "1"}


def _skiff_cli_can_run() -> bool:
    skiff = Path(sys.executable).parent / "skiff"
    res = subprocess.run([str(skiff), "run", "--help"], capture_output=True, check=False)
    return res.returncode == 0


def measure(rows: dict[str, Runner], n: int, warmup: int = 2, gap: float = 0.1
            ) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in rows}
    for i in range(n + warmup):
        for name, fn in rows.items():  # interleaved: background load hits every row alike
            time.sleep(gap)
            t0 = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=20)
    ap.add_argument("--gap", type=float, default=0.1,
                    help="seconds of quiet before each run (an engine's cleanup of the run "
                         "before, done after it answered, must not land on the next row)")
    ap.add_argument("--slow-paths", action="store_true",
                    help="add a row for skiffd without its zygote and in-process runtime")
    args = ap.parse_args()
    compile_package()
    cli = docker_cli()
    skiff = str(Path(sys.executable).parent / "skiff")
    image = "busybox:latest"
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = make_rootfs(Path(tmp) / "rootfs")
        tar = Path(tmp) / "busybox.tar"
        tar.write_bytes(tar_tree(rootfs))
        with private_skiffd() as sk, private_dockerd("overlay2") as dk, \
                podman_row(tar) as podman, slow_skiffd(args.slow_paths) as slow:
            _run([cli, "import", str(tar), image], env=_env(sk.host))
            dk.docker("import", str(tar), image)
            rows: dict[str, Runner] = {}
            if _skiff_cli_can_run():
                rows["skiff CLI -> skiffd"] = lambda: _run(
                    [skiff, "-H", sk.host, "run", "--rm", "--network", "none", image, "true"])
            else:
                print("(skiff CLI has no `run` yet: its row is left out)")
            rows["docker CLI -> skiffd"] = lambda: _run(
                [cli, "run", "--rm", "--network", "none", image, "true"], env=_env(sk.host))
            if slow is not None:
                _run([cli, "import", str(tar), image], env=_env(slow.host))
                rows["docker CLI -> skiffd slow"] = lambda: _run(
                    [cli, "run", "--rm", "--network", "none", image, "true"],
                    env=_env(slow.host))
            rows["docker CLI -> dockerd"] = lambda: _run(
                [cli, "run", "--rm", "--network", "none", image, "true"], env=dk.env)
            if podman is not None:
                rows["podman"] = podman
            times = measure(rows, args.n, gap=args.gap)
    print(describe())
    print(f"`run --rm --network none busybox true`, median of {args.n} interleaved runs "
          f"({args.gap:g} s apart):")
    base = statistics.median(times["docker CLI -> dockerd"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:24} {med * 1000:8.1f} ms   {med / base:5.2f}x docker")


if __name__ == "__main__":
    main()
