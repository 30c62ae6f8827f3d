"""Registry authentication: the ``WWW-Authenticate`` challenge flow Docker Hub uses.

A registry answers an unauthenticated request with 401 and a challenge:

* ``Basic realm="..."``: send ``Authorization: Basic base64(user:pw)`` on every request;
* ``Bearer realm="https://auth/token",service="reg",scope="repository:x:pull"``: ask the realm
  for a token for the scopes we need (GET with Basic credentials or anonymously; POST of an
  OAuth2 form when we hold a refresh token) and send ``Authorization: Bearer <token>``.

The challenge seen for a host is remembered, so later requests go out authorised without a 401
round trip; tokens are cached per (host, scopes) until shortly before they expire.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx

from skiff.errors import InvalidArgument, PermissionDenied, Unavailable
from skiff.plugins.registry.credentials import ANONYMOUS, Credentials

CLIENT_ID = "skiff"
_MIN_TOKEN_SECONDS = 60  # the distribution token spec's default when expires_in is absent
_EXPIRY_MARGIN = 10.0  # renew a little early so a token does not lapse mid-request


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower-cased: "basic" or "bearer"
    params: dict[str, str] = field(default_factory=dict)


_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_ITEM = re.compile(rf"\s*(?:({_TOKEN})\s*=\s*({_QUOTED}|{_TOKEN}=*)|({_TOKEN}=*))\s*(,)?")


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value into its challenges (RFC 7235 grammar).

    A bare token starts a new challenge (the scheme); ``k=v`` pairs after it are its
    parameters. Commas separate both parameters and challenges, so the scheme is what tells
    them apart.
    """
    out: list[Challenge] = []
    pos = 0
    current: Challenge | None = None
    text = header.strip()
    while pos < len(text):
        # A scheme may be followed by a space then its first parameter: "Bearer realm=...".
        m = re.match(rf"\s*({_TOKEN})\s+(?=[^\s,=])", text[pos:])
        if m and "=" not in text[pos:pos + m.end()]:
            current = Challenge(m.group(1).lower())
            out.append(current)
            pos += m.end()
            continue
        m = _ITEM.match(text, pos)
        if not m or m.end() == pos:
            raise InvalidArgument(f"malformed WWW-Authenticate header {header!r} at offset {pos}")
        pos = m.end()
        if m.group(1):
            if current is None:
                raise InvalidArgument(f"malformed WWW-Authenticate header {header!r}: "
                                      f"parameter before a scheme")
            value = m.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            current.params[m.group(1).lower()] = value
        else:
            current = Challenge(m.group(3).lower())
            out.append(current)
    return out


def basic_header(creds: Credentials) -> str:
    raw = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


@dataclass
class _Token:
    value: str
    expires: float


