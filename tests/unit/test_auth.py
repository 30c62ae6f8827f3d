"""WWW-Authenticate parsing and the token flow, against an in-process token server on loopback.

The full flow against docker-registry's own token auth is in
tests/integration/test_registry_client_token.py; these pin the details (GET vs OAuth2 POST,
fallback, caching per scope, expiry, refusals) quickly and without root.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from skiff.errors import InvalidArgument, PermissionDenied
from skiff.plugins.registry.auth import Authenticator, Challenge, basic_header, parse_challenges
from skiff.plugins.registry.credentials import ANONYMOUS, Credentials


def test_parse_challenges() -> None:
    hub = ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
           'scope="repository:library/busybox:pull"')
    assert parse_challenges(hub) == [Challenge("bearer", {
        "realm": "https://auth.docker.io/token", "service": "registry.docker.io",
        "scope": "repository:library/busybox:pull"})]
    assert parse_challenges('Basic realm="Registry Realm"') == [
        Challenge("basic", {"realm": "Registry Realm"})]
    two = parse_challenges('Basic realm="a", Bearer realm="b", service=svc, error="x\\"y"')
    assert two == [Challenge("basic", {"realm": "a"}),
                   Challenge("bearer", {"realm": "b", "service": "svc", "error": 'x"y'})]
    assert parse_challenges("Negotiate") == [Challenge("negotiate", {})]
    with pytest.raises(InvalidArgument, match="WWW-Authenticate"):
        parse_challenges('realm="x"')
    with pytest.raises(InvalidArgument, match="WWW-Authenticate"):
        parse_challenges('Bearer realm="unterminated')


class TokenServer:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.oauth = True
        self.expires_in = 300
        self.count = 0
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def reply(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                q = parse_qs(urlsplit(self.path).query)
                auth = self.headers.get("Authorization")
                srv.requests.append({"method": "GET", "query": q, "auth": auth})
                if auth and auth != basic_header(Credentials("alice", "pw")):
                    return self.reply(401, {"details": "bad credentials"})
                srv.count += 1
                self.reply(200, {"token": f"tok{srv.count}", "expires_in": srv.expires_in})

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", "0"))
                form = parse_qs(self.rfile.read(n).decode())
                srv.requests.append({"method": "POST", "form": form})
                if not srv.oauth:
                    return self.reply(404, {})
                if form.get("refresh_token") != ["refresh-ok"]:
                    return self.reply(401, {"error": "invalid_grant"})
                srv.count += 1
                self.reply(200, {"access_token": f"oauth{srv.count}", "expires_in": 300})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def challenge(self, scope: str = "") -> str:
        extra = f',scope="{scope}"' if scope else ""
        return f'Bearer realm="{self.realm}",service="reg.test"{extra}'

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def tokens() -> Iterator[TokenServer]:
    t = TokenServer()
    yield t
    t.close()
    assert not t.thread.is_alive()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client() as c:
        yield c


PULL = ("repository:a/b:pull",)


def test_anonymous_token_then_cached(tokens: TokenServer, http: httpx.Client) -> None:
    auth = Authenticator(http)
    assert auth.authorization("reg:1", PULL) is None  # no challenge seen yet
    header = auth.on_unauthorized("reg:1", tokens.challenge(), PULL, None)
    assert header == "Bearer tok1"
    (req,) = tokens.requests
    assert req["auth"] is None
    assert req["query"] == {"service": ["reg.test"], "scope": ["repository:a/b:pull"]}
    # Known challenge: later requests are authorised up front, from the cache.
    assert auth.authorization("reg:1", PULL) == "Bearer tok1"
    assert len(tokens.requests) == 1
    # Another scope is another token.
    assert auth.authorization("reg:1", ("repository:c/d:pull",)) == "Bearer tok2"
    # The token was refused (revoked, say): the cached one is dropped and a new one fetched.
    assert auth.on_unauthorized("reg:1", tokens.challenge(), PULL, "Bearer tok1") == "Bearer tok3"


def test_token_expiry_uses_the_clock(tokens: TokenServer, http: httpx.Client) -> None:
    now = [1000.0]
    auth = Authenticator(http, clock=lambda: now[0])
    tokens.expires_in = 100
    auth.on_unauthorized("reg:1", tokens.challenge(), PULL, None)
    now[0] += 80  # inside lifetime minus margin
    assert auth.authorization("reg:1", PULL) == "Bearer tok1"
    now[0] += 15  # within the renewal margin
    assert auth.authorization("reg:1", PULL) == "Bearer tok2"


def test_challenge_scope_used_only_without_ours(tokens: TokenServer, http: httpx.Client) -> None:
    auth = Authenticator(http)
    auth.on_unauthorized("reg:1", tokens.challenge("repository:x/y:pull"), PULL, None)
    assert tokens.requests[0]["query"]["scope"] == ["repository:a/b:pull"]
    auth.on_unauthorized("reg:2", tokens.challenge("repository:x/y:pull"), (), None)
    assert tokens.requests[1]["query"]["scope"] == ["repository:x/y:pull"]


def test_basic_credentials_to_the_token_endpoint(tokens: TokenServer, http: httpx.Client) -> None:
    auth = Authenticator(http, lambda host: Credentials("alice", "pw"))
    assert auth.on_unauthorized("reg:1", tokens.challenge(), PULL, None) == "Bearer tok1"
    assert tokens.requests[0]["auth"] == basic_header(Credentials("alice", "pw"))
    assert tokens.requests[0]["query"]["account"] == ["alice"]
    wrong = Authenticator(http, lambda host: Credentials("alice", "nope"))
    with pytest.raises(PermissionDenied, match=r"refused alice: 401"):
        wrong.on_unauthorized("reg:1", tokens.challenge(), PULL, None)


def test_identity_token_uses_oauth_post_and_falls_back(tokens: TokenServer,
                                                       http: httpx.Client) -> None:
    auth = Authenticator(http, lambda host: Credentials(identity_token="refresh-ok"))
    assert auth.on_unauthorized("reg:1", tokens.challenge(), PULL, None) == "Bearer oauth1"
    form = tokens.requests[0]["form"]
    assert form["grant_type"] == ["refresh_token"] and form["scope"] == ["repository:a/b:pull"]
    assert form["client_id"] == ["skiff"] and form["service"] == ["reg.test"]
    tokens.oauth = False  # a token server without OAuth2: POST 404 -> GET
    auth2 = Authenticator(http, lambda host: Credentials(identity_token="refresh-ok"))
    assert auth2.on_unauthorized("reg:1", tokens.challenge(), PULL, None) == "Bearer tok2"
    assert [r["method"] for r in tokens.requests] == ["POST", "POST", "GET"]


def test_basic_scheme(http: httpx.Client) -> None:
    creds = Credentials("bob", "pw")
    auth = Authenticator(http, lambda host: creds if host == "reg:1" else ANONYMOUS)
    header = auth.on_unauthorized("reg:1", 'Basic realm="r"', PULL, None)
    assert header == "Basic " + base64.b64encode(b"bob:pw").decode()
    with pytest.raises(PermissionDenied, match="access denied for bob"):
        auth.on_unauthorized("reg:1", 'Basic realm="r"', PULL, header)
    with pytest.raises(PermissionDenied, match="skiff login reg:2"):
        auth.on_unauthorized("reg:2", 'Basic realm="r"', PULL, None)
    with pytest.raises(PermissionDenied, match="no supported authentication"):
        auth.on_unauthorized("reg:1", "Negotiate", PULL, None)
