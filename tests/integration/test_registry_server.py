"""skiff's registry against real clients: skopeo, skiff's own pull/push, the docker CLI."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiff.core.content import Descriptor, Digest
from skiff.core.reference import parse_reference
from skiff.devtools.images import (
    REGISTRY_BIN,
    BuiltImage,
    DockerdUnavailable,
    Registry,
    ToolMissing,
    build_image,
    need,
    private_dockerd,
    skopeo,
    skopeo_push,
    skopeo_raw_manifest,
    start_registry,
    stop_registry,
)
from skiff.devtools.registry import (
    self_signed,
    start_skiff_registry,
    stop,
)
from skiff.plugins.content.local import LocalContentStore
from skiff.plugins.metadata.sqlite import SqliteMetadata
from skiff.plugins.registry.client import HttpRegistryClient
from skiff.plugins.registry.credentials import Credentials
from skiff.services.distribution import pull, push
from tests.unit.test_registry_server_support import snapshot

USER, PASSWORD = "skiffer", "s3cret-pw"


def _tools(*names: str) -> None:
    try:
        for n in names:
            need(n)
    except ToolMissing as exc:
        pytest.skip(str(exc))


def _htpasswd(path: Path) -> Path:
    _tools("htpasswd")
    path.write_bytes(subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], check=True,
                                    capture_output=True).stdout)
    return path


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    # Two worker processes on one port and one root: the clients below hit both.
    r = start_skiff_registry(tmp_path_factory.mktemp("skiffreg"), workers=2)
    yield r
    stop(r)


@pytest.fixture(scope="module")
def basic_reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    work = tmp_path_factory.mktemp("skiffreg-basic")
    cfg = {"auth": {"htpasswd": {"realm": "skiff-test", "path": str(_htpasswd(work / "users"))}}}
    r = start_skiff_registry(work, cfg, Credentials(USER, PASSWORD))
    yield r
    stop(r)


@pytest.fixture(scope="module")
def token_reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    work = tmp_path_factory.mktemp("skiffreg-token")
    cfg = {"auth": {"token": {"htpasswd": str(_htpasswd(work / "users"))}}}
    # Two workers without a configured key: a token one issues must verify on the other.
    r = start_skiff_registry(work, cfg, Credentials(USER, PASSWORD), workers=2)
    yield r
    stop(r)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: Path) -> BuiltImage:
    return build_image(tmp_path_factory.mktemp("regimg") / "layout",
                       [{"etc/motd": b"served by skiff\n"}, {"blob": os.urandom(2_000_000)}],
                       rootfs=busybox_rootfs, platforms=["linux/amd64", "linux/arm64"])


def _same_blobs(layout: Path, image: BuiltImage) -> None:
    for blob in [*image.layers, image.config]:
        d = Digest.from_bytes(blob)
        assert (layout / "blobs" / "sha256" / d.hex).read_bytes() == blob


def test_skopeo_copy_to_and_from(reg: Registry, image: BuiltImage, tmp_path: Path) -> None:
    _tools("skopeo")
    skopeo_push(image, reg, "sk/multi", "v1")
    index = json.loads(skopeo_raw_manifest(reg, "sk/multi", "v1"))
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert len(index["manifests"]) == 2
    skopeo("copy", "--all", "--src-tls-verify=false", f"docker://{reg.host}/sk/multi:v1",
           f"oci:{tmp_path / 'back'}:v1")
    _same_blobs(tmp_path / "back", image)
    # registry to registry within skiff's: cross-repository mounts on the way
    skopeo("copy", "--all", "--src-tls-verify=false", "--dest-tls-verify=false",
           f"docker://{reg.host}/sk/multi:v1", f"docker://{reg.host}/sk/copy:v1")
    assert skopeo_raw_manifest(reg, "sk/copy", "v1") == skopeo_raw_manifest(reg, "sk/multi", "v1")
    tags = json.loads(skopeo("list-tags", "--tls-verify=false",
                             f"docker://{reg.host}/sk/copy").stdout)
    assert tags["Tags"] == ["v1"]


@pytest.mark.parametrize("which", ["basic", "token"])
def test_skopeo_with_auth(which: str, basic_reg: Registry, token_reg: Registry,
                          image: BuiltImage, tmp_path: Path) -> None:
    _tools("skopeo")
    r = basic_reg if which == "basic" else token_reg
    before = snapshot(r.root / "root")
    # Unauthenticated write: refused, and nothing stored.
    with pytest.raises(RuntimeError, match=r"(?i)unauthorized|authentication required|denied"):
        skopeo("copy", "--all", "--dest-tls-verify=false", f"oci:{image.layout}:latest",
               f"docker://{r.host}/auth/img:v1")
    with pytest.raises(RuntimeError):
        skopeo("copy", "--all", "--dest-tls-verify=false", "--dest-creds", f"{USER}:wrong",
               f"oci:{image.layout}:latest", f"docker://{r.host}/auth/img:v1")
    after = snapshot(r.root / "root")
    assert {k for k in after if "/_uploads/" not in k} == set(before)
    skopeo_push(image, r, "auth/img", "v1")
    skopeo("copy", "--all", "--src-tls-verify=false", "--src-creds", f"{USER}:{PASSWORD}",
           f"docker://{r.host}/auth/img:v1", f"oci:{tmp_path / 'back'}:v1")
    _same_blobs(tmp_path / "back", image)
    with pytest.raises(RuntimeError):
        skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{r.host}/auth/img:v1")


def test_skiff_push_and_pull_services(reg: Registry, image: BuiltImage, tmp_path: Path) -> None:
    src_content = LocalContentStore(str(tmp_path / "src"))
    src_meta = SqliteMetadata(str(tmp_path / "src.db"))
    dst_content = LocalContentStore(str(tmp_path / "dst"))
    dst_meta = SqliteMetadata(str(tmp_path / "dst.db"))
    try:
        # a single-platform image from the layout, put in the local store as `skiff load` would
        for blob in [*image.layers, image.config, image.manifest]:
            src_content.put(blob)
        ref = parse_reference(f"{reg.host}/skiff/svc:v1")
        src_meta.put_image(str(ref), Descriptor("application/vnd.oci.image.manifest.v1+json",
                                                image.manifest_digest, len(image.manifest)))
        with HttpRegistryClient() as client:
            target = push(ref, client=client, content=src_content, metadata=src_meta)
            assert target.digest == image.manifest_digest
            result = pull(ref, client=client, content=dst_content, metadata=dst_meta)
        assert result.manifest.digest == image.manifest_digest
        for blob in image.layers:
            assert dst_content.read(Digest.from_bytes(blob)) == blob
    finally:
        src_meta.close()
        dst_meta.close()


def test_tls(tmp_path: Path, image: BuiltImage) -> None:
    _tools("skopeo")
    crt, key = self_signed(tmp_path / "certs")
    r = start_skiff_registry(tmp_path / "tls", {"tls": {"certificate": str(crt),
                                                        "key": str(key)}}, scheme="https")
    try:
        certdir = str(tmp_path / "certs")
        skopeo("copy", "--all", "--dest-cert-dir", certdir, f"oci:{image.layout}:latest",
               f"docker://{r.host}/tls/img:v1")
        skopeo("copy", "--all", "--src-cert-dir", certdir, f"docker://{r.host}/tls/img:v1",
               f"oci:{tmp_path / 'back'}:v1")
        _same_blobs(tmp_path / "back", image)
        # the certificate is really checked: without our CA the client refuses
        with pytest.raises(RuntimeError, match="certificate"):
            skopeo("inspect", "--raw", f"docker://{r.host}/tls/img:v1")
    finally:
        stop(r)


def _tar_dir(src: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for entry in sorted(src.iterdir()):
            tf.add(entry, arcname=entry.name)
    return buf.getvalue()


def test_docker_push_and_pull(reg: Registry, basic_reg: Registry, busybox_rootfs: Path,
                              tmp_path: Path) -> None:
    try:
        ctx = private_dockerd()
        d = ctx.__enter__()
    except (DockerdUnavailable, ToolMissing) as exc:
        pytest.skip(str(exc))
    try:
        d.env["DOCKER_CONFIG"] = str(tmp_path / "docker-config")  # not the host's ~/.docker
        name = f"{reg.host}/dock/busybox:1"
        d.docker("import", "-c", 'CMD ["sh"]', "-", name, stdin=_tar_dir(busybox_rootfs))
        image_id = json.loads(d.docker("image", "inspect", name))[0]["Id"]
        d.docker("push", name)
        d.docker("rmi", name)
        d.docker("pull", name)
        info = json.loads(d.docker("image", "inspect", name))[0]
        assert info["Id"] == image_id
        assert info["RepoDigests"][0].startswith(f"{reg.host}/dock/busybox@sha256:")
        # what docker pushed (schema2) is served to skopeo too
        raw = json.loads(skopeo_raw_manifest(reg, "dock/busybox", "1"))
        assert raw["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
        # with basic auth: push refused without login, works after docker login
        authed = f"{basic_reg.host}/dock/busybox:1"
        d.docker("tag", name, authed)
        with pytest.raises(RuntimeError, match=r"(?i)no basic auth|unauthorized|authentication"):
            d.docker("push", authed)
        d.docker("login", "-u", USER, "--password-stdin", basic_reg.host,
                 stdin=PASSWORD.encode())
        d.docker("push", authed)
        d.docker("rmi", name, authed)
        d.docker("pull", authed)
        assert json.loads(d.docker("image", "inspect", authed))[0]["Id"] == image_id
        d.docker("rmi", authed)
    finally:
        ctx.__exit__(None, None, None)


def test_pull_through_cache(image: BuiltImage, tmp_path: Path) -> None:
    """skiff's registry mirroring Debian's docker-registry; serves the cache when it is gone."""
    _tools("skopeo", REGISTRY_BIN)
    upstream = start_registry(tmp_path / "upstream")
    mirror = None
    try:
        skopeo_push(image, upstream, "library/bb", "v1")
        mirror = start_skiff_registry(tmp_path / "mirror",
                                      {"proxy": {"remoteurl": upstream.url, "ttl": 0}})
        skopeo("copy", "--all", "--src-tls-verify=false", f"docker://{mirror.host}/library/bb:v1",
               f"oci:{tmp_path / 'first'}:v1")
        _same_blobs(tmp_path / "first", image)
        assert skopeo_raw_manifest(mirror, "library/bb", "v1") == \
            skopeo_raw_manifest(upstream, "library/bb", "v1")
        # a proxy is read-only
        with pytest.raises(RuntimeError, match=r"(?i)unsupported|read-only"):
            skopeo("copy", "--dest-tls-verify=false", f"oci:{image.layout}:latest",
                   f"docker://{mirror.host}/library/bb:v2")
        with pytest.raises(RuntimeError, match=r"(?i)manifest unknown"):
            skopeo("inspect", "--raw", "--tls-verify=false",
                   f"docker://{mirror.host}/library/nothere:v1")
    finally:
        stop_registry(upstream)
    try:
        assert mirror is not None
        # Upstream gone: everything pulled before is still served from the cache.
        skopeo("copy", "--all", "--src-tls-verify=false", f"docker://{mirror.host}/library/bb:v1",
               f"oci:{tmp_path / 'again'}:v1")
        _same_blobs(tmp_path / "again", image)
    finally:
        if mirror is not None:
            stop(mirror)
