"""Shared pieces for the registry server tests: an in-process server on a free loopback port,
a storage snapshot (to prove a refused request changed nothing) and small image builders.

(Named test_*.py so it lives with the tests it serves; it holds no tests itself.)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from skiff.plugins.registry.server.config import ServerConfig
from skiff.plugins.registry.server.serve import build

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


class ServerThread:
    """The real aiohttp app on 127.0.0.1:<free port>, its loop in a thread."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.app, self.registry = build(config)
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("registry test server did not start")

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = self._runner.addresses[0][1]

        self.loop.run_until_complete(start())
        self._ready.set()
        self.loop.run_forever()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        async def down() -> None:
            assert self._runner is not None
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(down(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
        self.registry.executor.shutdown(wait=True)
        assert not self._thread.is_alive()


@contextlib.contextmanager
def serve(root: Path, **overrides: Any) -> Iterator[ServerThread]:
    cfg = ServerConfig(root=str(root), upload_purge_interval=0, **overrides)
    srv = ServerThread(cfg)
    try:
        yield srv
    finally:
        srv.stop()


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under the storage root (except the GC lock) with its size and content hash."""
    out = {}
    for dirpath, dirnames, files in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root) + "/"] = (0, b"")
        for f in files:
            p = os.path.join(dirpath, f)
            if f == "gc.lock":
                continue
            with open(p, "rb") as fh:
                data = fh.read()
            out[os.path.relpath(p, root)] = (len(data), hashlib.sha256(data).digest())
    return out


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(c: httpx.Client, name: str, data: bytes) -> str:
    d = digest_of(data)
    r = c.post(f"/v2/{name}/blobs/uploads/", params={"digest": d}, content=data,
               headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    return d


@dataclass
class Image:
    config: bytes
    layers: list[bytes]
    manifest: bytes

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)


def make_image(seed: str, *, artifact_type: str | None = None,
               subject: dict[str, Any] | None = None) -> Image:
    layer = f"layer of {seed}".encode() * 100
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    doc: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": digest_of(layer), "size": len(layer)}],
    }
    if artifact_type:
        doc["artifactType"] = artifact_type
    if subject:
        doc["subject"] = subject
    return Image(config, [layer], json.dumps(doc).encode())


def push_image(c: httpx.Client, name: str, img: Image, ref: str) -> httpx.Response:
    for blob in [img.config, *img.layers]:
        push_blob(c, name, blob)
    return c.put(f"/v2/{name}/manifests/{ref}", content=img.manifest,
                 headers={"Content-Type": OCI_MANIFEST})


def errors(r: httpx.Response) -> list[str]:
    return [e["code"] for e in r.json()["errors"]]
