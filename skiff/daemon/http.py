"""HTTP plumbing shared by every router: API version prefixes, the one error table, helpers."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from skiff import errors
from skiff.daemon.config import API_VERSION, MIN_API_VERSION

log = logging.getLogger("skiffd")

# The one table from error kinds to HTTP status (first match wins; subclasses before bases).
STATUS: tuple[tuple[type[errors.SkiffError], int], ...] = (
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.InvalidArgument, 400),
    (errors.PermissionDenied, 403),
    (errors.Unavailable, 503),
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_VERSION = re.compile(r"^1\.(\d+)$")


def status_of(exc: errors.SkiffError) -> int:
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def json_response(obj: object, status: int = 200,
                  headers: Mapping[str, str] | None = None) -> web.Response:
    """JSON with Docker's exact content type: the docker CLI decodes error bodies only when
    it is ``application/json`` without a charset parameter."""
    return web.Response(body=json.dumps(obj).encode(), status=status,
                        headers={**(headers or {}), "Content-Type": "application/json"})


def error_response(status: int, message: str) -> web.Response:
    return json_response({"message": message}, status=status)


def _minor(text: str) -> int:
    m = _VERSION.match(text)
    return int(m.group(1)) if m else -1


def route(app_router: web.UrlDispatcher, method: str, path: str, handler: Handler) -> None:
    """Register ``path`` both unversioned and under ``/v1.NN`` (checked by the middleware)."""
    app_router.add_route(method, path, handler)
    app_router.add_route(method, r"/v{api_version:[0-9.]+}" + path, handler)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    version = request.match_info.get("api_version")
    if version is not None:
        minor = _minor(version)
        if minor < 0:
            return error_response(400, f"invalid API version {version!r}")
        if minor > _minor(API_VERSION):
            return error_response(400, f"client version {version} is too new. Maximum "
                                  f"supported API version is {API_VERSION}")
        if minor < _minor(MIN_API_VERSION):
            return error_response(400, f"client version {version} is too old. Minimum "
                                  f"supported API version is {MIN_API_VERSION}, please "
                                  "upgrade your client to a newer version")
    try:
        return await handler(request)
    except errors.SkiffError as exc:
        status = status_of(exc)
        if status == 500:
            log.error("%s %s: %s", request.method, request.path, exc)
        return error_response(status, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason if exc.status == 405
                              else (exc.text or exc.reason).removeprefix(f"{exc.status}: "))
    except (ConnectionResetError, BrokenPipeError):
        raise
    except Exception as exc:  # a bug: answer 500 with what happened, keep serving
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, f"{type(exc).__name__}: {exc}")


# --- request helpers --------------------------------------------------------------------------


def api_minor(request: web.Request) -> int:
    """The request's API minor version (unversioned paths mean the newest)."""
    version = request.match_info.get("api_version")
    return _minor(version) if version else _minor(API_VERSION)


async def json_body(request: web.Request, *, required: bool = True) -> dict[str, Any]:
    """The request body as a JSON object, or InvalidArgument naming what is wrong."""
    raw = await request.read()
    if not raw.strip():
        if required:
            raise errors.InvalidArgument("invalid JSON: the request body is empty")
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise errors.InvalidArgument(f"invalid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise errors.InvalidArgument("invalid JSON: the body must be an object")
    return body


def qbool(request: web.Request, name: str, default: bool = False) -> bool:
    """Docker's boolean query values: absent -> default; "", "0", "false", "no" -> false."""
    value = request.query.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("", "0", "false", "no", "off")


def qint(request: web.Request, name: str, default: int | None = None) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise errors.InvalidArgument(f"invalid value for {name}: {value!r} is not an "
                                     "integer") from exc


def qsize(request: web.Request) -> tuple[int, int]:
    """A resize request's ``h`` and ``w`` (absent: 0), refused when negative."""
    height, width = qint(request, "h", 0) or 0, qint(request, "w", 0) or 0
    if height < 0 or width < 0:
        raise errors.InvalidArgument("resize: h and w must not be negative")
    return height, width


def qfilters(request: web.Request) -> dict[str, list[str]]:
    """The ``filters`` query: ``{"key": ["v"]}`` or the old ``{"key": {"v": true}}``."""
    raw = request.query.get("filters")
    if not raw:
        return {}
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        raise errors.InvalidArgument(f"invalid filters: {exc}") from exc
    if not isinstance(obj, dict):
        raise errors.InvalidArgument("invalid filters: want a JSON object")
    out: dict[str, list[str]] = {}
    for key, value in obj.items():
        if isinstance(value, Mapping):
            out[key] = [str(k) for k, v in value.items() if v]
        elif isinstance(value, list):
            out[key] = [str(v) for v in value]
        else:
            raise errors.InvalidArgument(f"invalid filters: {key!r} must be a list")
    return out
