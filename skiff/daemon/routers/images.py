"""``/images`` and ``/auth``: list, inspect, pull, push, tag, remove, history, save, load,
import, prune, search; registry login.

Pull, push and save run the blocking services in a thread of their own and stream what they
produce through a queue, so the event loop never waits on a registry or a disk. Errors that
happen before the first useful output are answered with a status, as dockerd does (a
missing image is a 404, not a 200 carrying an error); after that they go in the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import IO, Any, BinaryIO, Protocol, cast

from aiohttp import web

from skiff.core import progress as msg
from skiff.core.progress import ProgressSink
from skiff.core.reference import Reference, parse_reference, parse_repository
from skiff.daemon.http import json_body, json_response, qbool, qfilters, route
from skiff.daemon.images_backend import parse_pull_reference
from skiff.errors import InvalidArgument, PermissionDenied, SkiffError, Unavailable
from skiff.plugins.registry.credentials import Credentials

_SPOOL_MEMORY = 8 * 1024 * 1024  # bodies above this go to a temp file under the data root
_SAVE_CHUNK = 256 * 1024  # save output is handed to the loop in pieces of about this size
_SAVE_QUEUE = 16  # pieces in flight: bounds the memory a slow reader can make us hold
_PRUNE_FILTERS = frozenset({"dangling", "until", "label"})


class ImagesBackend(Protocol):
    def list_images(self, *, dangling: bool | None = None, reference: Sequence[str] = (),
                    label: Sequence[str] = ()) -> list[dict[str, Any]]: ...

    def inspect(self, name: str) -> dict[str, Any]: ...

    def history(self, name: str) -> list[dict[str, Any]]: ...

    def load(self, archive: IO[bytes]) -> list[str]:
        """The ``Loaded image: ...`` lines."""
        ...

    def import_rootfs(self, stream: IO[bytes], names: list[Reference], changes: list[str],
                      message: str) -> str:
        """The new image's id."""
        ...

    def check_save(self, names: Sequence[str]) -> None: ...

    def save(self, names: Sequence[str], out: BinaryIO) -> None: ...

    def tag(self, source: str, target: Reference) -> None: ...

    def remove(self, name: str, *, force: bool = False,
               noprune: bool = False) -> list[dict[str, str]]: ...

    def prune(self, *, all_images: bool, until: float | None,
              label: Sequence[str]) -> dict[str, Any]: ...

    def pull(self, ref: Reference, *, registry_auth: str = "", platform: str = "",
             progress: ProgressSink, cancel: threading.Event | None = None) -> None: ...

    def push(self, ref: Reference, *, registry_auth: str = "", progress: ProgressSink,
             cancel: threading.Event | None = None) -> None: ...

    def login(self, server: str, creds: Credentials) -> None: ...


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


# --- query parsing ------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                 "h": 3600.0}


def parse_until(text: str, now: float) -> float:
    """Docker's ``until`` value: Unix seconds (``1700000000.5``), an RFC 3339 date or time,
    or a Go duration (``90m``, ``1h30m``) meaning that long before ``now``."""
    value = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    if value and re.fullmatch(rf"(?:{_DURATION.pattern})+", value):
        return now - sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION.findall(value))
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidArgument(f"invalid filter 'until={text}': want a Unix timestamp, an RFC "
                              "3339 date or a duration such as 24h") from exc
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def prune_args(filters: dict[str, list[str]], now: float) -> tuple[bool, float | None, list[str]]:
    """``filters`` of ``POST /images/prune`` -> (all images?, until, labels)."""
    for key in filters:
        if key not in _PRUNE_FILTERS:
            raise InvalidArgument(f"invalid filter '{key}'")
    all_images = False
    for value in filters.get("dangling", []):
        low = value.strip().lower()
        if low not in ("true", "false", "1", "0"):
            raise InvalidArgument(f"invalid filter 'dangling={value}'")
        all_images = low in ("false", "0")
    untils = filters.get("until", [])
    if len(untils) > 1:
        raise InvalidArgument("invalid filter 'until': more than one value")
    until = parse_until(untils[0], now) if untils else None
    return all_images, until, filters.get("label", [])


def _tag_target(repo: str, tag: str) -> Reference:
    """``POST /images/{name}/tag``'s ``repo`` and ``tag`` as one reference (``:latest`` when
    neither names a tag)."""
    if not repo:
        raise InvalidArgument("tag: repository name (repo) is required")
    ref = parse_reference(repo, default_tag=not tag)
    if ref.digest is not None:
        raise InvalidArgument(f"refusing to create a tag with a digest reference: {repo}")
    return ref.name_only().with_tag(tag) if tag else ref


# --- streaming ----------------------------------------------------------------------------


