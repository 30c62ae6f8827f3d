"""Dockerfile builds, cold (--no-cache) and fully cached: skiff vs Docker's classic builder.

The same context and multi-step Dockerfile (FROM, ARG, ENV, WORKDIR, COPY, RUN, CMD) for:
  skiff CLI  -> skiffd        `skiff build`
  docker CLI -> skiffd        `DOCKER_BUILDKIT=0 docker build`
  docker CLI -> dockerd       (Debian's docker.io, overlay2, classic builder)
Prints medians of N runs each and the ratio to docker on dockerd. Needs root.
Usage: .venv/bin/python bench/build.py [-n 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from skiff.devtools.busybox import make_rootfs
from skiff.devtools.daemon import private_skiffd
from skiff.devtools.images import docker_cli, private_dockerd, tar_tree
from skiff.devtools.machine import compile_package, describe

DOCKERFILE = """\
FROM busybox:latest
ARG GREETING=hello
ENV APP_HOME=/app MODE=bench
WORKDIR /app
COPY src/ /app/src/
RUN mkdir -p /app/out && cat /app/src/*.txt > /app/out/all.txt && echo "$GREETING" > /app/out/g
CMD ["cat", "/app/out/all.txt"]
"""


def make_context(where: Path) -> Path:
    (where / "src").mkdir(parents=True)
    for i in range(20):
        (where / "src" / f"f{i}.txt").write_text(f"file {i}\n" * 50)
    (where / "Dockerfile").write_text(DOCKERFILE)
    return where


def _run(argv: list[str], env: dict[str, str]) -> None:
    res = subprocess.run(argv, capture_output=True, env=env, check=False)
    if res.returncode != 0:
        sys.exit(f"{' '.join(argv)}: exit {res.returncode}: {res.stderr.decode()[-800:]}"
                 f"{res.stdout.decode()[-800:]}")


def timed(fn: Callable[[], None], n: int) -> list[float]:
    out = []
    for _ in range(n):
        time.sleep(0.1)
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _skiff_can_build(skiff: str) -> bool:
    return subprocess.run([skiff, "build", "--help"], capture_output=True,
                          check=False).returncode == 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=7)
    args = ap.parse_args()
    compile_package()
    cli = docker_cli()
    skiff = str(Path(sys.executable).parent / "skiff")
    results: dict[str, tuple[list[float], list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ctx = make_context(Path(tmp) / "ctx")
        tar = Path(tmp) / "busybox.tar"
        tar.write_bytes(tar_tree(make_rootfs(Path(tmp) / "rootfs")))
        with private_skiffd() as sk, private_dockerd("overlay2") as dk:
            sk_env = {**os.environ, "DOCKER_HOST": sk.host, "SKIFF_HOST": sk.host,
                      "DOCKER_BUILDKIT": "0"}
            dk_env = {**dk.env, "DOCKER_BUILDKIT": "0"}
            _run([cli, "import", str(tar), "busybox:latest"], sk_env)
            dk.docker("import", str(tar), "busybox:latest")
            rows: dict[str, tuple[list[str], dict[str, str]]] = {}
            if _skiff_can_build(skiff):
                rows["skiff CLI -> skiffd"] = ([skiff, "build", "-q", "-t", "b:1", str(ctx)],
                                               sk_env)
            else:
                print("(skiff CLI has no `build` yet: its row is left out)")
            rows["docker CLI -> skiffd"] = ([cli, "build", "-q", "-t", "b:1", str(ctx)], sk_env)
            rows["docker CLI -> dockerd"] = ([cli, "build", "-q", "-t", "b:1", str(ctx)], dk_env)
            for name, (argv, env) in rows.items():
                cold = timed(lambda a=argv, e=env: _run([*a[:2], "--no-cache", *a[2:]], e),
                             args.n)
                _run(argv, env)  # prime the cache
                cached = timed(lambda a=argv, e=env: _run(a, e), args.n)
                results[name] = (cold, cached)
    print(describe())
    print(f"build of a 7-step Dockerfile (20 files copied), median of {args.n}:")
    base_cold, base_cached = (statistics.median(x) for x in results["docker CLI -> dockerd"])
    for name, (cold, cached) in results.items():
        c, h = statistics.median(cold), statistics.median(cached)
        print(f"  {name:24} cold {c * 1000:7.0f} ms ({c / base_cold:4.2f}x docker)   "
              f"cached {h * 1000:6.0f} ms ({h / base_cached:4.2f}x docker)")


if __name__ == "__main__":
    main()
