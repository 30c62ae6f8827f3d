"""Pull-through cache mode: one in-process registry mirroring another."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

import httpx

from skiff.plugins.registry.server.config import ProxyConfig
from tests.unit.test_registry_server_support import (
    OCI_MANIFEST,
    ServerThread,
    digest_of,
    errors,
    make_image,
    push_blob,
    push_image,
    serve,
)


def test_mirror_fetches_verifies_caches_and_survives_upstream_loss(tmp_path: Path) -> None:
    img, newer = make_image("mirrored"), make_image("newer")
    cm = serve(tmp_path / "upstream")
    upstream = cm.__enter__()
    upstream_cm: AbstractContextManager[ServerThread] | None = cm
    try:
        with httpx.Client(base_url=upstream.url) as up:
            assert push_image(up, "lib/app", img, "v1").status_code == 201
            unrelated = push_blob(up, "lib/other", b"someone else's blob")
        with serve(tmp_path / "mirror", proxy=ProxyConfig(upstream.url, ttl=0)) as mirror, \
                httpx.Client(base_url=mirror.url) as c:
            r = c.get("/v2/lib/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
            assert r.status_code == 200 and r.content == img.manifest
            assert r.headers["Docker-Content-Digest"] == img.digest
            for blob in (img.config, *img.layers):
                r = c.get(f"/v2/lib/app/blobs/{digest_of(blob)}")
                assert r.status_code == 200 and r.content == blob
            # only what a cached manifest of the repository names is fetched
            r = c.get(f"/v2/lib/app/blobs/{unrelated}")
            assert r.status_code == 404 and errors(r) == ["BLOB_UNKNOWN"]
            r = c.get("/v2/lib/app/manifests/nope")
            assert r.status_code == 404 and errors(r) == ["MANIFEST_UNKNOWN"]
            # read-only
            r = c.post("/v2/lib/app/blobs/uploads/")
            assert r.status_code == 405 and errors(r) == ["UNSUPPORTED"]
            # the tag moves upstream: with ttl 0 the mirror follows at once
            with httpx.Client(base_url=upstream.url) as up:
                push_image(up, "lib/app", newer, "v1")
            r = c.get("/v2/lib/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
            assert r.content == newer.manifest
            cm.__exit__(None, None, None)
            upstream_cm = None
            # upstream gone: the cache still serves what it holds
            r = c.get("/v2/lib/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
            assert r.status_code == 200 and r.content == newer.manifest
            assert c.get(f"/v2/lib/app/blobs/{digest_of(img.layers[0])}").content == \
                img.layers[0]
            # and says so when it holds nothing
            r = c.get("/v2/lib/gone/manifests/v1")
            assert r.status_code == 502 and errors(r) == ["UNKNOWN"]
    finally:
        if upstream_cm is not None:
            upstream_cm.__exit__(None, None, None)
