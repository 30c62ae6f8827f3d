"""Database.tx: one write transaction; ``durable=False`` commits without waiting for the disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from skiff.errors import SystemFailure
from skiff.plugins.sqlite_db import Database

_SCHEMA = "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v TEXT NOT NULL);"
FULL, NORMAL = 2, 1  # PRAGMA synchronous values


def _synchronous(db: Database) -> int:
    value = db.query("PRAGMA synchronous")[0][0]
    assert isinstance(value, int)
    return value


def test_only_a_non_durable_transaction_skips_the_sync(tmp_path: Path) -> None:
    db = Database(str(tmp_path / "t.db"), _SCHEMA, "test")
    try:
        assert _synchronous(db) == FULL
        with db.tx("durable") as conn:
            assert _synchronous(db) == FULL
            conn.execute("INSERT INTO t VALUES ('a', '1')")
        with db.tx("not durable", durable=False) as conn:
            assert _synchronous(db) == NORMAL
            conn.execute("INSERT INTO t VALUES ('b', '2')")
        assert _synchronous(db) == FULL  # the next commits wait for the disk again
        with pytest.raises(SystemFailure, match="not durable"), \
                db.tx("not durable", durable=False) as conn:
            conn.execute("INSERT INTO t VALUES ('b', 'clash')")
        assert _synchronous(db) == FULL  # also after a failed one
        assert db.query("SELECT k, v FROM t ORDER BY k") == [("a", "1"), ("b", "2")]
    finally:
        db.close()
    reopened = Database(str(tmp_path / "t.db"), _SCHEMA, "test")
    try:  # both commits are in the file
        assert reopened.query("SELECT count(*) FROM t") == [(2,)]
    finally:
        reopened.close()
