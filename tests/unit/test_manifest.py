"""Manifest/index/config parsing, platform selection and chain IDs."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from skiff.core import images as im
from skiff.core.content import Descriptor, Digest
from skiff.errors import InvalidArgument, NotFound


def dg(c: str) -> str:
    return "sha256:" + c * 64


def manifest_obj(mt: str = im.OCI_MANIFEST, **extra: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt,
        "config": {"mediaType": im.OCI_CONFIG, "digest": dg("c"), "size": 10},
        "layers": [
            {"mediaType": im.OCI_LAYER_GZIP, "digest": dg("1"), "size": 100},
            {"mediaType": im.OCI_LAYER_ZSTD, "digest": dg("2"), "size": 200},
        ],
    }
    obj.update(extra)
    return obj


def plat_entry(arch: str, variant: str | None = None, os: str = "linux", c: str = "a",
               mt: str = im.OCI_MANIFEST) -> dict[str, Any]:
    p: dict[str, Any] = {"os": os, "architecture": arch}
    if variant:
        p["variant"] = variant
    return {"mediaType": mt, "digest": dg(c), "size": 5, "platform": p}


def test_parse_oci_manifest() -> None:
    raw = json.dumps(manifest_obj(annotations={"a": "b"})).encode()
    m = im.parse_manifest(raw, im.OCI_MANIFEST)
    assert isinstance(m, im.Manifest)
    assert m.config.digest == Digest.parse(dg("c"))
    assert [x.size for x in m.layers] == [100, 200]
    assert m.annotations == {"a": "b"}
    assert m.raw == raw
    assert m.digest == Digest("sha256", hashlib.sha256(raw).hexdigest())
    m.validate_image()


def test_parse_docker_manifest_and_list() -> None:
    obj = manifest_obj(im.DOCKER_MANIFEST)
    obj["config"]["mediaType"] = im.DOCKER_CONFIG
    obj["layers"][0]["mediaType"] = im.DOCKER_LAYER_GZIP
    obj["layers"][1]["mediaType"] = im.DOCKER_LAYER
    m = im.parse_manifest(json.dumps(obj).encode())
    assert isinstance(m, im.Manifest) and m.media_type == im.DOCKER_MANIFEST
    m.validate_image()
    lst = {"schemaVersion": 2, "mediaType": im.DOCKER_MANIFEST_LIST,
           "manifests": [plat_entry("amd64", mt=im.DOCKER_MANIFEST)]}
    idx = im.parse_manifest(json.dumps(lst).encode(), im.DOCKER_MANIFEST_LIST)
    assert isinstance(idx, im.Index) and len(idx.manifests) == 1


def test_oci_without_media_type_is_inferred() -> None:
    obj = manifest_obj()
    del obj["mediaType"]
    assert isinstance(im.parse_manifest(json.dumps(obj).encode()), im.Manifest)
    idx = {"schemaVersion": 2, "manifests": []}
    assert isinstance(im.parse_manifest(json.dumps(idx).encode()), im.Index)


@pytest.mark.parametrize(
    ("raw", "mt", "needle"),
    [
        (b"not json", None, "not valid JSON"),
        (b"[1,2]", None, "not a JSON object"),
        (b"\xff\xfe", None, "not valid JSON"),
        (json.dumps({"schemaVersion": 1, "name": "x", "fsLayers": []}).encode(), None, "schema1"),
        (b"{}", im.DOCKER_SCHEMA1_SIGNED, "schema1"),
        (json.dumps(manifest_obj("application/x-weird")).encode(), None, "unsupported media type"),
        (json.dumps(manifest_obj()).encode(), "application/x-weird", "does not match"),
        (json.dumps(manifest_obj(schemaVersion=3)).encode(), None, "schemaVersion"),
        (json.dumps({"schemaVersion": 2}).encode(), None, "no mediaType"),
        (json.dumps(manifest_obj(manifests=[])).encode(), None, "may not contain"),
        (json.dumps({"schemaVersion": 2, "mediaType": im.OCI_INDEX}).encode(), None, "manifests missing"),
        (json.dumps(manifest_obj(layers=[{"mediaType": "x", "digest": "sha256:zz", "size": 1}])).encode(),
         None, "invalid digest"),
        (json.dumps(manifest_obj(layers=[{"mediaType": "x", "digest": dg("1"), "size": -1}])).encode(),
         None, "size"),
        (json.dumps(manifest_obj(annotations={"a": 1})).encode(), None, "annotations"),
        (b" " * (im.MAX_MANIFEST_BYTES + 1), None, "exceeds the limit"),
    ],
)
def test_bad_manifests(raw: bytes, mt: str | None, needle: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        im.parse_manifest(raw, mt, what="manifest sha256:feed")
    assert needle in str(info.value)
    assert "manifest sha256:feed" in str(info.value)


def test_validate_image_refuses_artifacts_and_unknown_layers() -> None:
    obj = manifest_obj()
    obj["layers"][1]["mediaType"] = "application/vnd.in-toto+json"
    m = im.parse_manifest(json.dumps(obj).encode())
    assert isinstance(m, im.Manifest)
    with pytest.raises(InvalidArgument, match=r"layer 1 .*in-toto"):
        m.validate_image()
    obj = manifest_obj()
    obj["config"]["mediaType"] = "application/vnd.cncf.helm.config.v1+json"
    m = im.parse_manifest(json.dumps(obj).encode())
    assert isinstance(m, im.Manifest)
    with pytest.raises(InvalidArgument, match="not an image config"):
        m.validate_image()


def test_layer_compression() -> None:
    assert im.layer_compression(im.DOCKER_LAYER_GZIP) == "gzip"
    assert im.layer_compression(im.OCI_LAYER_ND_ZSTD) == "zstd"
    assert im.layer_compression(im.OCI_LAYER) == "none"
    with pytest.raises(InvalidArgument):
        im.layer_compression(im.OCI_CONFIG)


def _index(*entries: dict[str, Any]) -> im.Index:
    raw = json.dumps({"schemaVersion": 2, "mediaType": im.OCI_INDEX, "manifests": list(entries)})
    idx = im.parse_manifest(raw.encode())
    assert isinstance(idx, im.Index)
    return idx


def test_select_platform_default_amd64() -> None:
    idx = _index(plat_entry("arm64", c="1"), plat_entry("amd64", c="2"),
                 {"mediaType": im.OCI_MANIFEST, "digest": dg("3"), "size": 1,
                  "platform": {"os": "unknown", "architecture": "unknown"}})
    assert str(im.select_platform(idx).digest) == dg("2")
    assert str(im.select_platform(idx, im.Platform.parse("linux/arm64")).digest) == dg("1")
    assert str(im.select_platform(idx, im.Platform.parse("linux/aarch64")).digest) == dg("1")
    assert str(im.select_platform(idx, im.Platform.parse("linux/arm64/v8")).digest) == dg("1")


def test_select_platform_arm_variants() -> None:
    idx = _index(plat_entry("arm", "v5", c="5"), plat_entry("arm", "v6", c="6"),
                 plat_entry("arm", "v7", c="7"))
    assert str(im.select_platform(idx, im.Platform.parse("linux/arm/v7")).digest) == dg("7")
    assert str(im.select_platform(idx, im.Platform.parse("linux/arm")).digest) == dg("7")
    assert str(im.select_platform(idx, im.Platform.parse("linux/arm/v6")).digest) == dg("6")
    idx = _index(plat_entry("arm", "v6", c="6"), plat_entry("arm", "v5", c="5"))
    # v7 hardware runs v6 images, preferring the closest
    assert str(im.select_platform(idx, im.Platform.parse("linux/arm/v7")).digest) == dg("6")
    idx = _index(plat_entry("arm", "v7", c="7"))
    with pytest.raises(NotFound, match="linux/arm/v7"):
        im.select_platform(idx, im.Platform.parse("linux/arm/v6"))  # never up


def test_select_platform_not_found_lists_offers() -> None:
    idx = _index(plat_entry("arm64", c="1"), plat_entry("s390x", c="2"))
    with pytest.raises(NotFound) as info:
        im.select_platform(idx)
    msg = str(info.value)
    assert "linux/amd64" in msg and "linux/arm64" in msg and "linux/s390x" in msg
    # entries whose media type is not a manifest are never chosen
    idx = _index(plat_entry("amd64", c="1", mt="application/x-other"))
    with pytest.raises(NotFound):
        im.select_platform(idx)


def test_platform_parse() -> None:
    assert im.Platform.parse("linux/amd64") == im.Platform("linux", "amd64")
    assert im.Platform.parse("Linux/X86_64") == im.Platform("linux", "amd64")
    assert im.Platform.parse("linux/arm/7") == im.Platform("linux", "arm", "v7")
    assert im.Platform.parse("linux/armhf") == im.Platform("linux", "arm", "v7")
    assert im.Platform.parse("linux") == im.Platform("linux", "amd64")
    assert str(im.Platform.parse("linux/arm64/v8")) == "linux/arm64"
    for bad in ("", "linux/", "a/b/c/d", "/amd64"):
        with pytest.raises(InvalidArgument):
            im.Platform.parse(bad)


def config_obj(**extra: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [dg("1"), dg("2")]},
        "history": [{"created_by": "ADD x /"}, {"created_by": "ENV a=b", "empty_layer": True}],
    }
    obj.update(extra)
    return obj


def test_parse_config() -> None:
    raw = json.dumps(config_obj()).encode()
    c = im.parse_config(raw)
    assert c.diff_ids == [Digest.parse(dg("1")), Digest.parse(dg("2"))]
    assert c.config["Cmd"] == ["sh"]
    assert [h.empty_layer for h in c.history] == [False, True]
    assert c.platform == im.Platform("linux", "amd64")
    assert c.digest == Digest.from_bytes(raw)


@pytest.mark.parametrize(
    ("obj", "needle"),
    [
        (config_obj(rootfs=None), "rootfs"),
        (config_obj(rootfs={"type": "other", "diff_ids": []}), "rootfs.type"),
        (config_obj(rootfs={"type": "layers", "diff_ids": "x"}), "diff_ids"),
        (config_obj(rootfs={"type": "layers", "diff_ids": ["nope"]}), "invalid digest"),
        (config_obj(config=[]), "config is not an object"),
        (config_obj(history={}), "history"),
        (config_obj(architecture=None), "architecture"),
    ],
)
def test_bad_config(obj: dict[str, Any], needle: str) -> None:
    with pytest.raises(InvalidArgument, match=needle):
        im.parse_config(json.dumps(obj).encode())


def test_chain_ids() -> None:
    a, b, c = (Digest.parse(dg(x)) for x in "123")
    ids = im.chain_ids([a, b, c])
    assert ids[0] == str(a)
    second = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    assert ids[1] == second
    assert ids[2] == "sha256:" + hashlib.sha256(f"{second} {c}".encode()).hexdigest()
    assert im.chain_ids([]) == []
    assert im.chain_ids([str(a), str(b)]) == ids[:2]


def test_manifest_roundtrip_helpers() -> None:
    cfg = Descriptor(im.OCI_CONFIG, Digest.parse(dg("c")), 3)
    layer = Descriptor(im.OCI_LAYER, Digest.parse(dg("1")), 4)
    m = im.parse_manifest(im.manifest_json(cfg, [layer]))
    assert isinstance(m, im.Manifest) and m.config == cfg and m.layers == [layer]
    idx = im.parse_manifest(im.index_json([Descriptor(im.OCI_MANIFEST, m.digest, len(m.raw))]))
    assert isinstance(idx, im.Index) and idx.manifests[0].digest == m.digest
