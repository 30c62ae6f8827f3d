"""Push service against a real docker-registry, read back with skopeo."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from skiff.core.content import Descriptor, Digest
from skiff.core.progress import Message
from skiff.core.reference import parse_reference
from skiff.core.registry import Repository
from skiff.devtools.images import (
    BuiltImage,
    Registry,
    build_image,
    skopeo,
    skopeo_push,
    skopeo_raw_manifest,
)
from skiff.errors import NotFound, PermissionDenied
from skiff.plugins.content.local import LocalContentStore
from skiff.plugins.metadata.sqlite import SqliteMetadata
from skiff.plugins.registry.client import HttpRegistryClient
from skiff.plugins.registry.credentials import CredentialStore
from skiff.services.distribution import SOURCE_LABEL, pull, push


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: Path) -> BuiltImage:
    return build_image(tmp_path_factory.mktemp("push") / "layout",
                       [{"etc/motd": b"pushed by skiff\n"}, {"blob": os.urandom(200_000)}],
                       rootfs=busybox_rootfs)


def load_local(image: BuiltImage, content: LocalContentStore, meta: SqliteMetadata,
               name: str) -> Descriptor:
    """Put a locally built image into the stores, as `skiff load` would."""
    for blob in [*image.layers, image.config, image.manifest]:
        content.put(blob)
    target = Descriptor("application/vnd.oci.image.manifest.v1+json", image.manifest_digest,
                        len(image.manifest))
    meta.put_image(name, target)
    return target


def statuses(msgs: list[Message], id: str) -> list[str]:
    return [m["status"] for m in msgs if m.get("id") == id]


def test_push_new_image_then_again(registry: Registry, image: BuiltImage, tmp_path: Path,
                                   stores: tuple[LocalContentStore, SqliteMetadata]) -> None:
    content, meta = stores
    ref = parse_reference(f"{registry.host}/push/new:v1")
    load_local(image, content, meta, str(ref))
    msgs: list[Message] = []
    with HttpRegistryClient() as client:
        target = push(ref, client=client, content=content, metadata=meta, progress=msgs.append)
    assert target.digest == image.manifest_digest
    assert msgs[0] == {"status": f"The push refers to repository [{ref.name}]"}
    ids = [Digest.from_bytes(b).hex[:12] for b in image.layers]
    for lid in ids:
        states = statuses(msgs, lid)
        assert states[0] == "Preparing"
        assert states[-1] == "Pushed"
    # Docker lists layers top-first.
    preparing = [m["id"] for m in msgs if m.get("status") == "Preparing"]
    assert preparing == list(reversed(ids))
    assert msgs[-2]["status"] == f"v1: digest: {image.manifest_digest} size: {len(image.manifest)}"
    assert msgs[-1]["aux"] == {"Tag": "v1", "Digest": str(image.manifest_digest),
                               "Size": len(image.manifest)}
    # skopeo reads back exactly what we have.
    assert skopeo_raw_manifest(registry, "push/new", "v1") == image.manifest
    skopeo("copy", "--src-tls-verify=false", f"docker://{registry.host}/push/new:v1",
           f"oci:{tmp_path / 'back'}:v1")
    for blob in [*image.layers, image.config]:
        d = Digest.from_bytes(blob)
        assert (tmp_path / "back" / "blobs" / "sha256" / d.hex).read_bytes() == blob

    assert meta.get_image(str(ref)).labels[SOURCE_LABEL] == f"{registry.host}/push/new"
    again: list[Message] = []
    with HttpRegistryClient() as client:
        push(ref, client=client, content=content, metadata=meta, progress=again.append)
    assert [statuses(again, lid)[-1] for lid in ids] == ["Layer already exists"] * len(ids)


def test_push_mounts_from_the_repository_it_was_pulled_from(
        registry: Registry, image: BuiltImage,
        stores: tuple[LocalContentStore, SqliteMetadata]) -> None:
    content, meta = stores
    skopeo_push(image, registry, "push/src")
    src = parse_reference(f"{registry.host}/push/src:latest")
    with HttpRegistryClient() as client:
        pulled = pull(src, client=client, content=content, metadata=meta)
        # `skiff tag`: a second name for the same target, in another repository.
        dst = parse_reference(f"{registry.host}/push/dst:copy")
        meta.put_image(str(dst), pulled.target)
        msgs: list[Message] = []
        push(dst, client=client, content=content, metadata=meta, progress=msgs.append)
    ids = [Digest.from_bytes(b).hex[:12] for b in image.layers]
    assert [statuses(msgs, lid)[-1] for lid in ids] == ["Mounted from push/src"] * len(ids)
    assert json.loads(skopeo_raw_manifest(registry, "push/dst", "copy")) == json.loads(
        image.manifest)


def test_push_index_pushes_children(registry: Registry, tmp_path: Path,
                                    stores: tuple[LocalContentStore, SqliteMetadata]) -> None:
    content, meta = stores
    multi = build_image(tmp_path / "multi", [{"m": b"multi"}],
                        platforms=["linux/amd64", "linux/arm64"])
    skopeo_push(multi, registry, "push/multisrc")
    src = parse_reference(f"{registry.host}/push/multisrc:latest")
    with HttpRegistryClient() as client:
        pulled = pull(src, client=client, content=content, metadata=meta)
        dst = parse_reference(f"{registry.host}/push/multidst:latest")
        meta.put_image(str(dst), pulled.target)
        # Only the amd64 child was pulled and push/multidst lacks arm64: refused up front,
        # naming the missing platform, before anything is uploaded.
        with pytest.raises(NotFound, match=r"linux/arm64.*pull all platforms"):
            push(dst, client=client, content=content, metadata=meta)
        assert _tags(client, registry, "push/multidst") == []
        with pytest.raises(NotFound):
            client.resolve(Repository(registry.host, "push/multidst"), str(pulled.manifest.digest))
        # Pushing back to where it came from works: the registry has every child.
        meta.put_image(f"{registry.host}/push/multisrc:again", pulled.target)
        push(parse_reference(f"{registry.host}/push/multisrc:again"), client=client,
             content=content, metadata=meta)
    raw = skopeo_raw_manifest(registry, "push/multisrc", "again")
    assert Digest.from_bytes(raw) == pulled.target.digest


def _tags(client: HttpRegistryClient, reg: Registry, path: str) -> list[str]:
    try:
        return client.list_tags(Repository(reg.host, path))
    except NotFound:
        return []


def test_push_errors(auth_registry: Registry, image: BuiltImage, tmp_path: Path,
                     stores: tuple[LocalContentStore, SqliteMetadata]) -> None:
    content, meta = stores
    ref = parse_reference(f"{auth_registry.host}/push/auth:v1")
    with HttpRegistryClient() as client, pytest.raises(NotFound, match="does not exist locally"):
        push(ref, client=client, content=content, metadata=meta)
    load_local(image, content, meta, str(ref))
    creds = CredentialStore(str(tmp_path / "config.json"))
    with HttpRegistryClient(credentials=creds) as client, pytest.raises(PermissionDenied):
        push(ref, client=client, content=content, metadata=meta)
    assert auth_registry.creds is not None
    creds.store(auth_registry.host, auth_registry.creds)
    with HttpRegistryClient(credentials=creds) as client:
        push(ref, client=client, content=content, metadata=meta)
    assert skopeo_raw_manifest(auth_registry, "push/auth", "v1") == image.manifest
