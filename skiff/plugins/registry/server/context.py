"""What every request handler shares: the per-process Registry, error rendering, and the
small helpers for auth scopes, bodies and pagination.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlencode

from aiohttp import web

from skiff.errors import SkiffError

from .auth import Scope
from .errors import RegistryError
from .gc import gc_lock
from .guard import Guard
from .proxy import Proxy
from .storage import Storage
from .uploads import Upload, Uploads

log = logging.getLogger("skiff.registry")
T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_FLUSH = 1 << 20
API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}


class Registry:
    """The state one server process holds: storage, upload sessions, auth, a thread pool."""

    def __init__(self, storage: Storage, guard: Guard, *, delete_enabled: bool = True,
                 fsync: bool = True, executor: ThreadPoolExecutor | None = None,
                 proxy: Proxy | None = None) -> None:
        self.storage = storage
        self.proxy = proxy
        self.uploads = Uploads(storage, fsync=fsync)
        self.guard = guard
        self.delete_enabled = delete_enabled
        self.executor = executor or ThreadPoolExecutor(8, thread_name_prefix="registry")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def shared(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` holding the GC lock shared: content it makes visible survives a sweep."""
        def locked() -> T:
            with gc_lock(self.storage, exclusive=False):
                return fn(*args)
        return await self.run(locked)


def error_response(err: RegistryError) -> web.Response:
    headers = {**API_VERSION, **err.headers}
    headers.pop("Content-Length", None)  # the error body has its own length
    return web.Response(status=err.status, body=err.body(), headers=headers,
                        content_type="application/json")


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        resp = await handler(request)
    except RegistryError as err:
        return error_response(err)
    except web.HTTPException:
        raise
    except SkiffError as exc:
        log.error("%s %s: %s", request.method, request.path, exc)
        return error_response(RegistryError("UNKNOWN", str(exc)))
    if not resp.prepared:
        resp.headers.update(API_VERSION)
    return resp


def reg_of(request: web.Request) -> Registry:
    return request.app[KEY]


def repo_scope(name: str, *actions: str) -> Scope:
    return Scope("repository", name, actions)


def writable(reg: Registry) -> None:
    if reg.proxy is not None:
        raise RegistryError("UNSUPPORTED", "this registry is a pull-through cache: read-only")


async def read_limited(request: web.Request, limit: int) -> bytes:
    chunks, total = [], 0
    async for chunk in request.content.iter_any():
        total += len(chunk)
        if total > limit:
            raise RegistryError("MANIFEST_INVALID", {"reason": "manifest too large",
                                                     "limit": limit}, status=413)
        chunks.append(chunk)
    return b"".join(chunks)


async def pump(reg: Registry, request: web.Request, up: Upload) -> int:
    """Stream the request body into the upload; writes and hashing run on the pool."""
    pending: list[bytes] = []
    size = received = 0
    async for chunk in request.content.iter_any():
        pending.append(chunk)
        size += len(chunk)
        received += len(chunk)
        if size >= _FLUSH:
            await reg.run(up.write, b"".join(pending))
            pending, size = [], 0
    if pending:
        await reg.run(up.write, b"".join(pending))
    return received


def paginate(items: list[str], request: web.Request, path: str, key: str,
              extra: dict[str, Any] | None = None) -> web.Response:
    q = request.query
    last = q.get("last")
    if last:
        items = [i for i in items if i > last]
    n_text = q.get("n")
    link = None
    if n_text is not None:
        if not n_text.isdigit():
            raise RegistryError("PAGINATION_NUMBER_INVALID", {"n": n_text[:20]})
        n = int(n_text)
        if len(items) > n:
            items = items[:n]
            if items:
                link = f'<{path}?{urlencode({"n": n, "last": items[-1]})}>; rel="next"'
    body: dict[str, Any] = {**(extra or {}), key: items}
    resp = web.json_response(body)
    if link:
        resp.headers["Link"] = link
    return resp



KEY: web.AppKey[Registry] = web.AppKey("registry")
