"""Exec instances: processes started inside a running container (``docker exec``).

An exec is created (a record, no process), then started once, attached or detached. The
process spec is the container's own ``config.json`` process (capabilities, rlimits,
AppArmor, no_new_privileges stay the container's) with the exec's args, env, cwd, user and
terminal put over it; the container's shim runs it with the runtime's ``exec`` and reaps it.
Records live in memory (Docker keeps them in memory too) and go away with their container.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from skiff.daemon.containers.manager import ContainerManager
from skiff.daemon.containers.record import Container
from skiff.errors import (
    Conflict,
    InvalidArgument,
    NotFound,
    SkiffError,
    SystemFailure,
    os_error,
)
from skiff.services.spec import ALL_CAPS, resolve_user

log = logging.getLogger("skiffd.exec")

_CAP_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")
# How long an attached start waits, after the stream ended, for the shim's exit record: the
# client inspects the exec for its exit code as soon as it sees EOF.
_EXIT_GRACE = 10.0


@dataclass
class ExecRecord:
    id: str
    container_id: str
    cmd: list[str]
    env: list[str]
    working_dir: str
    user: str
    tty: bool
    attach_stdin: bool
    attach_stdout: bool
    attach_stderr: bool
    privileged: bool
    detach_keys: str
    console_size: tuple[int, int] | None
    started: bool = False
    running: bool = False
    exit_code: int | None = None
    pid: int = 0
    finished: threading.Event = field(default_factory=threading.Event)

    def inspect(self) -> dict[str, Any]:
        """Docker's ``GET /exec/{id}/json`` shape (ExitCode null until the process exits)."""
        return {
            "ID": self.id, "ContainerID": self.container_id, "Running": self.running,
            "ExitCode": self.exit_code, "Pid": self.pid, "CanRemove": False,
            "DetachKeys": self.detach_keys, "OpenStdin": self.attach_stdin,
            "OpenStdout": self.attach_stdout, "OpenStderr": self.attach_stderr,
            "ProcessConfig": {"tty": self.tty, "entrypoint": self.cmd[0],
                              "arguments": self.cmd[1:], "privileged": self.privileged,
                              "user": self.user},
        }


def exit_code_for_start_error(message: str) -> int | None:
    """Docker's exit codes for a command that cannot run: 127 not found, 126 not executable
    (None: the failure is not the command's)."""
    low = message.lower()
    if "not found" in low or "no such file" in low:
        return 127
    if "permission denied" in low or "exec format error" in low:
        return 126
    return None


# --- the request ------------------------------------------------------------------------------


def _str_list(body: Mapping[str, Any], key: str) -> list[str]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"exec create: {key} must be a list of strings")
    return list(value)


def _str(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"exec create: {key} must be a string")
    return value


def _bool(body: Mapping[str, Any], key: str) -> bool:
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidArgument(f"exec create: {key} must be a boolean")
    return value


def console_size(value: object, what: str) -> tuple[int, int] | None:
    """``ConsoleSize``: null or [height, width] of non-negative integers."""
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                       for v in value)):
        raise InvalidArgument(f"{what}: ConsoleSize must be [height, width]")
    return (value[0], value[1]) if value[0] and value[1] else None


def parse_create(cid: str, body: Mapping[str, Any]) -> ExecRecord:
    """An exec record from ``POST /containers/{id}/exec``'s body (InvalidArgument if bad)."""
    cmd = _str_list(body, "Cmd")
    if not cmd:
        raise InvalidArgument("No exec command specified")
    return ExecRecord(
        id=secrets.token_hex(32), container_id=cid, cmd=cmd, env=_str_list(body, "Env"),
        working_dir=_str(body, "WorkingDir"), user=_str(body, "User"), tty=_bool(body, "Tty"),
        attach_stdin=_bool(body, "AttachStdin"), attach_stdout=_bool(body, "AttachStdout"),
        attach_stderr=_bool(body, "AttachStderr"), privileged=_bool(body, "Privileged"),
        detach_keys=_str(body, "DetachKeys"),
        console_size=console_size(body.get("ConsoleSize"), "exec create"))


# --- the process spec -------------------------------------------------------------------------


