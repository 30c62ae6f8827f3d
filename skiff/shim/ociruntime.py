"""Driving an OCI runtime through runc's command line (skiff-runtime, runc, crun).

The shim must stay small, so processes are started with ``posix_spawn`` rather than the
subprocess module (which alone costs the shim a couple of MiB). Errors come from the
runtime's ``--log`` in JSON, as containerd's shim reads them: the last ``error`` entry
written during the call. A runtime that hangs is killed after ``timeout`` seconds, so that
one stuck call (``kill`` on a frozen cgroup, a hook that never returns) cannot take the
shim's loop, and with it the container's supervision, down for good.

This installation's own skiff-runtime is not exec'd: a forked child of the shim calls its
``main`` with the same arguments (same ``--root``, ``--log``, exit code and log errors), which
saves a fresh interpreter and the runtime's imports on every call (a ``start`` or ``delete``
goes from ~20 ms to ~4 ms; the imports are paid once by the zygote the shim was forked from,
or in the child for a shim started on its own, so an idle shim stays as small as before).
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys

from skiff.errors import SystemFailure, os_error

RUNTIME = "skiff-runtime"  # the console script of this package

# Dispositions the shim (and Python) set to "ignore", which exec would pass on to the
# runtime and from it to the container: a container ignoring SIGTERM would never stop.
_RESET_SIGNALS = (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ,
                  signal.SIGCHLD)


def error_from_log(text: str) -> str | None:
    """The last error or fatal message in a runtime's JSON log text, on one line."""
    found = None
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("level") in ("error", "fatal") and obj.get("msg"):
            found = " ".join(str(obj["msg"]).split())
    return found


class OCIRuntime:
    """One container's runtime: binary, its ``--root``, and a JSON log in the state dir."""

    def __init__(self, binary: str, root: str, log_path: str, cid: str,
                 timeout: float = 120.0, args: tuple[str, ...] = (), hooks: bool = False
                 ) -> None:
        self.binary = binary
        self.args = args  # global flags before the subcommand (a runtime's runtimeArgs)
        self.timeout = timeout
        self.root = root
        self.log_path = log_path
        self.cid = cid
        self.in_process = is_own_runtime(binary)
        # start and delete of our own runtime are short and bounded: the shim calls them
        # itself, without a fork. A container with hooks keeps the child (and its timeout):
        # a hook may run for ever.
        self.in_place = self.in_process and not hooks

    def run(self, what: str, args: list[str], stdio: tuple[int, int, int] | None = None
            ) -> None:
        """Run ``<runtime> ARGS`` to completion; raise with the runtime's message on failure.

        ``stdio`` are the fds the runtime (and a container it creates) gets as 0, 1, 2; by
        default /dev/null. ``what`` names the operation in errors (``create``, ``start``...).
        """
        argv = [self.binary, *self.args, "--root", self.root, "--log", self.log_path,
                "--log-format", "json", *args]
        try:
            offset = os.stat(self.log_path).st_size
        except FileNotFoundError:
            offset = 0
        if self.in_place and stdio is None and args[0] in _IN_PLACE:
            self._check(what, _call_runtime(argv[1:]), offset)
            return
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        status_r = -1
        try:
            fds = stdio or (null, null, null)
            try:
                if self.in_process:
                    status_r, status_w = os.pipe2(os.O_CLOEXEC)
                    try:
                        pid = _fork_runtime(argv[1:], fds, status_w)
                    finally:
                        os.close(status_w)
                else:
                    actions = [(os.POSIX_SPAWN_DUP2, fd, n) for n, fd in enumerate(fds)]
                    pid = os.posix_spawnp(self.binary, argv, os.environ, file_actions=actions,
                                          setsigdef=_RESET_SIGNALS, setsigmask=())
            except OSError as exc:
                if status_r >= 0:
                    os.close(status_r)
                raise os_error(f"{what} container {self.cid}: run", self.binary, exc) from exc
        finally:
            os.close(null)
        if status_r >= 0:
            try:
                code = _reported_code(status_r, pid, self.timeout)
            finally:
                os.close(status_r)
            if code is not None and code >= 0:
                # The child is done; it is reaped with the shim's other children (its exit,
                # taking down a copy of our address space, is no reason to wait).
                self._check(what, code, offset)
                return
            finished = code is None  # it exited without a word; -1: it timed out
        else:
            finished = _exited_within(pid, self.timeout)
        if not finished:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise SystemFailure(f"{what} container {self.cid}: {os.path.basename(self.binary)} "
                                f"did not finish in {self.timeout:g}s and was killed")
        _, status = os.waitpid(pid, 0)
        self._check(what, os.waitstatus_to_exitcode(status), offset)

    def _check(self, what: str, code: int, offset: int) -> None:
        """Raise with the runtime's logged error (written past ``offset``) unless ``code`` is 0."""
        if code == 0:
            return
        msg = None
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                msg = error_from_log(f.read().decode("utf-8", "replace"))
        except OSError:
            pass
        raise SystemFailure(f"{what} container {self.cid}: "
                            f"{msg or f'{os.path.basename(self.binary)} exited with {code}'}")


