"""Bearer-token auth end to end: docker-registry configured for token auth, trusting a test token
server (RS256 JWTs signed with a key whose self-signed certificate is the registry's
rootcertbundle; the openssl CLI makes the key and signs). The challenge -> token -> retry flow
is the one Docker Hub uses.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from skiff.core.content import Descriptor, Digest
from skiff.core.reference import parse_reference
from skiff.devtools.images import (
    BuiltImage,
    Registry,
    build_image,
    start_registry,
    stop_registry,
)
from skiff.errors import PermissionDenied
from skiff.plugins.content.local import LocalContentStore
from skiff.plugins.metadata.sqlite import SqliteMetadata
from skiff.plugins.registry.auth import basic_header
from skiff.plugins.registry.client import HttpRegistryClient
from skiff.plugins.registry.credentials import Credentials
from skiff.services.distribution import pull, push

ISSUER, SERVICE = "skiff-test-issuer", "skiff-test-registry"
USER, PASSWORD = "tokenuser", "tokenpw"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    """Grants what was asked to USER/PASSWORD, pull-only to anonymous, 401 to wrong passwords."""

    def __init__(self, workdir: Path) -> None:
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("openssl CLI not installed (needed to make the token signing key)")
        self.openssl = openssl
        self.key = workdir / "token.key"
        self.cert = workdir / "token.crt"
        subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=skiff token test", "-keyout", str(self.key),
                        "-out", str(self.cert)], check=True, capture_output=True)
        der = subprocess.run([openssl, "x509", "-in", str(self.cert), "-outform", "DER"],
                             check=True, capture_output=True).stdout
        self.x5c = base64.b64encode(der).decode()
        self.issued: list[dict[str, Any]] = []
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                q = parse_qs(urlsplit(self.path).query)
                auth = self.headers.get("Authorization")
                if auth is not None and auth != basic_header(Credentials(USER, PASSWORD)):
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                access = []
                for scope in q.get("scope", []):
                    kind, name, actions = scope.split(":")
                    granted = actions.split(",") if auth else ["pull"]
                    access.append({"type": kind, "name": name, "actions": granted})
                issuer.issued.append({"scopes": q.get("scope", []), "user": bool(auth)})
                body = json.dumps({"token": issuer.sign(access), "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def sign(self, access: list[dict[str, Any]]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {"iss": ISSUER, "sub": USER, "aud": SERVICE, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": os.urandom(8).hex(), "access": access}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        sig = subprocess.run([self.openssl, "dgst", "-sha256", "-sign", str(self.key)],
                             input=signing_input.encode(), check=True, capture_output=True).stdout
        return f"{signing_input}.{b64url(sig)}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry,
                                                                                TokenIssuer]]:
    work = tmp_path_factory.mktemp("token-registry")
    issuer = TokenIssuer(work)
    reg = start_registry(work / "reg", {"token": {
        "realm": issuer.realm, "service": SERVICE, "issuer": ISSUER,
        "rootcertbundle": str(issuer.cert)}}, Credentials(USER, PASSWORD))
    yield reg, issuer
    stop_registry(reg)
    issuer.close()


@pytest.fixture
def image(tmp_path: Path) -> BuiltImage:
    return build_image(tmp_path / "img", [{"a": os.urandom(100_000)}, {"b": b"token"}])


def load(image: BuiltImage, content: LocalContentStore, meta: SqliteMetadata, name: str) -> None:
    for blob in [*image.layers, image.config, image.manifest]:
        content.put(blob)
    meta.put_image(name, Descriptor("application/vnd.oci.image.manifest.v1+json",
                                    image.manifest_digest, len(image.manifest)))


def test_push_and_pull_with_bearer_tokens(token_registry: tuple[Registry, TokenIssuer],
                                          image: BuiltImage, tmp_path: Path) -> None:
    reg, issuer = token_registry
    meta = SqliteMetadata(str(tmp_path / "meta.db"))
    content = LocalContentStore(str(tmp_path / "content"))
    ref = parse_reference(f"{reg.host}/tok/img:v1")
    load(image, content, meta, str(ref))

    # Anonymous: the token grants pull only, so the push is refused.
    with HttpRegistryClient() as client, pytest.raises(PermissionDenied):
        push(ref, client=client, content=content, metadata=meta)
    # Wrong password: the token server itself refuses.
    with HttpRegistryClient(credentials=lambda h: Credentials(USER, "wrong")) as client, \
            pytest.raises(PermissionDenied, match="token server"):
        push(ref, client=client, content=content, metadata=meta)

    issuer.issued.clear()
    with HttpRegistryClient(credentials=lambda h: Credentials(USER, PASSWORD)) as client:
        push(ref, client=client, content=content, metadata=meta)
    push_scope = "repository:tok/img:pull,push"
    # One token, reused for every blob check, upload and the manifest (cached, not re-fetched).
    assert issuer.issued == [{"scopes": [push_scope], "user": True}]

    # Anonymous pull works (pull scope granted to everyone) into a fresh store.
    meta2 = SqliteMetadata(str(tmp_path / "meta2.db"))
    content2 = LocalContentStore(str(tmp_path / "content2"))
    issuer.issued.clear()
    with HttpRegistryClient() as client:
        res = pull(ref, client=client, content=content2, metadata=meta2)
    assert res.target.digest == image.manifest_digest
    assert issuer.issued == [{"scopes": ["repository:tok/img:pull"], "user": False}]
    for blob in [*image.layers, image.config, image.manifest]:
        assert content2.read(Digest.from_bytes(blob)) == blob
    meta.close()
    meta2.close()
