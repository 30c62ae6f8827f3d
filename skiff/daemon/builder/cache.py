"""The build cache in SQLite (``<data-root>/builder/cache.db``).

One row per step result: its key, the image config document and its layers. The layers are
kept from garbage collection by one lease per layer blob (``buildcache-<hex>``), so an entry
stays usable after the image that first carried it is removed; ``prune`` deletes the rows and
the leases and then collects what no image needs. A row whose layer blob is gone anyway (the
store was cleaned by hand) is a miss, never an error.

The file is synchronous=NORMAL: a step lost in a power failure is simply rebuilt, and a build
should not wait for an fsync per instruction.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from skiff.core.content import ContentStore, Descriptor, Digest
from skiff.core.metadata import MetadataStore
from skiff.errors import Conflict, InvalidArgument, NotFound, SkiffError, os_error
from skiff.plugins.sqlite_db import Database
from skiff.services.builder.cache import CacheEntry

_SCHEMA = """
CREATE TABLE IF NOT EXISTS steps (
    key TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    layers TEXT NOT NULL,
    media_type TEXT NOT NULL,
    created REAL NOT NULL
);
"""
LEASE_PREFIX = "buildcache-"


def _layers_json(layers: tuple[Descriptor, ...]) -> str:
    return json.dumps([[d.media_type, str(d.digest), d.size] for d in layers])


def _layers(text: str) -> tuple[Descriptor, ...]:
    return tuple(Descriptor(str(m), Digest.parse(str(d)), int(s)) for m, d, s in json.loads(text))


class SqliteBuildCache:
    def __init__(self, root: str, content: ContentStore, metadata: MetadataStore) -> None:
        try:
            os.makedirs(root, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise os_error("create build cache directory", root, exc) from exc
        self.db = Database(os.path.join(root, "cache.db"), _SCHEMA, "build cache")
        with self.db.lock:
            self.db.conn.execute("PRAGMA synchronous=NORMAL")
        self.content = content
        self.metadata = metadata
        self._leased: set[str] | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        self.db.close()

    def get(self, key: str) -> CacheEntry | None:
        rows = self.db.query("SELECT config, layers, media_type FROM steps WHERE key = ?",
                             (key,))
        if not rows:
            return None
        config, layers_text, media_type = rows[0]
        try:
            layers = _layers(str(layers_text))
        except (ValueError, TypeError, InvalidArgument):
            return None  # a row we cannot read is a miss; the step runs again
        if not all(self.content.exists(d.digest) for d in layers):
            return None
        return CacheEntry(str(config), layers, str(media_type))

    def put(self, key: str, entry: CacheEntry) -> None:
        self._protect(entry.layers)
        with self.db.tx(f"record build step {key}") as db:
            db.execute("INSERT OR REPLACE INTO steps(key, config, layers, media_type, created) "
                       "VALUES (?, ?, ?, ?, ?)", (key, entry.config, _layers_json(entry.layers),
                                                  entry.media_type, time.time()))

    def _protect(self, layers: tuple[Descriptor, ...]) -> None:
        with self._lock:
            if self._leased is None:
                self._leased = {lease.id for lease in self.metadata.list_leases()
                                if lease.id.startswith(LEASE_PREFIX)}
            for layer in layers:
                lease = LEASE_PREFIX + layer.digest.hex
                if lease in self._leased:
                    continue
                try:
                    self.metadata.create_lease(lease, labels={"skiff.build.cache": "1"})
                except Conflict:
                    pass  # another daemon thread got there first: it adds the same blob
                self.metadata.add_lease_content(lease, layer.digest)
                self._leased.add(lease)

    def prune(self) -> dict[str, Any]:
        """``POST /build/prune``: forget every entry; report what GC then freed."""
        with self.db.tx("prune build cache") as db:
            keys = [str(r[0]) for r in db.execute("SELECT key FROM steps")]
            db.execute("DELETE FROM steps")
        with self._lock:
            for lease in self.metadata.list_leases():
                if lease.id.startswith(LEASE_PREFIX):
                    try:
                        self.metadata.delete_lease(lease.id)
                    except SkiffError:
                        continue
            self._leased = set()
        freed = self.metadata.gc(self.content).bytes_freed
        return {"CachesDeleted": keys, "SpaceReclaimed": freed}

    def drop(self, key: str) -> None:
        with self.db.tx(f"forget build step {key}") as db:
            if db.execute("DELETE FROM steps WHERE key = ?", (key,)).rowcount == 0:
                raise NotFound(f"build cache entry {key}: not found")