class _Done:
    """Queue sentinel: the worker finished; ``error`` is what it raised."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


def _in_thread(name: str, work: Callable[[], None],
               deliver: Callable[[object], None]) -> threading.Thread:
    """Run ``work`` in a daemon thread; ``deliver`` gets a _Done last, whatever happens."""

    def run() -> None:
        error: BaseException | None = None
        try:
            work()
        except BaseException as exc:  # handed to the handler, which answers or streams it
            error = exc
        deliver(_Done(error))

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    return t


def _message_of(exc: BaseException) -> str:
    return exc.message if isinstance(exc, SkiffError) else f"{type(exc).__name__}: {exc}"


async def _progress_stream(request: web.Request, name: str,
                           job: Callable[[ProgressSink, threading.Event], None]
                           ) -> web.StreamResponse:
    """Run ``job(progress, cancel)`` in a thread and stream its progress as JSON lines.

    The first message is held back until a second one arrives: the services say "Pulling
    from" / "The push refers to" before they talk to the registry, and a failure there (no
    such image, bad credentials) should be an HTTP status, not a 200 with an error inside.
    A client that goes away cancels the job at its next chunk.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    cancel = threading.Event()

    def deliver(item: object) -> None:
        # unbounded but small: the services rate-limit byte counts per layer
        loop.call_soon_threadsafe(queue.put_nowait, item)

    _in_thread(name, lambda: job(deliver, cancel), deliver)
    resp: web.StreamResponse | None = None
    held: list[dict[str, Any]] = []
    try:
        while not isinstance(item := await queue.get(), _Done):
            m = cast(dict[str, Any], item)
            if resp is None and not held:
                held.append(m)
                continue
            if resp is None:
                resp = web.StreamResponse(headers={"Content-Type": "application/json"})
                await resp.prepare(request)
                await resp.write(msg.encode(held.pop()))
            await resp.write(msg.encode(m))
    finally:
        cancel.set()  # no-op when the job finished; stops it when the client went away
    if item.error is not None and resp is None:
        raise item.error  # the middleware answers with its status
    if resp is None:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        for m in held:
            await resp.write(msg.encode(m))
    if item.error is not None:  # headers are gone: the error goes in the stream, as Docker
        await resp.write(msg.encode(msg.error(_message_of(item.error))))
    await resp.write_eof()
    return resp


