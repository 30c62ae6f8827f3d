"""A content store on the local filesystem.

Layout under ``root``::

    blobs/<algorithm>/<hex>        committed blobs, read-only once visible
    ingest/<sha256(ref)>/data      bytes received so far for an in-flight write
    ingest/<sha256(ref)>/ref       the caller's ref (so the ingest can be listed)
    ingest/<sha256(ref)>/startedat creation time (seconds since the epoch)

A blob becomes visible only by ``rename`` of a fully written, fsynced and digest-verified
ingest file, so a crash at any instant leaves either no blob or the whole blob. An ingest that
is reopened under the same ref continues at its offset (resumable downloads); one writer per
ref at a time, enforced with ``flock`` so a second process cannot interleave bytes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from skiff.core.content import BlobInfo, Digest
from skiff.errors import Conflict, InvalidArgument, NotFound, os_error

_CHUNK = 1 << 20
_HEX_LEN = {"sha256": 64, "sha512": 128}


@dataclass(frozen=True)
class IngestStatus:
    ref: str
    offset: int
    started: float
    updated: float


def fsync_dir(path: str) -> None:
    """Make a rename or create in ``path`` durable (the directory entry itself)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalWriter:
    """An open ingest. Not thread-safe: one writer is used by one task at a time."""

    def __init__(self, store: LocalContentStore, ref: str, ingest_dir: str) -> None:
        self._store = store
        self.ref = ref
        self._dir = ingest_dir
        self._data_path = os.path.join(ingest_dir, "data")
        self._file: BinaryIO | None = None
        try:
            # Unbuffered: what write() accepted is in the kernel, so ingests() and a resume see it.
            self._file = open(self._data_path, "ab", buffering=0)  # noqa: SIM115
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._close_file()
            raise Conflict(f"content ingest {ref!r} is being written by another writer") from exc
        except OSError as exc:
            self._close_file()
            raise os_error("open ingest", self._data_path, exc) from exc
        # Resuming: the hash state is not persisted, so rebuild it from the bytes already there.
        self._hash = hashlib.sha256()
        self._offset = 0
        try:
            with open(self._data_path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    self._hash.update(chunk)
                    self._offset += len(chunk)
        except OSError as exc:
            self._close_file()
            raise os_error("read ingest", self._data_path, exc) from exc

    @property
    def offset(self) -> int:
        return self._offset

    def _need_file(self) -> BinaryIO:
        if self._file is None:
            raise Conflict(f"content ingest {self.ref!r} is closed")
        return self._file

    def write(self, data: bytes) -> None:
        f = self._need_file()
        try:
            view = memoryview(data)
            while view:  # a raw (unbuffered) write may be partial
                n = f.write(view)
                view = view[n:]
        except OSError as exc:
            raise os_error("write ingest", self._data_path, exc) from exc
        self._hash.update(data)
        self._offset += len(data)

    def digest(self) -> Digest:
        return Digest("sha256", self._hash.hexdigest())

    def truncate(self, size: int) -> None:
        """Drop bytes past ``size`` (a server may resume at an earlier offset than we have)."""
        if size > self._offset or size < 0:
            raise InvalidArgument(f"truncate ingest {self.ref!r} to {size}: beyond {self._offset}")
        f = self._need_file()
        try:
            f.flush()
            os.truncate(self._data_path, size)
        except OSError as exc:
            raise os_error("truncate ingest", self._data_path, exc) from exc
        self._hash = hashlib.sha256()
        self._offset = 0
        with open(self._data_path, "rb") as r:
            while chunk := r.read(min(_CHUNK, size - self._offset)):
                self._hash.update(chunk)
                self._offset += len(chunk)

    def commit(self, expected: Digest, size: int | None = None) -> BlobInfo:
        """Verify size and digest, then make the blob visible atomically.

        On a mismatch nothing becomes visible and the ingest is discarded (its bytes are wrong,
        so resuming from them could never succeed); InvalidArgument names expected and actual.
        """
        f = self._need_file()
        try:
            f.flush()
            os.fsync(f.fileno())
        except OSError as exc:
            raise os_error("fsync ingest", self._data_path, exc) from exc
        if size is not None and size != self._offset:
            self.abort()
            raise InvalidArgument(
                f"commit blob {expected}: size mismatch: expected {size} bytes, got {self._offset}"
            )
        actual = self._actual_digest(expected.algorithm)
        if actual != expected:
            self.abort()
            raise InvalidArgument(
                f"commit blob: digest mismatch: expected {expected}, got {actual} "
                f"({self._offset} bytes)"
            )
        target = self._store.blob_path(expected)
        if os.path.exists(target):
            # Someone else committed the same content first: ours is redundant.
            self.abort()
            return BlobInfo(expected, self._offset)
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.chmod(self._data_path, 0o444)
            os.rename(self._data_path, target)
            fsync_dir(os.path.dirname(target))
        except OSError as exc:
            raise os_error("commit blob", f"{expected} to {target}", exc) from exc
        self._close_file()
        shutil.rmtree(self._dir, ignore_errors=True)
        return BlobInfo(expected, self._offset)

    def _actual_digest(self, algorithm: str) -> Digest:
        if algorithm == "sha256":
            return Digest("sha256", self._hash.hexdigest())
        return digest_file(self._data_path, algorithm)

    def abort(self) -> None:
        """Discard the ingest and its bytes."""
        self._close_file()
        shutil.rmtree(self._dir, ignore_errors=True)

    def close(self) -> None:
        """Release the writer but keep the bytes, so a later writer with the same ref resumes."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.flush()
                os.utime(self._dir)
        self._close_file()

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()  # also drops the flock
            self._file = None

    def __enter__(self) -> LocalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalContentStore:
    """``ContentStore`` over a directory; see the module docstring for the layout."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self._blobs = os.path.join(self.root, "blobs")
        self._ingest = os.path.join(self.root, "ingest")
        for d in (self._blobs, os.path.join(self._blobs, "sha256"), self._ingest):
            try:
                os.makedirs(d, mode=0o700, exist_ok=True)
            except OSError as exc:
                raise os_error("create content store directory", d, exc) from exc

    # --- reading ---------------------------------------------------------------------------

    def blob_path(self, digest: Digest) -> str:
        if _HEX_LEN.get(digest.algorithm) != len(digest.hex):
            raise InvalidArgument(f"unsupported digest {digest}")
        return os.path.join(self._blobs, digest.algorithm, digest.hex)

    def info(self, digest: Digest) -> BlobInfo:
        p = self.blob_path(digest)
        try:
            st = os.stat(p)
        except FileNotFoundError as exc:
            raise NotFound(f"content {digest}: not found") from exc
        except OSError as exc:
            raise os_error("stat blob", p, exc) from exc
        return BlobInfo(digest, st.st_size, st.st_ctime)

    def exists(self, digest: Digest) -> bool:
        return os.path.exists(self.blob_path(digest))

    def open(self, digest: Digest) -> BinaryIO:
        p = self.blob_path(digest)
        try:
            return open(p, "rb")
        except FileNotFoundError as exc:
            raise NotFound(f"content {digest}: not found") from exc
        except OSError as exc:
            raise os_error("open blob", p, exc) from exc

    def read(self, digest: Digest, limit: int | None = None) -> bytes:
        with self.open(digest) as f:
            if limit is not None:
                size = os.fstat(f.fileno()).st_size
                if size > limit:
                    raise InvalidArgument(
                        f"content {digest}: {size} bytes exceeds the limit of {limit} bytes"
                    )
            return f.read()

    def path(self, digest: Digest) -> str:
        p = self.blob_path(digest)
        if not os.path.exists(p):
            raise NotFound(f"content {digest}: not found")
        return p

    def walk(self) -> Iterator[BlobInfo]:
        for algo, want in _HEX_LEN.items():
            d = os.path.join(self._blobs, algo)
            try:
                entries = list(os.scandir(d))
            except FileNotFoundError:
                continue
            for e in entries:
                if len(e.name) != want or not all(c in "0123456789abcdef" for c in e.name):
                    continue
                try:
                    st = e.stat()
                except FileNotFoundError:
                    continue  # deleted meanwhile
                # ctime: commit's chmod+rename set it, so it is the moment the blob appeared
                yield BlobInfo(Digest(algo, e.name), st.st_size, st.st_ctime)

    # --- writing ---------------------------------------------------------------------------

    def _ingest_dir(self, ref: str) -> str:
        return os.path.join(self._ingest, hashlib.sha256(ref.encode()).hexdigest())

    def writer(self, ref: str) -> LocalWriter:
        if not ref:
            raise InvalidArgument("content writer: empty ref")
        d = self._ingest_dir(ref)
        try:
            os.mkdir(d, 0o700)
            fresh = True
        except FileExistsError:
            fresh = False
        except OSError as exc:
            raise os_error("create ingest", d, exc) from exc
        if fresh:
            try:
                with open(os.path.join(d, "ref"), "w") as f:
                    f.write(ref)
                with open(os.path.join(d, "startedat"), "w") as f:
                    f.write(repr(time.time()))
            except OSError as exc:
                shutil.rmtree(d, ignore_errors=True)
                raise os_error("create ingest", d, exc) from exc
        return LocalWriter(self, ref, d)

    def put(self, data: bytes, expected: Digest | None = None) -> BlobInfo:
        actual = Digest.from_bytes(data)
        if expected is not None and expected.algorithm == "sha256" and actual != expected:
            raise InvalidArgument(f"put blob: digest mismatch: expected {expected}, got {actual}")
        digest = expected or actual
        if self.exists(digest):
            return self.info(digest)
        w = self.writer(f"put-{uuid.uuid4().hex}")
        try:
            w.write(data)
        except BaseException:
            w.abort()
            raise
        return w.commit(digest, len(data))

    def delete(self, digest: Digest) -> None:
        p = self.blob_path(digest)
        try:
            os.unlink(p)
        except FileNotFoundError as exc:
            raise NotFound(f"content {digest}: not found") from exc
        except OSError as exc:
            raise os_error("delete blob", p, exc) from exc

    # --- ingests ---------------------------------------------------------------------------

    def ingests(self) -> list[IngestStatus]:
        """In-flight (or abandoned) writes, for listing and cleanup."""
        out = []
        for e in os.scandir(self._ingest):
            try:
                with open(os.path.join(e.path, "ref")) as f:
                    ref = f.read()
                with open(os.path.join(e.path, "startedat")) as f:
                    started = float(f.read())
                data = os.path.join(e.path, "data")
                st = os.stat(data) if os.path.exists(data) else os.stat(e.path)
                size = st.st_size if os.path.exists(data) else 0
                out.append(IngestStatus(ref, size, started, max(st.st_mtime, started)))
            except (OSError, ValueError):
                continue  # half-created by a crash; cleanup_stale removes it by age
        return out

    def cleanup_stale(self, max_age: float, now: float | None = None) -> list[str]:
        """Remove ingests untouched for ``max_age`` seconds and not locked by a live writer.

        Returns the refs (or directory names, for broken ingests) removed.
        """
        now = time.time() if now is None else now
        removed = []
        for e in os.scandir(self._ingest):
            try:
                mtime = max(os.stat(e.path).st_mtime,
                            *(os.stat(os.path.join(e.path, n)).st_mtime
                              for n in os.listdir(e.path)))
            except OSError:
                continue
            if now - mtime < max_age:
                continue
            data = os.path.join(e.path, "data")
            lock: BinaryIO | None = None
            try:
                if os.path.exists(data):
                    lock = open(data, "rb")  # noqa: SIM115 - held across the removal below
                    try:
                        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # a live writer owns it
                try:
                    with open(os.path.join(e.path, "ref")) as f:
                        name = f.read()
                except OSError:
                    name = e.name
                shutil.rmtree(e.path, ignore_errors=True)
                removed.append(name)
            finally:
                if lock is not None:
                    lock.close()
        return removed


def digest_file(path: str, algorithm: str) -> Digest:
    """The digest of a file's bytes (for algorithms not hashed while writing)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return Digest(algorithm, h.hexdigest())