def merge_env(base: list[str], overrides: list[str]) -> list[str]:
    """Docker's ReplaceOrAppendEnvValues: later KEY=V replaces KEY; a bare KEY removes it."""
    out = list(base)
    for entry in overrides:
        key = entry.split("=", 1)[0]
        at = next((i for i, e in enumerate(out) if e.split("=", 1)[0] == key), None)
        if "=" not in entry:
            out = [e for e in out if e.split("=", 1)[0] != key]
        elif at is None:
            out.append(entry)
        else:
            out[at] = entry  # in place: the order of the container's env is kept
    return out


def exec_process(base: Mapping[str, Any], rec: ExecRecord,
                 user: Mapping[str, Any] | None) -> dict[str, Any]:
    """The OCI process for ``rec``: the container's process with the exec's settings over it.

    ``user`` is the resolved ``process.user`` (None: keep the container's).
    """
    proc = {k: v for k, v in base.items() if k not in ("consoleSize",)}
    proc["args"] = list(rec.cmd)
    env = list(base.get("env") or [])
    if rec.tty and not any(e.startswith("TERM=") for e in env + rec.env):
        env.append("TERM=xterm")
    proc["env"] = merge_env(env, rec.env)
    proc["cwd"] = rec.working_dir or base.get("cwd") or "/"
    proc["terminal"] = rec.tty
    if rec.tty and rec.console_size:
        proc["consoleSize"] = {"height": rec.console_size[0], "width": rec.console_size[1]}
    if user is not None:
        proc["user"] = {**(base.get("user") or {}), **user}
    if rec.privileged:
        proc["capabilities"] = {s: list(ALL_CAPS) for s in _CAP_SETS}
    return proc


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


# --- the lifecycle ----------------------------------------------------------------------------