class _QueueWriter:
    """A write-only binary file for a worker thread that hands chunks to the event loop.

    Bounded: a slow client makes the writer wait, so a save is never held in memory whole.
    Once the handler is gone (``stopped``), writes fail and the save ends.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[object],
                 stopped: threading.Event) -> None:
        self.loop = loop
        self.queue = queue
        self.stopped = stopped
        self.buf = bytearray()

    def write(self, data: bytes) -> int:
        self.buf += data
        if len(self.buf) >= _SAVE_CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if not self.buf:
            return
        if self.stopped.is_set():
            raise Unavailable("save: the client went away")
        chunk, self.buf = bytes(self.buf), bytearray()
        asyncio.run_coroutine_threadsafe(self.queue.put(chunk), self.loop).result()


# --- the router ---------------------------------------------------------------------------


class ImagesRouter:
    def __init__(self, backend: ImagesBackend, tmpdir: str) -> None:
        self.backend = backend
        self.tmpdir = tmpdir

    def register(self, router: web.UrlDispatcher) -> None:
        route(router, "GET", "/images/json", self.list_images)
        route(router, "GET", "/images/search", self.search)
        route(router, "GET", "/images/get", self.save_many)
        route(router, "POST", "/images/load", self.load)
        route(router, "POST", "/images/create", self.create)
        route(router, "POST", "/images/prune", self.prune)
        route(router, "GET", "/images/{name:.+}/json", self.inspect)
        route(router, "GET", "/images/{name:.+}/history", self.history)
        route(router, "GET", "/images/{name:.+}/get", self.save_one)
        route(router, "POST", "/images/{name:.+}/push", self.push)
        route(router, "POST", "/images/{name:.+}/tag", self.tag)
        route(router, "DELETE", "/images/{name:.+}", self.remove)
        route(router, "POST", "/auth", self.auth)

    async def list_images(self, request: web.Request) -> web.StreamResponse:
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

    async def history(self, request: web.Request) -> web.StreamResponse:
        return json_response(await asyncio.to_thread(self.backend.history,
                                                     request.match_info["name"]))

    async def search(self, request: web.Request) -> web.StreamResponse:
        term = request.query.get("term", "")
        if not term:
            raise InvalidArgument("search: the term parameter is required")
        raise Unavailable(f"search {term!r}: skiffd does not search registries (the registry "
                          "API has no search; only Docker Hub's index offers one)")

    async def tag(self, request: web.Request) -> web.StreamResponse:
        target = _tag_target(request.query.get("repo", ""), request.query.get("tag", ""))
        await asyncio.to_thread(self.backend.tag, request.match_info["name"], target)
        return web.Response(status=201)

    async def remove(self, request: web.Request) -> web.StreamResponse:
        out = await asyncio.to_thread(self.backend.remove, request.match_info["name"],
                                      force=qbool(request, "force"),
                                      noprune=qbool(request, "noprune"))
        return json_response(out)

    async def prune(self, request: web.Request) -> web.StreamResponse:
        all_images, until, labels = prune_args(qfilters(request), time.time())
        out = await asyncio.to_thread(self.backend.prune, all_images=all_images, until=until,
                                      label=labels)
        return json_response(out)

    async def auth(self, request: web.Request) -> web.StreamResponse:
        body = await json_body(request)
        fields = {k: body.get(k) or "" for k in ("username", "password", "serveraddress",
                                                  "identitytoken")}
        for key, value in fields.items():
            if not isinstance(value, str):
                raise InvalidArgument(f"auth: {key} must be a string")
        creds = Credentials(fields["username"], fields["password"], fields["identitytoken"])
        try:
            await asyncio.to_thread(self.backend.login, fields["serveraddress"], creds)
        except PermissionDenied as exc:
            # dockerd answers refused credentials with 401 (the table's 403 is for the rest)
            return json_response({"message": exc.message}, status=401)
        return json_response({"Status": "Login Succeeded", "IdentityToken": ""})

    # --- pull / push -------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.StreamResponse:
        if "fromImage" in request.query:
            return await self._pull(request)
        if request.query.get("fromSrc") != "-":
            raise InvalidArgument("images/create: want fromSrc=- (the tar in the body) or "
                                  "fromImage")
        return await self._import(request)

    async def _pull(self, request: web.Request) -> web.StreamResponse:
        ref = parse_pull_reference(request.query.get("fromImage", ""),
                                   request.query.get("tag", ""))
        auth = request.headers.get("X-Registry-Auth", "")
        platform = request.query.get("platform", "")

        def job(progress: ProgressSink, cancel: threading.Event) -> None:
            self.backend.pull(ref, registry_auth=auth, platform=platform, progress=progress,
                              cancel=cancel)

        return await _progress_stream(request, f"pull-{ref}", job)

    async def push(self, request: web.Request) -> web.StreamResponse:
        repo = parse_repository_or_ref(request.match_info["name"])
        tag = request.query.get("tag", "")
        ref = repo.name_only().with_tag(tag) if tag else repo
        auth = request.headers.get("X-Registry-Auth", "")

        def job(progress: ProgressSink, cancel: threading.Event) -> None:
            self.backend.push(ref, registry_auth=auth, progress=progress, cancel=cancel)

        return await _progress_stream(request, f"push-{ref}", job)

    # --- save / load / import ----------------------------------------------------------

    async def save_one(self, request: web.Request) -> web.StreamResponse:
        return await self._save(request, [request.match_info["name"]])

    async def save_many(self, request: web.Request) -> web.StreamResponse:
        names = [n for n in request.query.getall("names", []) if n]
        return await self._save(request, names)

    async def _save(self, request: web.Request, names: list[str]) -> web.StreamResponse:
        await asyncio.to_thread(self.backend.check_save, names)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue(_SAVE_QUEUE)
        stopped = threading.Event()
        writer = _QueueWriter(loop, queue, stopped)

        def work() -> None:
            self.backend.save(names, cast(BinaryIO, writer))
            writer.flush()

        def deliver(item: object) -> None:
            asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()

        _in_thread("save", work, deliver)
        resp: web.StreamResponse | None = None
        try:
            while not isinstance(item := await queue.get(), _Done):
                if resp is None:
                    resp = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
                    await resp.prepare(request)
                await resp.write(cast(bytes, item))
        finally:
            stopped.set()
            with contextlib.suppress(asyncio.QueueEmpty):
                while True:  # unblock a writer waiting on a full queue
                    queue.get_nowait()
        if item.error is not None:
            if resp is None:
                raise item.error
            # mid-archive: drop the connection so the client sees a broken transfer, not a
            # short tar that looks complete
            if request.transport is not None:
                request.transport.close()
            return resp
        if resp is None:
            resp = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
            await resp.prepare(request)
        await resp.write_eof()
        return resp

    async def load(self, request: web.Request) -> web.StreamResponse:
        body = await spool(request, self.tmpdir)
        try:
            messages = await asyncio.to_thread(self.backend.load, body)
        finally:
            body.close()
        # quiet only hides progress (we send none); the "Loaded image" lines stay, as Docker
        return web.Response(body=b"".join(_json_line({"stream": m + "\n"}) for m in messages),
                            content_type="application/json")

    async def _import(self, request: web.Request) -> web.StreamResponse:
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


def parse_repository_or_ref(name: str) -> Reference:
    """``/images/{name}/push``: a repository, possibly with a tag (old clients put it there)."""
    ref = parse_reference(name, default_tag=False)
    if ref.digest is not None:
        raise InvalidArgument(f"push {name}: cannot push a digest reference; push a tag")
    return ref if ref.tag is not None else parse_repository(name)
