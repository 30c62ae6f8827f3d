"""``/images``: list, inspect, load (``docker load``), create from a tar (``docker import``)."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Sequence
from typing import IO, Any, Protocol

from aiohttp import web

from skiff.core.reference import Reference, parse_reference
from skiff.daemon.http import json_response, qfilters, route
from skiff.errors import InvalidArgument, SkiffError, Unavailable

_SPOOL_MEMORY = 8 * 1024 * 1024  # bodies above this go to a temp file under the data root


class ImagesBackend(Protocol):
    def list_images(self, *, dangling: bool | None = None, reference: Sequence[str] = (),
                    label: Sequence[str] = ()) -> list[dict[str, Any]]: ...

    def inspect(self, name: str) -> dict[str, Any]: ...

    def load(self, archive: IO[bytes]) -> list[str]:
        """The ``Loaded image: ...`` lines."""
        ...

    def import_rootfs(self, stream: IO[bytes], names: list[Reference], changes: list[str],
                      message: str) -> str:
        """The new image's id."""
        ...


async def spool(request: web.Request, tmpdir: str) -> IO[bytes]:
    """The request body in a (spooled) temp file, rewound: the services read blocking files."""
    f = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY, dir=tmpdir)  # noqa: SIM115 (the caller closes it)
    try:
        async for chunk in request.content.iter_chunked(1 << 20):
            f.write(chunk)
    except BaseException:
        f.close()
        raise
    f.seek(0)
    return f


def _json_line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\r\n"


class ImagesRouter:
    def __init__(self, backend: ImagesBackend, tmpdir: str) -> None:
        self.backend = backend
        self.tmpdir = tmpdir

    def register(self, router: web.UrlDispatcher) -> None:
        route(router, "GET", "/images/json", self.list)
        route(router, "GET", "/images/{name:.+}/json", self.inspect)
        route(router, "POST", "/images/load", self.load)
        route(router, "POST", "/images/create", self.create)

    async def list(self, request: web.Request) -> web.StreamResponse:
        f = qfilters(request)
        dangling = None
        if f.get("dangling"):
            dangling = f["dangling"][0].lower() in ("true", "1")
        refs = f.get("reference", [])
        if request.query.get("filter"):  # API < 1.41
            refs.append(request.query["filter"])
        out = await asyncio.to_thread(self.backend.list_images, dangling=dangling,
                                      reference=refs, label=f.get("label", []))
        return json_response(out)

    async def inspect(self, request: web.Request) -> web.StreamResponse:
        return json_response(await asyncio.to_thread(self.backend.inspect,
                                                         request.match_info["name"]))

    async def load(self, request: web.Request) -> web.StreamResponse:
        body = await spool(request, self.tmpdir)
        try:
            messages = await asyncio.to_thread(self.backend.load, body)
        finally:
            body.close()
        # quiet only hides progress (we send none); the "Loaded image" lines stay, as Docker
        return web.Response(body=b"".join(_json_line({"stream": m + "\n"}) for m in messages),
                            content_type="application/json")

    async def create(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("fromImage"):
            raise Unavailable("pull is not available in this skiffd yet: load or import the "
                              "image (docker load / docker import)")
        if request.query.get("fromSrc") != "-":
            raise InvalidArgument("images/create: want fromSrc=- (the tar in the body) or "
                                  "fromImage")
        names = []
        repo = request.query.get("repo", "")
        if repo:
            tag = request.query.get("tag", "")
            names.append(parse_reference(f"{repo}:{tag}" if tag else repo))
        changes = request.query.getall("changes", [])
        body = await spool(request, self.tmpdir)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        try:
            image_id = await asyncio.to_thread(self.backend.import_rootfs, body, names,
                                               changes, request.query.get("message", ""))
            await resp.write(_json_line({"status": image_id}))
        except SkiffError as exc:  # headers are gone: the error goes in the stream, as Docker
            await resp.write(_json_line({"errorDetail": {"message": exc.message},
                                         "error": exc.message}))
        finally:
            body.close()
        await resp.write_eof()
        return resp
