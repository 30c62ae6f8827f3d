"""``/volumes``: Docker's create, list, inspect, remove, prune, and skiff's extensions.

Extensions (Docker has none of these; the paths sit under the volume like Docker's own):
``GET /volumes/{name}/export`` (a tar of the content), ``PUT /volumes/{name}/import`` (a tar
into an empty, unused volume) and ``POST /volumes/{name}/rename?name=NEW``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import IO, Any, BinaryIO, Protocol, cast

from aiohttp import web

from skiff.core.volumes import VolumeRecord
from skiff.daemon.events import EventBus
from skiff.daemon.http import json_body, json_response, qbool, qfilters, route
from skiff.daemon.routers.images import spool
from skiff.errors import InvalidArgument

log = logging.getLogger("skiffd.volumes")


class VolumesBackend(Protocol):
    def inspect(self, name: str, *, usage: bool = False) -> dict[str, Any]: ...
    def list(self, filters: Mapping[str, Sequence[str]] | None = None
             ) -> list[dict[str, Any]]: ...
    def create(self, name: str | None = None, *, driver: str = "local",
               labels: Mapping[str, str] | None = None,
               options: Mapping[str, str] | None = None) -> VolumeRecord: ...
    def remove(self, name: str, *, force: bool = False) -> None: ...
    def prune(self, *, all_volumes: bool = False, label: Sequence[str] = ()
              ) -> dict[str, Any]: ...
    def export(self, name: str, out: BinaryIO) -> None: ...
    def import_tar(self, name: str, tar: BinaryIO) -> None: ...
    def rename(self, old: str, new: str) -> VolumeRecord: ...


def _str_map(body: Mapping[str, Any], key: str) -> dict[str, str]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidArgument(f"volume create: {key} must be an object of strings")
    return value


class VolumesRouter:
    def __init__(self, backend: VolumesBackend, events: EventBus, tmpdir: str) -> None:
        self.backend = backend
        self.events = events
        self.tmpdir = tmpdir

    def register(self, router: web.UrlDispatcher) -> None:
        route(router, "GET", "/volumes", self.list)
        route(router, "POST", "/volumes/create", self.create)
        route(router, "POST", "/volumes/prune", self.prune)
        route(router, "GET", "/volumes/{name}", self.inspect)
        route(router, "DELETE", "/volumes/{name}", self.delete)
        route(router, "GET", "/volumes/{name}/export", self.export)
        route(router, "PUT", "/volumes/{name}/import", self.import_tar)
        route(router, "POST", "/volumes/{name}/rename", self.rename)

    async def list(self, request: web.Request) -> web.StreamResponse:
        vols = await asyncio.to_thread(self.backend.list, qfilters(request))
        return json_response({"Volumes": vols, "Warnings": []})

    async def create(self, request: web.Request) -> web.StreamResponse:
        body = await json_body(request, required=False)
        name = body.get("Name") or None
        driver = body.get("Driver") or "local"
        if (name is not None and not isinstance(name, str)) or not isinstance(driver, str):
            raise InvalidArgument("volume create: Name and Driver must be strings")
        rec = await asyncio.to_thread(
            self.backend.create, name, driver=driver, labels=_str_map(body, "Labels"),
            options=_str_map(body, "DriverOpts"))
        self.events.publish("volume", "create", rec.name, {"driver": rec.driver})
        return json_response(await asyncio.to_thread(self.backend.inspect, rec.name),
                             status=201)

    async def inspect(self, request: web.Request) -> web.StreamResponse:
        return json_response(await asyncio.to_thread(self.backend.inspect,
                                                     request.match_info["name"]))

    async def delete(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        await asyncio.to_thread(self.backend.remove, name, force=qbool(request, "force"))
        self.events.publish("volume", "destroy", name, {"driver": "local"})
        return web.Response(status=204)

    async def prune(self, request: web.Request) -> web.StreamResponse:
        f = qfilters(request)
        unknown = set(f) - {"label", "label!", "all"}
        if unknown:
            raise InvalidArgument(f"invalid filter '{sorted(unknown)[0]}'")
        everything = bool(f.get("all")) and f["all"][0].lower() in ("1", "true")
        labels = [*f.get("label", []), *("!" + v for v in f.get("label!", []))]
        report = await asyncio.to_thread(self.backend.prune, all_volumes=everything,
                                         label=labels)
        for name in report.get("VolumesDeleted") or []:
            self.events.publish("volume", "destroy", name, {"driver": "local"})
        self.events.publish("volume", "prune", "",
                            {"reclaimed": str(report["SpaceReclaimed"])})
        return json_response(report)

    async def rename(self, request: web.Request) -> web.StreamResponse:
        old, new = request.match_info["name"], request.query.get("name", "")
        if not new:
            raise InvalidArgument("volume rename: the new name is required (?name=)")
        rec = await asyncio.to_thread(self.backend.rename, old, new)
        self.events.publish("volume", "rename", rec.name, {"oldName": old})
        return json_response(await asyncio.to_thread(self.backend.inspect, rec.name))

    async def import_tar(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        await asyncio.to_thread(self.backend.inspect, name)  # 404 before the upload
        body = await spool(request, self.tmpdir)
        try:
            await asyncio.to_thread(self.backend.import_tar, name, cast(BinaryIO, body))
        finally:
            body.close()
        return web.Response(status=204)

    async def export(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        await asyncio.to_thread(self.backend.inspect, name)  # 404 while we can still say so
        resp = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
        await resp.prepare(request)
        read_fd, write_fd = os.pipe()
        failure: list[BaseException] = []

        def produce() -> None:
            with open(write_fd, "wb") as out:
                try:
                    self.backend.export(name, out)
                except BaseException as exc:  # the stream just ends; the log says why
                    failure.append(exc)

        worker = threading.Thread(target=produce, name=f"export-{name[:12]}", daemon=True)
        worker.start()
        reader: IO[bytes] = open(read_fd, "rb")  # noqa: SIM115 (closed below)
        try:
            while chunk := await asyncio.to_thread(reader.read, 1 << 16):
                await resp.write(chunk)
        finally:
            reader.close()
            with contextlib.suppress(RuntimeError):
                await asyncio.to_thread(worker.join)
        if failure:  # headers are gone: end without the tar's trailer, so tar sees it cut
            log.error("export volume %s: %s", name, failure[0])
            return resp
        await resp.write_eof()
        return resp
