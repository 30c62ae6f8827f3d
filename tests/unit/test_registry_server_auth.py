"""htpasswd basic auth and the bearer-token flow, with plain HTTP and with skiff's own client."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest

from skiff.core.content import Descriptor, Digest
from skiff.core.registry import Repository
from skiff.errors import InvalidArgument, PermissionDenied
from skiff.plugins.content.local import LocalContentStore
from skiff.plugins.registry.client import HttpRegistryClient
from skiff.plugins.registry.credentials import Credentials
from skiff.plugins.registry.server.auth import Rule, Scope, TokenSigner
from skiff.plugins.registry.server.config import TokenConfig
from skiff.plugins.registry.server.config import load as load_config
from tests.unit.test_registry_server_support import (
    OCI_MANIFEST,
    ServerThread,
    errors,
    make_image,
    push_image,
    serve,
    snapshot,
)

USERS = {"alice": "alice-pw", "bob": "bob-pw"}


def write_htpasswd(path: Path) -> Path:
    lines = []
    for user, pw in USERS.items():
        # Apache's htpasswd -B writes $2y$; make sure we read that form.
        h = bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()
        lines.append(f"{user}:$2y${h[4:]}")
    path.write_text("\n".join(lines) + "\n")
    return path


def basic(user: str, pw: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()}


@pytest.fixture
def basic_srv(tmp_path: Path) -> Iterator[ServerThread]:
    with serve(tmp_path / "root", htpasswd=str(write_htpasswd(tmp_path / "htpasswd")),
               anonymous_pull=True) as s:
        yield s


def test_basic_auth_writes_need_credentials(basic_srv: ServerThread) -> None:
    root = Path(basic_srv.config.root)
    img = make_image("auth")
    with httpx.Client(base_url=basic_srv.url, headers=basic("alice", "alice-pw")) as alice:
        assert push_image(alice, "team/app", img, "v1").status_code == 201
    before = snapshot(root)
    with httpx.Client(base_url=basic_srv.url) as anon:
        r = anon.post("/v2/team/app/blobs/uploads/")
        assert r.status_code == 401 and errors(r) == ["UNAUTHORIZED"]
        assert r.headers["WWW-Authenticate"] == 'Basic realm="skiff-registry"'
        r = anon.put("/v2/team/app/manifests/v2", content=img.manifest,
                     headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 401
        assert anon.delete(f"/v2/team/app/manifests/{img.digest}").status_code == 401
        # anonymous_pull: reads work without credentials; /v2/ still asks (docker login)
        assert anon.get("/v2/team/app/manifests/v1").content == img.manifest
        assert anon.get("/v2/").status_code == 401
        r = anon.post("/v2/team/app/blobs/uploads/", headers=basic("alice", "wrong"))
        assert r.status_code == 401
        r = anon.get("/v2/", headers=basic("nobody", "x"))
        assert r.status_code == 401
    assert snapshot(root) == before


def test_access_rules_deny_with_403(tmp_path: Path) -> None:
    rules = [Rule("alice", "*", ("*",)), Rule("bob", "team/*", ("pull",))]
    with serve(tmp_path / "root", htpasswd=str(write_htpasswd(tmp_path / "htpasswd")),
               access=rules) as s:
        with httpx.Client(base_url=s.url, headers=basic("alice", "alice-pw")) as alice:
            push_image(alice, "team/app", make_image("r"), "v1")
        with httpx.Client(base_url=s.url, headers=basic("bob", "bob-pw")) as bob:
            assert bob.get("/v2/team/app/manifests/v1").status_code == 200
            r = bob.post("/v2/team/app/blobs/uploads/")
            assert r.status_code == 403 and errors(r) == ["DENIED"]
            r = bob.get("/v2/other/app/tags/list")
            assert r.status_code == 403


@pytest.fixture
def token_srv(tmp_path: Path) -> Iterator[ServerThread]:
    tk = TokenConfig(htpasswd=str(write_htpasswd(tmp_path / "htpasswd")))
    rules = [Rule("alice", "*", ("*",)), Rule("bob", "*", ("pull",))]
    with serve(tmp_path / "root", token=tk, access=rules) as s:
        yield s


def test_token_challenge_flow_by_hand(token_srv: ServerThread) -> None:
    with httpx.Client(base_url=token_srv.url) as c:
        r = c.post("/v2/tok/app/blobs/uploads/")
        assert r.status_code == 401 and errors(r) == ["UNAUTHORIZED"]
        challenge = r.headers["WWW-Authenticate"]
        assert challenge == (f'Bearer realm="{token_srv.url}/token",service="skiff-registry",'
                             'scope="repository:tok/app:pull,push"')
        r = c.get("/token", params={"service": "skiff-registry",
                                    "scope": "repository:tok/app:pull,push"},
                  headers=basic("bob", "bob-pw"))
        assert r.status_code == 200
        tok = r.json()["token"]
        claims = json.loads(base64.urlsafe_b64decode(tok.split(".")[1] + "=="))
        assert claims["access"] == [{"type": "repository", "name": "tok/app",
                                     "actions": ["pull"]}]
        assert claims["sub"] == "bob"
        r = c.post("/v2/tok/app/blobs/uploads/", headers={"Authorization": f"Bearer {tok}"})
        assert r.status_code == 401 and 'error="insufficient_scope"' in \
            r.headers["WWW-Authenticate"]
        # A token whose payload was edited to grant push does not verify.
        h, _, sig = tok.split(".")
        forged = dict(claims, access=[{"type": "repository", "name": "tok/app",
                                       "actions": ["pull", "push"]}])
        payload = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
        r = c.post("/v2/tok/app/blobs/uploads/",
                   headers={"Authorization": f"Bearer {h}.{payload}.{sig}"})
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]
        # Wrong password at the token endpoint: 401.
        r = c.get("/token", params={"scope": "repository:tok/app:pull"},
                  headers=basic("alice", "nope"))
        assert r.status_code == 401
        # A token signed by another key is refused.
        other = TokenSigner(None, issuer="skiff-registry", service="skiff-registry")
        stranger, _, _ = other.issue("alice", [Scope("repository", "tok/app", ("pull", "push"))])
        r = c.post("/v2/tok/app/blobs/uploads/", headers={"Authorization": f"Bearer {stranger}"})
        assert r.status_code == 401


def test_token_flow_with_skiff_client(token_srv: ServerThread, tmp_path: Path) -> None:
    store = LocalContentStore(str(tmp_path / "content"))
    img = make_image("client")
    repo = Repository(token_srv.host, "tok/client")
    alice = HttpRegistryClient(credentials=lambda host: Credentials("alice", "alice-pw"))
    with alice:
        for blob in (img.config, *img.layers):
            d = store.put(blob).digest
            alice.push_blob(repo, Descriptor("application/octet-stream", d, len(blob)), store)
        assert alice.push_manifest(repo, "v1", OCI_MANIFEST, img.manifest) == \
            Digest.parse(img.digest)
    with HttpRegistryClient(credentials=lambda host: Credentials("bob", "bob-pw")) as bob:
        desc = bob.resolve(repo, "v1")
        assert desc.digest == Digest.parse(img.digest)
        assert bob.fetch_manifest(repo, desc) == img.manifest
        with pytest.raises(PermissionDenied):
            bob.push_manifest(repo, "v2", OCI_MANIFEST, img.manifest)
    with HttpRegistryClient() as anon, pytest.raises(PermissionDenied):
        anon.resolve(repo, "v1")


def test_config_file_yaml(tmp_path: Path) -> None:
    (tmp_path / "config.yml").write_text(
        "addr: 127.0.0.1:5999\nroot: data\nstorage: {delete: false}\n"
        "auth:\n  htpasswd: {realm: r1, path: users}\n  anonymous_pull: true\n"
        "  access:\n    - {account: bob, name: 'team/*', actions: [pull]}\n"
        "gc: {interval: 60, grace: 10}\n"
        "proxy: {remoteurl: 'http://127.0.0.1:1', ttl: 5}\n")
    cfg = load_config(str(tmp_path / "config.yml"))
    assert cfg.host_port == ("127.0.0.1", 5999)
    assert cfg.root == str(tmp_path / "data") and cfg.htpasswd == str(tmp_path / "users")
    assert not cfg.delete_enabled and cfg.anonymous_pull and cfg.realm == "r1"
    assert cfg.access == [Rule("bob", "team/*", ("pull",))]
    assert (cfg.gc_interval, cfg.gc_grace) == (60, 10)
    assert cfg.proxy is not None and cfg.proxy.remote_url == "http://127.0.0.1:1"
    assert cfg.proxy.ttl == 5
    (tmp_path / "bad.yml").write_text("auth: {htpasswd: {path: a}, token: {key: b}}\n")
    with pytest.raises(InvalidArgument, match="not both"):
        load_config(str(tmp_path / "bad.yml"))
    (tmp_path / "bad.yml").write_text("addr: [1, 2\n")
    with pytest.raises(InvalidArgument, match=r"bad\.yml"):
        load_config(str(tmp_path / "bad.yml"))
