"""Pull service against a real docker-registry: records, progress, platforms, resume, leases."""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from skiff.core.content import Descriptor, Digest
from skiff.core.images import Platform
from skiff.core.progress import LayerProgress, Message
from skiff.core.reference import parse_reference
from skiff.devtools.images import (
    BuiltImage,
    Registry,
    build_image,
    skopeo_push,
)
from skiff.errors import InvalidArgument, NotFound, PermissionDenied, Unavailable
from skiff.plugins.content.local import LocalContentStore
from skiff.plugins.metadata.sqlite import SqliteMetadata
from skiff.plugins.registry.client import HttpRegistryClient, RegistryConfig
from skiff.plugins.registry.credentials import CredentialStore
from skiff.services.distribution import SOURCE_LABEL, pull
from skiff.services.images import ImageService


@pytest.fixture(scope="module")
def five_layers(tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: Path) -> BuiltImage:
    return build_image(tmp_path_factory.mktemp("five") / "layout",
                       [{f"layer{i}/data": os.urandom(50_000 * (i + 1))} for i in range(4)],
                       rootfs=busybox_rootfs)


def by_id(msgs: list[Message], id: str) -> list[str]:
    return [m["status"] for m in msgs if m.get("id") == id]


def test_pull_records_image_with_docker_progress(registry: Registry, five_layers: BuiltImage,
                                                 stores: tuple[LocalContentStore, SqliteMetadata],
                                                 ) -> None:
    content, meta = stores
    skopeo_push(five_layers, registry, "pull/five")
    ref = parse_reference(f"{registry.host}/pull/five:latest")
    msgs: list[Message] = []
    with HttpRegistryClient() as client:
        result = pull(ref, client=client, content=content, metadata=meta, progress=msgs.append)
    assert result.target.digest == five_layers.manifest_digest
    assert not result.up_to_date
    assert result.fetched_bytes == five_layers.total_bytes + len(five_layers.config)
    record = meta.get_image(str(ref))
    assert record.target.digest == five_layers.manifest_digest
    assert record.labels[SOURCE_LABEL] == f"{registry.host}/pull/five"
    for blob in [*five_layers.layers, five_layers.config, five_layers.manifest]:
        assert content.read(Digest.from_bytes(blob)) == blob
    assert meta.list_leases() == []  # the pull's lease is gone once the record exists
    assert content.ingests() == []

    assert msgs[0] == {"status": "Pulling from pull/five", "id": "latest"}
    ids = [Digest.from_bytes(b).hex[:12] for b in five_layers.layers]
    for i, lid in enumerate(ids):
        states = by_id(msgs, lid)
        assert states[0] == "Pulling fs layer"
        assert states[-1] == "Pull complete"
        assert "Download complete" in states
        assert "Verifying Checksum" in states
        # Layers beyond the third wait for a download slot, as with dockerd.
        assert ("Waiting" in states) == (i >= 3)
        downloads = [m for m in msgs if m.get("id") == lid and m["status"] == "Downloading"]
        assert downloads and downloads[-1]["progressDetail"]["current"] == len(five_layers.layers[i])
        assert downloads[-1]["progress"].startswith("[" + "=" * 50 + ">]")
    assert msgs[-2] == {"status": f"Digest: {five_layers.manifest_digest}"}
    assert msgs[-1] == {"status": f"Status: Downloaded newer image for {ref.familiar()}"}

    # Again: nothing fetched, every layer "Already exists", image up to date.
    again: list[Message] = []
    with HttpRegistryClient() as client:
        second = pull(ref, client=client, content=content, metadata=meta, progress=again.append)
    assert second.up_to_date and second.fetched_bytes == 0
    assert [by_id(again, lid) for lid in ids] == [["Already exists"]] * len(ids)
    assert again[-1]["status"] == f"Status: Image is up to date for {ref.familiar()}"


def test_pull_selects_platform_from_index(registry: Registry, tmp_path: Path,
                                          stores: tuple[LocalContentStore, SqliteMetadata]) -> None:
    content, meta = stores
    image = build_image(tmp_path / "multi", [{"a": b"multi"}],
                        platforms=["linux/amd64", "linux/arm64"])
    skopeo_push(image, registry, "pull/multi")
    ref = parse_reference(f"{registry.host}/pull/multi:latest")
    with HttpRegistryClient() as client:
        res = pull(ref, client=client, content=content, metadata=meta,
                   platform=Platform.parse("linux/arm64"))
        assert res.target.media_type == "application/vnd.oci.image.index.v1+json"
        assert res.config.architecture == "arm64"
        assert meta.get_image(str(ref)).target.digest == res.target.digest
        with pytest.raises(NotFound, match="linux/amd64, linux/arm64"):
            pull(ref, client=client, content=content, metadata=meta,
                 platform=Platform.parse("linux/s390x"))
        amd = pull(ref, client=client, content=content, metadata=meta)  # default linux/amd64
        assert amd.config.architecture == "amd64"
        assert amd.fetched_bytes == len(amd.config.raw)  # layers shared: only the config is new


