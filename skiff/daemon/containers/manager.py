"""The container lifecycle: create, start, stop, kill, pause, update, rename, restart
policies, healthchecks, wait, remove, and exit handling.

State lives in the :class:`ContainerStore`; what runs lives in shims, which outlive the
daemon. Each container has an asyncio lock: a state change (and the I/O that goes with it)
happens under it, so ``docker rm -f`` and ``--rm`` after exit cannot both tear down, and a
healthcheck result cannot write back a stale copy over an exit. Waiting for an exit never
holds the lock (the exit handler needs it). The blocking calls (shim protocol, mounts,
subprocesses) run in worker threads; each running container has one thread blocked in the
shim's ``wait``.

After an exit the restart policy decides (:mod:`restart`): the container is marked
restarting and started again after its back-off, unless the exit came from an explicit
stop or kill through the API.
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
from skiff.core.snapshots import Kind, Snapshotter
from skiff.daemon.containers import initlayer
from skiff.daemon.containers.control import RuntimeControl
from skiff.daemon.containers.filters import list_matcher, prune_matcher
from skiff.daemon.containers.health import (
    UNHEALTHY,
    Health,
    HealthConfig,
    ProbeResult,
    merge_image_healthcheck,
)
from skiff.daemon.containers.names import check_name, new_id, random_name
from skiff.daemon.containers.probes import HealthProbes
from skiff.daemon.containers.record import (
    CREATED,
    EXITED,
    RUNNING,
    ZERO_TIME,
    Container,
    now_rfc3339,
    unix_time,
)
from skiff.daemon.containers.restart import (
    Backoff,
    RestartPolicy,
    check_host_config,
    restore_on_boot,
    should_restart,
)
from skiff.daemon.containers.runner import Runner
from skiff.daemon.containers.store import ContainerStore
from skiff.daemon.containers.updates import plan_update
from skiff.daemon.events import EventBus
from skiff.daemon.volumes.containers import ContainerMounts
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
# skiff's extension: a container with this label is restarted when it turns unhealthy
RESTART_ON_UNHEALTHY = "skiff.restart-on-unhealthy"
CONTAINER_LABEL = "skiff.container"  # on a container's writable layer: whose it is


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


def _ends_run(c: Container, sig: int) -> bool:
    """Does ``docker kill -s sig`` end the run for good (no restart, unpause to deliver)?

    dockerd's rule: SIGKILL always; any signal when the container names no StopSignal;
    otherwise only its StopSignal (a SIGHUP to reload a server is not a stop)."""
    stop_signal = c.config.get("StopSignal")
    if sig == signals.SIGKILL or not stop_signal:
        return True
    try:
        return parse_signal(stop_signal) == sig
    except InvalidArgument:
        return False


class ContainerManager:
    def __init__(self, store: ContainerStore, runner: Runner, images: ImageService,
                 snapshotter: Snapshotter, unpack: Unpack, events: EventBus | None = None
                 ) -> None:
        self.store = store
        self.events = events or EventBus()
        self.exec_lookup: Callable[[str], list[str]] = lambda _cid: []
        self.mounts: ContainerMounts | None = None  # binds and volumes (app.py sets it)
        self.runner = runner
        self.images = images
        self.snapshotter = snapshotter
        self.unpack = unpack
        self.control = RuntimeControl(runner)
        self._locks: dict[str, asyncio.Lock] = {}
        self._exit_waiters: dict[str, list[asyncio.Future[int]]] = {}
        self._remove_waiters: dict[str, list[asyncio.Future[int]]] = {}
        self._running: set[str] = set()
        self._starting: set[str] = set()  # between the runtime's start and RUNNING recorded
        self._tasks: set[asyncio.Task[None]] = set()
        self._restarts: dict[str, asyncio.Task[None]] = {}  # waiting out a back-off
        self._backoffs: dict[str, Backoff] = {}
        self._creating: dict[str, asyncio.Task[None]] = {}  # runtime side of a create, going on
        self._early_attaches: dict[str, list[asyncio.Future[None]]] = {}
        self.probes = HealthProbes(runner, self._spawn, self._health_result, self._paused_now)

    # --- helpers -----------------------------------------------------------------------

    def _lock(self, cid: str) -> asyncio.Lock:
        return self._locks.setdefault(cid, asyncio.Lock())

    def exec_ids(self, cid: str) -> list[str]:
        """The container's running execs (inspect's ExecIDs); the exec registry sets
        ``exec_lookup`` when the daemon is composed."""
        return self.exec_lookup(cid)

    def exclusive(self, cid: str) -> asyncio.Lock:
        """The container's state lock, for work on it from outside the lifecycle (cp into
        an exited container mounts its snapshot: no start or rm meanwhile). Never hold it
        while waiting for the container to exit."""
        return self._lock(cid)

    def get(self, ref: str) -> Container:
        return self.store.find(ref)

    async def get_settled(self, ref: str) -> Container:
        """``get``, once the runtime side of its create (if going on) is done: the mount
        points of its volumes, in its rootfs, are the runtime's to make."""
        c = self.get(ref)
        await self._created(c.id)
        return c

    async def _created(self, cid: str) -> None:
        """Wait for the runtime side of ``cid``'s create, if it is going on."""
        creating = self._creating.get(cid)
        if creating is not None:
            await asyncio.wait([creating])

    def log_path(self, c: Container) -> str:
        return self.runner.paths.log(c.id)

    def rootfs(self, c: Container) -> str:
        return self.runner.paths.rootfs(c.id)

    def is_running(self, cid: str) -> bool:
        return cid in self._running

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run work in the background, keeping a reference and logging failures."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background container work failed", exc_info=task.exception())

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

    def _event(self, c: Container, action: str, **extra: str) -> None:
        """A container event; its labels first, so name and image cannot be shadowed."""
        self.events.publish("container", action, c.id,
                            {**c.labels, "image": c.image, "name": c.name, **extra})

    # --- create ------------------------------------------------------------------------

    async def create(self, body: Mapping[str, Any], name: str | None) -> Container:
        # One trip to a worker thread for the checks, the record, the rootfs and the spec.
        c = await asyncio.to_thread(self._create, body, name)
        # The runtime's side (the shim and the runtime's `create`: most of a create's time)
        # goes on after the answer, under the container's lock, taken here before the client
        # can send anything else: its attach, wait and start travel meanwhile, and whatever
        # needs the runtime side waits for the lock. As with Docker, whose runtime creates
        # the container at start, an error there is the start's to report.
        lock = self._lock(c.id)
        await lock.acquire()  # a new container's lock: free, so taken without yielding
        self._creating[c.id] = self._spawn(self._create_runtime_side(c, lock))
        self._event(c, "create")
        return c

    async def _create_runtime_side(self, c: Container, lock: asyncio.Lock) -> None:
        try:
            await asyncio.to_thread(self.runner.start_shim, c)
        except SkiffError as exc:
            # nothing of the runtime's is left (the shim undoes a failed create); the start
            # finds no shim, makes it again and reports what went wrong
            log.info("create container %s: %s (the start will report it)", c.id, exc)
        finally:
            self._creating.pop(c.id, None)
            lock.release()

    def early_attach(self, c: Container) -> asyncio.Future[None] | None:
        """For an attach to a container that is not running (its shim may be still being
        made, or have to be made again): a future to resolve once the attach reached the
        shim (or gave up), which a start waits for. The client may then be answered first
        and send its start meanwhile, as Docker's attach, which needs no runtime, allows; a
        failure to make the shim is then the start's to report. None for a running one:
        attach as usual, the shim first."""
        if c.status == RUNNING:
            return None
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._early_attaches.setdefault(c.id, []).append(fut)
        return fut

    async def _attaches_settled(self, cid: str) -> None:
        """Wait for attaches answered before the shim was there: the process must not start
        before they reach it, or its first output would be lost. (Not under the lock: such
        an attach may need it to make the shim.)"""
        pending = self._early_attaches.pop(cid, [])
        if pending:
            await asyncio.wait(pending, timeout=30)

    def _create(self, body: Mapping[str, Any], name: str | None) -> Container:
        """(thread) Check, record and prepare a new container; on failure nothing is left."""
        image_ref = body.get("Image")
        if not isinstance(image_ref, str) or not image_ref:
            raise InvalidArgument("config cannot be empty in order to create a container: "
                                  "Image is required")
        cname = check_name(name) if name else random_name()
        host_config = body.get("HostConfig")
        if isinstance(host_config, Mapping):  # an unknown runtime: refused before any work
            self.runner.check_runtime(str(host_config.get("Runtime") or ""))
        img = self.images.get(image_ref)
        config = {k: v for k, v in body.items() if k not in ("HostConfig", "NetworkingConfig")}
        image_config = img.config.config
        config = merge_image_config(config, image_config)
        if not config.get("Cmd") and not config.get("Entrypoint"):
            raise InvalidArgument("No command specified")
        healthcheck = merge_image_healthcheck(config, image_config)
        if healthcheck is not None:
            config["Healthcheck"] = healthcheck
        HealthConfig.parse(healthcheck)  # refuse a bad one now, not at the first probe
        hc = apply_create_defaults(body.get("HostConfig"), cgroup_version=_cgroup_version())
        # what the shim writes is json-file; clients (docker-py) read the driver from here
        if not (hc.get("LogConfig") or {}).get("Type"):
            hc["LogConfig"] = {"Type": "json-file", "Config": {}}
        hc["RestartPolicy"] = check_host_config(hc).to_json()
        planned = self.mounts.plan(config, hc, image_config) if self.mounts else None
        if planned is not None:
            config["Volumes"] = planned.volumes
        cid = new_id()
        c = Container(id=cid, name=cname, image=image_ref, image_id=str(img.id), config=config,
                      host_config=hc, snapshot_key=f"container-{cid}",
                      mount_points=[m.to_row() for m in planned.points] if planned else [])
        self.store.add(c)  # the name is taken (or refused) before any work is done
        try:
            if self.runner.network is not None:  # checks and records; allocates nothing
                self.runner.network.register(c, body.get("NetworkingConfig"))
            self._prepare(c, img)
        except BaseException:
            self._discard(c)
            raise
        return c

    def _prepare(self, c: Container, img: Image) -> None:
        parent = None
        if img.config.diff_ids:
            self.unpack(img.manifest.layers, img.config.diff_ids)  # shares committed layers
            parent = chain_ids(img.config.diff_ids)[-1]
        parent = initlayer.make(self.snapshotter, parent)
        self.snapshotter.prepare(c.snapshot_key, parent, {CONTAINER_LABEL: c.id})
        self.runner.prepare_bundle(c)

    def _discard(self, c: Container) -> None:
        """Undo a create that failed half way (quietly: the first error is the one to report)."""
        with contextlib.suppress(SkiffError, OSError):
            self.runner.delete_shim(c, force=True)
        with contextlib.suppress(SkiffError, OSError):
            self.runner.teardown(c)
        with contextlib.suppress(SkiffError, OSError):
            self.snapshotter.remove(c.snapshot_key)
        self.runner.remove_files(c.id)
        self.store.delete(c.id)
        if self.mounts is not None:  # the anonymous volumes made for it go with it
            self.mounts.remove_anonymous(c)

    # --- start -------------------------------------------------------------------------

    async def start(self, ref: str) -> None:
        """``docker start``: a fresh start, so the restart count and back-off begin again."""
        c = self.get(ref)
        await self._attaches_settled(c.id)
        async with self._lock(c.id):
            c = self.get(c.id)
            if c.status == RUNNING:
                raise NotModified(f"container {c.id} is already started")
            self._cancel_restart(c.id)
            c.restarting, c.manually_stopped, c.restart_count = False, False, 0
            self._backoffs.pop(c.id, None)
            try:
                await self._bring_up(c)
            except SkiffError:
                if c.host_config.get("AutoRemove"):  # after this lock is released
                    self._spawn(self._auto_remove(c.id))
                raise
        self._monitor(c.id)

    async def _bring_up(self, c: Container, action: str = "start") -> None:
        """Start the container's process (lock held); a failure is recorded as an exit."""
        started = now_rfc3339()  # before: a quick process may be gone when start returns
        self._starting.add(c.id)
        hc = HealthConfig.parse(c.config.get("Healthcheck"))
        try:
            await asyncio.to_thread(self._start_and_record, c, started, hc is not None)
        except SkiffError as exc:
            self._starting.discard(c.id)
            code = _exec_failure_code(exc.message)
            c.error = exc.message
            failure: SkiffError = InvalidArgument(exc.message) if code else exc
            await self._finish(c, {"exit_code": code or 128, "oom_killed": False})
            raise failure from exc
        self._running.add(c.id)
        self._starting.discard(c.id)
        self._event(c, action)
        if hc:
            self.probes.watch(c.id, hc)

    def _start_and_record(self, c: Container, started: str, health: bool) -> None:
        """(thread) Start the process and record it running, in one trip off the loop."""
        pid = self._start_process(c)
        c.status, c.pid, c.started_at = RUNNING, pid, started
        c.exit_code, c.error, c.restarting, c.paused = 0, "", False, False
        c.health = Health().to_json() if health else None
        try:
            self.store.put(c)
        except SkiffError as exc:  # not a failed start: the process runs, and is supervised
            log.error("record container %s as running: %s", c.id, exc)

    def _start_process(self, c: Container) -> int:
        """(thread) Start the container's process through its shim; its pid.

        Its shim is usually there (create made it, and a stopped container's is gone): one
        call. If none answers, the shim and the runtime's container are made again first.
        """
        try:
            return self.runner.shim(c.id).start()
        except Unavailable:  # nobody listens: a container that exited, or a lost shim
            pass
        self._make_again(c)
        return self.runner.shim(c.id).start()

    def _make_again(self, c: Container) -> None:
        """(thread) The shim and the runtime's container, made anew for a container whose
        shim is gone: what a lost shim left of the runtime's container goes first."""
        self.runner.delete_shim(c, force=True)
        self.runner.teardown(c)
        self.runner.materialise(c)

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
            # --rm (never with a restart policy): the rootfs and the container's files go in
            # the same step as the runtime's state; the removal that follows finds them gone
            auto_remove = bool(c.host_config.get("AutoRemove"))
            cleaned = await self._finish(c, record, removing=auto_remove)
            restarting = self._after_exit(c)
            if auto_remove and not restarting and cleaned:
                # everything but the record went with the exit: it goes now, under the same
                # lock (as `docker rm -v` would, anonymous volumes too)
                await self._drop(c, volumes=True, take_down=False)
        if auto_remove and not restarting:
            if cleaned:
                self._removed(c)
            else:
                await self._auto_remove(cid)

    async def _auto_remove(self, cid: str) -> None:
        with contextlib.suppress(NotFound):  # --rm: as docker rm -v
            await self.remove(cid, force=True, volumes=True)

    async def _finish(self, c: Container, record: Mapping[str, Any], removing: bool = False
                      ) -> bool:
        """Record an exit, take the runtime side down, wake the waiters (lock held).

        ``removing``: the container is about to be removed, so its writable layer and files
        go now too, beside the runtime's delete. True if all of that was done.
        """
        self.probes.unwatch(c.id)
        c.status, c.pid, c.paused = EXITED, 0, False
        c.exit_code = int(record.get("exit_code", 255))
        c.oom_killed = bool(record.get("oom_killed"))
        c.finished_at = str(record.get("exited_at") or now_rfc3339())
        if record.get("error"):
            c.error = str(record["error"])
        # The process is gone: the record, the runtime's delete (cgroups, state) and the
        # rootfs' unmount touch nothing of each other's, and each is a few ms of a `run --rm`.
        # Removing, the writable layer (after the unmount) and the container's files (after
        # the network's release, which reads records that go with them) go too, side by side.
        take_down = ([asyncio.to_thread(self._remove_rootfs, c),
                      asyncio.to_thread(self._remove_files, c)] if removing
                     else [asyncio.to_thread(self.runner.teardown, c)])
        results = await asyncio.gather(
            self._record_exit(c), asyncio.to_thread(self.runner.delete_shim, c, True),
            *take_down, return_exceptions=True)
        self._running.discard(c.id)
        for result in results:
            if isinstance(result, SkiffError):
                log.error("clean up after container %s exited: %s", c.id, result)
            elif isinstance(result, BaseException):
                raise result
        cleaned = not any(isinstance(r, BaseException) for r in results[1:])
        if c.oom_killed:
            self._event(c, "oom")
        ran = max(0.0, unix_time(c.finished_at) - unix_time(c.started_at))
        self._event(c, "die", exitCode=str(c.exit_code), execDuration=str(int(ran)))
        self._resolve(self._exit_waiters, c.id, c.exit_code)
        return cleaned

    async def _record_exit(self, c: Container) -> None:
        """Write the exit down; from then on it is not running for anybody. Not before: a
        wait meanwhile would read the previous exit code. Not later, once the rest of the
        clean-up is done: an rm right after an inspect that saw the exit would be refused."""
        try:
            await asyncio.to_thread(self.store.put, c)
        finally:
            self._running.discard(c.id)

    # --- restart policies --------------------------------------------------------------

    def _after_exit(self, c: Container) -> bool:
        """Apply the restart policy after an exit (lock held); True if a restart is due."""
        try:
            policy = RestartPolicy.parse(c.host_config.get("RestartPolicy"))
        except InvalidArgument:
            policy = RestartPolicy()
        if not should_restart(policy, exit_code=c.exit_code, restart_count=c.restart_count,
                              manually_stopped=c.manually_stopped):
            self._backoffs.pop(c.id, None)
            return False
        ran_for = max(0.0, unix_time(c.finished_at) - unix_time(c.started_at))
        delay = self._backoffs.setdefault(c.id, Backoff()).next(ran_for)
        self._schedule_restart(c, delay)
        return True

    def _schedule_restart(self, c: Container, delay: float) -> None:
        c.restarting = True
        self.store.put(c)
        self._cancel_restart(c.id)
        self._restarts[c.id] = self._spawn(self._restart_later(c.id, delay))

    def _cancel_restart(self, cid: str) -> bool:
        task = self._restarts.pop(cid, None)
        if task is None or task.done():
            return False
        if task is not asyncio.current_task():
            task.cancel()
        return True

    async def _restart_later(self, cid: str, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self._lock(cid):
            if self._restarts.get(cid) is asyncio.current_task():
                del self._restarts[cid]
            try:
                c = self.get(cid)
            except NotFound:
                return
            if not c.restarting or c.status == RUNNING:
                return  # stopped, started or removed meanwhile
            c.restart_count += 1
            try:
                await self._bring_up(c)
            except SkiffError as exc:
                log.warning("restart container %s: %s", cid, exc)
                self._after_exit(c)  # counts as a failed run: the policy decides again
                return
        self._monitor(cid)

    # --- healthchecks ------------------------------------------------------------------

    def _paused_now(self, cid: str) -> bool:
        try:
            return self.get(cid).paused
        except NotFound:
            return False

    async def _health_result(self, cid: str, cfg: HealthConfig, result: ProbeResult,
                             in_start: bool) -> None:
        async with self._lock(cid):
            try:
                c = self.get(cid)
            except NotFound:
                return
            if c.status != RUNNING:
                return
            health = Health.from_json(c.health)
            changed = health.record(result, cfg.retries, in_start)
            c.health = health.to_json()
            self.store.put(c)
        if changed:
            self._event(c, f"health_status: {health.status}")
            if health.status == UNHEALTHY and \
                    c.labels.get(RESTART_ON_UNHEALTHY, "").lower() in ("true", "1", "yes"):
                self._spawn(self._restart_unhealthy(cid))

    async def _restart_unhealthy(self, cid: str) -> None:
        """The label's restart counts in RestartCount (a ``docker restart`` resets it)."""
        try:
            count = self.get(cid).restart_count
            await self.restart(cid)
        except (NotFound, NotModified, Conflict) as exc:
            log.warning("restart unhealthy container %s: %s", cid, exc)
            return
        async with self._lock(cid):
            with contextlib.suppress(NotFound):
                c = self.get(cid)
                c.restart_count = count + 1
                self.store.put(c)

    # --- signals -----------------------------------------------------------------------

    async def _mark_stopped(self, cid: str) -> Container:
        """Record an explicit stop or kill: no restart policy applies to this exit."""
        async with self._lock(cid):
            c = self.get(cid)
            c.manually_stopped = True
            if self._cancel_restart(cid) or c.restarting:
                c.restarting = False  # caught in its back-off: it simply stays exited
                self._resolve(self._exit_waiters, cid, c.exit_code)
            self._backoffs.pop(cid, None)
            self.store.put(c)
            return c

    async def _signal(self, c: Container, sig: int, all: bool = False) -> None:
        """Send a signal; a paused container is thawed after it when the signal ends the run
        (a frozen process cannot act on it, not even on SIGKILL)."""
        await asyncio.to_thread(self.runner.shim(c.id).kill, sig, all)
        self._event(c, "kill", signal=str(sig))
        if _ends_run(c, sig):
            await self._thaw(c.id)

    async def _thaw(self, cid: str) -> None:
        async with self._lock(cid):
            c = self.get(cid)
            if not c.paused:
                return
            with contextlib.suppress(Conflict):
                await asyncio.to_thread(self.control.resume, c)
            c.paused = False
            self.store.put(c)
        self._event(c, "unpause")

    async def kill(self, ref: str, signal: object = "SIGKILL") -> None:
        sig = parse_signal(signal)
        c = self.get(ref)
        if c.id in self._starting:
            # its process may already be printing (a client forwarding ^C sees that) while
            # start still holds the lock: wait for the start to be recorded, then signal
            async with self._lock(c.id):
                c = self.get(c.id)
        if not self.is_running(c.id) and not c.restarting:
            raise Conflict(f"Cannot kill container: {ref}: Container {c.id} is not running")
        if _ends_run(c, sig) or not self.is_running(c.id):
            c = await self._mark_stopped(c.id)
        # (re)checked after the lock: a back-off may have just ended in a start
        if self.is_running(c.id):
            await self._signal(c, sig)

    async def stop(self, ref: str, timeout: int | None = None, signal: object = None) -> None:
        c = self.get(ref)
        if not self.is_running(c.id) and not c.restarting:
            raise NotModified(f"container {c.id} is already stopped")
        sig = parse_signal(signal or c.config.get("StopSignal") or "SIGTERM")
        if timeout is None:
            stop_timeout = c.config.get("StopTimeout")
            timeout = stop_timeout if isinstance(stop_timeout, int) else _DEFAULT_STOP_TIMEOUT
        c = await self._mark_stopped(c.id)
        if not self.is_running(c.id):
            # waiting out a back-off (or it exited on its own meanwhile): cancelling the
            # restart is the whole stop; a back-off that ended in a start is stopped below
            self._event(c, "stop")
            return
        exited = self._future(self._exit_waiters, c.id)
        with contextlib.suppress(Conflict, NotFound, Unavailable):
            await asyncio.to_thread(self.runner.shim(c.id).kill, sig)
            self._event(c, "kill", signal=str(sig))
        await self._thaw(c.id)  # the stop signal waits for a thawed process
        if timeout >= 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(exited), timeout)
        if not exited.done():
            with contextlib.suppress(Conflict, NotFound, Unavailable):
                await asyncio.to_thread(self.runner.shim(c.id).kill, signals.SIGKILL, True)
                self._event(c, "kill", signal=str(int(signals.SIGKILL)))
            await exited
        self._event(c, "stop")

    async def restart(self, ref: str, timeout: int | None = None, signal: object = None
                      ) -> None:
        """``docker restart``: stop (if running), then start; one ``restart`` event."""
        c = self.get(ref)
        with contextlib.suppress(NotModified):
            await self.stop(c.id, timeout, signal)
        with contextlib.suppress(NotModified):
            await self.start(c.id)
        self._event(self.get(c.id), "restart")

    async def resize(self, ref: str, height: int, width: int) -> None:
        c = self.get(ref)
        if c.status not in (CREATED, RUNNING):
            raise Conflict(f"cannot resize container {c.id}: it is not running")
        if c.tty:  # without a tty there is nothing to resize (Docker ignores it too)
            await asyncio.to_thread(self.runner.shim(c.id).resize, height, width)
            self._event(c, "resize", height=str(height), width=str(width))

    # --- pause, update, rename ---------------------------------------------------------

    async def pause(self, ref: str) -> None:
        c = self.get(ref)
        async with self._lock(c.id):
            c = self.get(c.id)
            if not self.is_running(c.id):
                raise Conflict(f"Container {c.id} is not running")
            if c.paused:
                raise Conflict(f"Container {c.id} is already paused")
            await asyncio.to_thread(self.control.pause, c)
            c.paused = True
            self.store.put(c)
        self._event(c, "pause")

    async def unpause(self, ref: str) -> None:
        c = self.get(ref)
        async with self._lock(c.id):
            c = self.get(c.id)
            if not self.is_running(c.id) or not c.paused:
                raise Conflict(f"Container {c.id} is not paused")
            await asyncio.to_thread(self.control.resume, c)
            c.paused = False
            self.store.put(c)
        self._event(c, "unpause")

    async def update(self, ref: str, body: Mapping[str, Any]) -> list[str]:
        """Resources and restart policy; applied live when the container has a process.

        A stopped container only records them: its next start builds the spec anew."""
        c = self.get(ref)
        async with self._lock(c.id):
            c = self.get(c.id)
            new_hc, resources = plan_update(c.host_config, body)
            if resources and c.status in (CREATED, RUNNING) and await asyncio.to_thread(
                    self._shim_alive, c):
                await asyncio.to_thread(self.control.update, c, resources)
            c.host_config = new_hc
            self.store.put(c)
        self._event(c, "update")
        return []

    async def rename(self, ref: str, new_name: str) -> None:
        if not new_name:
            raise InvalidArgument("Neither old nor new names may be empty")
        name = check_name(new_name)
        c = self.get(ref)
        async with self._lock(c.id):
            c = self.get(c.id)
            old = c.name
            if old == name:
                raise InvalidArgument("Renaming a container with the same name as its "
                                      "current name")
            c.name = name
            self.store.rename(c)
        self._event(c, "rename", oldName="/" + old)

    # --- wait --------------------------------------------------------------------------

    def waiter(self, ref: str, condition: str) -> asyncio.Future[int]:
        """A future of the exit code for ``condition``; errors (404, 400) raised now.

        A container waiting out a restart back-off counts as running, as in dockerd."""
        if condition not in ("", "not-running", "next-exit", "removed"):
            raise InvalidArgument(f"invalid condition: {condition!r}")
        c = self.get(ref)
        if condition == "removed":
            return self._future(self._remove_waiters, c.id)
        if condition == "next-exit" or self.is_running(c.id) or c.restarting:
            return self._future(self._exit_waiters, c.id)
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        done.set_result(c.exit_code)
        return done

    # --- remove ------------------------------------------------------------------------

    async def remove(self, ref: str, *, force: bool = False, volumes: bool = False) -> None:
        """``docker rm``; ``volumes`` (anonymous volumes go too) waits for volumes."""
        c = self.get(ref)
        if self.is_running(c.id) or c.restarting:
            if not force:
                state = "paused" if c.paused else "running" if self.is_running(c.id) \
                    else "restarting"
                raise Conflict(f"cannot remove container \"/{c.name}\": container is {state}: "
                               "stop the container before removing or force remove")
            c = await self._mark_stopped(c.id)
        if self.is_running(c.id):
            exited = self._future(self._exit_waiters, c.id)
            with contextlib.suppress(Conflict, NotFound, Unavailable):
                await asyncio.to_thread(self.runner.shim(c.id).kill, signals.SIGKILL, True)
            with contextlib.suppress(Conflict, NotFound, Unavailable, SystemFailure):
                await self._thaw(c.id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(exited, 30)
        async with self._lock(c.id):
            try:
                c = self.get(c.id)
            except NotFound:
                return  # removed meanwhile (--rm)
            await self._drop(c, volumes=volumes, take_down=True)
        self._removed(c)

    async def _drop(self, c: Container, *, volumes: bool, take_down: bool) -> None:
        """Forget ``c`` (lock held): its runtime side, rootfs and files too if ``take_down``,
        its anonymous volumes if ``volumes``; one trip to a worker thread."""
        self._cancel_restart(c.id)
        self.probes.unwatch(c.id)
        mounts = self.mounts if volumes and c.mount_points else None

        def drop() -> None:
            if take_down:
                self._remove_now(c)
            else:
                self.store.delete(c.id)
            if mounts is not None:
                mounts.remove_anonymous(c)

        await asyncio.to_thread(drop)
        self._running.discard(c.id)

    def _removed(self, c: Container) -> None:
        """After ``c`` left the store: the lock and back-off go, and the waiters hear it."""
        self._locks.pop(c.id, None)
        self._backoffs.pop(c.id, None)
        self._early_attaches.pop(c.id, None)
        self._event(c, "destroy")
        self._resolve(self._exit_waiters, c.id, c.exit_code)
        self._resolve(self._remove_waiters, c.id, c.exit_code)

    def _remove_now(self, c: Container) -> None:
        self.runner.delete_shim(c, force=True)
        self._take_down_files(c)
        self.store.delete(c.id)

    def _take_down_files(self, c: Container) -> None:
        """Unmount the rootfs, then remove the writable layer and the container's files."""
        self._remove_rootfs(c)
        self._remove_files(c)

    def _remove_rootfs(self, c: Container) -> None:
        self.runner.take_down_bundle(c)
        with contextlib.suppress(NotFound):
            self.snapshotter.remove(c.snapshot_key)

    def _remove_files(self, c: Container) -> None:
        self.runner.release_network(c)  # before remove_files: it reads what that forgets
        self.runner.remove_files(c.id)

    async def prune(self, filters: Mapping[str, Sequence[str]]) -> tuple[list[str], int]:
        """``docker container prune``: every stopped container the filters select;
        (ids removed, bytes of their writable layers)."""
        match = prune_matcher(filters)
        removed: list[str] = []
        reclaimed = 0
        for c in self.store.all():
            if self.is_running(c.id) or c.restarting or c.status == RUNNING or not match(c):
                continue
            size = await asyncio.to_thread(self.size_rw, c)
            try:
                await self.remove(c.id)
            except (NotFound, Conflict):
                continue  # started or removed meanwhile
            removed.append(c.id)
            reclaimed += size
        self.events.publish("container", "prune", "", {"reclaimed": str(reclaimed)})
        return removed, reclaimed

    def size_rw(self, c: Container) -> int:
        """Bytes in the container's writable layer (0 when the snapshotter cannot tell)."""
        try:
            return self.snapshotter.usage(c.snapshot_key)[0]
        except (SkiffError, OSError):
            return 0

    def sizes(self, c: Container) -> tuple[int, int]:
        """(SizeRw, SizeRootFs): the writable layer, and it with the image's layers."""
        rw = self.size_rw(c)
        try:
            image = self.images.get(c.image_id).size
        except (SkiffError, OSError):
            image = 0  # the image went away (docker rmi -f): count what is left
        return rw, rw + image

    # --- streams -----------------------------------------------------------------------

    async def attach(self, ref: str, *, stdin: bool, stdout: bool, stderr: bool, logs: bool,
                     detach_keys: bytes = b"") -> socket.socket:
        """A connection to the shim carrying the container's streams.

        An exited container gets its shim back first (runtime ``create``), so that
        ``docker start -a`` (attach, then start) sees the whole run.
        """
        c = self.get(ref)
        if c.id in self._creating:
            await self._created(c.id)  # it makes the shim: nothing to check after it
        else:
            async with self._lock(c.id):
                c = self.get(c.id)
                # exited, or created before the daemon (or the machine) restarted: its shim
                # is made again
                if c.status != RUNNING and not await asyncio.to_thread(self._shim_alive, c):
                    await asyncio.to_thread(self._make_again, c)
        sock = await asyncio.to_thread(
            self.runner.shim(c.id).attach, stdin=stdin, stdout=stdout, stderr=stderr,
            logs=logs, stdin_once=bool(c.config.get("StdinOnce")), detach_keys=detach_keys)
        self._event(c, "attach")
        return sock

    def logs(self, c: Container, *, follow: bool, tail: int | None, since_ns: int | None,
             until_ns: int | None, stop: Callable[[], bool]) -> Iterator[LogEntry]:
        """``docker logs`` entries (blocking iterator); following ends when the container does."""
        cid = c.id

        def done() -> bool:
            return stop() or cid not in self._running

        return read_logs(self.runner.paths.log(cid), tail=tail, since_ns=since_ns,
                         until_ns=until_ns, follow=follow and self.is_running(cid), stop=done)

    def list(self, *, all: bool, filters: Mapping[str, Sequence[str]]) -> list[Container]:
        match = list_matcher(filters, self.get)
        out = []
        for c in sorted(self.store.all(), key=lambda c: c.created, reverse=True):
            if not all and not (c.running or c.restarting) and "status" not in filters:
                continue
            if not match(c):
                continue
            out.append(c)
        return out

    # --- daemon restart ----------------------------------------------------------------

    async def restore(self) -> None:
        """Find the shims of containers recorded as created or running (live restore), and
        start again what the restart policies say should run."""
        await asyncio.to_thread(self._collect_orphans)
        for c in self.store.all():
            if c.status not in (CREATED, RUNNING):
                self._restore_stopped(c)
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
                hc = HealthConfig.parse(c.config.get("Healthcheck"))
                if hc:
                    self.probes.watch(c.id, hc)

    def _collect_orphans(self) -> None:
        """Remove the writable layers and files of containers that have no record: a create
        whose record a power loss rolled back (records are not power safe: ContainerStore)."""
        records = self.store.all()
        layers, ids = {c.snapshot_key for c in records}, {c.id for c in records}
        for info in list(self.snapshotter.walk()):
            if (info.kind is Kind.ACTIVE and info.labels.get(CONTAINER_LABEL)
                    and info.key not in layers):
                log.warning("removing the writable layer %s: no container has it", info.key)
                try:
                    self.snapshotter.remove(info.key)
                except SkiffError as exc:
                    log.error("remove orphan layer %s: %s", info.key, exc)
        for cid in self.runner.recorded_ids():
            if cid not in ids:
                log.warning("removing the files of container %s: it has no record", cid)
                try:
                    self.runner.remove_files(cid)
                except SkiffError as exc:
                    log.error("remove the files of container %s: %s", cid, exc)

    def _restore_stopped(self, c: Container) -> None:
        """An exited container at boot: finish a restart that was waiting, or start it when
        its policy is always (or unless-stopped and the user did not stop it)."""
        try:
            policy = RestartPolicy.parse(c.host_config.get("RestartPolicy"))
        except InvalidArgument:
            return
        if c.restarting:
            self._schedule_restart(c, 0.0)
        elif c.started_at != ZERO_TIME and restore_on_boot(
                policy, manually_stopped=c.manually_stopped):
            self._spawn(self._boot_start(c.id))

    async def _boot_start(self, cid: str) -> None:
        try:
            await self.start(cid)
        except (NotModified, NotFound):
            pass
        except SkiffError as exc:
            log.error("start container %s at boot: %s", cid, exc)

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._restarts.clear()
        self.probes.close()
        for waiters in (self._exit_waiters, self._remove_waiters):
            for futs in waiters.values():
                for fut in futs:
                    fut.cancel()
