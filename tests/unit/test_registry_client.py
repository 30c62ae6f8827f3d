"""Registry client behaviour that docker-registry never shows us, against a scripted loopback
server: no HEAD support, Range ignored, paginated tags, rate limits, redirects to a blob host,
lying manifests. (The real-peer tests are in tests/integration/test_registry_client*.py.)
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from skiff.core.content import Descriptor, Digest
from skiff.core.registry import Repository
from skiff.errors import InvalidArgument, Unavailable
from skiff.plugins.content.local import LocalContentStore
from skiff.plugins.registry.client import HttpRegistryClient, RegistryConfig, is_loopback

MT = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


Route = Callable[[str, str, dict[str, str]], Reply]


class Scripted:
    """A loopback HTTP server whose answers are a function of (method, path, headers)."""

    def __init__(self, route: Route) -> None:
        self.route = route
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def handle_any(self) -> None:
                headers = dict(self.headers.items())
                srv.seen.append((self.command, self.path, headers))
                r = srv.route(self.command, self.path, headers)
                self.send_response(r.status)
                for k, v in r.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(r.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(r.body)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = handle_any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def serve() -> Iterator[Callable[[Route], Scripted]]:
    servers: list[Scripted] = []

    def start(route: Route) -> Scripted:
        servers.append(Scripted(route))
        return servers[-1]

    yield start
    for s in servers:
        s.close()
        assert not s.thread.is_alive()


@pytest.fixture
def client() -> Iterator[HttpRegistryClient]:
    with HttpRegistryClient() as c:
        yield c


MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": MT, "config": {
    "mediaType": "application/vnd.oci.image.config.v1+json",
    "digest": "sha256:" + "0" * 64, "size": 1}, "layers": []}).encode()
MDIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()


def test_loopback_detection_and_insecure_registries() -> None:
    assert is_loopback("localhost:5000") and is_loopback("127.3.4.5:1") and is_loopback("[::1]:5")
    assert not is_loopback("registry.example.com") and not is_loopback("10.0.0.1:5000")
    cfg = RegistryConfig(insecure=frozenset({"reg.lan", "other.lan:5000", "10.1.0.0/16"}))
    with HttpRegistryClient(cfg) as c:
        assert c._insecure("reg.lan:443") and c._insecure("other.lan:5000")
        assert c._insecure("10.1.2.3:5000") and c._insecure("127.0.0.1:1")
        assert not c._insecure("other.lan:6000") and not c._insecure("10.2.0.1")
        assert not c._insecure("registry.example.com")
        # Secure registries are HTTPS without any probing.
        assert c._base(c._endpoints("registry.example.com", False)[0]) == (
            "https://registry.example.com")


def test_resolve_falls_back_to_get_and_reuses_it(serve: Callable[[Route], Scripted],
                                                 client: HttpRegistryClient) -> None:
    def route(method: str, path: str, h: dict[str, str]) -> Reply:
        if path == "/v2/a/b/manifests/latest":
            if method == "HEAD":
                return Reply(405)
            return Reply(200, MANIFEST, {"Content-Type": MT})
        return Reply(404)

    srv = serve(route)
    repo = Repository(srv.host, "a/b")
    desc = client.resolve(repo, "latest")
    assert desc == Descriptor(MT, Digest.parse(MDIGEST), len(MANIFEST))
    assert "application/vnd.oci.image.index.v1+json" in srv.seen[0][2]["Accept"]
    assert client.fetch_manifest(repo, desc) == MANIFEST
    assert [m for m, _, _ in srv.seen] == ["HEAD", "GET"]  # the GET answer was reused


def test_lying_and_oversized_manifests(serve: Callable[[Route], Scripted],
                                       client: HttpRegistryClient) -> None:
    huge = b"{" + b" " * (5 << 20) + b"}"

    def route(method: str, path: str, h: dict[str, str]) -> Reply:
        if path.endswith("/manifests/" + MDIGEST):
            return Reply(200, MANIFEST.replace(b"layers", b"Layers"), {"Content-Type": MT})
        if path.endswith("/manifests/huge"):
            return Reply(200, huge, {"Content-Type": MT})
        return Reply(404)

    srv = serve(route)
    repo = Repository(srv.host, "a/b")
    with pytest.raises(InvalidArgument, match=f"manifest {srv.host}/a/b@{MDIGEST}.*digest"):
        client.fetch_manifest(repo, Descriptor(MT, Digest.parse(MDIGEST), len(MANIFEST)))
    with pytest.raises(InvalidArgument, match="larger than"):
        client.resolve(repo, "huge")  # HEAD without a digest -> GET, bounded while reading


def test_resume_when_server_ignores_range(serve: Callable[[Route], Scripted],
                                          client: HttpRegistryClient, tmp_path: Path) -> None:
    blob = bytes(range(256)) * 1000
    digest = Digest.from_bytes(blob)

    def route(method: str, path: str, h: dict[str, str]) -> Reply:
        return Reply(200, blob)  # always the whole blob, Range or not

    srv = serve(route)
    store = LocalContentStore(str(tmp_path / "c"))
    w = store.writer("x")
    w.write(blob[:100_000])
    seen: list[int] = []
    client.fetch_blob(Repository(srv.host, "a/b"), Descriptor("x", digest, len(blob)), w,
                      seen.append)
    assert store.read(digest) == blob
    assert srv.seen[0][2]["Range"] == "bytes=100000-"
    assert seen[0] > 100_000 and seen[-1] == len(blob)


def test_blob_redirect_drops_authorization(serve: Callable[[Route], Scripted],
                                           tmp_path: Path) -> None:
    blob = b"layer bytes" * 1000
    digest = Digest.from_bytes(blob)
    storage = serve(lambda m, p, h: Reply(200, blob))

    def route(method: str, path: str, h: dict[str, str]) -> Reply:
        if h.get("Authorization") != "Basic dTpw":
            return Reply(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return Reply(307, headers={"Location": f"http://{storage.host}/bucket/{digest.hex}"})

    reg = serve(route)
    store = LocalContentStore(str(tmp_path / "c"))
    from skiff.plugins.registry.credentials import Credentials
    with HttpRegistryClient(credentials=lambda host: Credentials("u", "p")) as client:
        client.fetch_blob(Repository(reg.host, "a/b"), Descriptor("x", digest, len(blob)),
                          store.writer("y"))
    assert store.read(digest) == blob
    (_, path, headers), = storage.seen
    assert path == f"/bucket/{digest.hex}"
    assert "Authorization" not in headers  # credentials stay with the registry


def test_tags_pagination_and_error_bodies(serve: Callable[[Route], Scripted],
                                          client: HttpRegistryClient) -> None:
    def route(method: str, path: str, h: dict[str, str]) -> Reply:
        if path == "/v2/a/b/tags/list":
            return Reply(200, json.dumps({"name": "a/b", "tags": ["1", "2"]}).encode(),
                         {"Link": '</v2/a/b/tags/list?last=2&n=2>; rel="next"'})
        if path == "/v2/a/b/tags/list?last=2&n=2":
            return Reply(200, json.dumps({"name": "a/b", "tags": ["3"]}).encode())
        if "limited" in path:
            return Reply(429, b"{}")
        err = {"errors": [{"code": "UNSUPPORTED", "message": "the operation is unsupported"}]}
        return Reply(500, json.dumps(err).encode(), {"Content-Type": "application/json"})

    srv = serve(route)
    assert client.list_tags(Repository(srv.host, "a/b")) == ["1", "2", "3"]
    with pytest.raises(Unavailable, match="rate limiting"):
        client.list_tags(Repository(srv.host, "limited/x"))
    with pytest.raises(Unavailable, match=r"HTTP 500: UNSUPPORTED: the operation is unsupported"):
        client.list_tags(Repository(srv.host, "c/d"))