def test_tag_moved_by_a_pull_keeps_the_old_image_dangling(
        registry: Registry, tmp_path: Path,
        stores: tuple[LocalContentStore, SqliteMetadata]) -> None:
    """docker pull of a tag that now names another image: the old one stays as <none>."""
    content, meta = stores
    images = ImageService(content, meta)
    ref = parse_reference(f"{registry.host}/pull/moving:latest")
    old_img = build_image(tmp_path / "old", [{"etc/version": b"1\n"}])
    new_img = build_image(tmp_path / "new", [{"etc/version": b"2\n"}])
    with HttpRegistryClient() as client:
        skopeo_push(old_img, registry, "pull/moving")
        first = pull(ref, client=client, content=content, metadata=meta)
        skopeo_push(new_img, registry, "pull/moving")
        second = pull(ref, client=client, content=content, metadata=meta)
    old_id, new_id = first.manifest.digest, second.manifest.digest
    assert old_id != new_id
    old = images.get(str(Digest.from_bytes(old_img.config)))
    assert old.dangling and old.repo_tags == [] and old.repo_digests == []
    new = images.get(str(ref))
    assert new.id == Digest.from_bytes(new_img.config)
    assert new.repo_digests == [f"{ref.familiar_name()}@{new_img.manifest_digest}"]
    assert not second.up_to_date
    # GC keeps the dangling image's blobs; image prune is what removes them
    meta.gc(content)
    assert content.exists(Digest.from_bytes(old_img.layers[0]))
    assert content.exists(old_id)
    pruned = images.prune()
    assert pruned["ImagesDeleted"] == [{"Deleted": str(old.id)}]
    assert not content.exists(Digest.from_bytes(old_img.layers[0]))
    assert not content.exists(old_id)
    assert content.exists(Digest.from_bytes(new_img.layers[0]))
    assert [i.id for i in images.images()] == [new.id]


def test_pull_by_digest_and_unknown_tag(registry: Registry, five_layers: BuiltImage,
                                        stores: tuple[LocalContentStore, SqliteMetadata]) -> None:
    content, meta = stores
    skopeo_push(five_layers, registry, "pull/bydigest")
    ref = parse_reference(f"{registry.host}/pull/bydigest@{five_layers.manifest_digest}")
    msgs: list[Message] = []
    with HttpRegistryClient() as client:
        pull(ref, client=client, content=content, metadata=meta, progress=msgs.append)
        assert meta.get_image(str(ref)).target.digest == five_layers.manifest_digest
        assert msgs[0]["id"] == str(five_layers.manifest_digest)
        with pytest.raises(NotFound, match="pull/bydigest:nope"):
            pull(parse_reference(f"{registry.host}/pull/bydigest:nope"), client=client,
                 content=content, metadata=meta)
    assert meta.list_leases() == []


