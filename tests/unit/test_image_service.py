"""ImageService over the real local content store and SQLite metadata."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from skiff.core import images as im
from skiff.core.content import Descriptor, Digest
from skiff.core.reference import parse_reference
from skiff.errors import Conflict, InvalidArgument, NotFound
from skiff.plugins.content.local import LocalContentStore
from skiff.plugins.metadata.sqlite import SqliteMetadata
from skiff.services.images import DANGLING_PREFIX, PULL_SOURCE_LABEL, ImageService, parse_time


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class World:
    def __init__(self, root: Path) -> None:
        self.content = LocalContentStore(str(root / "content"))
        self.meta = SqliteMetadata(str(root / "meta.db"))
        self.users: dict[str, list[tuple[str, bool]]] = {}
        self.svc = ImageService(self.content, self.meta,
                                in_use=lambda iid: self.users.get(iid, []))

    def layer(self, files: dict[str, bytes]) -> tuple[Descriptor, Digest]:
        tar = layer_tar(files)
        gz = gzip.compress(tar, mtime=0)
        info = self.content.put(gz)
        return Descriptor(im.OCI_LAYER_GZIP, info.digest, info.size), Digest.from_bytes(tar)

    def image(self, names: Sequence[str], layers: Sequence[tuple[Descriptor, Digest]],
              created: str = "2024-05-01T10:00:00.123456789Z", labels: dict[str, str] | None = None,
              history: list[dict[str, Any]] | None = None, cmd: str = "sh") -> Digest:
        cfg: dict[str, Any] = {
            "architecture": "amd64", "os": "linux", "created": created, "author": "tester",
            "config": {"Cmd": [cmd], "Env": ["PATH=/bin"], "Labels": labels},
            "rootfs": {"type": "layers", "diff_ids": [str(d) for _, d in layers]},
        }
        if history is not None:
            cfg["history"] = history
        img = self.svc.store_image(cfg, [d for d, _ in layers],
                                   [parse_reference(n) for n in names])
        return img.id


@pytest.fixture
def w(tmp_path: Path) -> Iterator[World]:
    world = World(tmp_path)
    yield world
    world.meta.close()


def blob_digests(w: World) -> set[Digest]:
    return {b.digest for b in w.content.walk()}


def test_list_fields(w: World) -> None:
    base = w.layer({"bin/sh": b"x" * 100})
    app = w.layer({"app": b"y" * 50})
    iid = w.image(["busybox:1", "busybox:latest"], [base, app], labels={"a": "b"})
    out = w.svc.list_images()
    assert len(out) == 1
    e = out[0]
    assert e["Id"] == str(iid)
    assert e["RepoTags"] == ["busybox:1", "busybox:latest"]
    assert e["RepoDigests"] == []
    assert e["Created"] == int(parse_time("2024-05-01T10:00:00Z").timestamp())  # type: ignore[union-attr]
    assert e["Size"] == base[0].size + app[0].size == e["VirtualSize"]
    assert e["Labels"] == {"a": "b"}
    assert e["ParentId"] == "" and e["SharedSize"] == -1 and e["Containers"] == -1
    # the ID is the config digest
    cfg_digest = w.svc.get("busybox:1").manifest.config.digest
    assert iid == cfg_digest


def test_lookup(w: World) -> None:
    base = w.layer({"f": b"1"})
    iid = w.image(["docker.io/library/alpha:1", "localhost:5000/beta"], [base])
    assert w.svc.get("alpha:1").id == iid
    assert w.svc.get("docker.io/library/alpha:1").id == iid
    assert w.svc.get("localhost:5000/beta:latest").id == iid
    assert w.svc.get(str(iid)).id == iid
    assert w.svc.get(iid.hex).id == iid
    assert w.svc.get(iid.hex[:12]).id == iid
    assert w.svc.get("sha256:" + iid.hex[:5]).id == iid
    with pytest.raises(NotFound, match="alpha:2"):
        w.svc.get("alpha:2")
    with pytest.raises(NotFound):
        w.svc.get("0" * 64 if not iid.hex.startswith("0") else "1" * 64)
    with pytest.raises(InvalidArgument):
        w.svc.get("Bad Name")


def test_lookup_by_digest(w: World) -> None:
    iid = w.image(["repo:t"], [w.layer({"f": b"1"})])
    img = w.svc.get(str(iid))
    target = img.records[0].target
    # an image pulled by tag is also found as repo@<manifest digest>
    assert w.svc.get(f"repo@{target.digest}").id == iid
    with pytest.raises(NotFound):
        w.svc.get(f"other@{target.digest}")
    # a record named by digest
    w.meta.put_image(f"docker.io/library/pinned@{target.digest}", target)
    got = w.svc.get(f"pinned@{target.digest}")
    assert got.id == iid
    assert got.repo_digests == [f"pinned@{target.digest}"]


def test_repo_digests_of_pulled_images(w: World) -> None:
    iid = w.image(["repo:t"], [w.layer({"f": b"1"})])
    rec = w.meta.get_image("docker.io/library/repo:t")
    w.meta.put_image(rec.name, rec.target, {PULL_SOURCE_LABEL: "docker.io/library/repo"})
    assert w.svc.inspect(str(iid))["RepoDigests"] == [f"repo@{rec.target.digest}"]


def test_moving_a_pulled_name_drops_its_source(w: World) -> None:
    """The source label describes the image that was pulled, not the name: a tag moved onto
    a local image must not claim a RepoDigest for it (nor keep one for the old target)."""
    pulled = w.image(["repo:t"], [w.layer({"f": b"1"})])
    rec = w.meta.get_image("docker.io/library/repo:t")
    w.meta.put_image(rec.name, rec.target, {PULL_SOURCE_LABEL: "docker.io/library/repo"})
    local = w.image(["local:1"], [w.layer({"f": b"2"})])
    w.svc.tag("local:1", "repo:t")
    assert w.svc.inspect("repo:t")["Id"] == str(local)
    assert w.svc.inspect("repo:t")["RepoDigests"] == []
    assert w.meta.get_image("docker.io/library/repo:t").labels == {}
    assert w.svc.inspect(str(pulled))["RepoTags"] == []  # kept, dangling
    # re-pointing a name at the target it already has keeps its labels
    w.meta.put_image(rec.name, w.meta.get_image(rec.name).target, {"k": "v"})
    w.svc.tag("local:1", "repo:t")
    assert w.meta.get_image("docker.io/library/repo:t").labels == {"k": "v"}


def test_ambiguous_short_id(w: World) -> None:
    ids = [w.image([f"img{i}:1"], [w.layer({"f": str(i).encode()})], cmd=str(i))
           for i in range(40)]
    # with 40 images some pair shares its first hex digit
    firsts = [i.hex[0] for i in ids]
    dup = next(c for c in firsts if firsts.count(c) > 1)
    with pytest.raises(InvalidArgument, match="ambiguous"):
        w.svc.get(dup)


def test_inspect(w: World) -> None:
    base = w.layer({"f": b"1"})
    iid = w.image(["x:1"], [base], labels={"l": "v"})
    out = w.svc.inspect("x:1")
    assert out["Id"] == str(iid)
    assert out["RepoTags"] == ["x:1"]
    assert out["Created"] == "2024-05-01T10:00:00.123456789Z"
    assert out["Author"] == "tester"
    assert out["Config"]["Cmd"] == ["sh"] and out["Config"]["Labels"] == {"l": "v"}
    assert out["Architecture"] == "amd64" and out["Os"] == "linux"
    assert out["RootFS"] == {"Type": "layers", "Layers": [str(base[1])]}
    assert out["Size"] == base[0].size
    assert out["Parent"] == "" and out["Comment"] == "" and out["DockerVersion"] == ""
    assert out["GraphDriver"]["Name"] == "overlayfs"
    last = parse_time(out["Metadata"]["LastTagTime"])
    assert last is not None and abs(last.timestamp() - time.time()) < 60


def test_history(w: World) -> None:
    l1, l2 = w.layer({"a": b"1" * 10}), w.layer({"b": b"2" * 20})
    hist: list[dict[str, Any]] = [
        {"created": "2024-01-01T00:00:00Z", "created_by": "ADD rootfs /"},
        {"created": "2024-01-02T00:00:00Z", "created_by": "ENV X=1", "empty_layer": True},
        {"created": "2024-01-03T00:00:00Z", "created_by": "RUN build", "comment": "c"},
    ]
    iid = w.image(["h:1"], [l1, l2], history=hist)
    out = w.svc.history("h:1")
    assert [h["CreatedBy"] for h in out] == ["RUN build", "ENV X=1", "ADD rootfs /"]
    assert [h["Size"] for h in out] == [l2[0].size, 0, l1[0].size]
    assert out[0]["Id"] == str(iid) and out[0]["Tags"] == ["h:1"]
    assert [h["Id"] for h in out[1:]] == ["<missing>", "<missing>"]
    assert out[2]["Created"] == int(parse_time("2024-01-01T00:00:00Z").timestamp())  # type: ignore[union-attr]
    assert out[0]["Comment"] == "c"
    # without history: one entry per layer
    w.image(["nohist:1"], [l1, l2], cmd="other")
    assert len(w.svc.history("nohist:1")) == 2


def test_tag_and_retag_leaves_dangling(w: World) -> None:
    a = w.image(["a:1"], [w.layer({"f": b"a"})])
    b = w.image(["b:1"], [w.layer({"f": b"b"})])
    ref = w.svc.tag("a:1", "myrepo")
    assert str(ref) == "docker.io/library/myrepo:latest"
    assert w.svc.get("myrepo").id == a
    assert w.svc.get(str(a)).repo_tags == ["a:1", "myrepo:latest"]
    with pytest.raises(InvalidArgument, match="digest"):
        w.svc.tag("a:1", f"x@sha256:{'a' * 64}")
    with pytest.raises(NotFound):
        w.svc.tag("nope:1", "x")
    # moving b's only tag onto a keeps b, dangling
    w.svc.tag("a:1", "b:1")
    assert w.svc.get("b:1").id == a
    dangling = w.svc.list_images(dangling=True)
    assert [e["Id"] for e in dangling] == [str(b)]
    assert dangling[0]["RepoTags"] == []
    assert w.svc.get(str(b)).dangling
    # tagging the dangling image again makes it a normal image
    w.svc.tag(str(b), "b:2")
    assert w.svc.list_images(dangling=True) == []
    assert not any(r.name.startswith(DANGLING_PREFIX) for r in w.meta.list_images())


def test_list_filters(w: World) -> None:
    w.image(["web/app:1"], [w.layer({"f": b"1"})], labels={"tier": "web"})
    w.image(["db:1"], [w.layer({"f": b"2"})], labels={"tier": "db"})
    assert [e["RepoTags"] for e in w.svc.list_images(reference=["web/*"])] == [["web/app:1"]]
    assert [e["RepoTags"] for e in w.svc.list_images(reference=["db:1"])] == [["db:1"]]
    assert [e["RepoTags"] for e in w.svc.list_images(label=["tier=db"])] == [["db:1"]]
    assert len(w.svc.list_images(label=["tier"])) == 2
    assert w.svc.list_images(label=["tier=none"]) == []


def test_remove_untag_then_delete_and_gc(w: World) -> None:
    shared = w.layer({"base": b"shared" * 100})
    a = w.image(["a:1", "a:2"], [shared, w.layer({"a": b"a"})])
    b = w.image(["b:1"], [shared, w.layer({"b": b"b"})])
    time.sleep(0.02)  # GC spares blobs committed after it starts
    assert w.svc.remove("a:1") == [{"Untagged": "a:1"}]
    assert w.svc.get("a:2").id == a
    before = blob_digests(w)
    out = w.svc.remove("a:2")
    assert out == [{"Untagged": "a:2"}, {"Deleted": str(a)}]
    after = blob_digests(w)
    removed = before - after
    # manifest, config and the private layer went; the shared layer stayed for b
    assert len(removed) == 3
    assert shared[0].digest in after
    assert w.svc.get("b:1").id == b
    with pytest.raises(NotFound):
        w.svc.get(str(a))


def test_remove_conflicts(w: World) -> None:
    iid = w.image(["c:1"], [w.layer({"f": b"c"})])
    w.users[str(iid)] = [("f00d" * 16, False)]
    with pytest.raises(Conflict, match=r'unable to remove repository reference "c:1" \(must force\)'):
        w.svc.remove("c:1")
    with pytest.raises(Conflict, match=r"must be forced.*stopped container f00df00df00d"):
        w.svc.remove(str(iid))
    w.users[str(iid)] = [("beef" * 16, True)]
    with pytest.raises(Conflict, match=r"cannot be forced.*running container beefbeefbeef"):
        w.svc.remove(str(iid), force=True)
    # force by name with a container: untagged, image kept (dangling) for the container
    assert w.svc.remove("c:1", force=True) == [{"Untagged": "c:1"}]
    assert w.svc.get(str(iid)).dangling
    # stopped container + force by ID: deleted
    w.users[str(iid)] = [("f00d" * 16, False)]
    assert w.svc.remove(iid.hex[:12], force=True) == [{"Deleted": str(iid)}]
    assert w.svc.list_images() == []


def test_remove_by_id_multiple_repositories(w: World) -> None:
    iid = w.image(["r1:1", "r2:1"], [w.layer({"f": b"m"})])
    with pytest.raises(Conflict, match="referenced in multiple repositories"):
        w.svc.remove(str(iid))
    out = w.svc.remove(str(iid), force=True)
    assert out == [{"Untagged": "r1:1"}, {"Untagged": "r2:1"}, {"Deleted": str(iid)}]
    # same repository, two tags: no force needed
    iid = w.image(["r3:1", "r3:2"], [w.layer({"f": b"n"})])
    assert w.svc.remove(str(iid))[-1] == {"Deleted": str(iid)}


def test_prune(w: World) -> None:
    used = w.image(["used:1"], [w.layer({"f": b"u"})])
    unused = w.image(["unused:1"], [w.layer({"f": b"x"})])
    old = w.image(["old:1"], [w.layer({"f": b"o" * 1000})])
    w.svc.tag(str(used), "old:1")  # old becomes dangling
    w.users[str(used)] = [("c" * 64, False)]
    o = w.svc.get(str(old))
    old_bytes = o.manifest_desc.size + o.manifest.config.size + o.manifest.layers[0].size
    time.sleep(0.02)
    res = w.svc.prune()
    assert res["ImagesDeleted"] == [{"Deleted": str(old)}]
    assert res["SpaceReclaimed"] == old_bytes
    assert {e["Id"] for e in w.svc.list_images()} == {str(used), str(unused)}
    assert w.svc.prune()["ImagesDeleted"] is None
    res = w.svc.prune(all_images=True)
    assert res["ImagesDeleted"] == [{"Untagged": "unused:1"}, {"Deleted": str(unused)}]
    assert [e["Id"] for e in w.svc.list_images()] == [str(used)]


def test_disk_usage_counts_shared_layers_once(w: World) -> None:
    shared = w.layer({"base": b"s" * 5000})
    l1 = w.layer({"one": b"1" * 300})
    l2 = w.layer({"two": b"2" * 700})
    i1 = w.image(["one:1"], [shared, l1])
    i2 = w.image(["two:1"], [shared, l2])
    w.users[str(i1)] = [("c" * 64, True)]
    df = w.svc.disk_usage()
    assert df["LayersSize"] == shared[0].size + l1[0].size + l2[0].size
    by_id = {e["Id"]: e for e in df["Images"]}
    assert by_id[str(i1)]["Size"] == shared[0].size + l1[0].size
    assert by_id[str(i1)]["SharedSize"] == shared[0].size
    assert by_id[str(i2)]["SharedSize"] == shared[0].size
    assert by_id[str(i1)]["Containers"] == 1 and by_id[str(i2)]["Containers"] == 0
    shared_list = {e["Id"]: e["SharedSize"] for e in w.svc.list_images(shared_size=True)}
    assert shared_list == {str(i1): shared[0].size, str(i2): shared[0].size}


def test_index_targets_resolve_for_the_platform(w: World) -> None:
    amd = w.image(["tmp-amd:1"], [w.layer({"f": b"amd"})])
    arm_cfg = {"architecture": "arm64", "os": "linux",
               "rootfs": {"type": "layers", "diff_ids": []}}
    arm = w.svc.store_image(arm_cfg, [], [parse_reference("tmp-arm:1")])
    amd_m = w.svc.get(str(amd)).manifest_desc
    idx_raw = im.index_json([
        Descriptor(amd_m.media_type, amd_m.digest, amd_m.size,
                   platform={"os": "linux", "architecture": "amd64"}),
        Descriptor(arm.manifest_desc.media_type, arm.manifest_desc.digest, arm.manifest_desc.size,
                   platform={"os": "linux", "architecture": "arm64"}),
    ])
    info = w.content.put(idx_raw)
    w.meta.put_image("docker.io/library/multi:1", Descriptor(im.OCI_INDEX, info.digest, info.size))
    assert w.svc.get("multi:1").id == amd
    assert "multi:1" in w.svc.get(str(amd)).repo_tags


def test_store_image_validates(w: World) -> None:
    with pytest.raises(InvalidArgument, match="rootfs"):
        w.svc.store_image({"architecture": "amd64", "os": "linux"}, [])
    ghost = Descriptor(im.OCI_LAYER, Digest("sha256", "9" * 64), 1)
    cfg = {"architecture": "amd64", "os": "linux",
           "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "9" * 64]}}
    with pytest.raises(NotFound, match="9999"):
        w.svc.store_image(cfg, [ghost])
    # a nameless image is dangling, not lost
    img = w.svc.store_image(cfg | {"rootfs": {"type": "layers", "diff_ids": []}}, [])
    assert w.svc.get(str(img.id)).dangling
    assert json.loads(w.content.read(img.manifest.config.digest))["os"] == "linux"


def test_remove_by_digest_of_a_tagged_image_names_the_tags(w: World) -> None:
    iid = w.image(["dg:1"], [w.layer({"f": b"d"})])
    target = w.svc.get("dg:1").records[0].target
    with pytest.raises(NotFound, match="known as dg:1"):
        w.svc.remove(f"dg@{target.digest}")
    assert w.svc.get("dg:1").id == iid
    # a record named by digest is removed like a tag
    w.meta.put_image(f"docker.io/library/dg@{target.digest}", target)
    assert w.svc.remove(f"dg@{target.digest}") == [{"Untagged": f"dg@{target.digest}"}]
    assert w.svc.get("dg:1").id == iid


def test_before_since_until_filters(w: World) -> None:
    old = w.image(["old:1"], [w.layer({"f": b"1"})], created="2020-01-01T00:00:00Z")
    mid = w.image(["mid:1"], [w.layer({"f": b"2"})], created="2022-01-01T00:00:00Z")
    new = w.image(["new:1"], [w.layer({"f": b"3"})], created="2024-01-01T00:00:00Z")
    assert [e["Id"] for e in w.svc.list_images(before="mid:1")] == [str(old)]
    assert [e["Id"] for e in w.svc.list_images(since="mid:1")] == [str(new)]
    assert [e["Id"] for e in w.svc.list_images(since="old:1", before="new:1")] == [str(mid)]
    with pytest.raises(NotFound):
        w.svc.list_images(before="nope:1")
    cutoff = parse_time("2023-01-01T00:00:00Z").timestamp()  # type: ignore[union-attr]
    res = w.svc.prune(all_images=True, until=cutoff)
    assert {d["Deleted"] for d in res["ImagesDeleted"] if "Deleted" in d} == {str(old), str(mid)}
    assert [e["Id"] for e in w.svc.list_images()] == [str(new)]
