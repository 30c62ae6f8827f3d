"""The registry client against a real peer: Debian's docker-registry (distribution 2.8).

The peers themselves (docker-registry on 127.0.0.1:<free port>, the OCI-layout image builder,
skopeo) live in ``skiff.devtools.images``; this module holds the registry fixtures that
test_pull.py and test_push.py import: a registry with and without htpasswd (bcrypt) auth,
images put in with skopeo from locally built layers (busybox), never the internet.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiff.core.content import Descriptor, Digest
from skiff.core.images import Manifest, parse_manifest
from skiff.core.registry import PushOutcome, Repository
from skiff.devtools.images import (
    BuiltImage,
    Registry,
    build_image,
    free_port,
    skopeo,
    skopeo_push,
    skopeo_raw_manifest,
)
from skiff.errors import InvalidArgument, NotFound, PermissionDenied, Unavailable
from skiff.plugins.content.local import LocalContentStore
from skiff.plugins.registry.client import HttpRegistryClient, RegistryConfig, login, logout
from skiff.plugins.registry.credentials import Credentials, CredentialStore
from tests.integration.support import PASSWORD, USER


@pytest.fixture(scope="module")
def small_image(tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: Path) -> BuiltImage:
    return build_image(tmp_path_factory.mktemp("img") / "layout",
                       [{"etc/hello": b"hello\n"}, {"data/blob": os.urandom(300_000)}],
                       rootfs=busybox_rootfs)


# --- the client ---------------------------------------------------------------------------


@pytest.fixture
def client() -> Iterator[HttpRegistryClient]:
    with HttpRegistryClient() as c:
        yield c


@pytest.fixture
def store(tmp_path: Path) -> LocalContentStore:
    return LocalContentStore(str(tmp_path / "content"))


def test_resolve_fetch_manifest_and_blobs(registry: Registry, small_image: BuiltImage,
                                          client: HttpRegistryClient,
                                          store: LocalContentStore) -> None:
    skopeo_push(small_image, registry, "cli/basic")
    repo = Repository(registry.host, "cli/basic")
    desc = client.resolve(repo, "latest")
    assert desc.digest == small_image.manifest_digest
    assert desc.size == len(small_image.manifest)
    assert client.resolve(repo, str(desc.digest)).digest == desc.digest
    raw = client.fetch_manifest(repo, desc)
    assert raw == small_image.manifest
    manifest = parse_manifest(raw, desc.media_type)
    assert isinstance(manifest, Manifest)
    for layer, data in zip(manifest.layers, small_image.layers, strict=True):
        seen: list[int] = []
        info = client.fetch_blob(repo, layer, store.writer(f"t-{layer.digest}"), seen.append)
        assert info.digest == layer.digest
        assert store.read(layer.digest) == data
        assert seen[-1] == len(data)
    assert client.list_tags(repo) == ["latest"]


def test_errors_name_the_object(registry: Registry, small_image: BuiltImage,
                                client: HttpRegistryClient, store: LocalContentStore) -> None:
    skopeo_push(small_image, registry, "cli/errors")
    repo = Repository(registry.host, "cli/errors")
    with pytest.raises(NotFound, match=r"cli/errors:nope"):
        client.resolve(repo, "nope")
    with pytest.raises(NotFound, match="cli/missing"):
        client.resolve(Repository(registry.host, "cli/missing"), "latest")
    ghost = Descriptor("application/octet-stream", Digest.from_bytes(b"ghost"), 5)
    w = store.writer("ghost")
    with pytest.raises(NotFound, match=str(ghost.digest)):
        client.fetch_blob(repo, ghost, w)
    w.close()
    # Wrong size for a real blob: more bytes than declared is refused and the ingest dropped.
    real = Digest.from_bytes(small_image.config)
    short = Descriptor("application/octet-stream", real, len(small_image.config) - 10)
    with pytest.raises(InvalidArgument, match=str(real)):
        client.fetch_blob(repo, short, store.writer("short"))
    assert not store.exists(real)
    with store.writer("short") as again:
        assert again.offset == 0
    # Nothing listening: Unavailable naming the registry.
    dead = Repository(f"127.0.0.1:{free_port()}", "x/y")
    with pytest.raises(Unavailable, match=dead.domain):
        client.resolve(dead, "latest")


def test_push_blob_exists_monolithic_chunked_and_mount(registry: Registry,
                                                       store: LocalContentStore) -> None:
    config = RegistryConfig(monolithic_limit=100_000, chunk_size=16_384)
    data = os.urandom(250_000)  # 3 PATCH chunks with this limit
    small = b"small blob"
    big = Descriptor("application/octet-stream", store.put(data).digest, len(data))
    little = Descriptor("application/octet-stream", store.put(small).digest, len(small))
    repo = Repository(registry.host, "push/one")
    other = Repository(registry.host, "push/two")
    with HttpRegistryClient(config) as client:
        seen: list[int] = []
        assert client.push_blob(repo, big, store, progress=seen.append) == PushOutcome.PUSHED
        assert seen[-1] == len(data)
        assert client.push_blob(repo, little, store) == PushOutcome.PUSHED
        assert client.push_blob(repo, little, store) == PushOutcome.EXISTS
        assert client.blob_exists(repo, big.digest)
        assert not client.blob_exists(other, big.digest)
        assert client.push_blob(other, big, store, mount_from="push/one") == PushOutcome.MOUNTED
        assert client.blob_exists(other, big.digest)
        # The bytes the registry holds are ours.
        fresh = LocalContentStore(str(Path(store.root).parent / "fresh"))
        client.fetch_blob(other, big, fresh.writer("x"))
        assert fresh.read(big.digest) == data


def test_push_manifest_readable_by_skopeo(registry: Registry, small_image: BuiltImage,
                                          store: LocalContentStore, tmp_path: Path) -> None:
    repo = Repository(registry.host, "push/manifest")
    with HttpRegistryClient() as client:
        for blob in [*small_image.layers, small_image.config]:
            d = store.put(blob).digest
            client.push_blob(repo, Descriptor("application/octet-stream", d, len(blob)), store)
        mt = "application/vnd.oci.image.manifest.v1+json"
        digest = client.push_manifest(repo, "v1", mt, small_image.manifest)
        assert digest == small_image.manifest_digest
        assert "v1" in client.list_tags(repo)
    assert skopeo_raw_manifest(registry, "push/manifest", "v1") == small_image.manifest
    skopeo("copy", "--src-tls-verify=false", f"docker://{registry.host}/push/manifest:v1",
           f"oci:{tmp_path / 'back'}:v1")
    for blob in small_image.layers:
        d = Digest.from_bytes(blob)
        assert (tmp_path / "back" / "blobs" / "sha256" / d.hex).read_bytes() == blob


def test_basic_auth_with_config_json(auth_registry: Registry, small_image: BuiltImage,
                                     tmp_path: Path, store: LocalContentStore) -> None:
    skopeo_push(small_image, auth_registry, "auth/img")
    repo = Repository(auth_registry.host, "auth/img")
    creds_file = tmp_path / "docker" / "config.json"
    creds = CredentialStore(str(creds_file))
    with HttpRegistryClient(credentials=creds) as client:
        with pytest.raises(PermissionDenied, match="skiff login"):
            client.resolve(repo, "latest")
        with pytest.raises(PermissionDenied):
            login(creds, client, auth_registry.host, Credentials(USER, "wrong"))
        assert not creds_file.exists()
        login(creds, client, auth_registry.host, Credentials(USER, PASSWORD))
        assert oct(creds_file.stat().st_mode & 0o777) == "0o600"
        assert client.resolve(repo, "latest").digest == small_image.manifest_digest
    # The file is what the docker CLI writes, readable by any docker-config consumer.
    entry = json.loads(creds_file.read_text())["auths"][auth_registry.host]
    import base64
    assert base64.b64decode(entry["auth"]).decode() == f"{USER}:{PASSWORD}"
    logout(creds, auth_registry.host)
    with HttpRegistryClient(credentials=creds) as client:
        with pytest.raises(PermissionDenied):
            client.resolve(repo, "latest")
        # The daemon's per-request credentials (X-Registry-Auth) on the shared client.
        view = client.with_credentials(lambda host: Credentials(USER, PASSWORD))
        assert view.resolve(repo, "latest").digest == small_image.manifest_digest
        with pytest.raises(PermissionDenied):
            client.resolve(repo, "latest")  # the original is still anonymous


def test_mirror_first_then_fallback(registry: Registry, small_image: BuiltImage) -> None:
    skopeo_push(small_image, registry, "library/busybox")
    hub = Repository("docker.io", "library/busybox")
    dead = f"http://127.0.0.1:{free_port()}"
    # Dead mirror first, live one second: the live one answers.
    cfg = RegistryConfig(mirrors=(dead, registry.url), hub_endpoint=dead)
    with HttpRegistryClient(cfg) as client:
        assert client.resolve(hub, "latest").digest == small_image.manifest_digest
    # All mirrors dead: falls back to the "upstream" (here the local registry standing in).
    cfg = RegistryConfig(mirrors=(dead,), hub_endpoint=registry.url)
    with HttpRegistryClient(cfg) as client:
        assert client.resolve(hub, "latest").digest == small_image.manifest_digest
    # Mirror without the image (404) also falls back.
    cfg = RegistryConfig(mirrors=(registry.url,), hub_endpoint=registry.url)
    with HttpRegistryClient(cfg) as client, pytest.raises(NotFound, match="library/nothere"):
        client.resolve(Repository("docker.io", "library/nothere"), "latest")


def test_plain_http_only_for_loopback_or_insecure() -> None:
    with pytest.raises(InvalidArgument, match="plain HTTP"):
        HttpRegistryClient(RegistryConfig(mirrors=("http://mirror.example.com",)))._endpoints(
            "docker.io", True)
    cfg = RegistryConfig(insecure=frozenset({"mirror.example.com"}),
                         mirrors=("http://mirror.example.com",))
    eps = HttpRegistryClient(cfg)._endpoints("docker.io", True)
    assert eps[0].base == "http://mirror.example.com"
    assert eps[-1].base == "https://registry-1.docker.io"
    c = HttpRegistryClient()
    assert c._base(c._endpoints("registry.example.com", False)[0]) == "https://registry.example.com"


def test_manifest_digest_mismatch_and_size_limit(registry: Registry, small_image: BuiltImage,
                                                 client: HttpRegistryClient) -> None:
    skopeo_push(small_image, registry, "cli/verify")
    repo = Repository(registry.host, "cli/verify")
    desc = client.resolve(repo, "latest")
    # The registry serves by digest, so a descriptor with the right digest but a wrong size
    # is caught by the length check; a too-large size is refused before any request.
    with pytest.raises(InvalidArgument, match="bytes"):
        client.fetch_manifest(repo, Descriptor(desc.media_type, desc.digest, desc.size + 1))
    with pytest.raises(InvalidArgument, match="limit"):
        client.fetch_manifest(repo, Descriptor(desc.media_type, desc.digest, 64 << 20))