class Authenticator:
    """Turns challenges into Authorization headers, per registry host, thread-safe.

    ``credentials(host)`` returns the stored credentials for a registry host (ANONYMOUS when
    none); it is asked lazily so anonymous pulls never read the config file.
    """

    def __init__(self, http: httpx.Client,
                 credentials: Callable[[str], Credentials] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._http = http
        self._credentials = credentials or (lambda _host: ANONYMOUS)
        self._clock = clock
        self._lock = threading.Lock()
        self._challenges: dict[str, Challenge] = {}
        self._tokens: dict[tuple[str, tuple[str, ...]], _Token] = {}
        self._fetching: dict[tuple[str, tuple[str, ...]], threading.Lock] = {}
        self.token_fetches = 0  # how many times a token endpoint was asked (for tests/metrics)

    def authorization(self, host: str, scopes: Sequence[str]) -> str | None:
        """The header for a request to ``host`` if its challenge is already known, else None."""
        with self._lock:
            challenge = self._challenges.get(host)
        if challenge is None:
            return None
        return self._header_for(host, challenge, scopes)

    def on_unauthorized(self, host: str, header: str | None, scopes: Sequence[str],
                        sent: str | None) -> str:
        """Answer a 401: learn the challenge and return the header to retry with.

        ``sent`` is the Authorization we sent; if it already answered this challenge, the
        credentials (or token) were refused and retrying would loop, so PermissionDenied.
        """
        challenges = parse_challenges(header or "")
        chosen = next((c for c in challenges if c.scheme == "bearer"), None) or next(
            (c for c in challenges if c.scheme == "basic"), None)
        if chosen is None:
            raise PermissionDenied(f"registry {host} refused the request and offered no "
                                   f"supported authentication scheme ({header or 'no challenge'})")
        with self._lock:
            known = self._challenges.get(host)
            self._challenges[host] = chosen
            if sent is not None and known == chosen:
                # The token we held was rejected; drop it so a fresh one is fetched once.
                self._tokens.pop((host, _scope_key(scopes, chosen)), None)
        retry = self._header_for(host, chosen, scopes)
        if sent is not None and retry == sent:
            who = self._credentials(host).username or "anonymous"
            raise PermissionDenied(f"registry {host}: access denied for {who} "
                                   f"(scope {' '.join(scopes) or 'registry'})")
        return retry

    def _header_for(self, host: str, challenge: Challenge, scopes: Sequence[str]) -> str:
        if challenge.scheme == "basic":
            creds = self._credentials(host)
            if creds.empty:
                raise PermissionDenied(f"registry {host} requires authentication: "
                                       f"log in with 'skiff login {host}'")
            return basic_header(creds)
        key = (host, _scope_key(scopes, challenge))
        with self._lock:
            fetching = self._fetching.setdefault(key, threading.Lock())
        # One fetch per key at a time: parallel layer downloads all hit the first 401 together,
        # and should share the one token rather than each asking the token server.
        with fetching:
            with self._lock:
                cached = self._tokens.get(key)
            if cached is not None and cached.expires > self._clock():
                return "Bearer " + cached.value
            token = self._fetch_token(host, challenge, key[1])
            with self._lock:
                self._tokens[key] = token
        return "Bearer " + token.value

    def _fetch_token(self, host: str, challenge: Challenge, scopes: tuple[str, ...]) -> _Token:
        realm = challenge.params.get("realm")
        if not realm:
            raise PermissionDenied(f"registry {host}: bearer challenge without a realm")
        service = challenge.params.get("service", "")
        creds = self._credentials(host)
        self.token_fetches += 1
        try:
            if creds.identity_token:
                resp = self._post_oauth(realm, service, scopes, creds)
                # Registries without OAuth2 POST support answer 404/405: fall back to GET.
                if resp.status_code in (404, 405):
                    resp = self._get_token(realm, service, scopes, creds)
            else:
                resp = self._get_token(realm, service, scopes, creds)
        except httpx.HTTPError as exc:
            raise Unavailable(f"fetch registry token for {host} from {realm}: {exc}") from exc
        if resp.status_code in (401, 403):
            who = creds.username or "anonymous"
            raise PermissionDenied(f"registry {host}: token server {realm} refused {who}: "
                                   f"{resp.status_code} {_short(resp.text)}")
        if resp.status_code != 200:
            raise Unavailable(f"fetch registry token for {host} from {realm}: "
                              f"HTTP {resp.status_code} {_short(resp.text)}")
        try:
            body = resp.json()
        except ValueError as exc:
            raise Unavailable(f"fetch registry token for {host} from {realm}: "
                              f"response is not JSON") from exc
        value = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(value, str) or not value:
            raise Unavailable(f"fetch registry token for {host} from {realm}: no token in response")
        expires_in = body.get("expires_in")
        lifetime = expires_in if isinstance(expires_in, int) and expires_in > 0 else 0
        lifetime = max(lifetime, _MIN_TOKEN_SECONDS)
        return _Token(value, self._clock() + lifetime - _EXPIRY_MARGIN)

    def _get_token(self, realm: str, service: str, scopes: tuple[str, ...],
                   creds: Credentials) -> httpx.Response:
        params: list[tuple[str, str | int | float | bool | None]] = []
        if service:
            params.append(("service", service))
        params.extend(("scope", s) for s in scopes)
        if creds.username or creds.password:
            params.append(("account", creds.username))
        headers = {"Authorization": basic_header(creds)} if (creds.username or creds.password) else {}
        return self._http.get(realm, params=params, headers=headers)

    def _post_oauth(self, realm: str, service: str, scopes: tuple[str, ...],
                    creds: Credentials) -> httpx.Response:
        form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                "service": service, "client_id": CLIENT_ID, "scope": " ".join(scopes)}
        return self._http.post(realm, data=form)


def _scope_key(scopes: Sequence[str], challenge: Challenge) -> tuple[str, ...]:
    """The scopes to ask a token for, in a stable order.

    Ours when we have any: the challenge is remembered per host, so the scope it carried
    belongs to the request that drew it, and mixing it into later requests would split the
    token cache. Without our own (a ping), the registry's.
    """
    if scopes:
        return tuple(sorted(set(scopes)))
    extra = challenge.params.get("scope")
    return tuple(sorted(set(extra.split(" ")))) if extra else ()


def _short(text: str) -> str:
    text = text.strip().replace("\n", " ")
    return text[:200] + ("..." if len(text) > 200 else "")
