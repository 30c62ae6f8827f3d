"""Container records in SQLite (WAL), so a restarted skiffd finds every container again."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from skiff.daemon.containers.record import Container
from skiff.errors import Conflict, NotFound
from skiff.plugins.sqlite_db import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS containers (
    id   TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    data TEXT NOT NULL
);
"""


class ContainerStore:
    """Changes are not durable against power loss (see Database.tx): it stops every container
    anyway, and restore reconciles what the records say with what is left. A create, start,
    exit and removal would each wait for an fsync (~0.2 ms here, more on a busy disk)."""

    def __init__(self, path: str) -> None:
        self.db = Database(path, _SCHEMA, "containers")

    def close(self) -> None:
        self.db.close()

    def add(self, c: Container) -> None:
        with self.db.tx(f"create container {c.name}", durable=False) as conn:
            _check_free(conn, c)
            conn.execute("INSERT INTO containers (id, name, data) VALUES (?, ?, ?)",
                         (c.id, c.name, json.dumps(c.to_row())))

    def put(self, c: Container) -> None:
        with self.db.tx(f"update container {c.name}", durable=False) as conn:
            conn.execute("UPDATE containers SET data = ? WHERE id = ?",
                         (json.dumps(c.to_row()), c.id))

    def rename(self, c: Container) -> None:
        """Store ``c`` under its new name, atomically refusing a name another one holds."""
        with self.db.tx(f"rename container {c.id} to {c.name}", durable=False) as conn:
            _check_free(conn, c)
            conn.execute("UPDATE containers SET name = ?, data = ? WHERE id = ?",
                         (c.name, json.dumps(c.to_row()), c.id))

    def delete(self, cid: str) -> None:
        with self.db.tx(f"delete container {cid}", durable=False) as conn:
            conn.execute("DELETE FROM containers WHERE id = ?", (cid,))

    def all(self) -> list[Container]:
        rows = self.db.query("SELECT data FROM containers")
        return [Container.from_row(_load(r[0])) for r in rows]

    def find(self, ref: str) -> Container:
        """By full id, name (with or without "/"), or unique id prefix, as Docker resolves."""
        name = ref.removeprefix("/")
        rows = self.db.query("SELECT data FROM containers WHERE id = ? OR name = ?", (ref, name))
        if not rows and ref and all(ch in "0123456789abcdef" for ch in ref):
            rows = self.db.query("SELECT data FROM containers WHERE id LIKE ?", (ref + "%",))
            if len(rows) > 1:
                raise Conflict(f"multiple IDs found with provided prefix: {ref}")
        if not rows:
            raise NotFound(f"No such container: {ref}")
        return Container.from_row(_load(rows[0][0]))


def _check_free(conn: sqlite3.Connection, c: Container) -> None:
    taken = conn.execute("SELECT id FROM containers WHERE name = ? AND id != ?",
                         (c.name, c.id)).fetchone()
    if taken:
        raise Conflict(f'Conflict. The container name "/{c.name}" is already in use by '
                       f'container "{taken[0]}". You have to remove (or rename) that '
                       "container to be able to reuse that name.")


def _load(raw: object) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(str(raw))
    return data
