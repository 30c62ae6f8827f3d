"""Runtime calls the shim does not carry: pause, resume and live resource updates.

They act on the container's cgroup, which the runtime owns; the shim keeps supervising the
process meanwhile. Each call is ``<runtime> --root <runtime root> <command> <id>`` (runc's
command line, so runc and crun work too). Everything here blocks (worker threads only).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from typing import Any

from skiff.daemon.containers.record import Container
from skiff.daemon.containers.runner import Runner
from skiff.errors import Conflict, SystemFailure

_TIMEOUT = 60


def _message(stderr: str) -> str:
    """The runtime's last error line (its text or JSON log format) without decoration."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    if not lines:
        return "failed"
    last = lines[-1]
    try:
        obj = json.loads(last)
    except ValueError:
        return last
    if isinstance(obj, dict) and obj.get("msg"):
        return str(obj["msg"])
    return last


class RuntimeControl:
    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def _run(self, c: Container, op: str, args: list[str], stdin: str | None = None) -> None:
        spec = self.runner.runtime_spec(c)
        argv = [spec.path, *spec.args, "--root", self.runner.runtime_root_for(c), *args]
        try:
            res = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                                 timeout=_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SystemFailure(f"{op} container {c.id}: {exc}") from exc
        if res.returncode != 0:
            message = _message(res.stderr)
            # a container in the wrong state is the client's mistake, not the daemon's
            kind = Conflict if ("paused" in message or "not running" in message
                                or "stopped" in message) else SystemFailure
            raise kind(f"{op} container {c.id}: {message}")

    def pause(self, c: Container) -> None:
        self._run(c, "pause", ["pause", c.id])

    def resume(self, c: Container) -> None:
        self._run(c, "unpause", ["resume", c.id])

    def update(self, c: Container, resources: Mapping[str, Any]) -> None:
        """Apply a partial OCI ``linux.resources`` to the running container."""
        self._run(c, "update", ["update", "--resources", "-", c.id],
                  stdin=json.dumps(dict(resources)))
