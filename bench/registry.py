"""Registry benchmark: skiff's registry vs Debian's docker-registry (distribution 2.8).

    .venv/bin/python bench/registry.py [--size-mb 300] [--layers 6] [--runs 3]
                                       [--clients 64] [--requests 100] [--workers 1]

1. Push and pull of the same blobs through ``skopeo copy`` (oci layout -> registry -> oci
   layout), each run into a freshly started registry with empty storage (so the push really
   uploads everything), page cache flushed (``sync``) before each timed part.
2. Manifest GET latency: ``--clients`` concurrent keep-alive connections each issuing
   ``--requests`` sequential GETs of a manifest by tag (aiohttp client, loopback only);
   p50/p99 per request and total requests per second.

Prints the machine, the medians and the ratios skiff/reference (below 1.0 is better for
times and latencies). Loopback only: nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from skiff.devtools.images import (
    Registry,
    ToolMissing,
    skopeo,
    start_registry,
    stop_registry,
)
from skiff.devtools.machine import describe
from skiff.devtools.registry import (
    start_skiff_registry,
    stop,
)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"



def build_layout(dest: Path, size_mb: int, layers: int) -> None:
    """An OCI layout whose layers are incompressible bytes (the registry never looks inside)."""
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> dict[str, object]:
        d = hashlib.sha256(data).hexdigest()
        (blobs / d).write_bytes(data)
        return {"digest": f"sha256:{d}", "size": len(data)}

    per = size_mb * 2**20 // layers
    descs = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **put(os.urandom(per))}
             for _ in range(layers)]
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in descs]}})
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      **put(config.encode())},
                           "layers": descs}).encode()
    top = {"mediaType": OCI_MANIFEST, **put(manifest),
           "annotations": {"org.opencontainers.image.ref.name": "latest"}}
    (dest / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))


Starter = Callable[[Path], Registry]


def transfer(name: str, start: Starter, stop_fn: Callable[[Registry], None], layout: Path,
             work: Path, runs: int) -> tuple[list[float], list[float]]:
    pushes, pulls = [], []
    for i in range(runs):
        reg = start(work / f"{name}-{i}")
        try:
            os.sync()
            t0 = time.perf_counter()
            skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:latest",
                   f"docker://{reg.host}/bench/img:v1")
            pushes.append(time.perf_counter() - t0)
            out = work / f"{name}-pull-{i}"
            os.sync()
            t0 = time.perf_counter()
            skopeo("copy", "--src-tls-verify=false", f"docker://{reg.host}/bench/img:v1",
                   f"oci:{out}:v1")
            pulls.append(time.perf_counter() - t0)
            shutil.rmtree(out)
        finally:
            stop_fn(reg)
            shutil.rmtree(work / f"{name}-{i}", ignore_errors=True)
    return pushes, pulls


async def _latency(url: str, clients: int, requests: int) -> tuple[list[float], float]:
    headers = {"Accept": OCI_MANIFEST}
    conn = aiohttp.TCPConnector(limit=clients)
    lat: list[float] = []
    async with aiohttp.ClientSession(connector=conn) as s:
        async def one() -> None:
            for _ in range(requests):
                t0 = time.perf_counter()
                async with s.get(url, headers=headers) as r:
                    await r.read()
                    assert r.status == 200, r.status
                lat.append(time.perf_counter() - t0)

        await asyncio.gather(*(one() for _ in range(min(clients, 8))))  # warm up
        lat.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(clients)))
        total = time.perf_counter() - t0
    return lat, clients * requests / total


def latency(name: str, start: Starter, stop_fn: Callable[[Registry], None], layout: Path,
            work: Path, clients: int, requests: int) -> tuple[float, float, float]:
    reg = start(work / f"{name}-lat")
    try:
        skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:latest",
               f"docker://{reg.host}/bench/small:v1")
        lat, rps = asyncio.run(_latency(f"http://{reg.host}/v2/bench/small/manifests/v1",
                                        clients, requests))
    finally:
        stop_fn(reg)
        shutil.rmtree(work / f"{name}-lat", ignore_errors=True)
    lat.sort()

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000

    return pct(0.5), pct(0.99), rps


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=300)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--workers", type=int, default=1, help="skiff registry processes")
    ap.add_argument("--no-fsync", action="store_true",
                    help="skiff without fsync on commit (docker-registry does not fsync)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="skiff-regbench-"))
    try:
        layout, small = work / "layout", work / "small"
        build_layout(layout, args.size_mb, args.layers)
        build_layout(small, 1, 1)
        skiff_cfg = {"storage": {"fsync": not args.no_fsync}}
        contenders: dict[str, tuple[Starter, Callable[[Registry], None]]] = {
            "skiff": (lambda d: start_skiff_registry(d, skiff_cfg, workers=args.workers), stop),
            "docker-registry": (lambda d: start_registry(d), stop_registry),
        }
        print(f"machine: {describe()}")
        print(f"blobs: {args.layers} x {args.size_mb // args.layers} MiB, runs: {args.runs}, "
              f"skiff workers: {args.workers}, skiff fsync: {not args.no_fsync}")
        # Contenders alternate run by run, so a burst of load from elsewhere on the machine
        # does not land on one of them only.
        times: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in contenders}
        for i in range(args.runs):
            for name, (st, sp) in contenders.items():
                pushes, pulls = transfer(f"{name}-{i}", st, sp, layout, work, 1)
                times[name][0].extend(pushes)
                times[name][1].extend(pulls)
        results: dict[str, dict[str, float]] = {}
        for name, (st, sp) in contenders.items():
            p50, p99, rps = latency(name, st, sp, small, work, args.clients, args.requests)
            pushes, pulls = times[name]
            results[name] = {"push": statistics.median(pushes), "pull": statistics.median(pulls),
                             "p50": p50, "p99": p99, "rps": rps}
            r = results[name]
            print(f"{name:16s} push {r['push']:6.2f}s ({args.size_mb / r['push']:6.0f} MiB/s)  "
                  f"pull {r['pull']:6.2f}s ({args.size_mb / r['pull']:6.0f} MiB/s)  "
                  f"manifest GET p50 {p50:6.2f} ms p99 {p99:6.2f} ms {rps:7.0f} req/s "
                  f"({args.clients} clients)")
        s, d = results["skiff"], results["docker-registry"]
        print("ratios skiff/docker-registry (<1 is better, except req/s): "
              f"push {s['push'] / d['push']:.2f}  pull {s['pull'] / d['pull']:.2f}  "
              f"p50 {s['p50'] / d['p50']:.2f}  p99 {s['p99'] / d['p99']:.2f}  "
              f"req/s {s['rps'] / d['rps']:.2f}")
    except ToolMissing as exc:
        sys.exit(f"bench/registry.py: {exc}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
