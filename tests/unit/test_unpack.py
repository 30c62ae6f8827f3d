"""The unpack service over the real content store, the copy snapshotter and the tar applier."""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
import zstandard

from skiff.core.content import Descriptor, Digest
from skiff.core.diff import AppliedLayer, BytesProgress
from skiff.core.images import chain_ids
from skiff.core.snapshots import Kind, LayerDirs
from skiff.errors import InvalidArgument, NotFound
from skiff.plugins.content.local import LocalContentStore
from skiff.plugins.diff.tar import TarDiffer
from skiff.plugins.snapshots.copy import CopySnapshotter
from skiff.services.unpack import Unpacker, unpack
from tests.unit.test_layer_support import E, make_tar

GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
PLAIN = "application/vnd.oci.image.layer.v1.tar"


class CountingApplier:
    """The real applier, counting calls (to see which layers were skipped)."""

    def __init__(self) -> None:
        self.real = TarDiffer()
        self.applied: list[str] = []

    def apply(self, dirs: LayerDirs, blob: BinaryIO, media_type: str,
              progress: BytesProgress | None = None) -> AppliedLayer:
        result = self.real.apply(dirs, blob, media_type, progress)
        self.applied.append(str(result.diff_id))
        return result


class Env:
    def __init__(self, tmp: Path) -> None:
        self.content = LocalContentStore(str(tmp / "content"))
        self.snap = CopySnapshotter(str(tmp / "snap"))
        self.applier = CountingApplier()

    def layer(self, entries: list[E], media_type: str = GZIP) -> tuple[Descriptor, Digest]:
        raw = make_tar(entries)
        if media_type == GZIP:
            blob = gzip.compress(raw)
        elif media_type == ZSTD:
            blob = zstandard.ZstdCompressor().compress(raw)
        else:
            blob = raw
        info = self.content.put(blob)
        return Descriptor(media_type, info.digest, info.size), Digest.from_bytes(raw)

    def leftovers(self) -> list[str]:
        return [i.key for i in self.snap.walk() if i.kind is not Kind.COMMITTED]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.snap.close()


def test_layers_become_a_chain_of_snapshots(env: Env) -> None:
    l1 = env.layer([E("etc", "dir"), E("etc/a", data=b"1"), E("etc/gone", data=b"g")], GZIP)
    l2 = env.layer([E("etc/b", data=b"2"), E("etc/.wh.gone")], ZSTD)
    l3 = env.layer([E("etc/a", data=b"3")], PLAIN)
    layers, diff_ids = [d for d, _ in (l1, l2, l3)], [i for _, i in (l1, l2, l3)]
    seen: dict[Digest, list[int]] = {}
    top = unpack(env.content, env.snap, layers, diff_ids,
                 lambda layer, n: seen.setdefault(layer.digest, []).append(n), applier=env.applier)
    chains = chain_ids(diff_ids)
    assert top == chains[-1]
    assert [env.snap.stat(c).parent for c in chains] == [None, chains[0], chains[1]]
    assert env.snap.stat(chains[1]).labels["skiff.snapshot.diff-id"] == str(diff_ids[1])
    fs = env.snap.layer_dirs(top).upper
    assert sorted(os.listdir(os.path.join(fs, "etc"))) == ["a", "b"]
    assert Path(fs, "etc/a").read_bytes() == b"3"
    for layer in layers:  # progress in compressed bytes, ending at the blob's size
        assert seen[layer.digest][-1] == layer.size
    assert env.leftovers() == []


