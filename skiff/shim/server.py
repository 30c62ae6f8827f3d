"""The shim's event loop: one selectors loop over the control socket, the clients, the
processes' output and the SIGCHLD wake-up pipe. Protocol: see :mod:`skiff.shim.protocol`.

Single-threaded on purpose: runtime calls block the loop for their few tens of ms, which
keeps reaping simple (nothing else calls waitpid while a runtime call waits for its child)
and costs no thread stacks per container.
"""

from __future__ import annotations

import errno
import json
import os
import re
import selectors
import signal
import socket
import struct
import sys
import time

from skiff.errors import Conflict, InvalidArgument, NotFound, SkiffError, SystemFailure, os_error
from skiff.shim import exitfile, oom, protocol
from skiff.shim.conn import ATTACHED, REQUEST, WAITING, Conn
from skiff.shim.detach import DetachScanner
from skiff.shim.logs import STREAMS, LogWriter, read_logs
from skiff.shim.ociruntime import OCIRuntime
from skiff.shim.proc import Proc

# Typing-only imports: typing itself is ~1 MiB of every shim's memory.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


SOCKET = "shim.sock"
MAX_STDIN = 1024 * 1024  # stdin bytes held for a process before its clients are paused
_EXEC_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_STREAM_NAMES = {protocol.STDOUT: "stdout", protocol.STDERR: "stderr"}


class Config:
    """What one shim supervises, and how (see ``python -m skiff.shim start``)."""

    __slots__ = ("bundle", "hooks", "id", "log_max_file", "log_max_size", "log_path", "runtime",
                 "runtime_args", "runtime_root", "state_dir", "stdin", "tty")

    def __init__(self, *, id: str, bundle: str, state_dir: str, runtime: str,
                 runtime_root: str, log_path: str, log_max_size: int, log_max_file: int,
                 tty: bool, stdin: bool, runtime_args: tuple[str, ...] = (),
                 hooks: bool = False) -> None:
        self.id = id
        self.hooks = hooks  # the spec has OCI hooks (they may run long: see OCIRuntime)
        self.runtime_args = runtime_args
        self.bundle = bundle
        self.state_dir = state_dir
        self.runtime = runtime
        self.runtime_root = runtime_root
        self.log_path = log_path
        self.log_max_size = log_max_size
        self.log_max_file = log_max_file
        self.tty = tty
        self.stdin = stdin


