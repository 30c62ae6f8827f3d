"""A/B of `run --rm --network none busybox true` between two source trees of skiff.

Each tree gets its own private skiffd (daemon, zygote, shims and in-process runtime all run
that tree's code), and the runs alternate A, B, A, B... so that the machine's slow and fast
moments hit both alike: the only way found to judge a change of 1-2 ms here, where two
benchmark sessions differ by more than that.

    git worktree add /tmp/base main
    .venv/bin/python bench/ab_latency.py /tmp/base . [-n 40] [--cli docker|skiff]

A tree is put first on PYTHONPATH, and the daemons run from a scratch directory: with
`python -m`, the current directory comes before PYTHONPATH on sys.path, so a daemon started
from inside a checkout would run that checkout's code whatever PYTHONPATH says. Both trees
are compiled first (under PYTHONDONTWRITEBYTECODE an edited module would be compiled again by
every shim). The zygote and shims inherit the daemon's environment.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from skiff.devtools.busybox import make_rootfs
from skiff.devtools.daemon import SkiffdProcess
from skiff.devtools.images import docker_cli, tar_tree
from skiff.devtools.machine import describe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", help="source tree A (holds skiff/)")
    ap.add_argument("b", help="source tree B (holds skiff/)")
    ap.add_argument("-n", type=int, default=40)
    ap.add_argument("--gap", type=float, default=0.1)
    ap.add_argument("--cli", choices=("docker", "skiff"), default="docker")
    args = ap.parse_args()
    trees = {"A": os.path.abspath(args.a), "B": os.path.abspath(args.b)}
    for tree in trees.values():
        if not os.path.isdir(os.path.join(tree, "skiff")):
            sys.exit(f"{tree}: no skiff/ package there")
        compileall.compile_dir(os.path.join(tree, "skiff"), quiet=1)
    cli, skiff = docker_cli(), str(Path(sys.executable).parent / "skiff")
    scratch = Path(tempfile.mkdtemp(prefix="skab", dir="/tmp"))
    os.chdir(scratch)  # see above: not inside a checkout
    tar = scratch / "busybox.tar"
    tar.write_bytes(tar_tree(make_rootfs(scratch / "rootfs")))
    daemons: dict[str, SkiffdProcess] = {}
    saved = os.environ.get("PYTHONPATH")
    try:
        for name, tree in trees.items():
            os.environ["PYTHONPATH"] = tree
            (scratch / name).mkdir()
            daemons[name] = SkiffdProcess(scratch / name)
            daemons[name].start()
        if saved is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = saved
        for d in daemons.values():
            subprocess.run([cli, "import", str(tar), "busybox:latest"], check=True,
                           capture_output=True, env={**os.environ, "DOCKER_HOST": d.host})
        times: dict[str, list[float]] = {name: [] for name in daemons}
        warmup = 3
        for i in range(args.n + warmup):
            for name, d in daemons.items():
                argv = ([cli] if args.cli == "docker" else [skiff, "-H", d.host]) + [
                    "run", "--rm", "--network", "none", "busybox:latest", "true"]
                time.sleep(args.gap)
                t0 = time.perf_counter()
                res = subprocess.run(argv, capture_output=True, check=False,
                                     env={**os.environ, "DOCKER_HOST": d.host})
                took = time.perf_counter() - t0
                if res.returncode != 0:
                    sys.exit(f"{name}: {' '.join(argv)}: {res.stderr.decode()[-400:]}")
                if i >= warmup:
                    times[name].append(took)
    finally:
        for d in daemons.values():
            d.stop()
    print(describe())
    print(f"`{args.cli} run --rm --network none busybox true`, {args.n} runs each, "
          "interleaved:")
    med = {name: statistics.median(ts) for name, ts in times.items()}
    for name, ts in times.items():
        q1 = statistics.quantiles(ts, n=4)[0]
        print(f"  {name} {trees[name]:40} median {med[name] * 1000:6.1f} ms   "
              f"p25 {q1 * 1000:6.1f} ms")
    print(f"  B - A: {(med['B'] - med['A']) * 1000:+.1f} ms")


if __name__ == "__main__":
    main()
