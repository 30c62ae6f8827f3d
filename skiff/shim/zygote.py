"""``python -m skiff.shim zygote --socket PATH [PADDING]``: a fork server for shims.

Starting a shim with ``python -m skiff.shim start`` pays for a fresh interpreter and the
shim's imports on every container; the zygote pays once. It imports what a shim (and
skiff-runtime, which the shim runs in forked children: see :mod:`.ociruntime`) uses, freezes
the garbage collector's view of those objects (so children do not dirty the shared pages by
scanning them), and keeps one forked child ready (a *spare*, forked before any request
arrives) that accepts the next request, tells the zygote to fork the next spare, takes a
process group of its own, becomes the shim and answers on the connection once the container
is created (``start`` forks twice to be nobody's child; the zygote never waits for its
children, so once suffices). An idle spare dies with the zygote (PR_SET_PDEATHSIG); a shim
does not. Shims forked from here share the zygote's pages until they write to them.

The zygote lives as long as its stdin is open: the daemon holds the other end of that pipe,
so a daemon that exits or is killed takes its zygote with it (never its shims).

Protocol: the client sends one JSON line ``{"argv": [...]}`` (the arguments of ``start``,
without ``start``); the starter answers one line ``{"code": 0|1|2, "message": "..."}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import sys
import time

from skiff.errors import InvalidArgument, SkiffError
from skiff.shim.launch import become_shim, prctl, prepare
from skiff.shim.proctitle import argument_area, set_title
from skiff.shim.server import Config

_PR_SET_PDEATHSIG = 1
READY = b"ready\n"  # written on stdout once the socket listens
MAX_REQUEST = 1 << 20


def preload() -> None:
    """Import what every shim and every in-process runtime call would import."""
    import importlib

    from skiff.shim.ociruntime import RUNTIME, is_own_runtime

    # argument parsing (a module of its own under -m), and the shim: server, logs, conn...
    names = ["skiff.shim.__main__", "skiff.shim.launch", "ctypes"]
    if is_own_runtime(os.path.join(os.path.dirname(sys.executable), RUNTIME)):
        names += ["skiff.runtime.cli", "skiff.runtime.commands",
                  # what `create` imports lazily for a Docker-made spec (seccomp, rlimits)
                  "skiff.runtime.capabilities", "skiff.runtime.seccomp",
                  "skiff.runtime.seccomp_compile", "skiff.runtime.seccomp_cache", "hashlib",
                  "skiff.runtime.process.limits",
                  "skiff.runtime.terminal"]
    for name in names:
        importlib.import_module(name)
    with contextlib.suppress(OSError, ValueError, IndexError):
        argument_area()  # where every shim's title goes: the same in every child
    if "skiff.runtime.cli" in names:  # what every create looks up first, found once here
        from skiff.runtime.cgroups import detect_mode
        from skiff.runtime.cgroups.v1 import discover_hierarchies

        try:
            if detect_mode() != "v2":
                discover_hierarchies("/sys/fs/cgroup")
        except SkiffError:
            pass  # no cgroupfs here: the runtime will say so when it matters


def listen(path: str) -> socket.socket:
    try:
        os.unlink(path)  # left by a zygote whose daemon was killed
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(64)
    return sock


def serve(path: str) -> int:
    try:
        # Out of the daemon's session (a ^C meant for a foreground skiffd must not reach the
        # shims), and with no controlling terminal for the shims' session.
        os.setsid()
    except OSError:
        pass  # already a group leader (started from a shell): its session is its own
    preload()
    listener = listen(path)
    # Children are never waited for: the kernel reaps them (each resets this first thing,
    # since it must wait for its own children).
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    import gc

    gc.collect()
    gc.freeze()
    os.write(1, READY)
    os.dup2(2, 1)  # the daemon reads nothing more from our stdout
    notify_r, notify_w = os.pipe2(os.O_CLOEXEC)
    poller = select.poll()
    poller.register(0, select.POLLIN)
    poller.register(notify_r, select.POLLIN)
    spare = _fork_spare(listener, notify_r, notify_w)
    poller.register(spare, select.POLLIN)
    try:
        while True:
            # One decision per poll: the events of one round may name a pidfd we close (and
            # whose number the next spare's pidfd then reuses).
            ready = {fd for fd, _ in poller.poll()}
            if 0 in ready and not os.read(0, 4096):
                return 0  # the daemon is gone
            if notify_r in ready:
                os.read(notify_r, 64)  # the spare took a request: it is a shim now
            elif spare in ready:
                time.sleep(0.05)  # it died idle (killed?): no fork loop if that repeats
            else:
                continue
            poller.unregister(spare)
            os.close(spare)
            spare = _fork_spare(listener, notify_r, notify_w)
            poller.register(spare, select.POLLIN)
    finally:
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(spare, signal.SIGKILL)  # an idle spare holds the socket
        listener.close()
        try:
            os.unlink(path)
        except OSError:
            pass


def _fork_spare(listener: socket.socket, notify_r: int, notify_w: int) -> int:
    """Fork the child that takes the next request; a pidfd of it.

    The fork, and the child's first page faults on what it shares with us, happen before a
    request arrives instead of while the daemon waits for its container.
    """
    zygote = os.getpid()
    pid = os.fork()
    if pid == 0:
        _spare(listener, notify_r, notify_w, zygote)
    return os.pidfd_open(pid)


def _spare(listener: socket.socket, notify_r: int, notify_w: int, zygote: int) -> None:
    """Wait for one request (dying with the zygote until then), tell the zygote, serve it."""
    try:
        os.close(notify_r)
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, "PR_SET_PDEATHSIG")  # idle: dies with us
        if os.getppid() != zygote:
            return  # the zygote died before we asked
        while True:
            try:
                conn, _ = listener.accept()
                break
            except InterruptedError:
                continue
        prctl(_PR_SET_PDEATHSIG, 0, "PR_SET_PDEATHSIG")  # a shim now: outlives the zygote
        os.write(notify_w, b"+")
        os.close(notify_w)
        _starter(conn, listener)
    finally:
        os._exit(0)


def _starter(conn: socket.socket, listener: socket.socket) -> None:
    """Runs in a forked child of the zygote: one ``start``; never returns.

    The child becomes the shim itself (new session; the zygote ignores SIGCHLD, so nobody
    waits for it, and it is reparented when the zygote goes): one fork per container instead
    of the two a shim started on its own needs to detach from its caller.
    """
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        listener.close()
        conn.settimeout(30)
        parsed = _parse(_read_line(conn))
        if isinstance(parsed, tuple):
            _reply(conn, *parsed)
            return
        refused = prepare(parsed)
        if refused:
            _reply(conn, 1, refused)
            return
        # a process group of its own (a signal for ours is not for it), in the zygote's
        # session: not a session leader, so no terminal it ever opens can become its own
        os.setpgid(0, 0)
        become_shim(parsed, lambda message: _reply(conn, *((0, "") if message == "ok"
                                                           else (1, message))))
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        os._exit(0)


def _reply(conn: socket.socket, code: int, message: str) -> None:
    try:
        conn.sendall(json.dumps({"code": code, "message": message}).encode() + b"\n")
    except OSError:
        pass  # the daemon went away meanwhile: a shim serves on, and a restarted one finds it
    finally:
        conn.close()  # the shim must not hold the daemon's end


def _parse(line: bytes) -> Config | tuple[int, str]:
    """The request's shim config, or ``(code, message)`` refusing it."""
    from skiff.shim.__main__ import parse_start

    try:
        req = json.loads(line)
        argv = req["argv"]
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            raise ValueError("argv must be a list of strings")
    except (ValueError, KeyError, TypeError) as exc:
        return 2, f"skiff-shim zygote: bad request: {exc}"
    try:
        cfg = parse_start(argv)
    except InvalidArgument as exc:
        return 2, f"skiff-shim: {exc}"
    # the shim shows (in ps, /proc/PID/cmdline) what it was started with
    set_title([sys.executable, "-m", "skiff.shim", "start", *argv])
    return cfg


def handle(line: bytes, conn_fd: int) -> tuple[int, str]:
    """One request, detached the way ``python -m skiff.shim start`` does it: ``(code,
    message)`` as that command would exit/print."""
    from skiff.shim.launch import start_report

    parsed = _parse(line)
    if isinstance(parsed, tuple):
        return parsed
    return start_report(parsed, close_fds=(conn_fd,))


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            break
    return data.split(b"\n", 1)[0]


def main(argv: list[str]) -> int:
    # PADDING: room in our argument area for the shims' command lines (see .proctitle)
    if len(argv) not in (2, 3) or argv[0] != "--socket":
        sys.stderr.write("usage: python -m skiff.shim zygote --socket PATH [PADDING]\n")
        return 2
    try:
        return serve(argv[1])
    except KeyboardInterrupt:
        return 0
