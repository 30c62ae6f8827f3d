"""Snapshot metadata in SQLite: one row per snapshot, one transaction per change.

Each snapshot's files live in ``<root>/snapshots/<id>``. The rule that keeps disk and database
consistent across a crash at any instant: a directory is fully built under a temporary name,
renamed to its id inside the transaction that inserts the row, and deleted only after the
transaction that deletes the row has committed. So a row always has its directory; a directory
without a row (an interrupted create or remove) is garbage, collected when the store is opened.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from skiff.core.snapshots import Kind, SnapshotInfo
from skiff.errors import Conflict, InvalidArgument, NotFound, SkiffError, os_error
from skiff.plugins.sqlite_db import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    parent_id INTEGER REFERENCES snapshots(id),
    kind TEXT NOT NULL,
    created REAL NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent_id);
"""

_TMP_PREFIX = "tmp-"


@dataclass(frozen=True)
class Row:
    id: int
    key: str
    parent_id: int | None
    parent_key: str | None
    kind: Kind
    created: float
    labels: dict[str, str]

    def info(self) -> SnapshotInfo:
        return SnapshotInfo(self.key, self.parent_key, self.kind, self.created, dict(self.labels))


_SELECT = ("SELECT s.id, s.key, s.parent_id, p.key, s.kind, s.created, s.labels "
           "FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id")


def _row(r: tuple[object, ...]) -> Row:
    labels = json.loads(str(r[6]))
    return Row(int(str(r[0])), str(r[1]), None if r[2] is None else int(str(r[2])),
               None if r[3] is None else str(r[3]), Kind(str(r[4])), float(str(r[5])), labels)


def _check_key(key: str) -> None:
    if not key or not isinstance(key, str) or "\0" in key:
        raise InvalidArgument(f"invalid snapshot key {key!r}")


