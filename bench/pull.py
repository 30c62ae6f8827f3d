"""Pull benchmark: skiff vs skopeo (and docker when a dockerd is reachable) from a local registry.

    .venv/bin/python bench/pull.py [--size-mb 400] [--layers 6] [--runs 3]

Builds a multi-layer image (gzip'd layers of mostly incompressible data, like real binaries),
puts it into a docker-registry started on 127.0.0.1 with skopeo, then times full pulls into a
fresh store each run: skiff's pull service (downloads only, no unpack: the unpack bench is
bench/unpack*.py), ``skopeo copy docker://... oci:DIR`` and, if ``docker info`` works,
``docker pull`` (after ``docker rmi``). Prints medians and ratios (lower is better for skiff).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from skiff.core.reference import parse_reference
from skiff.plugins.content.local import LocalContentStore
from skiff.plugins.metadata.sqlite import SqliteMetadata
from skiff.plugins.registry.client import HttpRegistryClient
from skiff.services.distribution import pull
from tests.integration.test_registry_client import (
    start_registry,
    stop_registry,
)


def make_layout(dest: Path, size_mb: int, layers: int) -> int:
    """An OCI layout with ``layers`` gzip'd layers totalling about ``size_mb``; returns bytes."""
    (dest / "blobs" / "sha256").mkdir(parents=True)
    (dest / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    per = size_mb * 1_000_000 // layers
    descs, diff_ids, total = [], [], 0
    for i in range(layers):
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tf:
            # 3/4 random, 1/4 zeros: compresses a little, like typical layer content.
            data = os.urandom(per * 3 // 4) + bytes(per // 4)
            info = tarfile.TarInfo(f"layer{i}/data")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        tar = raw.getvalue()
        gz = gzip.compress(tar, compresslevel=1, mtime=0)
        total += len(gz)
        descs.append(_blob(dest, gz, "application/vnd.oci.image.layer.v1.tar+gzip"))
        diff_ids.append("sha256:" + _sha(tar))
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = json.dumps({"schemaVersion": 2,
                           "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": _blob(dest, config, "application/vnd.oci.image.config.v1+json"),
                           "layers": descs}).encode()
    top = _blob(dest, manifest, "application/vnd.oci.image.manifest.v1+json")
    top["annotations"] = {"org.opencontainers.image.ref.name": "latest"}
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    return total


def _sha(data: bytes) -> str:
    import hashlib
    return hashlib.sha256(data).hexdigest()


def _blob(dest: Path, data: bytes, media_type: str) -> dict[str, object]:
    h = _sha(data)
    (dest / "blobs" / "sha256" / h).write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{h}", "size": len(data)}


def timed(runs: int, prepare: Callable[[int], object], run: Callable[[object], None]) -> list[float]:
    out = []
    for i in range(runs):
        ctx = prepare(i)
        start = time.perf_counter()
        run(ctx)
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=400)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    skopeo = shutil.which("skopeo")
    if skopeo is None or not Path("/usr/bin/docker-registry").exists():
        sys.exit("needs skopeo and docker-registry (apt-get install skopeo docker-registry)")
    with tempfile.TemporaryDirectory(prefix="skiff-bench-pull-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        total = make_layout(work / "layout", args.size_mb, args.layers)
        print(f"image: {args.layers} layers, {total / 1e6:.0f} MB compressed "
              f"(built in {time.perf_counter() - t0:.1f}s)")
        reg = start_registry(work / "registry")
        try:
            ref = f"{reg.host}/bench/image:latest"
            subprocess.run([skopeo, "--insecure-policy", "copy", "--dest-tls-verify=false",
                            f"oci:{work / 'layout'}:latest", f"docker://{ref}"],
                           check=True, capture_output=True)
            results: dict[str, list[float]] = {}

            def skiff_prepare(i: int) -> Path:
                d = work / f"skiff{i}"
                d.mkdir()
                return d

            def skiff_run(d: object) -> None:
                assert isinstance(d, Path)
                meta = SqliteMetadata(str(d / "meta.db"))
                with HttpRegistryClient() as client:
                    pull(parse_reference(ref), client=client,
                         content=LocalContentStore(str(d / "content")), metadata=meta)
                meta.close()

            results["skiff"] = timed(args.runs, skiff_prepare, skiff_run)

            def skopeo_run(d: object) -> None:
                subprocess.run([skopeo, "--insecure-policy", "copy", "--src-tls-verify=false",
                                f"docker://{ref}", f"oci:{d}:latest"], check=True,
                               capture_output=True)

            results["skopeo"] = timed(args.runs, lambda i: work / f"skopeo{i}", skopeo_run)

            docker = shutil.which("docker")
            if docker and subprocess.run([docker, "info"], capture_output=True).returncode == 0:
                def docker_prepare(i: int) -> None:
                    subprocess.run([docker, "rmi", "-f", ref], capture_output=True)

                def docker_run(_: object) -> None:
                    subprocess.run([docker, "pull", "-q", ref], check=True, capture_output=True)

                results["docker"] = timed(args.runs, docker_prepare, docker_run)
            else:
                print("docker: no reachable dockerd here, skipped")
        finally:
            stop_registry(reg)
        base = statistics.median(results["skiff"])
        for name, times in results.items():
            med = statistics.median(times)
            print(f"{name:7s} median {med:6.2f}s  ({total / 1e6 / med:6.0f} MB/s)  "
                  f"runs {', '.join(f'{t:.2f}' for t in times)}"
                  + ("" if name == "skiff" else f"  skiff/{name} = {base / med:.2f}x"))


if __name__ == "__main__":
    main()
