"""Volume records and their current users in SQLite (WAL), so a restarted daemon knows which
volumes exist and which of them are mounted for running containers."""

from __future__ import annotations

import json

from skiff.core.volumes import VolumeRecord
from skiff.errors import Conflict, NotFound
from skiff.plugins.sqlite_db import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS volumes (
    name TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS volume_refs (
    name TEXT NOT NULL,
    ref  TEXT NOT NULL,
    PRIMARY KEY (name, ref)
);
"""


def _row(rec: VolumeRecord) -> str:
    return json.dumps({"name": rec.name, "driver": rec.driver, "created_at": rec.created_at,
                       "labels": dict(rec.labels), "options": dict(rec.options)})


def _rec(text: object) -> VolumeRecord:
    d = json.loads(str(text))
    return VolumeRecord(d["name"], d["driver"], d["created_at"], d.get("labels") or {},
                        d.get("options") or {})


class SqliteVolumeStore:
    def __init__(self, path: str) -> None:
        self.db = Database(path, _SCHEMA, "volumes")

    def close(self) -> None:
        self.db.close()

    def add(self, rec: VolumeRecord) -> None:
        with self.db.tx(f"create volume {rec.name}") as conn:
            if conn.execute("SELECT 1 FROM volumes WHERE name = ?", (rec.name,)).fetchone():
                raise Conflict(f"volume {rec.name} already exists")
            conn.execute("INSERT INTO volumes (name, data) VALUES (?, ?)", (rec.name, _row(rec)))

    def get(self, name: str) -> VolumeRecord:
        rows = self.db.query("SELECT data FROM volumes WHERE name = ?", (name,))
        if not rows:
            raise NotFound(f"get {name}: no such volume")
        return _rec(rows[0][0])

    def all(self) -> list[VolumeRecord]:
        return [_rec(r[0]) for r in self.db.query("SELECT data FROM volumes ORDER BY name")]

    def delete(self, name: str) -> None:
        with self.db.tx(f"remove volume {name}") as conn:
            conn.execute("DELETE FROM volumes WHERE name = ?", (name,))
            conn.execute("DELETE FROM volume_refs WHERE name = ?", (name,))

    def rename(self, old: str, new: str) -> None:
        with self.db.tx(f"rename volume {old}") as conn:
            row = conn.execute("SELECT data FROM volumes WHERE name = ?", (old,)).fetchone()
            if row is None:
                raise NotFound(f"rename {old}: no such volume")
            if conn.execute("SELECT 1 FROM volumes WHERE name = ?", (new,)).fetchone():
                raise Conflict(f"rename {old}: volume {new} already exists")
            rec = _rec(row[0])
            renamed = VolumeRecord(new, rec.driver, rec.created_at, rec.labels, rec.options)
            conn.execute("DELETE FROM volumes WHERE name = ?", (old,))
            conn.execute("INSERT INTO volumes (name, data) VALUES (?, ?)", (new, _row(renamed)))

    def refs(self, name: str) -> list[str]:
        return [str(r[0]) for r in self.db.query(
            "SELECT ref FROM volume_refs WHERE name = ? ORDER BY ref", (name,))]

    def add_ref(self, name: str, ref: str) -> int:
        with self.db.tx(f"mount volume {name}") as conn:
            conn.execute("INSERT OR IGNORE INTO volume_refs (name, ref) VALUES (?, ?)",
                         (name, ref))
            return int(conn.execute("SELECT COUNT(*) FROM volume_refs WHERE name = ?",
                                    (name,)).fetchone()[0])

    def drop_ref(self, name: str, ref: str) -> int:
        with self.db.tx(f"unmount volume {name}") as conn:
            conn.execute("DELETE FROM volume_refs WHERE name = ? AND ref = ?", (name, ref))
            return int(conn.execute("SELECT COUNT(*) FROM volume_refs WHERE name = ?",
                                    (name,)).fetchone()[0])
