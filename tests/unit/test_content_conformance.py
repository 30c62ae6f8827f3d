"""The ContentStore contract, run against every implementation (add new ones to STORES)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from skiff.core.content import ContentStore, Digest
from skiff.errors import Conflict, InvalidArgument, NotFound
from skiff.plugins.content.local import LocalContentStore

STORES: dict[str, Callable[[Path], ContentStore]] = {
    "local": lambda p: LocalContentStore(str(p / "content")),
}


@pytest.fixture(params=sorted(STORES))
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], ContentStore]:
    make = STORES[request.param]
    return lambda: make(tmp_path)


@pytest.fixture
def store(factory: Callable[[], ContentStore]) -> ContentStore:
    return factory()


def sha(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


def test_put_read_info_walk_delete(store: ContentStore) -> None:
    data = b"hello blob"
    info = store.put(data)
    assert info.digest == sha(data) and info.size == len(data)
    assert store.exists(info.digest)
    assert store.info(info.digest).size == len(data)
    assert store.read(info.digest) == data
    with store.open(info.digest) as f:
        f.seek(6)
        assert f.read() == b"blob"
    with open(store.path(info.digest), "rb") as f:
        assert f.read() == data
    assert [b.digest for b in store.walk()] == [info.digest]
    store.delete(info.digest)
    assert not store.exists(info.digest)
    assert list(store.walk()) == []
    with pytest.raises(NotFound):
        store.delete(info.digest)


def test_absent_blob_is_not_found(store: ContentStore) -> None:
    d = sha(b"nothing")
    for op in (store.info, store.open, store.read, store.path):
        with pytest.raises(NotFound, match=str(d)):
            op(d)
    assert not store.exists(d)


def test_put_with_expected_digest(store: ContentStore) -> None:
    data = b"x" * 1000
    assert store.put(data, sha(data)).digest == sha(data)
    assert store.put(data, sha(data)).size == 1000  # idempotent
    with pytest.raises(InvalidArgument, match="mismatch"):
        store.put(b"other", sha(data))
    with pytest.raises(InvalidArgument, match="mismatch"):
        store.put(b"other", sha(b"different"))
    assert not store.exists(sha(b"other"))


def test_writer_commit(store: ContentStore) -> None:
    w = store.writer("layer-1")
    assert w.offset == 0
    w.write(b"abc")
    w.write(b"def")
    assert w.offset == 6
    assert w.digest() == sha(b"abcdef")  # what load/import commit under, without hashing twice
    assert not store.exists(sha(b"abcdef"))  # invisible until commit
    info = w.commit(sha(b"abcdef"), 6)
    assert info.size == 6
    assert store.read(sha(b"abcdef")) == b"abcdef"


def test_wrong_digest_leaves_store_unchanged(store: ContentStore) -> None:
    store.put(b"existing")
    before = sorted(b.digest for b in store.walk())
    w = store.writer("bad")
    w.write(b"tampered content")
    want = sha(b"genuine content!")
    with pytest.raises(InvalidArgument) as info:
        w.commit(want)
    msg = str(info.value)
    assert str(want) in msg and str(sha(b"tampered content")) in msg
    assert sorted(b.digest for b in store.walk()) == before
    assert not store.exists(want) and not store.exists(sha(b"tampered content"))
    # the bad bytes are not resumed into a later attempt
    assert store.writer("bad").offset == 0


def test_truncated_blob_refused(store: ContentStore) -> None:
    data = os.urandom(5000)
    w = store.writer("trunc")
    w.write(data[:4000])
    with pytest.raises(InvalidArgument, match=r"size mismatch.*5000.*4000"):
        w.commit(sha(data), 5000)
    assert not store.exists(sha(data))


def test_resume_after_close(factory: Callable[[], ContentStore]) -> None:
    data = os.urandom(300_000)
    store = factory()
    w = store.writer("resume-me")
    w.write(data[:123_456])
    w.close()
    # a new store instance over the same root (a restarted daemon) continues at the offset
    store2 = factory()
    w2 = store2.writer("resume-me")
    assert w2.offset == 123_456
    assert w2.digest() == sha(data[:123_456])  # the resumed prefix counts
    w2.write(data[123_456:])
    assert w2.digest() == sha(data)
    assert w2.commit(sha(data), len(data)).size == len(data)
    assert store2.read(sha(data)) == data


def test_one_writer_per_ref(store: ContentStore) -> None:
    w = store.writer("busy")
    w.write(b"a")
    with pytest.raises(Conflict, match="busy"):
        store.writer("busy")
    other = store.writer("other")  # different refs are independent
    other.abort()
    w.abort()
    assert store.writer("busy").offset == 0


def test_abort_discards(store: ContentStore) -> None:
    w = store.writer("gone")
    w.write(b"partial")
    w.abort()
    assert store.writer("gone").offset == 0
    assert list(store.walk()) == []


def test_commit_of_existing_content(store: ContentStore) -> None:
    store.put(b"same")
    w = store.writer("dup")
    w.write(b"same")
    assert w.commit(sha(b"same")).size == 4
    assert [b.digest for b in store.walk()] == [sha(b"same")]


def test_read_limit(store: ContentStore) -> None:
    d = store.put(b"y" * 100).digest
    assert store.read(d, limit=100) == b"y" * 100
    with pytest.raises(InvalidArgument, match=rf"{d}.*100 bytes exceeds the limit of 99"):
        store.read(d, limit=99)


def test_sha512(store: ContentStore) -> None:
    data = b"five twelve"
    d = Digest("sha512", hashlib.sha512(data).hexdigest())
    w = store.writer("512")
    w.write(data)
    w.commit(d)
    assert store.read(d) == data


def test_empty_blob(store: ContentStore) -> None:
    w = store.writer("empty")
    info = w.commit(sha(b""), 0)
    assert info.size == 0 and store.read(sha(b"")) == b""


_CRASHER = """
import os, sys
from skiff.plugins.content.local import LocalContentStore
s = LocalContentStore(sys.argv[1])
w = s.writer("crashy")
w.write(b"A" * 70000)
os._exit(9)  # die mid-ingest, without closing anything
"""


def test_crash_mid_write_leaves_no_blob_and_resumes(tmp_path: Path) -> None:
    root = tmp_path / "content"
    proc = subprocess.run([sys.executable, "-c", _CRASHER, str(root)], capture_output=True,
                          timeout=60)
    assert proc.returncode == 9, proc.stderr
    store = LocalContentStore(str(root))
    assert list(store.walk()) == []
    w = store.writer("crashy")
    assert w.offset == 70000
    w.write(b"B" * 10)
    data = b"A" * 70000 + b"B" * 10
    w.commit(sha(data), len(data))
    assert store.read(sha(data)) == data


def test_local_layout_and_stale_cleanup(tmp_path: Path) -> None:
    store = LocalContentStore(str(tmp_path / "c"))
    d = store.put(b"layout").digest
    blob = tmp_path / "c" / "blobs" / "sha256" / d.hex
    assert blob.read_bytes() == b"layout"
    assert blob.stat().st_mode & 0o222 == 0  # committed blobs are read-only
    old = store.writer("old")
    old.write(b"123")
    old.close()
    live = store.writer("live")
    live.write(b"456")
    fresh = store.writer("fresh")
    fresh.close()
    status = {s.ref: s.offset for s in store.ingests()}
    assert status == {"old": 3, "live": 3, "fresh": 0}
    future = 10**10
    # everything is "stale" far in the future, but the live writer holds its lock
    removed = store.cleanup_stale(60, now=future)
    assert sorted(removed) == ["fresh", "old"]
    assert [s.ref for s in store.ingests()] == ["live"]
    assert store.cleanup_stale(10**12) == []  # nothing is older than that
    live.write(b"789")
    live.commit(sha(b"456789"))
    assert store.ingests() == []
    # junk in the blob directory is not reported as content
    (tmp_path / "c" / "blobs" / "sha256" / "not-a-digest").write_bytes(b"")
    assert sorted(b.digest for b in store.walk()) == sorted([d, sha(b"456789")])


def test_local_writer_truncate(tmp_path: Path) -> None:
    store = LocalContentStore(str(tmp_path / "c"))
    w = store.writer("t")
    w.write(b"good part|garbage")
    w.truncate(10)
    assert w.offset == 10
    w.write(b"rest")
    w.commit(sha(b"good part|rest"))
    assert store.read(sha(b"good part|rest")) == b"good part|rest"
    w2 = store.writer("t2")
    with pytest.raises(InvalidArgument):
        w2.truncate(5)
    w2.abort()
