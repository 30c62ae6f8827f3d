"""Image names, leases and garbage collection in SQLite.

WAL journal and one transaction per change, so a crash at any instant leaves the previous or
the next consistent state. One connection guarded by a lock: the daemon calls in from worker
threads, and SQLite serialises writers anyway.

Garbage collection marks from image targets and lease resources, walking manifests, indexes
and configs through the content store, and sweeps unmarked blobs. A pull protects what it
writes by adding each digest to its lease *before* committing the blob; blobs committed after
the collection began are spared as well, so a racing pull never loses a blob.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
import uuid
from collections.abc import Mapping

from skiff.core.content import ContentStore, Descriptor, Digest
from skiff.core.images import CONFIG_TYPES, chain_ids, children, parse_config
from skiff.core.metadata import GCResult, ImageRecord, Lease, SnapshotCollector
from skiff.errors import Conflict, InvalidArgument, NotFound, SkiffError
from skiff.plugins.sqlite_db import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    name TEXT PRIMARY KEY,
    target TEXT NOT NULL,          -- descriptor JSON
    digest TEXT NOT NULL,          -- target digest, indexed for lookups by ID
    created REAL NOT NULL,
    updated REAL NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS images_digest ON images(digest);
CREATE TABLE IF NOT EXISTS leases (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    expires REAL,
    labels TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS lease_resources (
    lease_id TEXT NOT NULL REFERENCES leases(id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('content', 'snapshot')),
    ref TEXT NOT NULL,
    PRIMARY KEY (lease_id, kind, ref)
);
"""

# A walk only ever reads manifests, indexes and configs whole; this bounds a hostile blob.
_MAX_WALK_BLOB = 8 * 1024 * 1024


