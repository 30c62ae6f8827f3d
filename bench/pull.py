"""Pull benchmark: skiff vs skopeo vs docker, all pulling from the same local docker-registry.

    .venv/bin/python bench/pull.py [--size-mb 400] [--layers 6] [--runs 3] [--content blob|rootfs]
                                   [--no-docker]

Builds a multi-layer image (gzip'd layers of mostly incompressible data, like real binaries,
or with ``--content rootfs`` many small files as in a distribution's root filesystem),
puts it into a docker-registry started on 127.0.0.1 with skopeo, then times full pulls into a
fresh store each run:

- ``skiff``: the pull service, downloads only (comparable with skopeo);
- ``skiff+unpack``: the pull service with the overlay snapshotter's unpack (what ``docker
  pull`` does: download and extract), into a fresh snapshot root each run;
- ``skopeo``: ``skopeo copy docker://... oci:DIR`` (downloads only);
- ``docker``: ``docker pull`` through a private dockerd (overlay2 storage, falling back to
  vfs), with ``docker rmi`` + prune between runs, outside the timed part.

Prints the machine, the medians, throughput and ratios (below 1.0 means skiff is faster).
Needs root for the snapshotter mounts and dockerd (run it as the tests are run).
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from skiff.core.reference import parse_reference
from skiff.devtools.images import (
    BuiltImage,
    Dockerd,
    DockerdUnavailable,
    ToolMissing,
    build_image,
    docker_cli,
    make_tree,
    private_dockerd,
    scratch_ext4,
    skopeo,
    skopeo_push,
    start_registry,
    stop_registry,
)
from skiff.devtools.machine import describe
from skiff.plugins.content.local import LocalContentStore
from skiff.plugins.diff.tar import TarDiffer
from skiff.plugins.metadata.sqlite import SqliteMetadata
from skiff.plugins.registry.client import HttpRegistryClient
from skiff.plugins.snapshots.overlay import OverlaySnapshotter
from skiff.services.distribution import pull
from skiff.services.unpack import Unpacker


def machine() -> str:
    try:
        import isal  # noqa: F401
        gz = "isal"
    except ImportError:
        gz = "zlib"
    return f"{describe()}, gzip via {gz}"


def layer_data(per: int) -> bytes:
    # 3/4 random, 1/4 zeros: compresses a little, like typical layer content
    return os.urandom(per * 3 // 4) + bytes(per // 4)


@dataclass
class Contender:
    """One way of pulling: ``run(prepare(i))`` is timed, ``cleanup`` removes its output."""

    name: str
    prepare: Callable[[int], object]
    run: Callable[[object], None]
    cleanup: Callable[[object], None]
    extracts: bool = False  # its output is a file tree (its cleanup deletes every file)
    times: list[float] = field(default_factory=list)


def run_interleaved(contenders: list[Contender], runs: int, settle: float) -> None:
    """Round ``i`` runs every contender once, in turn.

    Interleaving spreads whatever else the machine is doing (other jobs on shared CI hosts)
    over all contenders instead of loading it onto whichever ran at that moment. Outputs are
    removed after every run (outside the timing) and the disk is synced before each, so no
    one is billed for another's writeback. After removing an extracted tree, wait ``settle``
    seconds: ext4 without a journal (this VM's root) will not reuse an inode for 60 s after
    its deletion and scans past every such inode on each create, so a run right after a
    mass delete pays for it (seen as ~1 ms more system time per file created). The default
    ``--fs scratch`` (a journaled ext4) does not have that problem.
    """
    for i in range(runs):
        for c in contenders:
            ctx = c.prepare(i)
            os.sync()
            start = time.perf_counter()
            try:
                c.run(ctx)
                c.times.append(time.perf_counter() - start)
            finally:
                c.cleanup(ctx)
                if c.extracts and settle > 0:
                    os.sync()
                    time.sleep(settle)
        print(f"round {i + 1}: " + ", ".join(f"{c.name} {c.times[-1]:.2f}s" for c in contenders),
              flush=True)


def _rmtree(d: object) -> None:
    shutil.rmtree(str(d), ignore_errors=True)


def skiff_contender(work: Path, ref: str, unpack: bool) -> Contender:
    name = "skiff+unpack" if unpack else "skiff"

    def prepare(i: int) -> Path:
        d = work / f"{name}-{i}"
        d.mkdir()
        return d

    def run(d: object) -> None:
        assert isinstance(d, Path)
        meta = SqliteMetadata(str(d / "meta.db"))
        content = LocalContentStore(str(d / "content"))
        snap = OverlaySnapshotter(str(d / "snapshots")) if unpack else None
        try:
            with HttpRegistryClient() as client:
                pull(parse_reference(ref), client=client, content=content, metadata=meta,
                     unpack=Unpacker(content, snap, TarDiffer()) if snap else None)
        finally:
            meta.close()
            if snap is not None:
                snap.close()

    return Contender(name, prepare, run, _rmtree, extracts=unpack)


def skopeo_contender(work: Path, ref: str) -> Contender:
    def run(d: object) -> None:
        skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{d}:latest")

    return Contender("skopeo", lambda i: work / f"skopeo-{i}", run, _rmtree)


def docker_contender(stack: contextlib.ExitStack, work: Path, ref: str) -> Contender | None:
    """``docker pull`` through a private dockerd (overlay2, else vfs); None if none can run."""
    for driver in ("overlay2", "vfs"):
        try:
            dockerd = stack.enter_context(private_dockerd(driver, parent=str(work)))
        except DockerdUnavailable as exc:
            print(f"docker with {driver}: {exc}")
            continue
        except ToolMissing as exc:
            print(f"docker: {exc}; skipped")
            return None

        def remove(_: object, d: Dockerd = dockerd) -> None:
            subprocess.run([docker_cli(), "rmi", "-f", ref], env=d.env, capture_output=True)
            d.docker("image", "prune", "-f")

        def run(_: object, d: Dockerd = dockerd) -> None:
            d.docker("pull", "-q", ref, timeout=1800)

        remove(None)
        return Contender(f"docker({driver})", lambda i: None, run, remove, extracts=True)
    return None


def build(work: Path, args: argparse.Namespace) -> BuiltImage:
    """The benchmark image as an OCI layout in ``work/layout``."""
    t0 = time.perf_counter()
    if args.content == "rootfs":
        trees = [work / f"tree{i}" for i in range(args.layers)]
        files = sum(make_tree(t, args.size_mb // args.layers, seed=i)
                    for i, t in enumerate(trees))
        image = build_image(work / "layout", [], layer_dirs=trees)
        for t in trees:
            shutil.rmtree(t)
        what = f"rootfs-like files ({files} in all)"
    else:
        per = args.size_mb * 1_000_000 // args.layers
        image = build_image(work / "layout", [{f"layer{i}/data": layer_data(per)}
                                              for i in range(args.layers)])
        what = "one large file each"
    print(f"image: {args.layers} layers of {what}, {args.size_mb} MB uncompressed, "
          f"{image.total_bytes / 1e6:.0f} MB compressed "
          f"(built in {time.perf_counter() - t0:.1f}s)", flush=True)
    return image


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=400)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-docker", action="store_true", help="skip the dockerd contender")
    ap.add_argument("--content", choices=["blob", "rootfs"], default="blob",
                    help="layer content: one large mostly random file (blob) or many "
                         "rootfs-like files (rootfs), which makes extraction dominate")
    ap.add_argument("--fs", choices=["scratch", "tmp"], default="scratch",
                    help="where contenders write: a fresh loop-mounted ext4 (scratch, needs "
                         "mkfs.ext4) or /var/tmp as it is (tmp)")
    ap.add_argument("--settle", type=float, default=None,
                    help="seconds to wait after deleting an extracted tree (default: 61 with "
                         "--fs tmp --content rootfs, else 0; see run_interleaved)")
    args = ap.parse_args()
    if args.settle is None:
        args.settle = 61.0 if args.content == "rootfs" and args.fs == "tmp" else 0.0
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="skiff-bench-pull-", dir="/var/tmp") as tmp, \
            contextlib.ExitStack() as stack:
        image = build(Path(tmp), args)
        work = Path(tmp)
        if args.fs == "scratch":
            # every contender writes to the same fresh journaled ext4, as on a typical host
            work = stack.enter_context(scratch_ext4(Path(tmp) / "fs"))
            print(f"outputs on a fresh ext4 at {work}")
        try:
            reg = start_registry(work / "registry")
        except ToolMissing as exc:
            sys.exit(str(exc))
        stack.callback(stop_registry, reg)
        skopeo_push(image, reg, "bench/image")
        ref = f"{reg.host}/bench/image:latest"
        contenders = [skiff_contender(work, ref, unpack=False),
                      skiff_contender(work, ref, unpack=True), skopeo_contender(work, ref)]
        if not args.no_docker:
            docker = docker_contender(stack, work, ref)
            if docker is not None:
                contenders.append(docker)
        run_interleaved(contenders, args.runs, args.settle)
    report({c.name: c.times for c in contenders}, image.total_bytes)


def report(results: dict[str, list[float]], total: int) -> None:
    medians = {name: statistics.median(times) for name, times in results.items()}
    for name, times in results.items():
        med = medians[name]
        line = (f"{name:16s} median {med:6.2f}s  ({total / 1e6 / med:5.0f} MB/s)  "
                f"runs {', '.join(f'{t:.2f}' for t in times)}")
        ours = "skiff+unpack" if name.startswith("docker") else "skiff"
        if not name.startswith("skiff"):
            line += f"  {ours}/{name} = {medians[ours] / med:.2f}"
        print(line)


if __name__ == "__main__":
    main()