def parse_signal(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        name = value.strip().upper()
        if name.isdigit():
            return int(name)
        name = name if name.startswith("SIG") else "SIG" + name
        if name in signal.Signals.__members__:
            return int(signal.Signals[name])
    raise InvalidArgument(f"kill: invalid signal {value!r}")


class Shim:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.runtime = OCIRuntime(cfg.runtime, cfg.runtime_root,
                                  os.path.join(cfg.state_dir, "runtime.log"), cfg.id,
                                  args=cfg.runtime_args, hooks=cfg.hooks)
        self.sel = selectors.DefaultSelector()
        self.init = Proc("", cfg.tty, cfg.stdin)
        self.execs: dict[str, Proc] = {}
        self.log: LogWriter | None = None
        self.started = False
        self.memory_cgroup: str | None = None
        self.oom_base = 0
        self.listener: socket.socket | None = None
        self.conns: dict[int, Conn] = {}
        self.done = False
        self._wake_r = -1
        self._consoles = 0  # console sockets made so far (they are named by number)

    # ---- set-up --------------------------------------------------------------------------

    def path(self, name: str) -> str:
        return os.path.join(self.cfg.state_dir, name)

    def create(self) -> None:
        """Create the container with the runtime and open the control socket."""
        self.log = LogWriter(self.cfg.log_path, self.cfg.log_max_size, self.cfg.log_max_file)
        self._watch_children()
        self.init.pid = self._spawn(self.init, "create",
                                    ["create", "--bundle", self.cfg.bundle], "init.pid")
        self.memory_cgroup = oom.memory_cgroup(self.init.pid)
        self.oom_base = oom.oom_kills(self.memory_cgroup)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.listener.bind(self.path(SOCKET))
            os.chmod(self.path(SOCKET), 0o600)
            self.listener.listen(64)
        except OSError as exc:
            raise os_error("listen on shim socket", self.path(SOCKET), exc) from exc
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, self._accept)

    def abandon(self) -> None:
        """Undo a half-done create: the container must not outlive a shim that failed."""
        # Only a container this shim created: when create itself failed, the runtime has
        # cleaned up, and a container of that name may be another shim's (a racing start).
        if self.init.spawned:
            try:
                self.runtime.run("delete", ["delete", "--force", self.cfg.id])
            except SkiffError:
                pass
        self.log_close()
        if self.listener is not None:
            self.listener.close()

    def _watch_children(self) -> None:
        r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._wake_r = r
        signal.signal(signal.SIGCHLD, lambda _s, _f: None)
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        self.sel.register(r, selectors.EVENT_READ, lambda _e: self._reap())

    def _spawn(self, proc: Proc, what: str, args: list[str], pid_name: str) -> int:
        """Run ``runtime create`` or ``exec`` for ``proc``; return the process's pid."""
        pid_file = self.path(pid_name)
        listener = None
        if proc.tty:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            # Numbered, not named after the exec id: Docker's ids are 64 characters, and a unix
            # socket path must fit in 108 bytes.
            self._consoles += 1
            sock_path = self.path(f"c{self._consoles}.sock")
            try:
                listener.bind(sock_path)
                listener.listen(1)
            except OSError as exc:
                listener.close()
                raise os_error(f"{what}: listen on console socket", sock_path, exc) from exc
            listener.settimeout(5)
            args = [*args, "--console-socket", sock_path]
        stdio = proc.child_stdio()
        try:
            self.runtime.run(what, [*args, "--pid-file", pid_file, self.cfg.id], stdio)
            proc.spawned = True
            if listener is not None:
                proc.take_console(listener, f"{what} container {self.cfg.id}")
            with open(pid_file) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError) as exc:
            proc.close_ends()
            raise SystemFailure(f"{what} container {self.cfg.id}: read pid file "
                                f"{pid_file}: {exc}") from exc
        except SkiffError:
            proc.close_ends()
            raise
        finally:
            for fd in stdio:
                os.close(fd)
            if listener is not None:
                listener.close()
                os.unlink(sock_path)
        for fd in proc.outputs:
            self.sel.register(fd, selectors.EVENT_READ, self._reader(proc, fd))
        return pid

    # ---- the loop ------------------------------------------------------------------------

    def serve(self) -> None:
        while not self.done:
            timeout = None
            pending = [p.drain_deadline for p in self._procs()
                       if p.wait_status is not None and p.exit is None]
            if pending:
                timeout = max(0.0, min(pending) - time.monotonic())
            for key, events in self.sel.select(timeout):
                try:
                    key.data(events)
                except (SkiffError, OSError) as exc:
                    # One failed write (a full disk under the log, a client gone mid-send)
                    # must not end the supervision of the container: say so and go on.
                    sys.stderr.write(f"shim {self.cfg.id}: {exc}\n")
                    sys.stderr.flush()
                if self.done:
                    break
            self._settle()

    def _procs(self) -> list[Proc]:
        return [self.init, *self.execs.values()]

    def _settle(self) -> None:
        """After each round: finish exits whose output is drained; sync sockets."""
        for proc in self._procs():
            if proc.wait_status is not None and proc.exit is None and (
                    not proc.outputs or time.monotonic() >= proc.drain_deadline):
                self._finish(proc)
        for conn in list(self.conns.values()):
            conn.flush()
            if conn.closed:
                continue
            if conn.closing and not conn.outbuf:
                self._drop(conn)
                continue
            want = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outbuf else 0)
            if conn.closing or (conn.mode == ATTACHED and (
                    conn.input_done or (conn.stdin and len(conn.target.stdin_buf) > MAX_STDIN))):
                # Stop reading: the client is done, or the process is not taking its stdin
                # (the client then waits on its socket instead of us buffering without bound).
                want &= ~selectors.EVENT_READ
            self._watch(conn, want)

    def _watch(self, conn: Conn, want: int) -> None:
        if want == conn.events:
            return
        handler = self._conn_handler(conn)
        if not conn.events:
            self.sel.register(conn.sock, want, handler)
        elif not want:
            self.sel.unregister(conn.sock)
        else:
            self.sel.modify(conn.sock, want, handler)
        conn.events = want

    def _reap(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass
        by_pid = {p.pid: p for p in self._procs() if p.running}
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            proc = by_pid.get(pid)
            if proc is not None:
                proc.reaped(status)

    def _finish(self, proc: Proc) -> None:
        """The process has exited and its output is read: record it, tell the clients."""
        for fd in list(proc.outputs):
            self._read_output(proc, fd, drain=True)
            self._close_output(proc, fd)
        oom_killed = False
        if proc is self.init:
            if self.log is not None:
                self.log.flush()
            oom_killed = oom.oom_kills(self.memory_cgroup) > self.oom_base
        record = proc.exit_record(oom_killed)
        if proc is self.init:
            exitfile.write(self.cfg.state_dir, record)
        proc.exit = record
        self._close_stdin(proc)
        if proc.master >= 0:
            os.close(proc.master)
            proc.master = -1
        for conn in proc.waiters:
            conn.reply({"ok": True, **record})
            conn.mode = REQUEST
        proc.waiters.clear()
        for conn in proc.attached:
            conn.closing = True
        proc.attached.clear()

    # ---- process output and input --------------------------------------------------------

    def _reader(self, proc: Proc, fd: int) -> Callable[[int], None]:
        return lambda _events: self._read_output(proc, fd)

    def _read_output(self, proc: Proc, fd: int, drain: bool = False) -> None:
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.EIO:  # EIO: the pty's other side is closed, i.e. EOF
                    raise
                data = b""
            if not data:
                self._close_output(proc, fd)
                return
            self._output(proc, proc.outputs[fd], data)
            if not drain:
                return

    def _close_output(self, proc: Proc, fd: int) -> None:
        if fd in proc.outputs:
            del proc.outputs[fd]
            self.sel.unregister(fd)
            if fd != proc.master:
                os.close(fd)

    def _output(self, proc: Proc, stream: int, data: bytes) -> None:
        chunk = data if proc.tty else protocol.frame(stream, data)
        for conn in proc.attached:
            if stream in conn.streams:
                conn.send(chunk)
        # The log comes last: if its disk fails, the attached clients still got their copy.
        if proc is self.init and self.log is not None:
            self.log.write(_STREAM_NAMES[stream], data)

    def _write_stdin(self, proc: Proc, data: bytes) -> None:
        if proc.stdin_fd < 0 or proc.exit is not None:
            return
        proc.stdin_buf += data
        self._pump_stdin(proc)

    def _pump_stdin(self, proc: Proc) -> None:
        while proc.stdin_buf:
            try:
                n = os.write(proc.stdin_fd, proc.stdin_buf)
            except BlockingIOError:
                break
            except OSError:  # EPIPE: the process closed its stdin; what is left is moot
                proc.stdin_buf.clear()
                self._close_stdin(proc)
                return
            del proc.stdin_buf[:n]
        registered = proc.stdin_fd in self.sel.get_map()
        if proc.stdin_buf and not registered:
            self.sel.register(proc.stdin_fd, selectors.EVENT_WRITE,
                              lambda _e: self._pump_stdin(proc))
        elif not proc.stdin_buf and registered:
            self.sel.unregister(proc.stdin_fd)

    def _close_stdin(self, proc: Proc) -> None:
        if proc.stdin_fd < 0:
            return
        if proc.stdin_fd in self.sel.get_map():
            self.sel.unregister(proc.stdin_fd)
        if proc.tty and proc.exit is None:
            # A pty has no half-close: end-of-file is the EOT character, as a terminal sends.
            try:
                os.write(proc.stdin_fd, b"\x04")
            except OSError:
                pass
        os.close(proc.stdin_fd)
        proc.stdin_fd = -1
        proc.stdin_buf.clear()

    # ---- clients ---------------------------------------------------------------------------

    def _accept(self, _events: int) -> None:
        assert self.listener is not None
        try:
            sock, _ = self.listener.accept()
        except BlockingIOError:
            return
        conn = Conn(sock)
        self.conns[conn.fd] = conn
        self._watch(conn, selectors.EVENT_READ)

    def _conn_handler(self, conn: Conn) -> Callable[[int], None]:
        return lambda events: self._on_conn(conn, events)

    def _drop(self, conn: Conn) -> None:
        if conn.closed:
            return
        for proc in self._procs():
            if conn in proc.attached:
                proc.attached.remove(conn)
            if conn in proc.waiters:
                proc.waiters.remove(conn)
        self._watch(conn, 0)
        self.conns.pop(conn.fd, None)
        conn.close()

    def _on_conn(self, conn: Conn, events: int) -> None:
        if events & selectors.EVENT_WRITE:
            conn.flush()
        if not events & selectors.EVENT_READ or conn.closed:
            return
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if conn.mode == ATTACHED:
            self._attached_input(conn, data)
            return
        if not data:
            self._drop(conn)
            return
        conn.inbuf += data
        while conn.mode == REQUEST and b"\n" in conn.inbuf:
            line, conn.inbuf = conn.inbuf.split(b"\n", 1)
            self._request(conn, line)
            if self.done:
                return
        if len(conn.inbuf) > protocol.MAX_LINE:
            conn.reply(protocol.error_reply(InvalidArgument("shim request: line too long")))
            conn.closing = True

    def _attached_input(self, conn: Conn, data: bytes) -> None:
        proc: Proc = conn.target
        if data:
            if conn.detach is not None:
                data, detached = conn.detach.feed(data)
                if detached:  # the client leaves; the container and its stdin stay
                    if data and conn.stdin:
                        self._write_stdin(proc, data)
                    self._drop(conn)
                    return
            if data and conn.stdin:
                self._write_stdin(proc, data)
            return
        conn.input_done = True  # the client ended its side; output still flows to it
        if conn.stdin and conn.stdin_once:
            self._close_stdin(proc)

    def _request(self, conn: Conn, line: bytes) -> None:
        try:
            req = protocol.decode_request(line)
            handler = getattr(self, "op_" + req["op"].replace("-", "_"), None)
            if handler is None:
                raise InvalidArgument(f"shim request: unknown op {req['op']!r}")
            result = handler(conn, req)
        except SkiffError as exc:
            conn.reply(protocol.error_reply(exc))
            return
        if result is not None:
            conn.reply({"ok": True, **result})

    def _proc(self, req: dict[str, Any]) -> Proc:
        key = req.get("exec")
        if not key:
            return self.init
        proc = self.execs.get(str(key))
        if proc is None:
            raise NotFound(f"exec {key} in container {self.cfg.id}: no such exec")
        return proc

    # ---- operations (return the reply, or None when it comes later) ----------------------

    def _status(self) -> str:
        if self.init.wait_status is not None:
            return "stopped"
        return "running" if self.started else "created"

    def op_state(self, conn: Conn, req: dict[str, Any]) -> dict[str, Any]:
        return {"id": self.cfg.id, "pid": self.init.pid, "status": self._status(),
                "bundle": self.cfg.bundle, "tty": self.cfg.tty, "stdin": self.cfg.stdin,
                "shim_pid": os.getpid(), "exit": self.init.exit,
                "execs": {k: {"pid": p.pid, "running": p.exit is None,
                              "exit_code": p.exit["exit_code"] if p.exit else None}
                          for k, p in self.execs.items()}}

    def op_start(self, conn: Conn, req: dict[str, Any]) -> dict[str, Any]:
        status = self._status()
        if status != "created":
            raise Conflict(f"start container {self.cfg.id}: it is {status}")
        self.runtime.run("start", ["start", self.cfg.id])
        self.started = True
        return {"pid": self.init.pid}

    def op_kill(self, conn: Conn, req: dict[str, Any]) -> dict[str, Any]:
        sig = parse_signal(req.get("signal", "SIGTERM"))
        proc = self._proc(req)
        if proc is self.init:
            if not self.init.running:
                raise Conflict(f"kill container {self.cfg.id}: it is not running")
            args = ["kill", *(["--all"] if req.get("all") else []), self.cfg.id, str(sig)]
            self.runtime.run("kill", args)
        elif proc.running:
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                pass  # exited; its reaping is on the way
        return {}

    def op_wait(self, conn: Conn, req: dict[str, Any]) -> dict[str, Any] | None:
        proc = self._proc(req)
        if proc.exit is not None:
            return dict(proc.exit)
        conn.mode = WAITING
        proc.waiters.append(conn)
        return None

    def op_attach(self, conn: Conn, req: dict[str, Any]) -> None:
        proc = self._proc(req)
        streams = frozenset(s for name, s in protocol.STREAM_IDS.items() if req.get(name))
        conn.reply({"ok": True})
        if req.get("logs") and proc is self.init:
            self._replay_logs(conn, streams)
        self._attach(conn, proc, streams, bool(req.get("stdin")),
                     bool(req.get("stdin_once")), bytes.fromhex(str(req.get("detach_keys") or "")))

    def _attach(self, conn: Conn, proc: Proc, streams: frozenset[int], stdin: bool,
                stdin_once: bool, detach_keys: bytes = b"") -> None:
        conn.detach = DetachScanner(detach_keys) if detach_keys and stdin else None
        conn.mode = ATTACHED
        conn.target = proc
        conn.streams = streams
        conn.stdin = stdin and proc.open_stdin
        conn.stdin_once = stdin_once
        if proc.exit is not None:
            conn.closing = True  # nothing more will come; the replay (if any) is all
        else:
            proc.attached.append(conn)
        if conn.inbuf:  # stdin bytes the client sent right behind its request
            data, conn.inbuf = conn.inbuf, b""
            self._attached_input(conn, data)

    def _replay_logs(self, conn: Conn, streams: frozenset[int]) -> None:
        if self.log is None:
            return
        for entry in read_logs(self.cfg.log_path):
            stream = protocol.STREAM_IDS[entry.stream]
            if stream in streams:
                conn.send(entry.data if self.cfg.tty else protocol.frame(stream, entry.data),
                          live=False)
        for name in STREAMS:  # the unfinished line is not in the file yet
            stream = protocol.STREAM_IDS[name]
            pending = self.log.pending(name)
            if pending and stream in streams:
                conn.send(pending if self.cfg.tty else protocol.frame(stream, pending),
                          live=False)

    def op_resize(self, conn: Conn, req: dict[str, Any]) -> dict[str, Any]:
        proc = self._proc(req)
        try:
            height, width = int(req["height"]), int(req["width"])
        except (KeyError, TypeError, ValueError):
            raise InvalidArgument("resize: want integer height and width") from None
        if not (0 <= height < 65536 and 0 <= width < 65536):
            raise InvalidArgument(f"resize: {height}x{width} out of range")
        if proc.master < 0:
            raise Conflict(f"resize container {self.cfg.id}: "
                           f"{'exited' if proc.exit else 'no tty'}")
        import fcntl
        import termios

        try:
            fcntl.ioctl(proc.master, termios.TIOCSWINSZ,
                        struct.pack("HHHH", height, width, 0, 0))
        except OSError as exc:
            raise os_error("resize pty of container", self.cfg.id, exc) from exc
        return {}

    def op_close_stdin(self, conn: Conn, req: dict[str, Any]) -> dict[str, Any]:
        self._close_stdin(self._proc(req))
        return {}

    def op_exec(self, conn: Conn, req: dict[str, Any]) -> dict[str, Any] | None:
        key = req.get("id")
        if not isinstance(key, str) or not _EXEC_ID.match(key):
            raise InvalidArgument(f"exec: invalid id {key!r}")
        if key in self.execs:
            raise Conflict(f"exec {key} in container {self.cfg.id}: id in use")
        process = req.get("process")
        if not isinstance(process, dict):
            raise InvalidArgument("exec: \"process\" must be an OCI process object")
        if not self.init.running:
            raise Conflict(f"exec in container {self.cfg.id}: it is {self._status()}")
        tty = bool(req.get("tty"))
        proc = Proc(key, tty, bool(req.get("stdin")))
        spec_path = self.path(f"exec-{key}.json")
        try:
            with open(spec_path, "w") as f:
                json.dump({**process, "terminal": tty}, f)
        except OSError as exc:
            raise os_error("write exec process", spec_path, exc) from exc
        try:
            proc.pid = self._spawn(proc, "exec", ["exec", "--detach", "--process", spec_path],
                                   f"exec-{key}.pid")
        finally:
            for name in (spec_path, self.path(f"exec-{key}.pid")):
                try:
                    os.unlink(name)
                except FileNotFoundError:
                    pass
        self.execs[key] = proc
        if req.get("attach"):
            conn.reply({"ok": True, "pid": proc.pid})
            self._attach(conn, proc, frozenset((protocol.STDOUT, protocol.STDERR)),
                         proc.open_stdin, bool(req.get("stdin_once", True)))
            return None
        return {"pid": proc.pid}

    def op_exec_delete(self, conn: Conn, req: dict[str, Any]) -> dict[str, Any]:
        """Forget a finished exec (its exit was collected): healthchecks exec every few
        seconds, and a shim that remembered them all would grow without bound."""
        key = str(req.get("exec"))
        proc = self.execs.get(key)
        if proc is None:
            raise NotFound(f"exec {key} in container {self.cfg.id}: no such exec")
        if proc.exit is None:
            raise Conflict(f"exec {key} in container {self.cfg.id}: still running")
        del self.execs[key]
        return {}

    def op_delete(self, conn: Conn, req: dict[str, Any]) -> None:
        if self.init.running and not req.get("force"):
            raise Conflict(f"delete container {self.cfg.id}: it is {self._status()}; "
                           "kill it first or force")
        self.runtime.run("delete", ["delete", *(["--force"] if req.get("force") else []),
                                    self.cfg.id])
        if self.init.running:  # killed by the forced delete: reap it, report its exit
            _, status = os.waitpid(self.init.pid, 0)
            self.init.reaped(status)
        for proc in self._procs():
            if proc.wait_status is not None and proc.exit is None:
                self._finish(proc)
        # Gone before the reply, so a client that sees the reply sees nothing left behind.
        self.log_close()
        if self.listener is not None:
            self.sel.unregister(self.listener)
            self.listener.close()
            self.listener = None
        remove_tree(self.cfg.state_dir)
        conn.reply({"ok": True})
        self.done = True

    # ---- shut-down -------------------------------------------------------------------------

    def log_close(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None

    def shutdown(self) -> None:
        """Last words to every client (the loop has ended: the container is deleted)."""
        for conn in list(self.conns.values()):
            conn.flush_blocking(1.0)
            conn.close()


def remove_tree(path: str) -> None:
    """rm -r without shutil (kept out of the shim for its memory)."""
    try:
        for dirpath, dirnames, filenames in os.walk(path, topdown=False):
            for name in filenames:
                os.unlink(os.path.join(dirpath, name))
            for name in dirnames:
                os.rmdir(os.path.join(dirpath, name))
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise os_error("remove shim state", path, exc) from exc