class Execs:
    """Exec records of every container, and starting, resizing and reaping their processes."""

    def __init__(self, manager: ContainerManager) -> None:
        self.manager = manager
        self._records: dict[str, ExecRecord] = {}

    # --- records ---------------------------------------------------------------------------

    def _prune(self) -> None:
        """Forget the execs of containers that are gone (records go with their container)."""
        alive = {c.id for c in self.manager.store.all()}
        for key in [k for k, r in self._records.items() if r.container_id not in alive]:
            del self._records[key]

    def get(self, exec_id: str) -> ExecRecord:
        rec = self._records.get(exec_id)
        if rec is not None:
            try:
                self.manager.get(rec.container_id)
            except NotFound:
                del self._records[exec_id]
                rec = None
        if rec is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        return rec

    def ids_for(self, cid: str) -> list[str]:
        """A container's execs that have not exited, oldest first: inspect's ``ExecIDs``
        (dockerd drops an exec from there when it exits; ``/exec/{id}/json`` still works)."""
        return [k for k, r in self._records.items()
                if r.container_id == cid and r.exit_code is None]

    def _running_container(self, ref: str) -> Container:
        c = self.manager.get(ref)
        if not self.manager.is_running(c.id):
            raise Conflict(f"container {c.id} is not running")
        return c

    def _publish(self, rec: ExecRecord, action: str, **extra: str) -> None:
        try:
            c = self.manager.get(rec.container_id)
        except NotFound:
            return
        attrs = {"execID": rec.id, "image": c.image, "name": c.name, **extra}
        self.manager.events.publish("container", action, c.id, attrs)

    async def create(self, ref: str, body: Mapping[str, Any]) -> ExecRecord:
        c = self._running_container(ref)
        rec = parse_create(c.id, body)
        self._prune()
        self._records[rec.id] = rec
        self._publish(rec, "exec_create: " + " ".join(rec.cmd))
        return rec

    # --- start -----------------------------------------------------------------------------

    async def prepare(self, exec_id: str, *, tty: bool | None = None,
                      size: tuple[int, int] | None = None) -> ExecRecord:
        """Check an exec can start (404, 409) and mark it started.

        These errors come before a stream is hijacked; those of the launch (a bad user, a
        command that cannot run) belong in the stream, as with Docker.
        """
        rec = self.get(exec_id)
        if rec.exit_code is not None:
            raise Conflict(f"Error: Exec command {rec.id} has already run")
        if rec.started:
            raise Conflict(f"Error: Exec command {rec.id} is already running")
        self._running_container(rec.container_id)
        if tty is not None:
            rec.tty = tty
        if size is not None:
            rec.console_size = size
        rec.started = True
        return rec

    def _process(self, rec: ExecRecord) -> dict[str, Any]:
        c = self.manager.get(rec.container_id)
        path = os.path.join(self.manager.runner.paths.bundle(c.id), "config.json")
        try:
            with open(path, encoding="utf-8") as f:
                base = json.load(f).get("process") or {}
        except OSError as exc:
            raise os_error("read the container's spec", path, exc) from exc
        except ValueError as exc:
            raise SystemFailure(f"read the container's spec {path}: {exc}") from exc
        user = None
        if rec.user:
            rootfs = self.manager.runner.paths.rootfs(c.id)
            resolved = resolve_user(rec.user, _read_text(os.path.join(rootfs, "etc/passwd")),
                                    _read_text(os.path.join(rootfs, "etc/group")),
                                    c.host_config.get("GroupAdd"))
            user = {"uid": resolved.uid, "gid": resolved.gid,
                    "additionalGids": list(resolved.additional_gids)}
        return exec_process(base, rec, user)

    async def launch(self, rec: ExecRecord, *, attach: bool) -> socket.socket | None:
        """Start the prepared process (attached: the socket carrying its streams).

        A process that cannot start is recorded as exited 126/127 and the error raised
        (InvalidArgument when the command itself is the problem).
        """
        shim = self.manager.runner.shim(rec.container_id)
        self._publish(rec, "exec_start: " + " ".join(rec.cmd))
        sock: socket.socket | None = None
        try:
            process = await asyncio.to_thread(self._process, rec)
        except SkiffError:
            self._exited(rec, 126)
            raise
        try:
            if attach:
                sock = await asyncio.to_thread(shim.exec_attached, rec.id, process, tty=rec.tty,
                                               stdin=rec.attach_stdin)
            else:
                rec.pid = await asyncio.to_thread(shim.exec, rec.id, process, tty=rec.tty)
        except SkiffError as exc:
            code = exit_code_for_start_error(exc.message)
            # Docker records 126 whatever went wrong; a bad command is the client's error
            self._exited(rec, code or 126)
            if code is not None:
                raise InvalidArgument(exc.message) from exc
            raise
        rec.running = True
        if attach:
            # the pid comes from the shim's state (exec_attached hands back only the stream)
            with contextlib.suppress(SkiffError, OSError):
                state = await asyncio.to_thread(shim.state)
                rec.pid = int((state.get("execs") or {}).get(rec.id, {}).get("pid") or 0)
        if rec.tty and rec.console_size:
            with contextlib.suppress(SkiffError, OSError):
                await asyncio.to_thread(shim.resize, *rec.console_size, exec_id=rec.id)
        self._monitor(rec)
        return sock

    def _monitor(self, rec: ExecRecord) -> None:
        """A thread blocked in the shim's wait for the exec; the exit is recorded on the loop."""
        loop = asyncio.get_running_loop()
        shim = self.manager.runner.shim(rec.container_id)

        def wait() -> None:
            try:
                code = int(shim.wait(exec_id=rec.id, timeout=None).get("exit_code", 255))
                with contextlib.suppress(SkiffError, OSError):
                    shim.exec_delete(rec.id)  # our record keeps the exit; the shim need not
            except (SkiffError, OSError, ValueError) as exc:
                # the shim went away with its container (the exec died with it)
                log.info("wait for exec %s: %s", rec.id, exc)
                code = 255
            loop.call_soon_threadsafe(self._exited, rec, code)

        threading.Thread(target=wait, name=f"exec-{rec.id[:12]}", daemon=True).start()

    def _exited(self, rec: ExecRecord, code: int) -> None:
        if rec.exit_code is not None:
            return
        rec.running, rec.exit_code = False, code
        rec.finished.set()
        self._publish(rec, "exec_die", exitCode=str(code))

    async def wait_recorded(self, rec: ExecRecord) -> None:
        """Until the exit code is recorded (bounded: a hung shim must not hang the request)."""
        if rec.exit_code is None:
            await asyncio.to_thread(rec.finished.wait, _EXIT_GRACE)

    async def resize(self, exec_id: str, height: int, width: int) -> None:
        rec = self.get(exec_id)
        if not rec.running:
            raise Conflict(f"exec {rec.id} is not running")
        if rec.tty:  # without a tty there is nothing to resize (Docker ignores it too)
            await asyncio.to_thread(self.manager.runner.shim(rec.container_id).resize,
                                    height, width, rec.id)
