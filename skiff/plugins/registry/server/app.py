"""The HTTP API (OCI distribution spec v1.1) on aiohttp.

Routing is one catch-all under ``/v2/`` matched by our own expression, because repository
names contain slashes and may even contain ``blobs`` or ``manifests`` as components; the
name is then checked against the grammar before it names any file. Blocking work (hashing,
fsync, bcrypt, the GC lock) runs on a thread pool; small file reads stay on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from skiff.errors import SkiffError

from . import manifests
from .auth import ANONYMOUS, Scope
from .context import KEY, Registry, errors_middleware, log, paginate, reg_of
from .errors import RegistryError
from .gc import collect
from .names import check_name
from .routes_blobs import (
    cancel_upload,
    delete_blob,
    finish_upload,
    get_blob,
    patch_upload,
    start_upload,
    upload_status,
)
from .routes_manifests import delete_manifest, get_manifest, list_tags, put_manifest, referrers

__all__ = ["Registry", "gc_job", "make_app", "periodic"]

_PATH_RE = re.compile(
    r"^(?P<name>.+)/(?:"
    r"blobs/uploads/?(?P<upload>[^/]*)|"
    r"blobs/(?P<blob>[^/]+)|"
    r"manifests/(?P<ref>[^/]+)|"
    r"(?P<tags>tags/list)|"
    r"referrers/(?P<subject>[^/]+))$")


# --- /v2/ and _catalog -----------------------------------------------------------------------


async def base(request: web.Request) -> web.StreamResponse:
    await reg_of(request).guard.check(request, [])
    return web.json_response({})


async def catalog(request: web.Request) -> web.StreamResponse:
    reg = reg_of(request)
    await reg.guard.check(request, [Scope("registry", "catalog", ("*",))])
    repos = await reg.run(reg.storage.repositories)
    return paginate(repos, request, "/v2/_catalog", "repositories")


async def token(request: web.Request) -> web.StreamResponse:
    """The token endpoint: Docker's GET flow (basic credentials optional, scopes in the query)."""
    reg = reg_of(request)
    guard = reg.guard
    if guard.signer is None:
        raise web.HTTPNotFound()
    account = await guard.login(request)
    if account is None:
        raise RegistryError("UNAUTHORIZED", "invalid username or password",
                            headers={"WWW-Authenticate": f'Basic realm="{guard.realm}"'})
    scopes = []
    for text in request.query.getall("scope", []):
        for one in text.split(" "):
            if one:
                with contextlib.suppress(SkiffError):
                    scopes.append(Scope.parse(one))
    granted = guard.token_scopes_granted(account, scopes)
    value, expires_in, issued = guard.signer.issue(account if account != ANONYMOUS else "",
                                                   granted)
    return web.json_response({"token": value, "access_token": value, "expires_in": expires_in,
                              "issued_at": datetime.fromtimestamp(issued, UTC).isoformat()})


# --- dispatch ---------------------------------------------------------------------------------


async def dispatch(request: web.Request) -> web.StreamResponse:
    m = _PATH_RE.match(request.match_info["tail"])
    if m is None:
        raise RegistryError("NAME_INVALID", {"path": request.path[:300]},
                            message="no such endpoint", status=404)
    name = check_name(m.group("name"))
    method = request.method
    if m.group("upload") is not None:
        upload = m.group("upload")
        if not upload:
            if method == "POST":
                return await start_upload(request, name)
        elif method in ("GET", "HEAD"):
            return await upload_status(request, name, upload)
        elif method == "PATCH":
            return await patch_upload(request, name, upload)
        elif method == "PUT":
            return await finish_upload(request, name, upload)
        elif method == "DELETE":
            return await cancel_upload(request, name, upload)
    elif m.group("blob") is not None:
        if method in ("GET", "HEAD"):
            return await get_blob(request, name, m.group("blob"))
        if method == "DELETE":
            return await delete_blob(request, name, m.group("blob"))
    elif m.group("ref") is not None:
        ref = m.group("ref")
        if method in ("GET", "HEAD"):
            return await get_manifest(request, name, ref)
        if method == "PUT":
            return await put_manifest(request, name, ref)
        if method == "DELETE":
            return await delete_manifest(request, name, ref)
    elif m.group("tags") is not None:
        if method == "GET":
            return await list_tags(request, name)
    elif m.group("subject") is not None and method == "GET":
        return await referrers(request, name, m.group("subject"))
    raise RegistryError("UNSUPPORTED", {"method": method, "path": request.path[:300]})


# --- the application --------------------------------------------------------------------------


def make_app(reg: Registry, *, background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = ()
             ) -> web.Application:
    app = web.Application(middlewares=[errors_middleware],
                          client_max_size=manifests.MAX_MANIFEST + 1)
    app[KEY] = reg
    app.router.add_route("GET", "/v2/", base)
    app.router.add_route("GET", "/v2", base)
    app.router.add_route("GET", "/v2/_catalog", catalog)
    app.router.add_route("GET", "/token", token)
    app.router.add_route("*", "/v2/{tail:.+}", dispatch)

    async def lifecycle(app: web.Application) -> Any:
        tasks = [asyncio.create_task(job()) for job in background]
        yield
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if reg.proxy is not None:
            reg.proxy.close()

    app.cleanup_ctx.append(lifecycle)
    return app


def periodic(reg: Registry, interval: float, job: Callable[[], object],
             what: str) -> Callable[[], Coroutine[Any, Any, None]]:
    async def loop() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                result = await reg.run(job)
                log.info("%s: %s", what, result)
            except Exception:
                log.exception("%s failed", what)
    return loop


def gc_job(reg: Registry, grace: float) -> Callable[[], object]:
    return lambda: collect(reg.storage, grace=grace)
