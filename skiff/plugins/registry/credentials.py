"""Registry credentials in Docker's ``config.json`` format (``skiff login`` / ``logout``).

Only the inline ``"auths"`` map is supported: ``{"auths": {"host": {"auth": base64("user:pw")}}}``
(and ``"identitytoken"`` for OAuth refresh tokens). Credential helpers (``credsStore``,
``credHelpers``) run external programs and are out of scope: when one is configured for a
registry we say so in the error instead of silently acting anonymous.

The file is rewritten atomically (temp file + rename, mode 0600) and unknown keys are kept,
so a config shared with the docker CLI survives our edits.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from skiff.errors import InvalidArgument, NotFound, Unavailable, os_error

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
"""The key docker uses for Docker Hub in config.json (a historical v1 URL)."""

_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io", DOCKER_HUB_KEY)


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    identity_token: str = ""  # OAuth2 refresh token (Docker's "identitytoken")

    @property
    def empty(self) -> bool:
        return not (self.username or self.password or self.identity_token)


ANONYMOUS = Credentials()


def default_path() -> str:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json`` (as the docker CLI)."""
    base = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return os.path.join(base, "config.json")


def config_key(registry: str) -> str:
    """The key a registry has in ``auths``: the bare host, Docker Hub's legacy URL for Hub."""
    host = _strip_scheme(registry)
    return DOCKER_HUB_KEY if host in _HUB_ALIASES or registry == DOCKER_HUB_KEY else host


def _strip_scheme(registry: str) -> str:
    host = registry
    for prefix in ("https://", "http://"):
        if host.startswith(prefix):
            host = host[len(prefix):]
    return host.split("/", 1)[0]


class CredentialStore:
    """Reads and writes one Docker-compatible config.json."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or default_path()

    def _load(self) -> dict[str, Any]:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise os_error("read registry credentials", self.path, exc) from exc
        try:
            obj = json.loads(data or b"{}")
        except ValueError as exc:
            raise InvalidArgument(f"registry credentials {self.path}: not valid JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise InvalidArgument(f"registry credentials {self.path}: not a JSON object")
        return obj

    def _save(self, obj: dict[str, Any]) -> None:
        directory = os.path.dirname(self.path) or "."
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".config.json.", dir=directory)
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(obj, f, indent="\t")
                    f.write("\n")
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o600)
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            raise os_error("write registry credentials", self.path, exc) from exc

    def get(self, registry: str) -> Credentials:
        """Credentials for ``registry`` (host[:port] or Hub alias); ANONYMOUS when none stored."""
        obj = self._load()
        key = config_key(registry)
        helpers = obj.get("credHelpers") or {}
        if isinstance(helpers, dict) and key in helpers:
            raise Unavailable(
                f"registry credentials for {key}: credential helper {helpers[key]!r} configured "
                f"in {self.path}; credential helpers are not supported, use 'skiff login'")
        auths = obj.get("auths") or {}
        entry = _find_entry(auths, key) if isinstance(auths, dict) else None
        if entry is None:
            if obj.get("credsStore"):
                raise Unavailable(
                    f"registry credentials for {key}: credsStore {obj['credsStore']!r} configured "
                    f"in {self.path}; credential stores are not supported, use 'skiff login'")
            return ANONYMOUS
        return _decode_entry(entry, key, self.path)

    def store(self, registry: str, creds: Credentials) -> None:
        """Record credentials (``login``); replaces any previous entry for the registry."""
        obj = self._load()
        auths = obj.setdefault("auths", {})
        if not isinstance(auths, dict):
            raise InvalidArgument(f"registry credentials {self.path}: 'auths' is not an object")
        entry: dict[str, str] = {}
        if creds.username or creds.password:
            raw = f"{creds.username}:{creds.password}".encode()
            entry["auth"] = base64.b64encode(raw).decode()
        if creds.identity_token:
            entry["identitytoken"] = creds.identity_token
        auths[config_key(registry)] = entry
        self._save(obj)

    def erase(self, registry: str) -> None:
        """Forget credentials (``logout``); NotFound when there were none."""
        obj = self._load()
        auths = obj.get("auths")
        key = config_key(registry)
        if not isinstance(auths, dict) or key not in auths:
            raise NotFound(f"not logged in to {key}")
        del auths[key]
        self._save(obj)


def decode_registry_auth(header: str) -> Credentials:
    """The ``X-Registry-Auth`` header the docker CLI sends with pull/push (base64url JSON).

    The daemon uses the caller's credentials, not its own config.json; an empty or ``{}``
    header means anonymous.
    """
    text = header.strip()
    if not text:
        return ANONYMOUS
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        obj = json.loads(raw or b"{}")
    except (binascii.Error, ValueError) as exc:
        raise InvalidArgument(f"X-Registry-Auth header: not base64url JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise InvalidArgument("X-Registry-Auth header: not a JSON object")
    return _decode_entry(obj, str(obj.get("serveraddress") or "registry"), "X-Registry-Auth")


def encode_registry_auth(creds: Credentials, server: str) -> str:
    """The ``X-Registry-Auth`` value for ``creds`` (what our CLI sends to the daemon)."""
    obj: dict[str, str] = {"serveraddress": server}
    if creds.username or creds.password:
        obj["username"], obj["password"] = creds.username, creds.password
    if creds.identity_token:
        obj["identitytoken"] = creds.identity_token
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode()


def _find_entry(auths: dict[str, Any], key: str) -> dict[str, Any] | None:
    if key in auths and isinstance(auths[key], dict):
        return auths[key]  # type: ignore[no-any-return]
    # Older configs key entries by URL ("https://host:5000/v1/"); match on the host part.
    for name, entry in auths.items():
        if isinstance(entry, dict) and config_key(name) == key:
            return entry
    return None


def _decode_entry(entry: dict[str, Any], key: str, path: str) -> Credentials:
    username = str(entry.get("username") or "")
    password = str(entry.get("password") or "")
    token = str(entry.get("identitytoken") or "")
    auth = entry.get("auth")
    if auth:
        try:
            decoded = base64.b64decode(str(auth), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidArgument(f"registry credentials for {key} in {path}: "
                                  f"'auth' is not base64 of user:password") from exc
        username, sep, password = decoded.partition(":")
        if not sep:
            raise InvalidArgument(f"registry credentials for {key} in {path}: "
                                  f"'auth' does not contain user:password")
    return Credentials(username, password, token)
