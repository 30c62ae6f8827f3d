"""The container lifecycle: create, start, stop, kill, wait, remove, and exit handling.

State lives in the :class:`ContainerStore`; what runs lives in shims, which outlive the
daemon. Each container has an asyncio lock: a state change (and the I/O that goes with it)
happens under it, so ``docker rm -f`` and ``--rm`` after exit cannot both tear down. Waiting
for an exit never holds the lock (the exit handler needs it). The blocking calls (shim
protocol, mounts, subprocesses) run in worker threads; each running container has one
thread blocked in the shim's ``wait``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal as signals
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any

from skiff.core.images import chain_ids
from skiff.core.snapshots import Snapshotter
from skiff.daemon.containers.names import check_name, new_id, random_name
from skiff.daemon.containers.record import CREATED, EXITED, RUNNING, Container, now_rfc3339
from skiff.daemon.containers.runner import Runner
from skiff.daemon.containers.store import ContainerStore
from skiff.daemon.events import EventBus
from skiff.errors import (
    Conflict,
    InvalidArgument,
    NotFound,
    SkiffError,
    SystemFailure,
    Unavailable,
)
from skiff.services.images import Image, ImageService
from skiff.services.spec import apply_create_defaults, merge_image_config
from skiff.shim.logs import LogEntry, read_logs

log = logging.getLogger("skiffd.containers")

Unpack = Callable[[Sequence[Any], Sequence[Any]], object]
_DEFAULT_STOP_TIMEOUT = 10


class NotModified(SkiffError):
    """The container is already in the state asked for (HTTP 304, as Docker answers)."""


def _cgroup_version() -> int:
    return 2 if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else 1


def parse_signal(value: object) -> int:
    """"SIGTERM", "TERM", "15" or 15 -> 15; InvalidArgument otherwise."""
    text = str(value).strip()
    if text.isdigit():
        num = int(text)
        if 0 < num < 65:
            return num
    else:
        name = text.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        if name in signals.Signals.__members__:
            return int(signals.Signals[name])
    raise InvalidArgument(f"Invalid signal: {text}")


def _exec_failure_code(message: str) -> int | None:
    """Docker's exit codes when the command cannot run: 127 not found, 126 cannot invoke."""
    low = message.lower()
    if "not found" in low or "no such file" in low:
        return 127
    if "permission denied" in low:
        return 126
    return None