def test_present_layers_are_shared_not_redone(env: Env) -> None:
    base = env.layer([E("base", data=b"b")])
    mid = env.layer([E("mid", data=b"m")])
    app1 = env.layer([E("app1", data=b"1")])
    app2 = env.layer([E("app2", data=b"2")])
    unpack(env.content, env.snap, [base[0], mid[0], app1[0]], [base[1], mid[1], app1[1]],
           applier=env.applier)
    assert len(env.applier.applied) == 3
    unpacker = Unpacker(env.content, env.snap, env.applier)
    calls: list[Descriptor] = []
    unpacker([base[0], mid[0]], [base[1], mid[1]], lambda d, n: calls.append(d))
    assert len(env.applier.applied) == 3 and calls == []  # nothing to do
    top = unpacker([base[0], mid[0], app2[0]], [base[1], mid[1], app2[1]])
    assert env.applier.applied[3:] == [str(app2[1])]  # only the new layer
    assert env.snap.stat(top).parent == chain_ids([base[1], mid[1]])[-1]


def test_diff_id_mismatch_names_the_layer_and_leaves_nothing(env: Env) -> None:
    good = env.layer([E("ok", data=b"ok")])
    bad = env.layer([E("evil", data=b"x")])
    lying = Digest("sha256", hashlib.sha256(b"something else").hexdigest())
    with pytest.raises(InvalidArgument) as info:
        unpack(env.content, env.snap, [good[0], bad[0]], [good[1], lying], applier=env.applier)
    assert str(bad[0].digest) in str(info.value) and str(lying) in str(info.value)
    chains = chain_ids([good[1], lying])
    assert env.snap.stat(chains[0]).kind is Kind.COMMITTED  # the valid layer is kept, shareable
    with pytest.raises(NotFound):
        env.snap.stat(chains[1])
    assert env.leftovers() == []


def test_hostile_layer_is_refused_with_layer_and_entry(env: Env, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"safe")
    evil = env.layer([E("x", "symlink", link=str(tmp_path)), E("x/victim", data=b"pwned")])
    with pytest.raises(InvalidArgument) as info:
        unpack(env.content, env.snap, [evil[0]], [evil[1]], applier=env.applier)
    assert str(evil[0].digest) in str(info.value) and "x/victim" in str(info.value)
    assert victim.read_bytes() == b"safe"
    assert list(env.snap.walk()) == []
    assert os.listdir(os.path.join(env.snap.root, "snapshots")) == []


def test_missing_blob_and_bad_arguments(env: Env) -> None:
    layer, diff_id = env.layer([E("a")])
    env.content.delete(layer.digest)
    with pytest.raises(NotFound):
        unpack(env.content, env.snap, [layer], [diff_id], applier=env.applier)
    assert list(env.snap.walk()) == []
    with pytest.raises(InvalidArgument, match="diffIDs"):
        unpack(env.content, env.snap, [layer], [], applier=env.applier)


def test_a_concurrent_unpack_of_the_same_layer_is_tolerated(env: Env) -> None:
    layer, diff_id = env.layer([E("f", data=b"f")])
    chain = chain_ids([diff_id])[0]

    class Racing(CountingApplier):
        def apply(self, dirs: LayerDirs, blob: BinaryIO, media_type: str,
                  progress: BytesProgress | None = None) -> AppliedLayer:
            result = super().apply(dirs, blob, media_type, progress)
            # another unpack finishes the same layer while we are still busy
            env.snap.prepare("other", None)
            env.snap.commit(chain, "other")
            return result

    assert unpack(env.content, env.snap, [layer], [diff_id], applier=Racing()) == chain
    assert [i.key for i in env.snap.walk()] == [chain]


def test_two_threads_unpacking_the_same_image(env: Env) -> None:
    import threading

    layers = [env.layer([E(f"f{i}", data=os.urandom(50_000))]) for i in range(4)]
    descs, ids = [d for d, _ in layers], [i for _, i in layers]
    results: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(unpack(env.content, env.snap, descs, ids, applier=TarDiffer()))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert results == [chain_ids(ids)[-1]] * 2
    assert sorted(i.key for i in env.snap.walk()) == sorted(chain_ids(ids))  # one per layer
    assert len(os.listdir(os.path.join(env.snap.root, "snapshots"))) == 4  # no debris
