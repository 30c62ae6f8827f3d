"""Checks each request's credentials against the scopes it needs; answers with challenges."""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Sequence
from concurrent.futures import Executor

from aiohttp import web

from skiff.errors import InvalidArgument

from .auth import ANONYMOUS, Htpasswd, Policy, Scope, TokenSigner
from .errors import RegistryError


def _basic(header: str) -> tuple[str, str] | None:
    if not header.lower().startswith("basic "):
        return None
    try:
        user, sep, password = base64.b64decode(header[6:].strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return (user, password) if sep else None


class Guard:
    """No auth, htpasswd basic auth, or bearer tokens (``signer`` set)."""

    def __init__(self, policy: Policy, *, htpasswd: Htpasswd | None = None,
                 signer: TokenSigner | None = None, realm: str = "skiff-registry",
                 token_realm: str | None = None, executor: Executor | None = None) -> None:
        self.policy = policy
        self.htpasswd = htpasswd
        self.signer = signer
        self.realm = realm
        self.token_realm = token_realm
        self._executor = executor

    @property
    def enabled(self) -> bool:
        return self.htpasswd is not None or self.signer is not None

    async def login(self, request: web.Request) -> str | None:
        """The basic-auth account, ANONYMOUS without credentials, None if they are wrong."""
        creds = _basic(request.headers.get("Authorization", ""))
        if creds is None:
            return ANONYMOUS
        if self.htpasswd is None:
            return None
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(self._executor, self.htpasswd.verify, *creds)
        return creds[0] if ok else None

    async def check(self, request: web.Request, scopes: Sequence[Scope]) -> str:
        """The account, or raise UNAUTHORIZED (with a challenge) / DENIED."""
        if not self.enabled:
            return ANONYMOUS
        if self.signer is not None:
            return self._check_token(request, scopes)
        account = await self.login(request)
        if account is None:
            raise self._challenge(request, scopes, "invalid username or password")
        if account == ANONYMOUS and not scopes:
            raise self._challenge(request, scopes, "authentication required")
        for scope in scopes:
            allowed = self.policy.allowed(account, scope)
            if set(scope.actions) - set(allowed):
                if account == ANONYMOUS:
                    raise self._challenge(request, scopes, "authentication required")
                raise RegistryError("DENIED", {"scope": str(scope)})
        return account

    def allows(self, account: str, scope: Scope) -> bool:
        return not set(scope.actions) - set(self.policy.allowed(account, scope))

    def _check_token(self, request: web.Request, scopes: Sequence[Scope]) -> str:
        assert self.signer is not None
        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("bearer "):
            raise self._challenge(request, scopes, "authentication required")
        try:
            account, granted = self.signer.verify(header[7:].strip())
        except InvalidArgument as exc:
            raise self._challenge(request, scopes, str(exc), error="invalid_token") from exc
        for scope in scopes:
            have: set[str] = set()
            for g in granted:
                if g.type == scope.type and g.name == scope.name:
                    have |= set(g.actions)
            if set(scope.actions) - have:
                raise self._challenge(request, scopes, "insufficient scope",
                                      error="insufficient_scope")
        return account

    def token_scopes_granted(self, account: str, scopes: Sequence[Scope]) -> list[Scope]:
        out = []
        for s in scopes:
            allowed = self.policy.allowed(account, s)
            if allowed:
                out.append(Scope(s.type, s.name, allowed))
        return out

    def _challenge(self, request: web.Request, scopes: Sequence[Scope], detail: str,
                   error: str | None = None) -> RegistryError:
        if self.signer is not None:
            realm = self.token_realm or f"{request.scheme}://{request.host}/token"
            parts = [f'realm="{realm}"', f'service="{self.signer.service}"']
            if scopes:
                parts.append('scope="' + " ".join(str(s) for s in scopes) + '"')
            if error:
                parts.append(f'error="{error}"')
            value = "Bearer " + ",".join(parts)
        else:
            value = f'Basic realm="{self.realm}"'
        return RegistryError("UNAUTHORIZED",
                             [{"Type": s.type, "Name": s.name, "Action": a}
                              for s in scopes for a in s.actions] or detail,
                             headers={"WWW-Authenticate": value})