_IN_PLACE = ("start", "delete")


def _call_runtime(args: list[str]) -> int:
    """skiff-runtime's ``main(args)`` in this process; its exit code (1 for a crash)."""
    from skiff.runtime import cli

    try:
        return cli.main(args)
    except Exception:  # as a crashed runtime: its traceback on our stderr (the shim log)
        import traceback

        traceback.print_exc()
        return 1


def is_own_runtime(binary: str) -> bool:
    """Whether ``binary`` is the skiff-runtime of this very installation, which the shim can
    then run in a forked child of its own instead of exec'ing a fresh interpreter: the
    interpreter's start and the runtime's imports are most of a ``start`` or ``delete``
    (~20 ms of which ~3 ms is the work). Any other runtime (runc, crun, another skiff
    installation) is exec'd. ``SKIFF_SHIM_EXEC_RUNTIME=1`` forces exec (for comparisons)."""
    if os.environ.get("SKIFF_SHIM_EXEC_RUNTIME") == "1" or os.path.basename(binary) != RUNTIME:
        return False
    own = os.path.join(os.path.dirname(sys.executable), RUNTIME)
    if os.sep not in binary:  # a bare name: what PATH finds, as posix_spawnp would
        for entry in os.environ.get("PATH", os.defpath).split(os.pathsep):
            candidate = os.path.join(entry or ".", binary)
            if os.access(candidate, os.X_OK):
                binary = candidate
                break
        else:
            return False
    try:
        return os.path.samefile(binary, own)
    except OSError:
        return False


def _fork_runtime(args: list[str], stdio: tuple[int, int, int], status: int) -> int:
    """Run skiff-runtime's ``main(args)`` in a forked child, set up as exec would leave it.

    The child gets ``stdio`` as 0, 1, 2 and no other descriptor of the shim's (exec would
    close them: they are all close-on-exec) but ``status``, on which it writes its exit code
    (one byte) as it exits; the default disposition for the signals the shim handles or
    ignores, and no wake-up fd. It never returns into the shim's code.
    """
    for stream in (sys.stdout, sys.stderr):  # nothing of ours may be written twice
        stream.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for sig in _RESET_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        for n, fd in enumerate(stdio):
            os.dup2(fd, n, inheritable=True)
        os.closerange(3, status)
        os.closerange(status + 1, _max_fd())
        from skiff.runtime import cli

        code = cli.main(args)
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # as an exec'd runtime's traceback would: on its stderr
        try:
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
        except BaseException:
            pass
    finally:
        try:
            os.write(status, bytes([code & 0xFF]))
        finally:
            os._exit(code)


def _reported_code(status_r: int, pid: int, timeout: float) -> int | None:
    """The exit code a forked runtime wrote on ``status_r``; None if it exited (or was
    killed) without writing one (its wait status then tells), -1 after ``timeout``."""
    os.set_blocking(status_r, False)  # a container it made may hold the write end for long
    fd = os.pidfd_open(pid)
    try:
        poller = select.poll()
        poller.register(status_r, select.POLLIN)
        poller.register(fd, select.POLLIN)
        if not poller.poll(int(timeout * 1000)):
            return -1
        try:
            data = os.read(status_r, 1)
        except BlockingIOError:
            data = b""
        return data[0] if data else None
    finally:
        os.close(fd)


def _max_fd() -> int:
    try:
        return int(os.sysconf("SC_OPEN_MAX"))
    except (OSError, ValueError):
        return 65536


def _exited_within(pid: int, timeout: float) -> bool:
    """Whether child ``pid`` exits within ``timeout`` seconds (it is left to be reaped)."""
    fd = os.pidfd_open(pid)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(int(timeout * 1000)))
    finally:
        os.close(fd)