class SqliteMetadata:
    def __init__(self, path: str) -> None:
        self.path = path
        self._db = Database(path, _SCHEMA, "metadata")

    def close(self) -> None:
        self._db.close()

    def _tx(self, what: str) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self._db.tx(what)

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        return self._db.query(sql, args)

    # --- images ----------------------------------------------------------------------------

    @staticmethod
    def _image(row: tuple[object, ...]) -> ImageRecord:
        name, target, created, updated, labels = row
        assert isinstance(name, str) and isinstance(target, str) and isinstance(labels, str)
        assert isinstance(created, float) and isinstance(updated, float)
        return ImageRecord(name, Descriptor.from_json(json.loads(target), f"image {name}"),
                           created, updated, json.loads(labels))

    def _write_image(self, name: str, target: Descriptor, labels: Mapping[str, str] | None,
                     exclusive: bool) -> ImageRecord:
        if not name:
            raise InvalidArgument("image name is empty")
        now = time.time()
        with self._tx(f"put image {name}") as db:
            row = db.execute("SELECT created, labels FROM images WHERE name = ?",
                             (name,)).fetchone()
            if row is not None and exclusive:
                raise Conflict(f"image {name}: already exists")
            created = row[0] if row is not None else now
            lab = dict(labels) if labels is not None else (
                json.loads(row[1]) if row is not None else {})
            db.execute(
                "INSERT OR REPLACE INTO images(name, target, digest, created, updated, labels) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (name, json.dumps(target.to_json()), str(target.digest), created, now,
                 json.dumps(lab)),
            )
        return ImageRecord(name, target, created, now, lab)

    def put_image(self, name: str, target: Descriptor,
                  labels: Mapping[str, str] | None = None) -> ImageRecord:
        return self._write_image(name, target, labels, exclusive=False)

    def create_image(self, name: str, target: Descriptor,
                     labels: Mapping[str, str] | None = None) -> ImageRecord:
        return self._write_image(name, target, labels, exclusive=True)

    def get_image(self, name: str) -> ImageRecord:
        rows = self._query("SELECT name, target, created, updated, labels FROM images "
                           "WHERE name = ?", (name,))
        if not rows:
            raise NotFound(f"image {name}: not found")
        return self._image(rows[0])

    def list_images(self) -> list[ImageRecord]:
        return [self._image(r) for r in self._query(
            "SELECT name, target, created, updated, labels FROM images ORDER BY name")]

    def images_by_digest(self, digest: Digest) -> list[ImageRecord]:
        return [self._image(r) for r in self._query(
            "SELECT name, target, created, updated, labels FROM images WHERE digest = ? "
            "ORDER BY name", (str(digest),))]

    def delete_image(self, name: str) -> None:
        with self._tx(f"delete image {name}") as db:
            if db.execute("DELETE FROM images WHERE name = ?", (name,)).rowcount == 0:
                raise NotFound(f"image {name}: not found")

    def delete_images(self, names: list[str]) -> None:
        with self._tx(f"delete images {', '.join(names)}") as db:
            for name in names:
                if db.execute("DELETE FROM images WHERE name = ?", (name,)).rowcount == 0:
                    raise NotFound(f"image {name}: not found")

    # --- leases ----------------------------------------------------------------------------

    def create_lease(self, lease_id: str | None = None, ttl: float | None = None,
                     labels: Mapping[str, str] | None = None) -> Lease:
        lid = lease_id or uuid.uuid4().hex
        now = time.time()
        expires = now + ttl if ttl is not None else None
        with self._tx(f"create lease {lid}") as db:
            if db.execute("SELECT 1 FROM leases WHERE id = ?", (lid,)).fetchone():
                raise Conflict(f"lease {lid}: already exists")
            db.execute("INSERT INTO leases(id, created, expires, labels) VALUES (?, ?, ?, ?)",
                       (lid, now, expires, json.dumps(dict(labels or {}))))
        return Lease(lid, now, expires, dict(labels or {}))

    def _add_resource(self, lease_id: str, kind: str, ref: str) -> None:
        with self._tx(f"add {kind} {ref} to lease {lease_id}") as db:
            if not db.execute("SELECT 1 FROM leases WHERE id = ?", (lease_id,)).fetchone():
                raise NotFound(f"lease {lease_id}: not found")
            db.execute("INSERT OR IGNORE INTO lease_resources(lease_id, kind, ref) "
                       "VALUES (?, ?, ?)", (lease_id, kind, ref))

    def add_lease_content(self, lease_id: str, digest: Digest) -> None:
        self._add_resource(lease_id, "content", str(digest))

    def add_lease_snapshot(self, lease_id: str, key: str) -> None:
        self._add_resource(lease_id, "snapshot", key)

    def _lease(self, row: tuple[object, ...]) -> Lease:
        lid, created, expires, labels = row
        assert isinstance(lid, str) and isinstance(created, float) and isinstance(labels, str)
        res = self._query("SELECT kind, ref FROM lease_resources WHERE lease_id = ?", (lid,))
        content = frozenset(Digest.parse(str(r)) for k, r in res if k == "content")
        snaps = frozenset(str(r) for k, r in res if k == "snapshot")
        return Lease(lid, created, expires if isinstance(expires, float) else None,
                     json.loads(labels), content, snaps)

    def get_lease(self, lease_id: str) -> Lease:
        rows = self._query("SELECT id, created, expires, labels FROM leases WHERE id = ?",
                           (lease_id,))
        if not rows:
            raise NotFound(f"lease {lease_id}: not found")
        return self._lease(rows[0])

    def list_leases(self) -> list[Lease]:
        with self._db.lock:  # the lease rows and their resources read consistently
            return [self._lease(r) for r in self._query(
                "SELECT id, created, expires, labels FROM leases ORDER BY created")]

    def delete_lease(self, lease_id: str) -> None:
        with self._tx(f"delete lease {lease_id}") as db:
            if db.execute("DELETE FROM leases WHERE id = ?", (lease_id,)).rowcount == 0:
                raise NotFound(f"lease {lease_id}: not found")

    # --- garbage collection ----------------------------------------------------------------

    def gc(self, content: ContentStore,
           snapshots: SnapshotCollector | None = None) -> GCResult:
        start = time.time()
        with self._tx("expire leases") as db:
            expired = [r[0] for r in db.execute(
                "SELECT id FROM leases WHERE expires IS NOT NULL AND expires < ?", (start,))]
            db.execute("DELETE FROM leases WHERE expires IS NOT NULL AND expires < ?", (start,))
        roots: list[Descriptor] = [img.target for img in self.list_images()]
        snap_keys: set[str] = set()
        leased: set[Digest] = set()
        for lease in self.list_leases():
            leased |= lease.content
            snap_keys |= lease.snapshots
        # Leased blobs are kept as they are: a lease names each blob it protects.
        marked = set(leased)
        visited: set[Digest] = set()
        stack = list(roots)
        while stack:
            desc = stack.pop()
            if desc.digest in visited:
                continue
            visited.add(desc.digest)
            marked.add(desc.digest)
            if not content.exists(desc.digest):
                continue  # e.g. other platforms of an index, never pulled
            try:
                if desc.media_type in CONFIG_TYPES:
                    cfg = parse_config(content.read(desc.digest, _MAX_WALK_BLOB))
                    snap_keys.update(chain_ids(cfg.diff_ids))
                    continue
                raw = content.read(desc.digest, _MAX_WALK_BLOB) if desc.size <= _MAX_WALK_BLOB \
                    else b""
                stack.extend(c for c in children(desc, raw) if c.digest not in visited)
            except SkiffError:
                # A broken manifest or config still keeps itself; it just cannot keep others.
                continue
        removed: list[Digest] = []
        freed = 0
        for blob in list(content.walk()):
            if blob.digest in marked:
                continue
            if blob.committed is not None and blob.committed >= start:
                continue
            try:
                content.delete(blob.digest)
            except NotFound:
                continue
            removed.append(blob.digest)
            freed += blob.size
        keep = frozenset(snap_keys)
        if snapshots is not None:
            snapshots(keep)
        return GCResult(sorted(removed), freed, keep, expired)
