"""``docker cp``, ``docker diff``, ``docker export`` and ``docker commit`` over HTTP.

Routes: ``HEAD|GET|PUT /containers/{id}/archive``, ``GET /containers/{id}/changes``,
``GET /containers/{id}/export`` and ``POST /commit``. The filesystem work blocks (mounts,
tar), so it runs in a worker thread; archives flow to the client through a pipe as they are
written, and nothing is sent until the worker has got as far as its first byte, so a missing
path or a failed mount is still a proper 404/500 rather than a truncated 200.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, Protocol, cast

from aiohttp import web

from skiff.core.reference import Reference, parse_reference
from skiff.core.snapshots import Snapshotter
from skiff.daemon.containers.archive import (
    STAT_HEADER,
    ContainerFS,
    check_copy_target,
    container_root,
    export_container,
)
from skiff.daemon.containers.commit import CommitRequest, commit, container_changes
from skiff.daemon.containers.record import Container
from skiff.daemon.containers.runner import Runner
from skiff.daemon.events import EventBus
from skiff.daemon.http import json_body, json_response, qbool, route
from skiff.daemon.routers.images import spool
from skiff.daemon.volumes.containers import ContainerMounts, cp_volumes
from skiff.errors import Conflict, InvalidArgument, SkiffError
from skiff.services.images import ImageService

log = logging.getLogger("skiffd.archive")
_CHUNK = 1 << 16


class ArchiveBackend(Protocol):
    """The part of the container manager this router uses."""

    runner: Runner
    snapshotter: Snapshotter
    images: ImageService
    events: EventBus

    mounts: ContainerMounts | None  # the container's volumes and binds, for cp

    def get(self, ref: str) -> Container: ...
    async def get_settled(self, ref: str) -> Container: ...

    def is_running(self, cid: str) -> bool: ...
    def exclusive(self, cid: str) -> asyncio.Lock: ...


class _FirstWrite:
    """A binary sink over a pipe that tells the loop when the first byte is about to go."""

    def __init__(self, fd: int, started: Callable[[], None]) -> None:
        self._f = os.fdopen(fd, "wb", buffering=_CHUNK)
        self._started = started
        self._begun = False

    def write(self, data: bytes) -> int:
        if not self._begun:
            self._begun = True
            self._started()
        return self._f.write(data)

    def close(self) -> None:
        if not self._begun:
            self._begun = True
            self._started()
        with contextlib.suppress(BrokenPipeError):  # the client went away: nothing to flush to
            self._f.close()


async def _stream(request: web.Request, work: Callable[[BinaryIO, dict[str, str]], None],
                  content_type: str) -> web.StreamResponse:
    """Run ``work(out, headers)`` in a thread and stream what it writes to ``out``.

    ``work`` may fill ``headers`` before its first write; an error raised before that becomes
    the HTTP error, one after it truncates the stream (as Docker's does) and is logged.
    """
    loop = asyncio.get_running_loop()
    headers: dict[str, str] = {"Content-Type": content_type}
    ready: concurrent.futures.Future[None] = concurrent.futures.Future()
    r, w = os.pipe()

    def started() -> None:
        if not ready.done():
            ready.set_result(None)

    def run() -> None:
        sink = _FirstWrite(w, started)
        try:
            work(cast(BinaryIO, sink), headers)
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
                return
            raise
        finally:
            sink.close()

    reader = asyncio.StreamReader(limit=1 << 20)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                                os.fdopen(r, "rb", buffering=0))
    task = asyncio.ensure_future(asyncio.to_thread(run))
    task.add_done_callback(lambda t: _reap(request, t))
    try:
        await asyncio.wrap_future(ready)
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)
        try:
            while chunk := await reader.read(_CHUNK):
                await resp.write(chunk)
        except ConnectionResetError:
            return resp  # the client hung up: the worker sees EPIPE once the pipe is closed
        await asyncio.wait([task])
        if task.exception() is None:  # else the client sees a short tar, as with Docker
            await resp.write_eof()
        return resp
    finally:
        transport.close()  # a writer still going gets EPIPE and unwinds (unmounting)


def _reap(request: web.Request, task: asyncio.Future[None]) -> None:
    """Log how a streaming worker ended (EPIPE: the client left, which is no error)."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is None:
        return
    if isinstance(exc, BrokenPipeError) or "EPIPE" in str(exc):
        log.info("%s %s: the client went away mid-stream", request.method, request.path)
    else:
        log.error("%s %s: stopped half way: %s", request.method, request.path, exc)


class ArchiveRouter:
    def __init__(self, backend: ArchiveBackend) -> None:
        self.backend = backend

    def register(self, router: web.UrlDispatcher) -> None:
        route(router, "HEAD", "/containers/{id}/archive", self.stat)
        route(router, "GET", "/containers/{id}/archive", self.get_archive)
        route(router, "PUT", "/containers/{id}/archive", self.put_archive)
        route(router, "GET", "/containers/{id}/changes", self.changes)
        route(router, "GET", "/containers/{id}/export", self.export)
        route(router, "POST", "/commit", self.commit)

    # --- helpers -------------------------------------------------------------------------

    @staticmethod
    def _path(request: web.Request) -> str:
        path = request.query.get("path")
        if not path:
            raise InvalidArgument("path: required query parameter is missing or empty")
        return path

    @contextlib.contextmanager
    def _fs(self, c: Container, *, writable: bool) -> Iterator[ContainerFS]:
        paths = self.backend.runner.paths
        scratch = os.path.join(paths.exec_root, "cp")
        mounts = self.backend.mounts
        with mounts.for_copy(c) if mounts else contextlib.nullcontext(cp_volumes(c)) as vols, \
                container_root(paths.rootfs(c.id),
                               lambda: self.backend.snapshotter.mounts(c.snapshot_key), scratch,
                               writable=writable, volumes=vols) as root, \
                ContainerFS(root, c.name) as fs:
            yield fs

    # --- archive -------------------------------------------------------------------------

    async def stat(self, request: web.Request) -> web.StreamResponse:
        c = await self.backend.get_settled(request.match_info["id"])
        path = self._path(request)

        def work() -> str:
            with self._fs(c, writable=False) as fs:
                return fs.stat(path).header()

        header = await asyncio.to_thread(work)
        return web.Response(status=200, headers={STAT_HEADER: header,
                                                 "Content-Type": "application/json"})

    async def get_archive(self, request: web.Request) -> web.StreamResponse:
        c = await self.backend.get_settled(request.match_info["id"])
        path = self._path(request)

        def work(out: BinaryIO, headers: dict[str, str]) -> None:
            with self._fs(c, writable=False) as fs:
                headers[STAT_HEADER] = fs.stat(path).header()
                fs.write_tar(path, out)

        return await _stream(request, work, "application/x-tar")

    async def put_archive(self, request: web.Request) -> web.StreamResponse:
        c = await self.backend.get_settled(request.match_info["id"])
        path = self._path(request)
        check_copy_target(path, bool(c.host_config.get("ReadonlyRootfs")), cp_volumes(c), c.name)
        no_overwrite = qbool(request, "noOverwriteDirNonDir")
        copy_ids = qbool(request, "copyUIDGID")
        user = str(c.config.get("User") or "")
        tmpdir = os.path.join(self.backend.runner.paths.data_root, "tmp")
        body = await spool(request, tmpdir)

        def work() -> None:
            with self._fs(c, writable=True) as fs:
                owner = fs.owner(user) if copy_ids and user else None
                skipped = fs.extract(path, cast(BinaryIO, body),
                                     no_overwrite_dir_non_dir=no_overwrite, owner=owner)
            if skipped:
                log.warning("copy into %s:%s skipped %d entries: %s", c.id[:12], path,
                            len(skipped), "; ".join(skipped[:5]))

        try:
            # not while a start/rm of the container mounts or unmounts the same snapshot
            async with self.backend.exclusive(c.id):
                await asyncio.to_thread(work)
        finally:
            body.close()
        return web.Response(status=200)

    # --- changes / export ------------------------------------------------------------------

    async def changes(self, request: web.Request) -> web.StreamResponse:
        c = await self.backend.get_settled(request.match_info["id"])
        found = await asyncio.to_thread(container_changes, self.backend.snapshotter, c)
        return json_response(found)

    async def export(self, request: web.Request) -> web.StreamResponse:
        c = await self.backend.get_settled(request.match_info["id"])
        scratch = os.path.join(self.backend.runner.paths.exec_root, "cp")

        def work(out: BinaryIO, _headers: dict[str, str]) -> None:
            export_container(self.backend.snapshotter, c.snapshot_key, out, scratch)

        return await _stream(request, work, "application/x-tar")

    # --- commit ----------------------------------------------------------------------------

    async def commit(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        ref = q.get("container")
        if not ref:
            raise InvalidArgument("container: required query parameter is missing")
        c = await self.backend.get_settled(ref)
        names: list[Reference] = []
        if q.get("repo"):
            tag = q.get("tag", "")
            names.append(parse_reference(f"{q['repo']}:{tag}" if tag else q["repo"]))
        elif q.get("tag"):
            raise InvalidArgument("tag: a tag needs a repository (repo)")
        body = await json_body(request, required=False)
        req = CommitRequest(names=tuple(names), comment=q.get("comment", ""),
                            author=q.get("author", ""), changes=tuple(q.getall("changes", [])),
                            config=body or None)
        paused = await self._pause(c, qbool(request, "pause", default=True))
        try:
            img = await asyncio.to_thread(commit, self.backend.images,
                                          self.backend.snapshotter, c, req)
        finally:
            if paused:
                try:
                    await self._call("unpause", c.id)
                except SkiffError as exc:  # the image exists: report it, log the thaw failure
                    log.error("unpause %s after commit: %s", c.id[:12], exc)
        attrs = {"comment": req.comment, "imageID": str(img.id), "name": c.name,
                 "imageRef": str(names[0]) if names else ""}
        self.backend.events.publish("container", "commit", c.id, attrs)
        return json_response({"Id": str(img.id)}, status=201)

    async def _call(self, method: str, cid: str) -> Any:
        fn = getattr(self.backend, method, None)
        if fn is None:
            return None
        result = fn(cid)
        return await result if inspect.isawaitable(result) else result

    async def _pause(self, c: Container, wanted: bool) -> bool:
        """Freeze a running container for a consistent diff, if this manager can."""
        if not wanted or not self.backend.is_running(c.id):
            return False
        if getattr(self.backend, "pause", None) is None or \
                getattr(self.backend, "unpause", None) is None:
            return False
        try:
            await self._call("pause", c.id)
        except Conflict:
            return False  # already paused (by the user): commit as it is, leave it paused
        except SkiffError as exc:
            # Freezing only makes the diff consistent; a runtime that cannot (no freezer)
            # must not make commit impossible, so go on and say so in the log.
            log.warning("commit %s without pausing it: %s", c.id[:12], exc)
            return False
        return True