def test_unpack_gets_layers_in_order_under_a_lease(registry: Registry, five_layers: BuiltImage,
                                                   stores: tuple[LocalContentStore, SqliteMetadata],
                                                   ) -> None:
    content, meta = stores
    skopeo_push(five_layers, registry, "pull/unpack")
    ref = parse_reference(f"{registry.host}/pull/unpack:latest")
    calls: list[tuple[list[Digest], list[Digest]]] = []

    def unpack(layers: Sequence[Descriptor], diff_ids: Sequence[Digest],
               progress: LayerProgress) -> None:
        calls.append(([d.digest for d in layers], list(diff_ids)))
        # A GC now (no image record yet) must not take the blobs the pull just wrote.
        gc = meta.gc(content)
        assert all(content.exists(d.digest) for d in layers), gc
        for d in layers:
            progress(d, d.size // 2)
            progress(d, d.size)

    msgs: list[Message] = []
    with HttpRegistryClient() as client:
        res = pull(ref, client=client, content=content, metadata=meta, unpack=unpack,
                   progress=msgs.append)
    assert calls == [([Digest.from_bytes(b) for b in five_layers.layers], res.config.diff_ids)]
    lid = Digest.from_bytes(five_layers.layers[0]).hex[:12]
    states = by_id(msgs, lid)
    assert states.index("Download complete") < states.index("Extracting") < states.index(
        "Pull complete")
    assert states.count("Pull complete") == 1


def test_pull_with_basic_auth(auth_registry: Registry, five_layers: BuiltImage, tmp_path: Path,
                              stores: tuple[LocalContentStore, SqliteMetadata]) -> None:
    content, meta = stores
    skopeo_push(five_layers, auth_registry, "pull/auth")
    ref = parse_reference(f"{auth_registry.host}/pull/auth:latest")
    creds = CredentialStore(str(tmp_path / "config.json"))
    with HttpRegistryClient(credentials=creds) as client, pytest.raises(PermissionDenied):
        pull(ref, client=client, content=content, metadata=meta)
    assert auth_registry.creds is not None
    creds.store(auth_registry.host, auth_registry.creds)
    with HttpRegistryClient(credentials=creds) as client:
        res = pull(ref, client=client, content=content, metadata=meta)
    assert res.target.digest == five_layers.manifest_digest


def test_pull_through_docker_io_mirror(registry: Registry, five_layers: BuiltImage,
                                       stores: tuple[LocalContentStore, SqliteMetadata]) -> None:
    content, meta = stores
    skopeo_push(five_layers, registry, "library/busybox")
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    # "upstream" is dead too, so success proves the mirror served the pull.
    cfg = RegistryConfig(mirrors=(registry.url,), hub_endpoint=dead)
    with HttpRegistryClient(cfg) as client:
        res = pull(parse_reference("busybox"), client=client, content=content, metadata=meta)
    assert meta.get_image("docker.io/library/busybox:latest").target.digest == res.target.digest


# --- interruption and resume --------------------------------------------------------------


class CuttingProxy:
    """An HTTP front for the registry that can cut blob downloads after N bytes.

    It stands in for a flaky network: the client sees the registry at the proxy's address; the
    proxy counts the blob bytes it forwards and records the Range headers it was sent.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.cut_after: int | None = None
        self.corrupt = False  # flip the first byte of every blob body
        self.delay = 0.0  # seconds to stall before each blob body, to make overlap visible
        self.inflight = 0
        self.max_inflight = 0
        self.lock = threading.Lock()
        self.blob_bytes = 0
        self.ranges: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self.forward(body=False)

            def do_GET(self) -> None:
                self.forward(body=True)

            def forward(self, body: bool) -> None:
                host, port = proxy.upstream.rsplit(":", 1)
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("accept", "range", "authorization")}
                is_blob = "/blobs/sha256:" in self.path
                if is_blob and "Range" in headers:
                    proxy.ranges.append(headers["Range"])
                conn.request(self.command, self.path, headers=headers)
                resp = conn.getresponse()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "date", "server"):
                        self.send_header(k, v)
                self.end_headers()
                if not body:
                    conn.close()
                    return
                if is_blob:
                    with proxy.lock:
                        proxy.inflight += 1
                        proxy.max_inflight = max(proxy.max_inflight, proxy.inflight)
                try:
                    if is_blob and proxy.delay:
                        time.sleep(proxy.delay)
                    self.copy_body(resp, conn, is_blob)
                finally:
                    if is_blob:
                        with proxy.lock:
                            proxy.inflight -= 1

            def copy_body(self, resp: http.client.HTTPResponse, conn: http.client.HTTPConnection,
                          is_blob: bool) -> None:
                sent = 0
                while chunk := resp.read(65536):
                    if is_blob and proxy.corrupt and sent == 0:
                        chunk = bytes([chunk[0] ^ 1]) + chunk[1:]
                    if is_blob and proxy.cut_after is not None and sent + len(chunk) > proxy.cut_after:
                        chunk = chunk[:proxy.cut_after - sent]
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        proxy.blob_bytes += len(chunk)
                        # Abrupt end mid-body, as when a network drops.
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        conn.close()
                        return
                    self.wfile.write(chunk)
                    sent += len(chunk)
                    if is_blob:
                        proxy.blob_bytes += len(chunk)
                conn.close()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def proxy(registry: Registry) -> Iterator[CuttingProxy]:
    p = CuttingProxy(registry.host)
    yield p
    p.close()
    assert not p.thread.is_alive()


def test_interrupted_pull_resumes(registry: Registry, proxy: CuttingProxy, tmp_path: Path,
                                  stores: tuple[LocalContentStore, SqliteMetadata]) -> None:
    content, meta = stores
    big = os.urandom(3_000_000)  # incompressible: the layer blob is ~3 MB
    image = build_image(tmp_path / "big", [{"big": big}])
    skopeo_push(image, registry, "pull/resume")
    ref = parse_reference(f"{proxy.host}/pull/resume:latest")
    total = image.total_bytes
    proxy.cut_after = 1_000_000
    with HttpRegistryClient() as client, pytest.raises(Unavailable, match=r"interrupted|closed"):
        pull(ref, client=client, content=content, metadata=meta)
    layer = Digest.from_bytes(image.layers[0])
    assert not content.exists(layer)  # no half blob is visible
    (partial,) = [i for i in content.ingests() if i.ref.startswith("pull-")]
    assert 0 < partial.offset <= 1_000_000
    with pytest.raises(NotFound):
        meta.get_image(str(ref))
    assert meta.list_leases() == []

    proxy.cut_after = None
    proxy.blob_bytes = 0
    with HttpRegistryClient() as client:
        res = pull(ref, client=client, content=content, metadata=meta)
    assert content.read(layer) == image.layers[0]
    assert proxy.ranges == [f"bytes={partial.offset}-"]
    assert proxy.blob_bytes == total - partial.offset < total
    assert res.fetched_bytes == total - partial.offset
    assert content.ingests() == []


def test_cancelled_pull_stops_and_resumes(registry: Registry, tmp_path: Path,
                                          stores: tuple[LocalContentStore, SqliteMetadata]) -> None:
    content, meta = stores
    image = build_image(tmp_path / "cancel", [{"big": os.urandom(4_000_000)}])
    skopeo_push(image, registry, "pull/cancel")
    ref = parse_reference(f"{registry.host}/pull/cancel:latest")
    cancel = threading.Event()

    def progress(m: Message) -> None:
        if m.get("status") == "Downloading":
            cancel.set()  # as the daemon does when the HTTP client goes away

    with HttpRegistryClient() as client, pytest.raises(Unavailable, match="cancelled"):
        pull(ref, client=client, content=content, metadata=meta, progress=progress,
             cancel=cancel)
    layer = Digest.from_bytes(image.layers[0])
    assert not content.exists(layer)
    (partial,) = content.ingests()
    assert 0 < partial.offset < len(image.layers[0])
    assert meta.list_leases() == []
    with HttpRegistryClient() as client:
        res = pull(ref, client=client, content=content, metadata=meta)
    assert res.fetched_bytes == len(image.layers[0]) - partial.offset
    assert content.read(layer) == image.layers[0]


def test_corrupted_blob_is_refused_and_leaves_the_store_unchanged(
        registry: Registry, proxy: CuttingProxy, tmp_path: Path,
        stores: tuple[LocalContentStore, SqliteMetadata]) -> None:
    content, meta = stores
    image = build_image(tmp_path / "corrupt", [{"x": os.urandom(10_000)}])
    skopeo_push(image, registry, "pull/corrupt")
    ref = parse_reference(f"{proxy.host}/pull/corrupt:latest")
    proxy.corrupt = True
    config = Digest.from_bytes(image.config)
    with HttpRegistryClient() as client, pytest.raises(InvalidArgument,
                                                       match=f"blob {config}.*digest mismatch"):
        pull(ref, client=client, content=content, metadata=meta)
    assert not content.exists(config)
    assert content.ingests() == []  # wrong bytes are not kept for a "resume"
    assert meta.list_images() == [] and meta.list_leases() == []


def test_layers_download_three_at_a_time(registry: Registry, proxy: CuttingProxy,
                                         five_layers: BuiltImage,
                                         stores: tuple[LocalContentStore, SqliteMetadata]) -> None:
    content, meta = stores
    skopeo_push(five_layers, registry, "pull/parallel")
    proxy.delay = 0.3
    with HttpRegistryClient() as client:
        pull(parse_reference(f"{proxy.host}/pull/parallel:latest"), client=client,
             content=content, metadata=meta)
    assert proxy.max_inflight == 3
    assert proxy.inflight == 0


def test_pull_and_unpack_end_to_end(registry: Registry, five_layers: BuiltImage, tmp_path: Path,
                                    stores: tuple[LocalContentStore, SqliteMetadata]) -> None:
    """With the layers partner's real unpacker: registry -> content store -> snapshots."""
    from skiff.plugins.diff.tar import TarDiffer
    from skiff.plugins.snapshots.copy import CopySnapshotter
    from skiff.services.unpack import Unpacker

    content, meta = stores
    skopeo_push(five_layers, registry, "pull/e2e")
    snap = CopySnapshotter(str(tmp_path / "snapshots"))
    ref = parse_reference(f"{registry.host}/pull/e2e:latest")
    msgs: list[Message] = []
    with HttpRegistryClient() as client:
        res = pull(ref, client=client, content=content, metadata=meta, progress=msgs.append,
                   unpack=Unpacker(content, snap, TarDiffer()))
    assert isinstance(res.unpacked, str)
    (mount,) = snap.view("check", res.unpacked)
    root = Path(mount.source)
    assert (root / "bin" / "busybox").is_file()
    for i in range(4):
        assert (root / f"layer{i}" / "data").stat().st_size == 50_000 * (i + 1)
    snap.remove("check")
    assert any(m["status"] == "Extracting" for m in msgs)
    snap.close()
