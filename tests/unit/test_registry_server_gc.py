"""Online GC, abandoned-upload purge, and several server processes over one storage root."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from skiff.core.content import BlobInfo, Digest
from skiff.plugins.registry.server.gc import collect, gc_lock
from skiff.plugins.registry.server.storage import Storage
from skiff.plugins.registry.server.uploads import Uploads
from tests.unit.test_registry_server_support import (
    OCI_MANIFEST,
    ServerThread,
    digest_of,
    make_image,
    push_blob,
    push_image,
    serve,
)


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ServerThread]:
    with serve(tmp_path / "root") as s:
        yield s


def blob_exists(storage: Storage, digest: str) -> bool:
    return storage.content.exists(Digest.parse(digest))


def test_gc_removes_only_unreferenced_old_blobs(srv: ServerThread) -> None:
    storage = srv.registry.storage
    keep, drop = make_image("keep"), make_image("drop")
    with httpx.Client(base_url=srv.url) as c:
        push_image(c, "g/keep", keep, "v1")
        push_image(c, "g/drop", drop, "v1")
        stray = push_blob(c, "g/stray", b"never referenced")
        # Untag-and-delete: drop's manifest goes, its blobs become garbage.
        assert c.delete(f"/v2/g/drop/manifests/{drop.digest}").status_code == 202
    # Within the grace period nothing goes.
    report = collect(storage, grace=3600)
    assert report.deleted == []
    later = time.time() + 7200  # as if two hours passed, and nothing touched the links since
    report = collect(storage, grace=3600, now=later)
    gone = {str(d) for d in report.deleted}
    assert gone == {digest_of(drop.config), digest_of(drop.layers[0]), drop.digest, stray}
    for d in gone:
        assert not blob_exists(storage, d)
    for blob in (keep.config, keep.layers[0], keep.manifest):
        assert blob_exists(storage, digest_of(blob))
    # the dangling links went with them; the kept image still pulls
    assert not list(storage.layer_links("g/stray"))
    with httpx.Client(base_url=srv.url) as c:
        assert c.get(f"/v2/g/keep/blobs/{digest_of(keep.layers[0])}").status_code == 200
        assert c.get("/v2/g/keep/manifests/v1").content == keep.manifest
        r = c.get(f"/v2/g/stray/blobs/{stray}")
        assert r.status_code == 404


def test_gc_spares_a_manifest_pushed_during_collection(srv: ServerThread,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Interleave a push between the mark phase and the sweep: its blobs must survive."""
    storage = srv.registry.storage
    late = make_image("late")
    with httpx.Client(base_url=srv.url) as c:
        # Its blobs are in the registry, but unreferenced when the mark runs.
        for blob in (late.config, *late.layers):
            push_blob(c, "g/late", blob)
    real_walk = storage.content.walk
    pushed = threading.Event()

    def walk_then_push():  # type: ignore[no-untyped-def]
        # The mark phase is over when GC lists candidates; the client pushes the manifest
        # now, from another thread, as a real client would. Its request needs the lock
        # shared, so it is done before the GC's exclusive sweep or after it.
        def client() -> None:
            with httpx.Client(base_url=srv.url) as c:
                r = c.put("/v2/g/late/manifests/v1", content=late.manifest,
                          headers={"Content-Type": OCI_MANIFEST})
                assert r.status_code == 201, r.text
            pushed.set()

        t = threading.Thread(target=client)
        t.start()
        t.join()
        yield from real_walk()

    monkeypatch.setattr(storage.content, "walk", walk_then_push)
    report = collect(storage, grace=0, now=time.time() + 7200)
    assert pushed.is_set()
    assert report.deleted == []
    for blob in (late.config, late.layers[0], late.manifest):
        assert blob_exists(storage, digest_of(blob))


def test_gc_sweep_waits_for_writers_holding_the_lock(srv: ServerThread) -> None:
    storage = srv.registry.storage
    with httpx.Client(base_url=srv.url) as c:
        push_blob(c, "g/w", b"garbage")
    done = threading.Event()
    with gc_lock(storage, exclusive=False):
        def sweep() -> None:
            collect(storage, grace=0, now=time.time() + 10)
            done.set()

        t = threading.Thread(target=sweep)
        t.start()
        assert not done.wait(0.3), "the sweep ran while a writer held the lock"
    t.join(10)
    assert done.is_set()
    assert not blob_exists(storage, digest_of(b"garbage"))


