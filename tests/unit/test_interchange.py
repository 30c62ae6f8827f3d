"""save / load / import: formats, round trips, hostile archives, --change parsing."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skiff.core import images as im
from skiff.core.changes import apply_changes
from skiff.core.content import Descriptor, Digest
from skiff.core.reference import parse_reference
from skiff.errors import InvalidArgument, Unavailable
from skiff.plugins.content.local import LocalContentStore
from skiff.plugins.metadata.sqlite import SqliteMetadata
from skiff.services.images import ImageService
from skiff.services.interchange import Interchange


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Store:
    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.content = LocalContentStore(str(root / "content"))
        self.meta = SqliteMetadata(str(root / "meta.db"))
        self.images = ImageService(self.content, self.meta)
        self.x = Interchange(self.images, self.meta, tmpdir=str(root))

    def image(self, names: list[str], layers: list[dict[str, bytes]], cmd: str = "sh") -> Digest:
        descs, diff_ids = [], []
        for files in layers:
            tar = layer_tar(files)
            info = self.content.put(gzip.compress(tar, mtime=0))
            descs.append(Descriptor(im.OCI_LAYER_GZIP, info.digest, info.size))
            diff_ids.append(str(Digest.from_bytes(tar)))
        cfg = {"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
               "config": {"Cmd": [cmd]}, "rootfs": {"type": "layers", "diff_ids": diff_ids}}
        return self.images.store_image(cfg, descs, [parse_reference(n) for n in names]).id

    def blobs(self) -> set[Digest]:
        return {b.digest for b in self.content.walk()}


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    a, b = Store(tmp_path / "a"), Store(tmp_path / "b")
    yield a, b
    a.meta.close()
    b.meta.close()


def read_tar(data: bytes) -> dict[str, bytes]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for m in tf.getmembers():
            if m.isreg():
                f = tf.extractfile(m)
                assert f is not None
                out[m.name] = f.read()
    return out


def save(s: Store, *names: str) -> bytes:
    buf = io.BytesIO()
    s.x.save(list(names), buf)
    return buf.getvalue()


def test_save_writes_both_formats(stores: tuple[Store, Store]) -> None:
    a, _ = stores
    base = {"bin/sh": b"#!" * 100}
    iid = a.image(["busybox:1", "busybox:2"], [base, {"etc/x": b"x"}])
    a.image(["other:1"], [base], cmd="other")
    files = read_tar(save(a, "busybox"))  # repo alone: all its tags
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    manifest = json.loads(files["manifest.json"])
    assert len(manifest) == 1
    assert manifest[0]["Config"] == f"blobs/sha256/{iid.hex}"
    assert sorted(manifest[0]["RepoTags"]) == ["busybox:1", "busybox:2"]
    # layers are the uncompressed tars: their digests are the diffIDs
    cfg = json.loads(files[manifest[0]["Config"]])
    assert [f"blobs/sha256/{d[7:]}" for d in cfg["rootfs"]["diff_ids"]] == manifest[0]["Layers"]
    assert files[manifest[0]["Layers"][0]] == layer_tar(base)
    index = json.loads(files["index.json"])
    names = sorted(m["annotations"]["io.containerd.image.name"] for m in index["manifests"])
    assert names == ["docker.io/library/busybox:1", "docker.io/library/busybox:2"]
    oci_manifest = json.loads(files[f"blobs/sha256/{index['manifests'][0]['digest'][7:]}"])
    assert oci_manifest["config"]["digest"] == str(iid)
    assert [x["mediaType"] for x in oci_manifest["layers"]] == [im.OCI_LAYER] * 2
    assert json.loads(files["repositories"])["busybox"]["1"] == cfg["rootfs"]["diff_ids"][-1][7:]


def test_save_load_round_trip(stores: tuple[Store, Store]) -> None:
    a, b = stores
    shared = {"lib/libc.so": b"\x7fELF" * 500}
    i1 = a.image(["app:1"], [shared, {"app": b"1"}])
    i2 = a.image(["localhost:5000/tool:x"], [shared, {"tool": b"2"}], cmd="tool")
    i3 = a.image([], [{"anon": b"3"}], cmd="anon")
    data = save(a, "app:1", "localhost:5000/tool:x", str(i3))
    res = b.x.load(io.BytesIO(data))
    assert {img.id for img in res.images} == {i1, i2, i3}
    assert sorted(res.messages) == sorted([
        "Loaded image: app:1", "Loaded image: localhost:5000/tool:x", f"Loaded image ID: {i3}"])
    assert b.images.get("app:1").id == i1
    assert b.images.get("localhost:5000/tool:x").config.diff_ids == \
        a.images.get(str(i2)).config.diff_ids
    assert b.images.get(str(i3)).dangling
    # loading twice is idempotent
    b.x.load(io.BytesIO(data))
    assert len(b.images.images()) == 3
    # and what we load we can save again, identically
    assert read_tar(save(b, "app:1"))["manifest.json"] == read_tar(save(a, "app:1"))["manifest.json"]


def test_load_compressed_archive(stores: tuple[Store, Store]) -> None:
    a, b = stores
    iid = a.image(["z:1"], [{"f": b"z"}])
    res = b.x.load(io.BytesIO(gzip.compress(save(a, "z:1"))))
    assert res.images[0].id == iid


def legacy_archive(cfg_raw: bytes, layers: list[bytes], tags: list[str],
                   symlink_second: bool = False, gz_first: bool = False) -> bytes:
    """An archive as docker <= 24 writes it: <id>/layer.tar, <id>/json, <cfg>.json."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))

        paths: list[str] = []
        for i, layer in enumerate(layers):
            lid = hashlib.sha256(f"v1-{i}".encode()).hexdigest()
            d = tarfile.TarInfo(lid)
            d.type = tarfile.DIRTYPE
            tf.addfile(d)
            add(f"{lid}/VERSION", b"1.0")
            add(f"{lid}/json", json.dumps({"id": lid}).encode())
            if symlink_second and i == 1:
                link = tarfile.TarInfo(f"{lid}/layer.tar")
                link.type = tarfile.SYMTYPE
                link.linkname = f"../{paths[0].split('/')[0]}/layer.tar"
                tf.addfile(link)
            else:
                add(f"{lid}/layer.tar", gzip.compress(layer) if gz_first and i == 0 else layer)
            paths.append(f"{lid}/layer.tar")
        cfg_name = hashlib.sha256(cfg_raw).hexdigest() + ".json"
        add(cfg_name, cfg_raw)
        add("manifest.json", json.dumps([{"Config": cfg_name, "RepoTags": tags,
                                           "Layers": paths}]).encode())
        add("repositories", json.dumps({"legacy": {"1": "x"}}).encode())
    return buf.getvalue()


