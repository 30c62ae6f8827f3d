"""ImageService with real snapshotters: unpacked sizes, disk usage and snapshot collection.

Uses the layers agent's snapshotters, tar applier and unpack service on a busybox image that
``import_rootfs`` makes, plus a second image sharing its base layer.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from skiff.core.images import chain_ids
from skiff.core.reference import parse_reference
from skiff.core.snapshots import Kind, Snapshotter
from skiff.devtools.images import tar_tree
from skiff.errors import InvalidArgument
from skiff.plugins.content.local import LocalContentStore
from skiff.plugins.diff.tar import TarDiffer
from skiff.plugins.metadata.sqlite import SqliteMetadata
from skiff.plugins.snapshots.copy import CopySnapshotter
from skiff.plugins.snapshots.overlay import OverlaySnapshotter, overlay_supported
from skiff.services.images import Image, ImageService
from skiff.services.interchange import Interchange
from skiff.services.unpack import Unpacker


def small_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


SNAPSHOTTERS: dict[str, Callable[[str], Snapshotter]] = {
    "overlay": OverlaySnapshotter,
    "copy": CopySnapshotter,
}


class World:
    def __init__(self, root: Path, kind: str) -> None:
        self.content = LocalContentStore(str(root / "content"))
        self.meta = SqliteMetadata(str(root / "meta.db"))
        self.snap = SNAPSHOTTERS[kind](str(root / "snapshots"))
        self.users: dict[str, list[tuple[str, bool]]] = {}
        self.images = ImageService(self.content, self.meta, self.snap,
                                   in_use=lambda i: self.users.get(i, []))
        self.x = Interchange(self.images, self.meta)
        self.unpack = Unpacker(self.content, self.snap, TarDiffer())

    def unpacked(self, img: Image) -> str:
        return self.unpack(img.manifest.layers, img.config.diff_ids)

    def committed(self) -> set[str]:
        return {i.key for i in self.snap.walk() if i.kind is Kind.COMMITTED}


@pytest.fixture(params=sorted(SNAPSHOTTERS))
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    if request.param == "overlay" and not overlay_supported():
        pytest.skip("kernel without overlayfs")
    w = World(tmp_path, request.param)
    yield w
    for info in list(w.snap.walk()):  # leave nothing behind even when a test failed
        if info.kind is not Kind.COMMITTED:
            w.snap.remove(info.key)
    w.meta.close()


def test_sizes_gc_and_shared_layers(world: World, busybox_rootfs: Path) -> None:
    base = world.x.import_rootfs(io.BytesIO(tar_tree(busybox_rootfs)),
                                 names=[parse_reference("bb:1")])
    # a second image: busybox's layer plus one of its own
    extra = small_tar({"etc/app.conf": b"x" * 50_000})
    top = world.x.import_rootfs(io.BytesIO(extra), names=[parse_reference("tmp:1")])
    cfg = dict(base.config.raw_json)
    cfg["rootfs"] = {"type": "layers",
                     "diff_ids": [str(base.config.diff_ids[0]), str(top.config.diff_ids[0])]}
    cfg.pop("history", None)
    app = world.images.store_image(cfg, [base.manifest.layers[0], top.manifest.layers[0]],
                                   [parse_reference("app:1")])
    world.images.remove("tmp:1")
    world.unpacked(base)
    world.unpacked(app)
    app_chain = chain_ids(app.config.diff_ids)
    assert world.committed() == set(app_chain)

    listing = {e["RepoTags"][0]: e for e in world.images.list_images()}
    base_size = world.snap.usage(app_chain[0])[0]
    # unpacked sizes, not compressed ones: the base layer's tree on disk
    assert listing["bb:1"]["Size"] == base_size
    app_size = listing["app:1"]["Size"]
    assert base_size + 50_000 <= app_size < base_size + 50_000 + 64 * 1024
    df = world.images.disk_usage()
    assert df["LayersSize"] == app_size  # the base layer counted once
    assert {e["SharedSize"] for e in df["Images"]} == {base_size}
    assert world.images.inspect("app:1")["GraphDriver"]["Data"]["UpperDir"]

    # a container on top of app keeps its snapshots even after a forced rmi
    world.snap.prepare("container-rw", app_chain[-1])
    world.users[str(app.id)] = [("c" * 64, False)]
    time.sleep(0.02)
    world.images.remove("app:1", force=True)
    assert world.committed() == set(app_chain)  # image dangling, still in use
    world.snap.remove("container-rw")
    world.users.clear()
    time.sleep(0.02)
    res = world.images.prune()
    assert res["ImagesDeleted"] == [{"Deleted": str(app.id)}]
    assert res["SpaceReclaimed"] >= 50_000
    assert world.committed() == {app_chain[0]}  # busybox still needs its layer
    world.images.remove("bb:1")
    assert world.committed() == set()
    assert list(world.content.walk()) == []


def test_load_unpacks_and_refuses_hostile_layers(world: World, tmp_path: Path) -> None:
    good = small_tar({"etc/hostname": b"skiff\n"})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        entry = tarfile.TarInfo("../../../escaped-by-layer")
        entry.size = 4
        tf.addfile(entry, io.BytesIO(b"evil"))
    evil = buf.getvalue()
    src = World(tmp_path / "src", "copy")
    imgs = {}
    for name, layer in (("good:1", good), ("evil:1", evil)):
        imgs[name] = src.x.import_rootfs(io.BytesIO(layer), names=[parse_reference(name)])
    archives = {}
    for name in imgs:
        out = io.BytesIO()
        src.x.save([name], out)
        archives[name] = out.getvalue()
    src.meta.close()

    world.x.unpack = world.unpack
    res = world.x.load(io.BytesIO(archives["good:1"]))
    assert res.messages == ["Loaded image: good:1"]
    key = chain_ids(imgs["good:1"].config.diff_ids)[-1]
    assert world.committed() == {key}
    with pytest.raises(InvalidArgument) as info:
        world.x.load(io.BytesIO(archives["evil:1"]))
    assert "escaped-by-layer" in str(info.value)
    assert [i.repo_tags for i in world.images.images()] == [["good:1"]]
    assert world.committed() == {key}
    assert not list(tmp_path.rglob("escaped-by-layer"))
    assert not list(Path("/tmp").glob("escaped-by-layer"))
    assert world.meta.list_leases() == []
