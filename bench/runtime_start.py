"""Container start latency: `run` of a busybox `true` bundle, skiff-runtime vs runc.

Prints the median of N runs for each runtime and the ratio (skiff / runc). Needs root.
Usage: .venv/bin/python bench/runtime_start.py [-n 30]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from skiff.devtools.busybox import make_bundle
from skiff.devtools.machine import compile_package, describe


def run_once(cmd: list[str], bundle: Path, root: Path, name: str) -> float:
    argv = [*cmd, "--root", str(root), "run", "--bundle", str(bundle), name]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{cmd[0]} failed: {proc.stderr.decode()}")
    return dt


def measure(runtimes: dict[str, list[str]], bundle: Path, tmp: Path, n: int, pause: float,
            warmup: int = 3) -> dict[str, list[float]]:
    """Interleave the runtimes run by run, so that background load hits them alike, with a
    pause before every run: a runtime must not inherit kernel state the previous one warmed
    (cgroup v1's migration lock stays cheap for a few tens of ms after anyone used it)."""
    times: dict[str, list[float]] = {name: [] for name in runtimes}
    for i in range(n + warmup):
        for name, cmd in runtimes.items():
            time.sleep(pause)
            dt = run_once(cmd, bundle, tmp / name, f"bench-{i}")
            if i >= warmup:
                times[name].append(dt)
    return times



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=30)
    ap.add_argument("--pause", type=float, default=0.2, help="seconds of quiet before each run")
    args = ap.parse_args()
    compile_package()
    runc = shutil.which("runc")
    ours = str(Path(sys.executable).parent / "skiff-runtime")
    with tempfile.TemporaryDirectory() as tmp:
        bundle = make_bundle(Path(tmp) / "bundle", ["true"])
        spec = json.loads((bundle / "config.json").read_text())
        spec["process"]["capabilities"]["ambient"] = []
        (bundle / "config.json").write_text(json.dumps(spec))
        runtimes = {"skiff-runtime": [ours]}
        if runc:
            runtimes["runc"] = [runc]
        results = measure(runtimes, bundle, Path(tmp), args.n, args.pause)
    print(f"machine: {describe()}")
    print(f"runs: {args.n} each, interleaved, {args.pause:g}s pause before each (after 3 "
          "warm-up rounds), busybox `true`, `run --bundle`")
    for name, times in results.items():
        print(f"{name:>14}: median {statistics.median(times) * 1000:7.1f} ms  "
              f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f})")
    if "runc" in results:
        ratio = statistics.median(results["skiff-runtime"]) / statistics.median(results["runc"])
        print(f"ratio skiff-runtime / runc: {ratio:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