def legacy_config(layers: list[bytes]) -> bytes:
    return json.dumps({"architecture": "amd64", "os": "linux",
                       "rootfs": {"type": "layers", "diff_ids": [
                           str(Digest.from_bytes(x)) for x in layers]}}).encode()


def test_load_legacy_docker_save(stores: tuple[Store, Store]) -> None:
    _, b = stores
    l1 = layer_tar({"a": b"1"})
    cfg = legacy_config([l1, l1])  # the same layer twice: docker writes a symlink
    res = b.x.load(io.BytesIO(legacy_archive(cfg, [l1, l1], ["legacy:1"], symlink_second=True)))
    assert res.messages == ["Loaded image: legacy:1"]
    img = b.images.get("legacy:1")
    assert img.id == Digest.from_bytes(cfg)
    assert [x.digest for x in img.manifest.layers] == [Digest.from_bytes(l1)] * 2
    assert b.content.read(img.manifest.layers[0].digest) == l1


def test_load_legacy_with_compressed_layer(stores: tuple[Store, Store]) -> None:
    _, b = stores
    l1, l2 = layer_tar({"a": b"1"}), layer_tar({"b": b"2"})
    cfg = legacy_config([l1, l2])
    b.x.load(io.BytesIO(legacy_archive(cfg, [l1, l2], ["legacy:gz"], gz_first=True)))
    img = b.images.get("legacy:gz")
    assert img.manifest.layers[0].media_type == im.OCI_LAYER_GZIP
    assert img.manifest.layers[1].media_type == im.OCI_LAYER


