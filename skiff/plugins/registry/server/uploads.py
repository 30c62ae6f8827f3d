"""Blob upload sessions, kept on disk so any registry process can continue any upload.

A session is ``repositories/<name>/_uploads/<uuid>/`` holding ``data`` (the bytes received so
far) and ``startedat``. Appends hold an exclusive ``flock`` on ``data``, so two processes (or
two requests) can never interleave bytes. The running sha256 is cached per process keyed by
the session and its size; another process, or a restart, rebuilds it from the file, so the
cache is only ever a shortcut, never the truth. A blob becomes visible by ``rename`` of the
fsynced, verified data file into the content store, then a link into the repository.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from typing import BinaryIO

from skiff.core.content import Digest
from skiff.errors import os_error
from skiff.plugins.content.local import digest_file, fsync_dir

from .errors import RegistryError
from .storage import Storage

_CHUNK = 1 << 20
_UUID_HEX = frozenset("0123456789abcdef-")
_HASH_CACHE_MAX = 1024


class Upload:
    """An open, locked session: append bytes, then commit or keep for a later request."""

    def __init__(self, manager: Uploads, name: str, upload_id: str, directory: str,
                 f: BinaryIO, offset: int, h: hashlib._Hash) -> None:
        self._m = manager
        self.name = name
        self.id = upload_id
        self.dir = directory
        self._f: BinaryIO | None = f
        self.offset = offset
        self._hash = h

    @property
    def data_path(self) -> str:
        return os.path.join(self.dir, "data")

    def write(self, data: bytes) -> None:
        f = self._need()
        try:
            view = memoryview(data)
            while view:
                n = f.write(view)
                view = view[n:]
        except OSError as exc:
            raise os_error("write upload", self.data_path, exc) from exc
        self._hash.update(data)
        self.offset += len(data)

    def _need(self) -> BinaryIO:
        if self._f is None:
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", {"upload": self.id})
        return self._f

    def commit(self, expected: Digest) -> int:
        """Verify against ``expected`` and make the blob visible in the repository.

        On a mismatch the session is removed (its bytes can never become that blob) and
        DIGEST_INVALID is raised; nothing becomes visible.
        """
        f = self._need()
        if self._m.fsync:
            try:
                os.fsync(f.fileno())
            except OSError as exc:
                raise os_error("fsync upload", self.data_path, exc) from exc
        actual = self._actual(expected.algorithm)
        if actual != expected:
            self.cancel()
            raise RegistryError("DIGEST_INVALID", {"expected": str(expected),
                                                   "actual": str(actual), "size": self.offset})
        storage = self._m.storage
        target = storage.blob_path(expected)
        if not os.path.exists(target):
            try:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.chmod(self.data_path, 0o444)
                os.rename(self.data_path, target)
                if self._m.fsync:
                    fsync_dir(os.path.dirname(target))
            except OSError as exc:
                raise os_error("commit upload", f"{expected} to {target}", exc) from exc
        storage.link_blob(self.name, expected)
        size = self.offset
        self.cancel()
        return size

    def _actual(self, algorithm: str) -> Digest:
        if algorithm == "sha256":
            return Digest("sha256", self._hash.hexdigest())
        return digest_file(self.data_path, algorithm)

    def cancel(self) -> None:
        self._m.forget(self.name, self.id)
        self._close_file()
        shutil.rmtree(self.dir, ignore_errors=True)

    def close(self) -> None:
        """Release the lock and keep the bytes for the next request of this session."""
        if self._f is not None:
            self._m.remember(self.name, self.id, self.offset, self._hash)
            with contextlib.suppress(OSError):
                os.utime(self.dir)  # the session is alive: stale-upload purge goes by mtime
        self._close_file()

    def _close_file(self) -> None:
        if self._f is not None:
            self._f.close()  # drops the flock
            self._f = None


class Uploads:
    def __init__(self, storage: Storage, *, fsync: bool = True) -> None:
        self.storage = storage
        self.fsync = fsync
        self._lock = threading.Lock()
        self._hashes: OrderedDict[tuple[str, str], tuple[int, hashlib._Hash]] = OrderedDict()

    def _dir(self, name: str, upload_id: str) -> str:
        # The id comes from the URL: only our own uuid form may name a directory.
        if not upload_id or len(upload_id) > 64 or not set(upload_id) <= _UUID_HEX:
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", {"upload": upload_id[:80]})
        return os.path.join(self.storage.uploads_dir(name), upload_id)

    def create(self, name: str) -> str:
        upload_id = str(uuid.uuid4())
        d = self._dir(name, upload_id)
        try:
            os.makedirs(d)
            with open(os.path.join(d, "startedat"), "w") as f:
                f.write(repr(time.time()))
            with open(os.path.join(d, "data"), "wb"):
                pass
        except OSError as exc:
            shutil.rmtree(d, ignore_errors=True)
            raise os_error("create upload", d, exc) from exc
        return upload_id

    def open(self, name: str, upload_id: str) -> Upload:
        """Lock the session for one request; BLOB_UPLOAD_UNKNOWN if there is none."""
        d = self._dir(name, upload_id)
        path = os.path.join(d, "data")
        try:
            f: BinaryIO = open(path, "ab", buffering=0)  # noqa: SIM115 - owned by the Upload
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", {"upload": upload_id}) from exc
        except OSError as exc:
            raise os_error("open upload", path, exc) from exc
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            f.close()
            raise RegistryError("BLOB_UPLOAD_INVALID", {"upload": upload_id,
                                                        "reason": "upload is being written"},
                                status=416) from exc
        if not os.path.exists(path):  # cancelled or committed while we waited for the lock
            f.close()
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", {"upload": upload_id})
        size = os.fstat(f.fileno()).st_size
        h = self._cached(name, upload_id, size)
        if h is None:
            h = hashlib.sha256()
            with open(path, "rb") as r:
                while chunk := r.read(_CHUNK):
                    h.update(chunk)
        return Upload(self, name, upload_id, d, f, size, h)

    def _cached(self, name: str, upload_id: str, size: int) -> hashlib._Hash | None:
        with self._lock:
            entry = self._hashes.pop((name, upload_id), None)
        if entry is None or entry[0] != size:
            return None
        return entry[1]

    def remember(self, name: str, upload_id: str, offset: int, h: hashlib._Hash) -> None:
        with self._lock:
            self._hashes[(name, upload_id)] = (offset, h)
            while len(self._hashes) > _HASH_CACHE_MAX:
                self._hashes.popitem(last=False)

    def forget(self, name: str, upload_id: str) -> None:
        with self._lock:
            self._hashes.pop((name, upload_id), None)

    def size(self, name: str, upload_id: str) -> int:
        try:
            return os.stat(os.path.join(self._dir(name, upload_id), "data")).st_size
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", {"upload": upload_id}) from exc

    def cancel(self, name: str, upload_id: str) -> None:
        up = self.open(name, upload_id)
        up.cancel()

    def purge(self, max_age: float, now: float | None = None) -> list[str]:
        """Remove sessions untouched for ``max_age`` seconds that no request holds."""
        now = time.time() if now is None else now
        removed = []
        for name in self.storage.repositories_with_uploads():
            base = self.storage.uploads_dir(name)
            try:
                entries = list(os.scandir(base))
            except OSError:
                continue
            for e in entries:
                try:
                    mtime = max([e.stat().st_mtime] + [
                        os.stat(os.path.join(e.path, n)).st_mtime for n in os.listdir(e.path)])
                except OSError:
                    continue
                if now - mtime < max_age:
                    continue
                data = os.path.join(e.path, "data")
                try:
                    lock = open(data, "rb")  # noqa: SIM115 - held across the removal
                except OSError:
                    shutil.rmtree(e.path, ignore_errors=True)  # half-created by a crash
                    removed.append(f"{name}/{e.name}")
                    continue
                try:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    lock.close()
                    continue
                try:
                    shutil.rmtree(e.path, ignore_errors=True)
                    self.forget(name, e.name)
                    removed.append(f"{name}/{e.name}")
                finally:
                    lock.close()
        return removed
