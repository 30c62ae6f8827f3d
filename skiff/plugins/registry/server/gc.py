"""Online garbage collection: no read-only window, nothing referenced is ever removed.

1. Mark, without any lock: every manifest revision of every repository, and everything those
   manifests reference (config, layers, child manifests), across repositories (blobs are
   shared by digest).
2. Candidates: blobs not marked that became visible more than ``grace`` seconds before the
   collection started (a blob uploaded since may be about to be named by a manifest).
3. Sweep under the exclusive ``gc.lock``. Every operation that makes content visible (upload
   commit, cross-repo mount, manifest push, a pusher's blob HEAD) holds the same lock shared,
   so while we hold it no one can start naming a blob. Before deleting we re-scan: manifests
   pushed since the mark are marked (with their references), and blobs whose repository link
   was touched within ``grace`` are spared. Only then are the remaining candidates deleted,
   with their repository links.

So a manifest pushed during the collection either finished before the sweep (and is found by
the re-scan) or starts after it (and its blob checks see exactly what survived).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from skiff.core.content import Digest
from skiff.errors import NotFound, os_error

from .manifests import references
from .storage import Storage


@contextlib.contextmanager
def gc_lock(storage: Storage, exclusive: bool) -> Iterator[None]:
    try:
        fd = os.open(storage.lock_path, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError as exc:
        raise os_error("open gc lock", storage.lock_path, exc) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # drops the lock


@dataclass
class GcReport:
    marked: int = 0
    deleted: list[Digest] = field(default_factory=list)
    freed: int = 0
    spared_recent: int = 0
    links_removed: int = 0


def _mark(storage: Storage, name: str, digest: Digest, marked: set[Digest]) -> None:
    marked.add(digest)
    try:
        raw, _ = storage.get_manifest(name, digest)
    except NotFound:
        return
    marked.update(references(raw))


def collect(storage: Storage, *, grace: float = 3600.0, dry_run: bool = False,
            now: float | None = None) -> GcReport:
    start = time.time() if now is None else now
    report = GcReport()
    marked: set[Digest] = set()
    seen: set[tuple[str, Digest]] = set()
    for name in storage.repositories():
        for digest, _ in storage.revisions(name):
            seen.add((name, digest))
            _mark(storage, name, digest, marked)
    candidates = [b for b in storage.content.walk()
                  if b.digest not in marked
                  and (start if b.committed is None else b.committed) < start - grace]
    with gc_lock(storage, exclusive=True):
        repos = storage.repositories()
        protected: set[Digest] = set()
        for name in repos:
            for digest, _ in storage.revisions(name):
                if (name, digest) not in seen:
                    _mark(storage, name, digest, marked)
            for digest, mtime in storage.layer_links(name):
                if mtime >= start - grace:
                    protected.add(digest)
        doomed = set()
        for blob in candidates:
            if blob.digest in marked:
                continue
            if blob.digest in protected:
                report.spared_recent += 1
                continue
            doomed.add(blob.digest)
            report.deleted.append(blob.digest)
            report.freed += blob.size
            if not dry_run:
                with contextlib.suppress(NotFound):
                    storage.content.delete(blob.digest)
        if not dry_run and doomed:
            for name in repos:
                for digest, _ in list(storage.layer_links(name)):
                    if digest in doomed and storage.unlink_blob(name, digest):
                        report.links_removed += 1
    report.marked = len(marked)
    return report
