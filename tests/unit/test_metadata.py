"""SqliteMetadata: image records, leases, crash consistency and garbage collection."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiff.core import images as im
from skiff.core.content import Descriptor, Digest
from skiff.errors import Conflict, InvalidArgument, NotFound
from skiff.plugins.content.local import LocalContentStore
from skiff.plugins.metadata.sqlite import SqliteMetadata


@pytest.fixture
def content(tmp_path: Path) -> LocalContentStore:
    return LocalContentStore(str(tmp_path / "content"))


@pytest.fixture
def meta(tmp_path: Path) -> Iterator[SqliteMetadata]:
    m = SqliteMetadata(str(tmp_path / "metadata.db"))
    yield m
    m.close()


def put(content: LocalContentStore, data: bytes, mt: str) -> Descriptor:
    info = content.put(data)
    return Descriptor(mt, info.digest, info.size)


def make_image(content: LocalContentStore, layers: list[bytes], arch: str = "amd64") -> Descriptor:
    """Blobs for an image whose 'layers' are opaque bytes (GC never opens layers)."""
    ldescs = [put(content, data, im.OCI_LAYER) for data in layers]
    cfg = {"architecture": arch, "os": "linux",
           "rootfs": {"type": "layers", "diff_ids": [str(d.digest) for d in ldescs]}}
    cdesc = put(content, json.dumps(cfg).encode(), im.OCI_CONFIG)
    return put(content, im.manifest_json(cdesc, ldescs), im.OCI_MANIFEST)


def test_image_records(meta: SqliteMetadata) -> None:
    d = Descriptor(im.OCI_MANIFEST, Digest("sha256", "a" * 64), 10)
    rec = meta.put_image("docker.io/library/a:1", d, {"k": "v"})
    assert meta.get_image("docker.io/library/a:1") == rec
    assert rec.created == rec.updated
    time.sleep(0.01)
    d2 = Descriptor(im.OCI_MANIFEST, Digest("sha256", "b" * 64), 11)
    rec2 = meta.put_image("docker.io/library/a:1", d2)
    assert rec2.created == rec.created and rec2.updated > rec.updated
    assert rec2.labels == {"k": "v"}  # labels survive a repoint unless given
    with pytest.raises(Conflict, match="already exists"):
        meta.create_image("docker.io/library/a:1", d)
    meta.create_image("docker.io/library/b:1", d2)
    assert [r.name for r in meta.list_images()] == ["docker.io/library/a:1", "docker.io/library/b:1"]
    assert len(meta.images_by_digest(d2.digest)) == 2
    meta.delete_image("docker.io/library/a:1")
    with pytest.raises(NotFound, match="a:1"):
        meta.get_image("docker.io/library/a:1")
    with pytest.raises(NotFound):
        meta.delete_image("docker.io/library/a:1")
    with pytest.raises(InvalidArgument):
        meta.put_image("", d)


def test_delete_images_is_all_or_nothing(meta: SqliteMetadata) -> None:
    d = Descriptor(im.OCI_MANIFEST, Digest("sha256", "a" * 64), 10)
    meta.put_image("x:1", d)
    with pytest.raises(NotFound):
        meta.delete_images(["x:1", "missing"])
    assert meta.get_image("x:1").target == d  # rolled back
    meta.delete_images(["x:1"])
    assert meta.list_images() == []


def test_persistence_and_wal(tmp_path: Path) -> None:
    path = str(tmp_path / "m.db")
    m = SqliteMetadata(path)
    d = Descriptor(im.OCI_MANIFEST, Digest("sha256", "a" * 64), 10, {"x": "y"})
    m.put_image("n", d)
    m.close()
    m2 = SqliteMetadata(path)
    assert m2.get_image("n").target == d
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    m2.close()


_CRASH = """
import sys, os
from skiff.plugins.metadata.sqlite import SqliteMetadata
from skiff.core.content import Descriptor, Digest
m = SqliteMetadata(sys.argv[1])
d = Descriptor("application/vnd.oci.image.manifest.v1+json", Digest("sha256", "c" * 64), 1)
m.put_image("committed", d)
with m._tx("half") as db:
    db.execute("DELETE FROM images WHERE name = 'committed'")
    db.execute("INSERT INTO images(name, target, digest, created, updated) "
               "VALUES ('half', '{}', 'x', 0, 0)")
    os._exit(7)  # die inside the transaction