def hostile(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return buf.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


@pytest.mark.parametrize(
    ("members", "needle"),
    [
        ([(member("/etc/passwd"), b"x")], "absolute path refused"),
        ([(member("a/../../x"), b"x")], "'..' in path refused"),
        ([(member("l", tarfile.SYMTYPE, "../../etc/shadow"), None)], "leaves the archive"),
        ([(member("l", tarfile.SYMTYPE, "/etc/shadow"), None)], "leaves the archive"),
        ([(member("dev", tarfile.CHRTYPE), None)], "refused"),
        ([(member("fifo", tarfile.FIFOTYPE), None)], "refused"),
        ([(member("manifest.json"), b'[{"Config": "missing.json", "Layers": []}]')],
         "'missing.json' is not in the archive"),
        ([(member("blobs/sha256/" + "a" * 64), b"not that")], "not the one its name says"),
        ([(member("manifest.json"), b"{")], "manifest.json is not valid JSON"),
        ([(member("other.txt"), b"x")], "neither manifest.json nor index.json"),
    ],
)
def test_hostile_archives_refused_store_unchanged(stores: tuple[Store, Store],
                                                  members: list[tuple[tarfile.TarInfo, bytes | None]],
                                                  needle: str) -> None:
    _, b = stores
    existing = b.image(["keep:1"], [{"k": b"k"}])
    before = b.blobs()
    with pytest.raises(InvalidArgument) as info:
        b.x.load(io.BytesIO(hostile(members)))
    assert re.search(needle, str(info.value)), str(info.value)
    assert [i.id for i in b.images.images()] == [existing]
    assert b.meta.list_leases() == []
    time.sleep(0.02)
    b.meta.gc(b.content)
    assert b.blobs() == before


def test_load_refuses_diff_id_mismatch(stores: tuple[Store, Store]) -> None:
    _, b = stores
    l1 = layer_tar({"a": b"1"})
    cfg = legacy_config([layer_tar({"a": b"tampered"})])
    with pytest.raises(InvalidArgument, match="diffID"):
        b.x.load(io.BytesIO(legacy_archive(cfg, [l1], ["bad:1"])))
    assert b.images.images() == []


def test_load_refuses_truncated_archive(stores: tuple[Store, Store]) -> None:
    a, b = stores
    a.image(["t:1"], [{"f": b"t" * 100_000}])
    data = save(a, "t:1")
    with pytest.raises(InvalidArgument, match=r"corrupt or truncated|not in the archive"):
        b.x.load(io.BytesIO(data[: len(data) // 2]))
    assert b.images.images() == []


def test_load_oci_layout_with_ref_names(stores: tuple[Store, Store]) -> None:
    a, b = stores
    iid = a.image(["x:1"], [{"f": b"x"}])
    files = read_tar(save(a, "x:1"))
    index = json.loads(files["index.json"])
    # an OCI-only archive (no manifest.json), named the way skopeo's oci-archive does
    index["manifests"][0]["annotations"] = {"org.opencontainers.image.ref.name": "myrepo/x:2"}
    files["index.json"] = json.dumps(index).encode()
    del files["manifest.json"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    res = b.x.load(io.BytesIO(buf.getvalue()))
    assert res.messages == ["Loaded image: myrepo/x:2"]
    assert b.images.get("myrepo/x:2").id == iid


def test_import_rootfs(stores: tuple[Store, Store]) -> None:
    _, b = stores
    rootfs = layer_tar({"bin/hello": b"hi", "etc/motd": b"welcome"})
    img = b.x.import_rootfs(io.BytesIO(gzip.compress(rootfs)),
                            names=[parse_reference("imported:1")],
                            changes=["CMD [\"/bin/hello\"]", "ENV A=1 B=\"two words\"",
                                     "WORKDIR /srv", "EXPOSE 80 53/udp", "LABEL k=v",
                                     "USER nobody", "VOLUME /data", "STOPSIGNAL SIGTERM",
                                     "ENTRYPOINT /bin/sh"],
                            message="from a test", created=1_700_000_000.5)
    assert b.images.get("imported:1").id == img.id
    assert img.config.diff_ids == [Digest.from_bytes(rootfs)]
    assert b.content.read(img.manifest.layers[0].digest) == rootfs
    c = img.config.config
    assert c["Cmd"] == ["/bin/hello"] and c["Entrypoint"] == ["/bin/sh", "-c", "/bin/sh"]
    assert c["Env"] == ["A=1", "B=two words"] and c["WorkingDir"] == "/srv"
    assert c["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert c["Labels"] == {"k": "v"} and c["User"] == "nobody" and c["Volumes"] == {"/data": {}}
    assert c["StopSignal"] == "SIGTERM"
    assert img.config.created == "2023-11-14T22:13:20.500000000Z"
    assert b.images.inspect("imported:1")["Comment"] == "from a test"
    hist = b.images.history("imported:1")
    assert len(hist) == 1 and hist[0]["Comment"] == "from a test"
    # plain tar, no name: a dangling image
    img2 = b.x.import_rootfs(io.BytesIO(layer_tar({"x": b"y"})))
    assert b.images.get(str(img2.id)).dangling
    assert b.images.inspect(str(img2.id))["Comment"] == "Imported from -"


def test_import_refuses_bad_input(stores: tuple[Store, Store]) -> None:
    _, b = stores
    with pytest.raises(InvalidArgument, match="not a tar"):
        b.x.import_rootfs(io.BytesIO(b"this is not a tar file" * 100))
    with pytest.raises(InvalidArgument, match="decompress"):
        b.x.import_rootfs(io.BytesIO(gzip.compress(layer_tar({"r": os.urandom(100_000)}))[:3000]))
    with pytest.raises(InvalidArgument, match="RUN is not a valid change command"):
        b.x.import_rootfs(io.BytesIO(layer_tar({})), changes=["RUN rm -rf /"])
    assert b.images.images() == []
    assert b.meta.list_leases() == []


@pytest.mark.parametrize(
    ("changes", "want"),
    [
        (['CMD ["a", "b"]'], {"Cmd": ["a", "b"]}),
        (["CMD echo hi"], {"Cmd": ["/bin/sh", "-c", "echo hi"]}),
        (["cmd [not json"], {"Cmd": ["/bin/sh", "-c", "[not json"]}),
        (["ENV PATH /usr/bin:/bin"], {"Env": ["PATH=/usr/bin:/bin"]}),
        (["ENV A=1", "ENV A=2"], {"Env": ["A=2"]}),
        (['LABEL "a b"="c d" e=f'], {"Labels": {"a b": "c d", "e": "f"}}),
        (["EXPOSE 8000-8010/tcp"], {"ExposedPorts": {"8000-8010/tcp": {}}}),
        (['VOLUME ["/a", "/b"]'], {"Volumes": {"/a": {}, "/b": {}}}),
        (["VOLUME /a /b"], {"Volumes": {"/a": {}, "/b": {}}}),
        (["USER 1000:1000"], {"User": "1000:1000"}),
        (["WORKDIR\t/x"], {"WorkingDir": "/x"}),
        ([""], {}),
    ],
)
def test_apply_changes(changes: list[str], want: dict[str, Any]) -> None:
    assert apply_changes({}, changes) == want


@pytest.mark.parametrize(
    "change",
    ["FROM scratch", "ENV", "ENV A", "LABEL", "EXPOSE", "EXPOSE 99999", "EXPOSE 80/bogus",
     "USER", "CMD", "LABEL a='unterminated"],
)
def test_apply_changes_errors(change: str) -> None:
    with pytest.raises(InvalidArgument):
        apply_changes({}, [change])


def test_apply_changes_keeps_existing() -> None:
    base = {"Env": ["A=1", "B=2"], "Labels": {"x": "1"}, "Cmd": ["old"]}
    out = apply_changes(base, ["ENV B=3", "LABEL y=2"])
    assert out["Env"] == ["A=1", "B=3"] and out["Labels"] == {"x": "1", "y": "2"}
    assert base["Env"] == ["A=1", "B=2"]  # input untouched


def test_zstd_layers_with_the_diff_plugins_decompressor(tmp_path: Path) -> None:
    zstandard = pytest.importorskip("zstandard", reason="zstandard not installed")
    from skiff.plugins.diff.compression import open_layer

    s = Store(tmp_path / "z")
    s.x.decompress = open_layer
    tar = layer_tar({"z": b"zstd layer" * 1000})
    info = s.content.put(zstandard.ZstdCompressor().compress(tar))
    cfg = {"architecture": "amd64", "os": "linux",
           "rootfs": {"type": "layers", "diff_ids": [str(Digest.from_bytes(tar))]}}
    img = s.images.store_image(cfg, [Descriptor(im.OCI_LAYER_ZSTD, info.digest, info.size)],
                               [parse_reference("zz:1")])
    files = read_tar(save(s, "zz:1"))
    assert files[f"blobs/sha256/{img.config.diff_ids[0].hex}"] == tar
    # without a zstd-capable decompressor the error says what is missing
    plain = Interchange(s.images, s.meta)
    with pytest.raises(Unavailable, match="no decompressor"):
        plain.save(["zz:1"], io.BytesIO())
    s.meta.close()


def test_corrupt_layer_is_named_on_save(stores: tuple[Store, Store]) -> None:
    a, _ = stores
    tar = layer_tar({"f": b"q" * 10_000})
    bad = gzip.compress(tar)[:-20] + b"\0" * 20  # trailer and tail of the stream destroyed
    info = a.content.put(bad)
    cfg = {"architecture": "amd64", "os": "linux",
           "rootfs": {"type": "layers", "diff_ids": [str(Digest.from_bytes(tar))]}}
    a.images.store_image(cfg, [Descriptor(im.OCI_LAYER_GZIP, info.digest, info.size)],
                         [parse_reference("corrupt:1")])
    with pytest.raises(InvalidArgument, match=str(info.digest)):
        a.x.save(["corrupt:1"], io.BytesIO())
