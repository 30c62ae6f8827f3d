"""Where the time of one `docker run --rm --network none busybox true` against skiffd goes.

A private skiffd runs with skiff/devtools/tracemarks first on PYTHONPATH, which makes every
process of skiff's (daemon, zygote, shim, in-process runtime, the container's init until its
exec) write ftrace markers around the functions in TARGETS. With the scheduler's exec and
exit events (the docker CLI's, the container's) on the same clock, each run gives one
timeline; this prints the median time of each milestone since the CLI's exec, and the step
from the one before. The markers cost a little (~10 us each): compare timelines with each
other, not with bench/run_latency.py.

Needs root and tracefs (/sys/kernel/tracing). Usage:
    .venv/bin/python bench/timeline.py [-n 15] [--trace-dir DIR]   (DIR: keep the raw traces)
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from skiff import devtools
from skiff.devtools.busybox import make_rootfs
from skiff.devtools.daemon import SkiffdProcess
from skiff.devtools.images import docker_cli, tar_tree
from skiff.devtools.machine import compile_package, describe

TRACEFS = Path("/sys/kernel/tracing")
EVENTS = ("sched/sched_process_exec", "sched/sched_process_exit")
TARGETS = " ".join([
    "skiff.daemon.routers.containers:ContainersRouter.create",
    "skiff.daemon.routers.containers:ContainersRouter.attach",
    "skiff.daemon.routers.containers:ContainersRouter.start",
    "skiff.daemon.routers.containers:ContainersRouter.wait",
    "skiff.daemon.containers.manager:ContainerManager._exited",
    "skiff.daemon.containers.manager:ContainerManager._removed",
    "skiff.daemon.containers.runner:Runner.start_shim",
    "skiff.shim.server:Shim.create",
    "skiff.runtime.process.launcher:create",
    "skiff.runtime.process.launcher:_clone_stage2",
    "skiff.runtime.process.init:_wait_for_start",
])
# (milestone, regular expression on the trace line); the first match after the CLI's exec
MILESTONES = [
    ("create request", r"> ContainersRouter\.create$"),
    ("create answered", r"< ContainersRouter\.create$"),
    ("shim creating", r"> Shim\.create$"),
    ("runtime create", r"> create$"),
    ("init cloned", r"> _clone_stage2$"),
    ("init waits for start", r"> _wait_for_start$"),
    ("runtime side done", r"< Runner\.start_shim$"),
    ("start request", r"> ContainersRouter\.start$"),
    ("process exec", r"sched_process_exec: filename=/bin/true"),
    ("process exit", r"sched_process_exit: comm=true "),
    ("exit seen by skiffd", r"> ContainerManager\._exited$"),
    ("removed", r"< ContainerManager\._removed$"),
    ("CLI exit", r"sched_process_exit: comm=docker .*group_dead=true"),
]
_LINE = re.compile(r"\s(\d+\.\d+): (.*)$")


def _write(name: str, value: str) -> None:
    (TRACEFS / name).write_text(value)


def milestones(trace: str, cli: str) -> dict[str, float]:
    """Milestone -> ms since the docker CLI's exec, in one run's trace text."""
    start = f"sched_process_exec: filename={cli} "
    t0: float | None = None
    found: dict[str, float] = {}
    for line in trace.splitlines():
        m = _LINE.search(line)
        if m is None:
            continue
        ts, what = float(m.group(1)), m.group(2).strip()
        if t0 is None:
            if what.startswith(start):
                t0 = ts
            continue
        for name, pattern in MILESTONES:
            if name not in found and re.search(pattern, what.removeprefix(
                    "tracing_mark_write: ")):
                found[name] = (ts - t0) * 1000
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=15)
    ap.add_argument("--trace-dir", type=Path, help="keep each run's trace here")
    args = ap.parse_args()
    if os.geteuid() != 0 or not (TRACEFS / "trace_marker").exists():
        sys.exit("needs root and tracefs at /sys/kernel/tracing")
    compile_package()
    cli = docker_cli()
    marks = Path(devtools.__file__).parent / "tracemarks"
    scratch = Path(tempfile.mkdtemp(prefix="sktl", dir="/tmp"))
    tar = scratch / "busybox.tar"
    tar.write_bytes(tar_tree(make_rootfs(scratch / "rootfs")))
    daemon = SkiffdProcess(scratch / "d", env={"PYTHONPATH": str(marks),
                                               "SKIFF_TRACE_TARGETS": TARGETS})
    runs: list[dict[str, float]] = []
    try:
        daemon.start()
        env = {**os.environ, "DOCKER_HOST": daemon.host}
        subprocess.run([cli, "import", str(tar), "busybox:latest"], env=env, check=True,
                       capture_output=True)
        argv = [cli, "run", "--rm", "--network", "none", "busybox:latest", "true"]
        for _ in range(3):
            subprocess.run(argv, env=env, check=True, capture_output=True)
        _write("trace_clock", "mono")
        _write("buffer_size_kb", "8192")
        for ev in EVENTS:
            _write(f"events/{ev}/enable", "1")
        try:
            for i in range(args.n):
                time.sleep(0.15)
                _write("trace", "")
                _write("tracing_on", "1")
                subprocess.run(argv, env=env, check=True, capture_output=True)
                _write("tracing_on", "0")
                text = (TRACEFS / "trace").read_text()
                if args.trace_dir is not None:
                    args.trace_dir.mkdir(parents=True, exist_ok=True)
                    (args.trace_dir / f"run{i}.trace").write_text(text)
                runs.append(milestones(text, cli))
        finally:
            _write("tracing_on", "0")
            for ev in EVENTS:
                _write(f"events/{ev}/enable", "0")
            _write("trace", "")
    finally:
        daemon.stop()
    print(describe())
    print(f"`docker run --rm --network none busybox true` against skiffd, median of {args.n}"
          " runs (ms since the docker CLI's exec; step from the milestone before):")
    medians = {name: statistics.median(seen) for name, _ in MILESTONES
               if (seen := [r[name] for r in runs if name in r])}
    before = 0.0
    for name, med in sorted(medians.items(), key=lambda item: item[1]):
        print(f"  {name:24} {med:7.1f}   {med - before:+6.1f}")
        before = med
    for name, _ in MILESTONES:
        if name not in medians:
            print(f"  {name:24} (not seen)")


if __name__ == "__main__":
    main()