class ContainerManager:
    def __init__(self, store: ContainerStore, runner: Runner, images: ImageService,
                 snapshotter: Snapshotter, unpack: Unpack, events: EventBus | None = None
                 ) -> None:
        self.store = store
        self.events = events or EventBus()
        self.runner = runner
        self.images = images
        self.snapshotter = snapshotter
        self.unpack = unpack
        self._locks: dict[str, asyncio.Lock] = {}
        self._exit_waiters: dict[str, list[asyncio.Future[int]]] = {}
        self._remove_waiters: dict[str, list[asyncio.Future[int]]] = {}
        self._running: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # --- helpers -----------------------------------------------------------------------

    def _lock(self, cid: str) -> asyncio.Lock:
        return self._locks.setdefault(cid, asyncio.Lock())

    def get(self, ref: str) -> Container:
        return self.store.find(ref)

    def log_path(self, c: Container) -> str:
        return self.runner.paths.log(c.id)

    def rootfs(self, c: Container) -> str:
        return self.runner.paths.rootfs(c.id)

    def is_running(self, cid: str) -> bool:
        return cid in self._running

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run exit handling in the background, keeping a reference and logging failures."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("handling a container exit failed", exc_info=task.exception())

    @staticmethod
    def _resolve(waiters: dict[str, list[asyncio.Future[int]]], cid: str, code: int) -> None:
        for fut in waiters.pop(cid, []):
            if not fut.done():
                fut.set_result(code)

    def _future(self, waiters: dict[str, list[asyncio.Future[int]]], cid: str
                ) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        waiters.setdefault(cid, []).append(fut)
        return fut

    # --- create ------------------------------------------------------------------------

    async def create(self, body: Mapping[str, Any], name: str | None) -> Container:
        image_ref = body.get("Image")
        if not isinstance(image_ref, str) or not image_ref:
            raise InvalidArgument("config cannot be empty in order to create a container: "
                                  "Image is required")
        cname = check_name(name) if name else random_name()
        img: Image = await asyncio.to_thread(self.images.get, image_ref)
        config = {k: v for k, v in body.items() if k not in ("HostConfig", "NetworkingConfig")}
        config = merge_image_config(config, img.config.config)
        if not config.get("Cmd") and not config.get("Entrypoint"):
            raise InvalidArgument("No command specified")
        hc = apply_create_defaults(body.get("HostConfig"), cgroup_version=_cgroup_version())
        # what the shim writes is json-file; clients (docker-py) read the driver from here
        if not (hc.get("LogConfig") or {}).get("Type"):
            hc["LogConfig"] = {"Type": "json-file", "Config": {}}
        hc.setdefault("RestartPolicy", {"Name": "no", "MaximumRetryCount": 0})
        cid = new_id()
        c = Container(id=cid, name=cname, image=image_ref, image_id=str(img.id), config=config,
                      host_config=hc, snapshot_key=f"container-{cid}")
        self.store.add(c)  # the name is taken (or refused) before any work is done
        try:
            await asyncio.to_thread(self._prepare, c, img)
        except BaseException:
            await asyncio.to_thread(self._discard, c)
            raise
        return c

    def _prepare(self, c: Container, img: Image) -> None:
        parent = None
        if img.config.diff_ids:
            self.unpack(img.manifest.layers, img.config.diff_ids)  # shares committed layers
            parent = chain_ids(img.config.diff_ids)[-1]
        self.snapshotter.prepare(c.snapshot_key, parent, {"skiff.container": c.id})
        self.runner.materialise(c)

    def _discard(self, c: Container) -> None:
        """Undo a create that failed half way (quietly: the first error is the one to report)."""
        with contextlib.suppress(SkiffError, OSError):
            self.runner.delete_shim(c, force=True)
        with contextlib.suppress(SkiffError, OSError):
            self.runner.teardown(c)
        with contextlib.suppress(SkiffError, OSError):
            self.snapshotter.remove(c.snapshot_key)
        self.runner.remove_files(c)
        self.store.delete(c.id)

    # --- start -------------------------------------------------------------------------

    async def start(self, ref: str) -> None:
        c = self.get(ref)
        async with self._lock(c.id):
            c = self.get(c.id)
            if c.status == RUNNING:
                raise NotModified(f"container {c.id} is already started")
            if not await asyncio.to_thread(self._shim_alive, c):
                await asyncio.to_thread(self.runner.teardown, c)
                await asyncio.to_thread(self.runner.materialise, c)
            started = now_rfc3339()  # before: a quick process may be gone when start returns
            try:
                await asyncio.to_thread(self.runner.shim(c.id).start)
                state = await asyncio.to_thread(self.runner.shim(c.id).state)
            except SkiffError as exc:
                code = _exec_failure_code(exc.message)
                c.error = exc.message
                failure: SkiffError = InvalidArgument(exc.message) if code else exc
                await self._finish(c, {"exit_code": code or 128, "oom_killed": False})
                if c.host_config.get("AutoRemove"):  # after this lock is released
                    self._spawn(self._auto_remove(c.id))
                raise failure from exc
            c.status, c.pid, c.started_at = RUNNING, int(state.get("pid") or 0), started
            c.exit_code, c.error = 0, ""
            self.store.put(c)
            self._running.add(c.id)
        self._monitor(c.id)

    def _shim_alive(self, c: Container) -> bool:
        try:
            self.runner.shim(c.id, timeout=5).state()
            return True
        except (Unavailable, SystemFailure, OSError):
            return False

    def _monitor(self, cid: str) -> None:
        """A thread blocked in the shim's wait; the exit is handled on the loop."""
        loop = asyncio.get_running_loop()

        def wait() -> None:
            try:
                record = self.runner.shim(cid).wait(timeout=None)
            except (SkiffError, OSError) as exc:
                # the shim died (or was killed): the exit file is the last word, if any
                record = self.runner.exit_record(cid) or {
                    "exit_code": 255, "oom_killed": False, "error": f"shim lost: {exc}"}
            loop.call_soon_threadsafe(self._spawn, self._exited(cid, record))

        threading.Thread(target=wait, name=f"wait-{cid[:12]}", daemon=True).start()

    async def _exited(self, cid: str, record: Mapping[str, Any]) -> None:
        try:
            c = self.get(cid)
        except NotFound:
            return
        async with self._lock(cid):
            c = self.get(cid)
            if c.status != RUNNING:
                return
            await self._finish(c, record)
        if c.host_config.get("AutoRemove"):
            await self._auto_remove(cid)

    async def _auto_remove(self, cid: str) -> None:
        with contextlib.suppress(NotFound):
            await self.remove(cid, force=True)

    async def _finish(self, c: Container, record: Mapping[str, Any]) -> None:
        """Record an exit, take the runtime side down, wake the waiters (lock held)."""
        c.status, c.pid = EXITED, 0
        c.exit_code = int(record.get("exit_code", 255))
        c.oom_killed = bool(record.get("oom_killed"))
        c.finished_at = str(record.get("exited_at") or now_rfc3339())
        if record.get("error"):
            c.error = str(record["error"])
        self.store.put(c)
        self._running.discard(c.id)
        try:
            await asyncio.to_thread(self.runner.delete_shim, c, True)
            await asyncio.to_thread(self.runner.teardown, c)
        except SkiffError as exc:
            log.error("clean up after container %s exited: %s", c.id, exc)
        self._resolve(self._exit_waiters, c.id, c.exit_code)

    # --- signals -----------------------------------------------------------------------

    async def kill(self, ref: str, signal: object = "SIGKILL") -> None:
        sig = parse_signal(signal)
        c = self.get(ref)
        if not self.is_running(c.id):
            raise Conflict(f"Cannot kill container: {ref}: Container {c.id} is not running")
        await asyncio.to_thread(self.runner.shim(c.id).kill, sig)

    async def stop(self, ref: str, timeout: int | None = None, signal: object = None) -> None:
        c = self.get(ref)
        if not self.is_running(c.id):
            raise NotModified(f"container {c.id} is already stopped")
        sig = parse_signal(signal or c.config.get("StopSignal") or "SIGTERM")
        if timeout is None:
            stop_timeout = c.config.get("StopTimeout")
            timeout = stop_timeout if isinstance(stop_timeout, int) else _DEFAULT_STOP_TIMEOUT
        exited = self._future(self._exit_waiters, c.id)
        with contextlib.suppress(Conflict, NotFound):
            await asyncio.to_thread(self.runner.shim(c.id).kill, sig)
        if timeout >= 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(exited), timeout)
        if not exited.done():
            with contextlib.suppress(Conflict, NotFound):
                await asyncio.to_thread(self.runner.shim(c.id).kill, signals.SIGKILL, True)
            await exited

    async def resize(self, ref: str, height: int, width: int) -> None:
        c = self.get(ref)
        if c.status not in (CREATED, RUNNING):
            raise Conflict(f"cannot resize container {c.id}: it is not running")
        if c.tty:  # without a tty there is nothing to resize (Docker ignores it too)
            await asyncio.to_thread(self.runner.shim(c.id).resize, height, width)

    # --- wait --------------------------------------------------------------------------

    def waiter(self, ref: str, condition: str) -> asyncio.Future[int]:
        """A future of the exit code for ``condition``; errors (404, 400) raised now."""
        if condition not in ("", "not-running", "next-exit", "removed"):
            raise InvalidArgument(f"invalid condition: {condition!r}")
        c = self.get(ref)
        if condition == "removed":
            return self._future(self._remove_waiters, c.id)
        if condition == "next-exit" or self.is_running(c.id):
            return self._future(self._exit_waiters, c.id)
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        done.set_result(c.exit_code)
        return done

    # --- remove ------------------------------------------------------------------------

    async def remove(self, ref: str, *, force: bool = False) -> None:
        c = self.get(ref)
        if self.is_running(c.id):
            if not force:
                raise Conflict(f"cannot remove container \"/{c.name}\": container is running: "
                               "stop the container before removing or force remove")
            exited = self._future(self._exit_waiters, c.id)
            with contextlib.suppress(Conflict, NotFound, Unavailable):
                await asyncio.to_thread(self.runner.shim(c.id).kill, signals.SIGKILL, True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(exited, 30)
        async with self._lock(c.id):
            try:
                c = self.get(c.id)
            except NotFound:
                return  # removed meanwhile (--rm)
            await asyncio.to_thread(self._remove_now, c)
            self._running.discard(c.id)
        self._locks.pop(c.id, None)
        self._resolve(self._exit_waiters, c.id, c.exit_code)
        self._resolve(self._remove_waiters, c.id, c.exit_code)

    def _remove_now(self, c: Container) -> None:
        self.runner.delete_shim(c, force=True)
        self.runner.teardown(c)
        with contextlib.suppress(NotFound):
            self.snapshotter.remove(c.snapshot_key)
        self.runner.remove_files(c)
        self.store.delete(c.id)

    # --- streams -----------------------------------------------------------------------

    async def attach(self, ref: str, *, stdin: bool, stdout: bool, stderr: bool, logs: bool
                     ) -> socket.socket:
        """A connection to the shim carrying the container's streams.

        An exited container gets its shim back first (runtime ``create``), so that
        ``docker start -a`` (attach, then start) sees the whole run.
        """
        c = self.get(ref)
        async with self._lock(c.id):
            c = self.get(c.id)
            if c.status not in (CREATED, RUNNING) and not await asyncio.to_thread(
                    self._shim_alive, c):
                await asyncio.to_thread(self.runner.teardown, c)
                await asyncio.to_thread(self.runner.materialise, c)
        return await asyncio.to_thread(
            self.runner.shim(c.id).attach, stdin=stdin, stdout=stdout, stderr=stderr,
            logs=logs, stdin_once=bool(c.config.get("StdinOnce")))

    def logs(self, c: Container, *, follow: bool, tail: int | None, since_ns: int | None,
             until_ns: int | None, stop: Callable[[], bool]) -> Iterator[LogEntry]:
        """``docker logs`` entries (blocking iterator); following ends when the container does."""
        cid = c.id

        def done() -> bool:
            return stop() or cid not in self._running

        return read_logs(self.runner.paths.log(cid), tail=tail, since_ns=since_ns,
                         until_ns=until_ns, follow=follow and self.is_running(cid), stop=done)

    def list(self, *, all: bool, filters: Mapping[str, Sequence[str]]) -> list[Container]:
        for key in filters:
            if key not in _FILTERS:
                raise InvalidArgument(f"invalid filter '{key}'")
        out = []
        for c in sorted(self.store.all(), key=lambda c: c.created, reverse=True):
            if not all and not c.running and "status" not in filters:
                continue
            if not _matches(c, filters):
                continue
            out.append(c)
        return out

    # --- daemon restart ----------------------------------------------------------------

    async def restore(self) -> None:
        """Find the shims of containers recorded as created or running (live restore)."""
        for c in self.store.all():
            if c.status not in (CREATED, RUNNING):
                continue
            try:
                state = await asyncio.to_thread(self.runner.shim(c.id, timeout=5).state)
            except (SkiffError, OSError):
                state = None
            if state is None:
                record = self.runner.exit_record(c.id)
                if c.status == RUNNING:
                    self._running.add(c.id)
                    self._spawn(self._exited(c.id, record or {
                        "exit_code": 255, "error": "the shim was gone when skiffd restarted"}))
                else:  # created, shim gone: start will bring it up again
                    await asyncio.to_thread(self.runner.teardown, c)
            elif state.get("status") == "stopped" and c.status == RUNNING:
                self._running.add(c.id)
                self._spawn(self._exited(c.id, state.get("exit") or {}))
            elif state.get("status") == "running":
                if c.status != RUNNING:
                    c.status = RUNNING
                    self.store.put(c)
                self._running.add(c.id)
                self._monitor(c.id)

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for waiters in (self._exit_waiters, self._remove_waiters):
            for futs in waiters.values():
                for fut in futs:
                    fut.cancel()


_FILTERS = ("status", "id", "name", "label", "ancestor")


def _matches(c: Container, filters: Mapping[str, Sequence[str]]) -> bool:
    for key, values in filters.items():
        if not values:
            continue
        if key == "status" and c.status not in values:
            return False
        if key == "id" and not any(c.id.startswith(v) for v in values):
            return False
        if key == "name" and not any(v.removeprefix("/") in c.name for v in values):
            return False
        if key == "label":
            labels = c.config.get("Labels") or {}
            for want in values:
                k, eq, v = want.partition("=")
                if k not in labels or (eq and labels[k] != v):
                    return False
        if key == "ancestor" and not any(v in (c.image, c.image_id) for v in values):
            return False
    return True