def test_gc_spares_blob_a_pusher_just_checked(srv: ServerThread,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """HEAD by a pusher refreshes the link: the blob survives until the manifest arrives."""
    storage = srv.registry.storage
    img = make_image("headed")
    with httpx.Client(base_url=srv.url) as c:
        for blob in (img.config, *img.layers):
            push_blob(c, "g/h", blob)
        other = push_blob(c, "g/h", b"not checked by anyone")
        # Everything uploaded long ago (blob ctime cannot be set, so the listing says so)...
        real_walk = storage.content.walk
        monkeypatch.setattr(storage.content, "walk", lambda: (
            BlobInfo(b.digest, b.size, 0.0) for b in real_walk()))
        for d, _ in storage.layer_links("g/h"):
            os.utime(storage.layer_link("g/h", d), (0, 0))
        # ...then a pusher checks the image's blobs before sending its manifest.
        for blob in (img.config, *img.layers):
            assert c.head(f"/v2/g/h/blobs/{digest_of(blob)}").status_code == 200
        report = collect(storage, grace=3600)
        assert [str(d) for d in report.deleted] == [other] and report.spared_recent == 2
        r = c.put("/v2/g/h/manifests/v1", content=img.manifest,
                  headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201


def test_abandoned_uploads_are_purged(srv: ServerThread) -> None:
    uploads: Uploads = srv.registry.uploads
    with httpx.Client(base_url=srv.url) as c:
        old = c.post("/v2/u/p/blobs/uploads/").headers["Location"]
        c.patch(old, content=b"abandoned bytes")
        live = c.post("/v2/u/p/blobs/uploads/").headers["Location"]
    base = Path(srv.config.root) / "repositories/u/p/_uploads"
    old_id, live_id = old.rsplit("/", 1)[1], live.rsplit("/", 1)[1]
    # One session is held by a request in progress: never removed, however old.
    held = uploads.open("u/p", live_id)
    try:
        removed = uploads.purge(max_age=60, now=time.time() + 3600)
    finally:
        held.close()
    assert removed == [f"u/p/{old_id}"]
    assert not (base / old_id).exists() and (base / live_id).exists()
    assert uploads.purge(max_age=60) == []  # a fresh one stays


def _serve_proc(root: Path, port: int) -> subprocess.Popen[bytes]:
    skiff = str(Path(sys.executable).parent / "skiff")
    log = root.parent / f"server-{port}.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([skiff, "registry", "serve",
                                 "--addr", f"127.0.0.1:{port}", "--root", str(root)],
                                stderr=f)
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1)
            return proc
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"server did not start: {log.read_text()}") from None
            time.sleep(0.05)


def test_two_processes_share_one_root(tmp_path: Path, free_tcp_port_factory) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "shared"
    ports = [free_tcp_port_factory(), free_tcp_port_factory()]
    procs = [_serve_proc(root, p) for p in ports]
    try:
        a, b = (httpx.Client(base_url=f"http://127.0.0.1:{p}") for p in ports)
        data = os.urandom(200_000)
        # An upload started on one process, continued on the other, finished on the first.
        loc = a.post("/v2/mp/x/blobs/uploads/").headers["Location"]
        assert b.patch(loc, content=data[:120_000]).headers["Range"] == "0-119999"
        assert a.get(loc).headers["Range"] == "0-119999"
        assert a.patch(loc, content=data[120_000:]).status_code == 202
        assert a.put(loc, params={"digest": digest_of(data)}).status_code == 201
        assert b.get(f"/v2/mp/x/blobs/{digest_of(data)}").content == data
        img = make_image("mp")
        assert push_image(b, "mp/x", img, "v1").status_code == 201
        assert a.get("/v2/mp/x/manifests/v1").content == img.manifest
        assert a.get("/v2/mp/x/tags/list").json()["tags"] == ["v1"]
        a.close()
        b.close()
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            assert p.wait(10) == 0


def test_gc_command(tmp_path: Path) -> None:
    root = tmp_path / "root"
    storage = Storage(str(root))
    garbage = storage.content.put(b"unreferenced").digest
    skiff = str(Path(sys.executable).parent / "skiff")

    def gc(*extra: str) -> str:
        proc = subprocess.run([skiff, "registry", "gc", "--root", str(root), *extra],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert "spared 0" in gc("--grace", "3600") and storage.content.exists(garbage)
    assert "would delete 0 blobs" in gc("--grace", "3600", "--dry-run")
    time.sleep(0.05)
    assert "would delete 1 blobs" in gc("--grace", "0", "--dry-run")
    assert storage.content.exists(garbage)
    assert "deleted 1 blobs (12 bytes)" in gc("--grace", "0")
    assert not storage.content.exists(garbage)
    bad = subprocess.run([skiff, "registry", "serve", "--addr", "nonsense"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 125 and "HOST:PORT" in bad.stderr
