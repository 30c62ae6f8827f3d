"""One SQLite database file shared by threads: WAL, full sync, one write transaction at a time.

The image metadata store and the snapshot store both keep their state this way; this is the
one place that opens the file, runs a write transaction and turns sqlite3's errors into
SystemFailure naming the operation and the file.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator

from skiff.errors import SystemFailure


class Database:
    def __init__(self, path: str, schema: str, what: str) -> None:
        """Open (creating if needed) ``path`` and apply ``schema``; ``what`` names it in errors."""
        self.path = path
        self.what = what
        self.lock = threading.RLock()
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves; one connection, shared by
            # threads under the lock (check_same_thread=False); timeout: wait out other processes
            self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                        timeout=30)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")  # see tx: commits are durable by default
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.conn.executescript(schema)
        except sqlite3.Error as exc:
            raise SystemFailure(f"open {what} database {path}: {exc}") from exc

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    @contextlib.contextmanager
    def tx(self, op: str, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT), rolled back on any exception.

        IMMEDIATE takes the write lock up front, so concurrent writers queue instead of
        failing half way with SQLITE_BUSY.

        Any commit survives the daemon's crash or SIGKILL: it is in the OS's hands when
        COMMIT returns. A ``durable`` one is on disk too (the log is synced: ~0.2 ms here,
        often more on a busy disk). Without, a power loss may roll it back, never leaving the
        file corrupt; the next durable commit makes it durable as well (the log is
        sequential). For state that a power loss leaves stale anyway.
        """
        with self.lock, contextlib.nullcontext() if durable else self._not_synced():
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise SystemFailure(f"{op}: begin transaction on {self.path}: {exc}") from exc
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):  # a failed COMMIT may have ended it
                    self.conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise SystemFailure(f"{op}: {self.what} {self.path}: {exc}") from exc
                raise

    @contextlib.contextmanager
    def _not_synced(self) -> Iterator[None]:
        """Commits meanwhile do not wait for the disk (lock held)."""
        self._synchronous("NORMAL")
        try:
            yield
        finally:
            self._synchronous("FULL")

    def _synchronous(self, level: str) -> None:
        try:
            self.conn.execute(f"PRAGMA synchronous={level}")
        except sqlite3.Error as exc:
            raise SystemFailure(f"set synchronous={level} on {self.path}: {exc}") from exc

    def query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """All rows of a read-only statement."""
        with self.lock:
            try:
                return list(self.conn.execute(sql, args).fetchall())
            except sqlite3.Error as exc:
                raise SystemFailure(f"query {self.what} {self.path}: {exc}") from exc
