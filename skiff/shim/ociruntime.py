"""Driving an OCI runtime through runc's command line (skiff-runtime, runc, crun).

The shim must stay small, so processes are started with ``posix_spawn`` rather than the
subprocess module (which alone costs the shim a couple of MiB). Errors come from the
runtime's ``--log`` in JSON, as containerd's shim reads them: the last ``error`` entry
written during the call. A runtime that hangs is killed after ``timeout`` seconds, so that
one stuck call (``kill`` on a frozen cgroup, a hook that never returns) cannot take the
shim's loop, and with it the container's supervision, down for good.
"""

from __future__ import annotations

import json
import os
import select
import signal

from skiff.errors import SystemFailure, os_error

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
                 timeout: float = 120.0, args: tuple[str, ...] = ()) -> None:
        self.binary = binary
        self.args = args  # global flags before the subcommand (a runtime's runtimeArgs)
        self.timeout = timeout
        self.root = root
        self.log_path = log_path
        self.cid = cid

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
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            fds = stdio or (null, null, null)
            actions = [(os.POSIX_SPAWN_DUP2, fd, n) for n, fd in enumerate(fds)]
            try:
                pid = os.posix_spawnp(self.binary, argv, os.environ, file_actions=actions,
                                      setsigdef=_RESET_SIGNALS, setsigmask=())
            except OSError as exc:
                raise os_error(f"{what} container {self.cid}: run", self.binary, exc) from exc
        finally:
            os.close(null)
        if not _exited_within(pid, self.timeout):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise SystemFailure(f"{what} container {self.cid}: {os.path.basename(self.binary)} "
                                f"did not finish in {self.timeout:g}s and was killed")
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
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


def _exited_within(pid: int, timeout: float) -> bool:
    """Whether child ``pid`` exits within ``timeout`` seconds (it is left to be reaped)."""
    fd = os.pidfd_open(pid)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(int(timeout * 1000)))
    finally:
        os.close(fd)
