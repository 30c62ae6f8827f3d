"""``POST /build`` (Docker's classic builder protocol) and ``POST /build/prune``.

The body is the context as a tar (plain or compressed); the answer streams JSON lines as
dockerd's classic builder does: ``{"stream": "Step 1/3 : FROM busybox\\n"}``, the output of
RUN, ``{"aux": {"ID": "sha256:..."}}``, ``Successfully built`` and ``Successfully tagged``.
Until the build says anything (its first ``Step``), a failure is an HTTP error (a bad query,
a Dockerfile that does not parse: 400 with the line named); after that it goes in the stream
as ``{"errorDetail": {"message": ...}, "error": ...}``, which the docker CLI prints.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Mapping
from typing import IO, Any, Protocol

from aiohttp import web

from skiff.core.reference import Reference, parse_reference
from skiff.daemon.builder.service import BuildParams
from skiff.daemon.http import json_response, qbool, route
from skiff.daemon.routers.images import spool
from skiff.errors import InvalidArgument, SkiffError, Unavailable
from skiff.services.builder.build import Output


class BuildBackend(Protocol):
    def build(self, params: BuildParams, context_tar: IO[bytes], out: Output) -> str: ...
    def prune(self) -> dict[str, object]: ...


def _line(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\r\n"


def _error(message: str) -> dict[str, Any]:
    return {"errorDetail": {"message": message}, "error": message}


def _json_map(request: web.Request, name: str, *, allow_null: bool) -> dict[str, Any]:
    raw = request.query.get(name, "")
    if not raw:
        return {}
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        raise InvalidArgument(f"invalid {name} query: not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise InvalidArgument(f"invalid {name} query: want a JSON object of strings")
    for key, value in obj.items():
        if not isinstance(value, str) and not (allow_null and value is None):
            raise InvalidArgument(f"invalid {name} query: the value of {key!r} is not a string")
    return obj


def parse_params(request: web.Request) -> BuildParams:
    """The query of ``POST /build``; InvalidArgument naming the bad parameter."""
    q = request.query
    if q.get("remote"):
        raise InvalidArgument("remote build contexts (git URLs, tarball URLs) are not "
                              "supported: send the context as the request body")
    tags: list[Reference] = []
    for t in q.getall("t", []):
        if not t:
            continue
        try:
            tags.append(parse_reference(t))
        except InvalidArgument as exc:
            raise InvalidArgument(f"invalid tag {t!r}: {exc.message}") from exc
        if tags[-1].digest is not None:
            raise InvalidArgument(f"invalid tag {t!r}: a tag cannot carry a digest")
    platform = q.get("platform", "")
    if platform and not platform.startswith("linux"):
        raise InvalidArgument(f"platform {platform!r} is not supported: this daemon builds "
                              "linux images only")
    network = q.get("networkmode", "")
    if network not in ("", "default", "none", "host", "bridge"):
        raise InvalidArgument(f"networkmode {network!r} is not supported by the builder "
                              "(default, none or host)")
    return BuildParams(
        dockerfile=q.get("dockerfile", "") or "Dockerfile",
        tags=tuple(tags),
        build_args=_json_map(request, "buildargs", allow_null=True),
        target=q.get("target", ""),
        no_cache=qbool(request, "nocache"),
        pull=qbool(request, "pull"),
        labels=_json_map(request, "labels", allow_null=False),
        network="" if network in ("bridge", "default") else network,
        remove=qbool(request, "rm", True) or qbool(request, "forcerm"),
    )


class _Done:
    def __init__(self, image_id: str | None, error: BaseException | None) -> None:
        self.image_id = image_id
        self.error = error


class BuildRouter:
    def __init__(self, backend: BuildBackend, tmpdir: str) -> None:
        self.backend = backend
        self.tmpdir = tmpdir

    def register(self, router: web.UrlDispatcher) -> None:
        route(router, "POST", "/build", self.build)
        route(router, "POST", "/build/prune", self.prune)

    async def prune(self, request: web.Request) -> web.StreamResponse:
        return json_response(await asyncio.to_thread(self.backend.prune))

    async def build(self, request: web.Request) -> web.StreamResponse:
        params = parse_params(request)
        quiet = qbool(request, "q")
        body = await spool(request, self.tmpdir)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | _Done] = asyncio.Queue()
        cancel = threading.Event()

        def out(text: str) -> None:
            # A client that went away stops the build at its next message: the error unwinds
            # the step (a RUN's process is killed) and everything it made is taken down.
            if cancel.is_set():
                raise Unavailable("build cancelled: the client went away")
            loop.call_soon_threadsafe(queue.put_nowait, text)

        def work() -> None:
            image_id: str | None = None
            error: BaseException | None = None
            try:
                image_id = self.backend.build(params, body, out)
            except BaseException as exc:  # handed to the handler: a status or the stream
                error = exc
            finally:
                body.close()
            loop.call_soon_threadsafe(queue.put_nowait, _Done(image_id, error))

        threading.Thread(target=work, name="build", daemon=True).start()
        resp: web.StreamResponse | None = None
        try:
            while not isinstance(item := await queue.get(), _Done):
                if resp is None:
                    resp = await self._start(request)
                if not quiet:
                    await resp.write(_line({"stream": item}))
        finally:
            cancel.set()  # no-op once the build is done
        if resp is None:
            if item.error is not None:
                raise item.error  # nothing was said yet: the middleware answers with a status
            resp = await self._start(request)
        if item.error is not None:
            message = item.error.message if isinstance(item.error, SkiffError) else \
                f"{type(item.error).__name__}: {item.error}"
            await resp.write(_line(_error(message)))
        else:
            assert item.image_id is not None
            await resp.write(_line({"aux": {"ID": item.image_id}}))
            if quiet:
                await resp.write(_line({"stream": item.image_id + "\n"}))
            else:
                await resp.write(_line({"stream": f"Successfully built "
                                                  f"{item.image_id[7:19]}\n"}))
                for tag in params.tags:
                    await resp.write(_line({"stream": f"Successfully tagged "
                                                      f"{tag.familiar()}\n"}))
        await resp.write_eof()
        return resp

    @staticmethod
    async def _start(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        return resp

