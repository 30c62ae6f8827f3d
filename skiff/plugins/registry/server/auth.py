"""Who may do what: htpasswd (bcrypt) basic auth, and bearer tokens signed with ES256.

Two modes, as in Docker's registry:

- ``htpasswd``: every request carries ``Authorization: Basic``; a 401 answers with a Basic
  challenge.
- ``token``: the registry answers 401 with ``WWW-Authenticate: Bearer realm=...,service=...,
  scope=repository:<name>:<actions>``; the client fetches a token from the realm (our own
  ``/token`` endpoint, which checks the htpasswd users and grants the subset of the asked
  actions that the access rules allow) and retries with ``Authorization: Bearer``. Tokens are
  JWTs signed with ES256 (an EC P-256 key from the config, or one generated at start), so any
  process holding the public key can verify them.

Access rules (``access`` in the config) map an account (``*`` = any authenticated user,
``anonymous`` = no credentials) and a repository glob to actions; without rules every
authenticated user may do everything and anonymous users may pull only if ``anonymous_pull``.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import bcrypt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from skiff.errors import InvalidArgument, os_error

ANONYMOUS = "anonymous"
ALL_ACTIONS = ("pull", "push", "delete")


@dataclass(frozen=True)
class Scope:
    type: str  # "repository" or "registry"
    name: str
    actions: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"

    @classmethod
    def parse(cls, text: str) -> Scope:
        try:
            kind, rest = text.split(":", 1)
            name, actions = rest.rsplit(":", 1)
        except ValueError as exc:
            raise InvalidArgument(f"invalid scope {text!r}") from exc
        return cls(kind, name, tuple(a for a in actions.split(",") if a))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- htpasswd -------------------------------------------------------------------------------


class Htpasswd:
    """Users from an htpasswd file (bcrypt entries only: ``htpasswd -B``), re-read on change.

    bcrypt is slow on purpose (tens of milliseconds); a successful check is remembered for a
    minute, keyed by a hash of the password, so a pull of fifty blobs does not pay it fifty
    times.
    """

    def __init__(self, path: str, *, remember: float = 60.0) -> None:
        self.path = path
        self._remember = remember
        self._users: dict[str, bytes] = {}
        self._mtime = -1.0
        self._ok: dict[tuple[str, bytes], float] = {}
        self._lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        try:
            mtime = os.stat(self.path).st_mtime
            if mtime == self._mtime:
                return
            with open(self.path, "rb") as f:
                lines = f.read().splitlines()
        except OSError as exc:
            raise os_error("read htpasswd", self.path, exc) from exc
        users = {}
        for line in lines:
            line = line.strip()
            if not line or line.startswith(b"#") or b":" not in line:
                continue
            user, hashed = line.split(b":", 1)
            if hashed.startswith((b"$2y$", b"$2a$", b"$2b$")):
                users[user.decode()] = hashed
        with self._lock:
            self._users, self._mtime, self._ok = users, mtime, {}

    def verify(self, user: str, password: str) -> bool:
        """Blocking (bcrypt): call from a worker thread."""
        self._load()
        key = (user, hashlib.sha256(password.encode()).digest())
        now = time.monotonic()
        with self._lock:
            hashed = self._users.get(user)
            if self._ok.get(key, 0) > now:
                return True
        if hashed is None:
            return False
        # $2y$ is PHP/Apache's name for what bcrypt calls $2b$.
        if not bcrypt.checkpw(password.encode(), b"$2b$" + hashed[4:]):
            return False
        with self._lock:
            self._ok[key] = now + self._remember
        return True


# --- tokens ---------------------------------------------------------------------------------


class TokenSigner:
    """Issues and verifies ES256 JWTs carrying Docker's ``access`` claim."""

    def __init__(self, key_pem: bytes | None, *, issuer: str, service: str,
                 lifetime: int = 300) -> None:
        if key_pem is None:
            key: Any = ec.generate_private_key(ec.SECP256R1())
        else:
            key = serialization.load_pem_private_key(key_pem, password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
                raise InvalidArgument("token signing key: want an EC P-256 private key (ES256)")
        self._key: ec.EllipticCurvePrivateKey = key
        self._public = key.public_key()
        der = self._public.public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
        self.kid = _b64(hashlib.sha256(der).digest()[:15])
        self.issuer = issuer
        self.service = service
        self.lifetime = lifetime

    def issue(self, account: str, access: Sequence[Scope]) -> tuple[str, int, int]:
        """(token, expires_in, issued_at)."""
        now = int(time.time())
        claims = {
            "iss": self.issuer, "sub": account, "aud": self.service,
            "iat": now, "nbf": now - 5, "exp": now + self.lifetime,
            "jti": secrets.token_hex(16),
            "access": [{"type": s.type, "name": s.name, "actions": list(s.actions)}
                       for s in access],
        }
        header = {"alg": "ES256", "typ": "JWT", "kid": self.kid}
        signing_input = (_b64(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         _b64(json.dumps(claims, separators=(",", ":")).encode()))
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{signing_input}.{_b64(sig)}", self.lifetime, now

    def verify(self, token: str) -> tuple[str, list[Scope]]:
        """(account, granted scopes); InvalidArgument for a bad, foreign or expired token."""
        try:
            h64, c64, s64 = token.split(".")
            header = json.loads(_unb64(h64))
            claims = json.loads(_unb64(c64))
            sig = _unb64(s64)
        except (ValueError, TypeError) as exc:
            raise InvalidArgument("malformed token") from exc
        if not isinstance(header, dict) or header.get("alg") != "ES256" or len(sig) != 64:
            raise InvalidArgument("token not signed with ES256")
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"),
                                   int.from_bytes(sig[32:], "big"))
        try:
            self._public.verify(der, f"{h64}.{c64}".encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature as exc:
            raise InvalidArgument("token signature does not verify") from exc
        if not isinstance(claims, dict):
            raise InvalidArgument("token claims are not an object")
        now = time.time()
        if claims.get("iss") != self.issuer or claims.get("aud") != self.service:
            raise InvalidArgument("token issued for another issuer or service")
        exp, nbf = claims.get("exp"), claims.get("nbf", 0)
        if not isinstance(exp, int) or exp < now or not isinstance(nbf, int) or nbf > now + 5:
            raise InvalidArgument("token expired or not yet valid")
        granted = []
        for item in claims.get("access") or []:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                acts = tuple(a for a in item.get("actions") or [] if isinstance(a, str))
                granted.append(Scope(str(item.get("type")), item["name"], acts))
        return str(claims.get("sub", "")), granted


# --- policy ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    account: str
    name: str  # fnmatch glob over repository names
    actions: tuple[str, ...]


@dataclass
class Policy:
    rules: list[Rule] = field(default_factory=list)
    anonymous_pull: bool = False

    def allowed(self, account: str, scope: Scope) -> tuple[str, ...]:
        """The subset of ``scope.actions`` ``account`` may perform."""
        if scope.type == "registry":
            # The catalog: anyone authenticated (or rule-granted) may list.
            ok = account != ANONYMOUS or self.anonymous_pull
            return tuple(a for a in scope.actions if a == "*" and ok)
        if scope.type != "repository":
            return ()
        if self.rules:
            granted: set[str] = set()
            for r in self.rules:
                if r.account in (account, "*" if account != ANONYMOUS else "") and \
                        fnmatch.fnmatchcase(scope.name, r.name):
                    granted |= set(ALL_ACTIONS if "*" in r.actions else r.actions)
        elif account == ANONYMOUS:
            granted = {"pull"} if self.anonymous_pull else set()
        else:
            granted = set(ALL_ACTIONS)
        if account == ANONYMOUS and self.anonymous_pull:
            granted.add("pull")
        return tuple(a for a in scope.actions if a in granted or (a == "*" and granted))
