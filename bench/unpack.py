"""Layer unpack throughput: skiff's confined extraction vs GNU ``tar -xzf`` on the same layer.

    .venv/bin/python bench/unpack.py [--size-mb 300] [--runs 5] [--compression gzip|zstd]

Builds a rootfs-like tree (many small files, some medium, a few large; part compressible text,
part random) of about --size-mb, packs it with GNU tar (+ gzip -6 or zstd -3), then extracts it
--runs times with each tool into a fresh directory on the same filesystem and prints the
medians and the ratio skiff/tar (target: <= 1.2). Extraction targets are deleted between runs,
outside the timed part.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from skiff.core.snapshots import LayerDirs, WhiteoutForm
from skiff.devtools.images import make_tree, scratch_ext4
from skiff.plugins.diff.tar import TarDiffer


def pack(src: Path, out: Path, compression: str) -> None:
    flag = "--zstd" if compression == "zstd" else "-z"
    subprocess.run(["tar", "-C", str(src), flag, "-cf", str(out), "."], check=True)


def time_tar(layer: Path, dest: Path, compression: str) -> float:
    flag = "--zstd" if compression == "zstd" else "-z"
    dest.mkdir()
    os.sync()  # start each run without the previous run's writeback in flight
    t0 = time.perf_counter()
    subprocess.run(["tar", flag, "-xf", str(layer), "-C", str(dest)], check=True)
    return time.perf_counter() - t0


def time_skiff(layer: Path, dest: Path) -> float:
    dest.mkdir()
    os.sync()
    t0 = time.perf_counter()
    with open(layer, "rb") as blob:
        TarDiffer().apply(LayerDirs(str(dest), WhiteoutForm.DELETE), blob, "")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--size-mb", type=int, default=300)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--compression", choices=["gzip", "zstd"], default="gzip")
    ap.add_argument("--workdir", default=None, help="where to build (default: a temp dir)")
    ap.add_argument("--fs", choices=["scratch", "tmp"], default="scratch",
                    help="extract onto a fresh loop-mounted journaled ext4 (scratch; needs root "
                         "and mkfs.ext4) or into the work dir as it is (tmp)")
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="skiff-bench-", dir=args.workdir))
    try:
        with contextlib.ExitStack() as stack:
            work = base
            if args.fs == "scratch":
                # the same clean filesystem for tar and skiff; see devtools.images.scratch_ext4
                work = stack.enter_context(scratch_ext4(base / "fs"))
            return run(work, args)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run(work: Path, args: argparse.Namespace) -> int:
    src = work / "src"
    src.mkdir()
    files = make_tree(src, args.size_mb)
    layer = work / ("layer.tar.zst" if args.compression == "zstd" else "layer.tar.gz")
    pack(src, layer, args.compression)
    shutil.rmtree(src)
    print(f"layer: {files} files, ~{args.size_mb} MB uncompressed, "
          f"{layer.stat().st_size / 1e6:.1f} MB {args.compression}", flush=True)
    tar_times: list[float] = []
    skiff_times: list[float] = []
    for i in range(args.runs):
        dest = work / f"tar{i}"
        tar_times.append(time_tar(layer, dest, args.compression))
        shutil.rmtree(dest)
        dest = work / f"skiff{i}"
        skiff_times.append(time_skiff(layer, dest))
        shutil.rmtree(dest)
        print(f"run {i + 1}: tar {tar_times[-1]:.2f}s  skiff {skiff_times[-1]:.2f}s", flush=True)
    t, s = statistics.median(tar_times), statistics.median(skiff_times)
    print(f"median: tar {t:.2f}s  skiff {s:.2f}s  ratio skiff/tar {s / t:.2f} (target <= 1.20)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