class SnapshotStore:
    """The metadata database and the directory of snapshot directories under ``root``."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.dirs = os.path.join(root, "snapshots")
        try:
            os.makedirs(self.dirs, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise os_error("create snapshot root", root, exc) from exc
        self._db = Database(os.path.join(root, "metadata.db"), _SCHEMA, "snapshot metadata")
        self._lock = self._db.lock
        self._collect_garbage()

    def close(self) -> None:
        self._db.close()

    def _txn(self, what: str, *, durable: bool = True
             ) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        # Only committed snapshots (image layers, commits) must outlive a power loss: the
        # active and view ones (containers' writable layers, unpacks in progress) are the
        # working state of things that power loss ends, and a container's create and removal
        # would otherwise wait for the disk twice (see Database.tx).
        return self._db.tx(what, durable=durable)

    def dir_of(self, snapshot_id: int) -> str:
        return os.path.join(self.dirs, str(snapshot_id))

    # --- reads ---------------------------------------------------------------------------------

    def get(self, key: str) -> Row:
        with self._lock:
            r = self._db.conn.execute(_SELECT + " WHERE s.key = ?", (key,)).fetchone()
        if r is None:
            raise NotFound(f"snapshot {key!r} not found")
        return _row(r)

    def find(self, key: str) -> Row | None:
        try:
            return self.get(key)
        except NotFound:
            return None

    def ancestors(self, snapshot_id: int) -> list[int]:
        """Ids from ``snapshot_id``'s parent up to the base, nearest first."""
        q = ("WITH RECURSIVE chain(id, parent_id, depth) AS ("
             " SELECT id, parent_id, 0 FROM snapshots WHERE id = ?"
             " UNION ALL SELECT s.id, s.parent_id, c.depth + 1"
             " FROM snapshots s JOIN chain c ON s.id = c.parent_id)"
             " SELECT id FROM chain WHERE depth > 0 ORDER BY depth")
        with self._lock:
            return [int(r[0]) for r in self._db.conn.execute(q, (snapshot_id,))]

    def walk(self) -> Iterator[SnapshotInfo]:
        with self._lock:
            rows = [_row(r) for r in self._db.conn.execute(_SELECT + " ORDER BY s.id")]
        for row in rows:
            yield row.info()

    # --- changes -------------------------------------------------------------------------------

    def create(self, key: str, parent: str | None, kind: Kind, labels: Mapping[str, str] | None,
               build: Callable[[str, Row | None], None]) -> Row:
        """Insert a snapshot whose directory ``build(tmp_dir, parent_row)`` fills beforehand."""
        _check_key(key)
        tmp = os.path.join(self.dirs, _TMP_PREFIX + uuid.uuid4().hex)
        try:
            os.mkdir(tmp, 0o700)
        except OSError as exc:
            raise os_error("create snapshot directory", tmp, exc) from exc
        renamed = False
        final = ""
        try:
            parent_row = self._parent_row(key, parent)
            build(tmp, parent_row)
            with self._txn(f"create snapshot {key!r}", durable=kind is Kind.COMMITTED) as db:
                if db.execute("SELECT 1 FROM snapshots WHERE key = ?", (key,)).fetchone():
                    raise Conflict(f"snapshot {key!r} already exists")
                if parent is not None:
                    parent_row = self._parent_row(key, parent)  # still there, still committed
                cur = db.execute(
                    "INSERT INTO snapshots (key, parent_id, kind, created, labels)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (key, parent_row.id if parent_row else None, kind.value, time.time(),
                     json.dumps(dict(labels or {}), sort_keys=True)))
                final = self.dir_of(int(cur.lastrowid or 0))
                if os.path.lexists(final):  # debris of a crashed create that used this id
                    shutil.rmtree(final)
                os.rename(tmp, final)
                renamed = True
        except BaseException as exc:
            if renamed:  # the rename happened but the commit did not: the id is not ours
                shutil.rmtree(final, ignore_errors=True)
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError):
                raise os_error("create snapshot", key, exc) from exc
            raise
        return self.get(key)

    def _parent_row(self, key: str, parent: str | None) -> Row | None:
        if parent is None:
            return None
        row = self.find(parent)
        if row is None:
            raise NotFound(f"snapshot {key!r}: parent {parent!r} not found")
        if row.kind is not Kind.COMMITTED:
            raise InvalidArgument(f"snapshot {key!r}: parent {parent!r} is {row.kind.value}, "
                                  "not committed")
        return row

    def commit(self, name: str, key: str, labels: Mapping[str, str] | None) -> None:
        _check_key(name)
        with self._txn(f"commit snapshot {key!r}") as db:
            row = self.get(key)
            if row.kind is not Kind.ACTIVE:
                raise InvalidArgument(f"commit {key!r}: snapshot is {row.kind.value}, not active")
            if db.execute("SELECT 1 FROM snapshots WHERE key = ?", (name,)).fetchone():
                raise Conflict(f"commit {key!r}: snapshot {name!r} already exists")
            merged = {**row.labels, **(labels or {})}
            db.execute("UPDATE snapshots SET key = ?, kind = ?, labels = ? WHERE id = ?",
                       (name, Kind.COMMITTED.value, json.dumps(merged, sort_keys=True), row.id))

    def remove(self, key: str) -> None:
        with self._lock:  # the kind seen here is the one removed
            found = self.find(key)
            durable = found is None or found.kind is Kind.COMMITTED
            with self._txn(f"remove snapshot {key!r}", durable=durable) as db:
                row = self.get(key)
                children = [str(r[0]) for r in db.execute(
                    "SELECT key FROM snapshots WHERE parent_id = ? LIMIT 3", (row.id,))]
                if children:
                    raise Conflict(f"remove snapshot {key!r}: it is the parent of "
                                   f"{', '.join(repr(c) for c in children)}")
                db.execute("DELETE FROM snapshots WHERE id = ?", (row.id,))
        self._remove_dir(self.dir_of(row.id))

    def _remove_dir(self, path: str) -> None:
        # rename first, so a crash mid-delete leaves a tmp- name that the next open collects
        doomed = os.path.join(self.dirs, _TMP_PREFIX + uuid.uuid4().hex)
        try:
            os.rename(path, doomed)
            shutil.rmtree(doomed)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise os_error("remove snapshot directory", path, exc) from exc

    def _collect_garbage(self) -> None:
        with self._lock:
            ids = {str(r[0]) for r in self._db.conn.execute("SELECT id FROM snapshots")}
        for name in os.listdir(self.dirs):
            if name not in ids:
                try:
                    self._remove_dir(os.path.join(self.dirs, name))
                except SkiffError:
                    continue  # still mounted, say: try again next time
