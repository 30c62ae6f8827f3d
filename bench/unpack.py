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
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from skiff.core.snapshots import LayerDirs, WhiteoutForm
from skiff.plugins.diff.tar import TarDiffer


def make_tree(root: Path, size_mb: int, seed: int = 7) -> int:
    rng = random.Random(seed)
    words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz_", k=rng.randint(2, 12))) for _ in range(4000)]
    budget = size_mb * 1_000_000
    written = 0
    n = 0
    while written < budget:
        d = root / f"usr/lib/pkg{n // 200:04d}/sub{n % 7}"
        d.mkdir(parents=True, exist_ok=True)
        r = rng.random()
        # about a Debian rootfs's mix: mostly small files (~15 kB on average overall)
        size = rng.randint(200, 7_000) if r < 0.93 else (
            rng.randint(20_000, 150_000) if r < 0.999 else rng.randint(2_000_000, 10_000_000))
        if rng.random() < 0.5:  # text-like: compresses ~4x, like code and docs
            chunk = b" ".join(rng.choices(words, k=2000)) + b"\n"
            data = (chunk * (size // len(chunk) + 1))[:size]
        else:  # binary-like: does not compress, like already-compressed assets
            data = rng.randbytes(size)
        (d / f"f{n}").write_bytes(data)
        if n % 50 == 0:
            os.symlink(f"f{n}", d / f"link{n}")
        written += size
        n += 1
    return n


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
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="skiff-bench-", dir=args.workdir))
    try:
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
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
