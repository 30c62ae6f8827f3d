"""A/B of `run --rm --network none busybox true` between two source trees of skiff.

Each tree gets its own private skiffd (daemon, zygote, shims and in-process runtime all run
that tree's code), and the runs alternate A, B, A, B... so that the machine's slow and fast
moments hit both alike: the only way found to judge a change of 1-2 ms here, where two
benchmark sessions differ by more than that.

    git worktree add /tmp/base main
    .venv/bin/python bench/ab_latency.py /tmp/base . [-n 40] [--cli docker|skiff]

A tree is put first on PYTHONPATH, and each daemon runs from its own directory (see
skiff.devtools.daemon.SkiffdProcess: with `python -m` the current directory comes before
PYTHONPATH, so a daemon started inside a checkout would run that checkout's code). Both trees
are compiled first (under PYTHONDONTWRITEBYTECODE an edited module would be compiled again by
every shim). The zygote and shims inherit the daemon's environment.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import sys
import tempfile
from pathlib import Path

from run_latency import Runner, _env, _run, measure  # this directory is on sys.path

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
    tar = scratch / "busybox.tar"
    tar.write_bytes(tar_tree(make_rootfs(scratch / "rootfs")))
    # each daemon runs from its own directory (see SkiffdProcess): PYTHONPATH decides
    daemons = {name: SkiffdProcess(scratch / name, env={"PYTHONPATH": tree})
               for name, tree in trees.items()}
    try:
        for d in daemons.values():
            d.start()
            _run([cli, "import", str(tar), "busybox:latest"], env=_env(d.host))

        def runner(d: SkiffdProcess) -> Runner:
            head = [cli] if args.cli == "docker" else [skiff, "-H", d.host]
            argv = [*head, "run", "--rm", "--network", "none", "busybox:latest", "true"]
            return lambda: _run(argv, env=_env(d.host))

        times = measure({name: runner(d) for name, d in daemons.items()}, args.n,
                        warmup=3, gap=args.gap)
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