"""


def test_crash_inside_transaction_leaves_previous_state(tmp_path: Path) -> None:
    path = str(tmp_path / "m.db")
    proc = subprocess.run([sys.executable, "-c", _CRASH, path], capture_output=True, timeout=60)
    assert proc.returncode == 7, proc.stderr
    m = SqliteMetadata(path)
    assert [r.name for r in m.list_images()] == ["committed"]
    m.close()


def test_leases(meta: SqliteMetadata) -> None:
    lease = meta.create_lease("pull-1", labels={"ref": "busybox"})
    d = Digest("sha256", "d" * 64)
    meta.add_lease_content("pull-1", d)
    meta.add_lease_content("pull-1", d)  # idempotent
    meta.add_lease_snapshot("pull-1", "sha256:" + "e" * 64)
    got = meta.get_lease("pull-1")
    assert got.content == {d} and got.snapshots == {"sha256:" + "e" * 64}
    assert got.labels == {"ref": "busybox"} and got.created == lease.created
    with pytest.raises(Conflict):
        meta.create_lease("pull-1")
    with pytest.raises(NotFound):
        meta.add_lease_content("nope", d)
    anon = meta.create_lease()
    assert {x.id for x in meta.list_leases()} == {"pull-1", anon.id}
    meta.delete_lease("pull-1")
    with pytest.raises(NotFound):
        meta.get_lease("pull-1")
    with pytest.raises(NotFound):
        meta.delete_lease("pull-1")


def test_gc_keeps_images_and_leases_removes_the_rest(content: LocalContentStore,
                                                     meta: SqliteMetadata) -> None:
    shared = b"shared base layer"
    m1 = make_image(content, [shared, b"app one"])
    m2 = make_image(content, [shared, b"app two"])
    # an index whose other platform was never pulled
    idx_raw = im.index_json([
        Descriptor(im.OCI_MANIFEST, m1.digest, m1.size, platform={"os": "linux", "architecture": "amd64"}),
        Descriptor(im.OCI_MANIFEST, Digest("sha256", "f" * 64), 5,
                   platform={"os": "linux", "architecture": "arm64"}),
    ])
    idx = put(content, idx_raw, im.OCI_INDEX)
    meta.put_image("docker.io/library/one:latest", idx)
    meta.put_image("docker.io/library/two:latest", m2)
    orphan = content.put(b"orphan").digest
    leased = content.put(b"in flight").digest
    lease = meta.create_lease()
    meta.add_lease_content(lease.id, leased)
    meta.add_lease_snapshot(lease.id, "leased-snap")
    before = {b.digest for b in content.walk()}
    time.sleep(0.02)  # blobs committed before the collection starts are eligible

    seen: list[frozenset[str]] = []
    res = meta.gc(content, seen.append)
    assert res.removed == [orphan]
    assert res.bytes_freed == len(b"orphan")
    assert {b.digest for b in content.walk()} == before - {orphan}
    # snapshot keys: chain IDs of both images plus the leased one
    cfg1 = im.parse_config(content.read(im.parse_manifest(content.read(m1.digest)).config.digest))  # type: ignore[union-attr]
    cfg2 = im.parse_config(content.read(im.parse_manifest(content.read(m2.digest)).config.digest))  # type: ignore[union-attr]
    want = set(im.chain_ids(cfg1.diff_ids)) | set(im.chain_ids(cfg2.diff_ids)) | {"leased-snap"}
    assert seen == [frozenset(want)] and res.kept_snapshots == want
    assert len(want) == 4  # the shared base layer counted once

    # removing image two frees its private layer, config and manifest, but not the shared one
    meta.delete_image("docker.io/library/two:latest")
    meta.delete_lease(lease.id)
    time.sleep(0.02)
    res = meta.gc(content)
    assert not content.exists(m2.digest)
    assert leased in res.removed and m2.digest in res.removed
    assert content.exists(Digest.from_bytes(shared))
    assert not content.exists(Digest.from_bytes(b"app two"))
    assert content.exists(Digest.from_bytes(b"app one"))
    assert len(res.removed) == 4  # manifest, config, private layer, the leased blob


def test_gc_spares_blobs_committed_during_collection(content: LocalContentStore,
                                                      meta: SqliteMetadata) -> None:
    class Racing:
        """A content store view whose walk commits a new blob, as a concurrent pull would."""

        def __getattr__(self, name: str) -> object:
            return getattr(content, name)

        def walk(self):  # type: ignore[no-untyped-def]
            content.put(b"racing pull blob")
            return content.walk()

    old = content.put(b"old garbage").digest
    time.sleep(0.02)
    res = meta.gc(Racing())  # type: ignore[arg-type]
    assert res.removed == [old]
    assert content.exists(Digest.from_bytes(b"racing pull blob"))


def test_gc_expires_leases(content: LocalContentStore, meta: SqliteMetadata) -> None:
    d = content.put(b"leased briefly").digest
    lease = meta.create_lease(ttl=-1)  # already expired
    meta.add_lease_content(lease.id, d)
    keep = meta.create_lease(ttl=3600)
    time.sleep(0.02)
    res = meta.gc(content)
    assert res.expired_leases == [lease.id]
    assert [x.id for x in meta.list_leases()] == [keep.id]
    assert d in res.removed


def test_gc_survives_broken_manifests(content: LocalContentStore, meta: SqliteMetadata) -> None:
    bad = put(content, b"{not json", im.OCI_MANIFEST)
    meta.put_image("broken", bad)
    time.sleep(0.02)
    res = meta.gc(content)
    assert res.removed == [] and content.exists(bad.digest)

