"""Healthchecks (``HEALTHCHECK`` / ``--health-cmd``): the config, the probe, the state.

A probe is a process exec'd into the container through its shim, built from the
container's own process (user, env, cwd, capabilities) with the test's arguments. Its exit
code decides: 0 healthy, anything else a failure; ``Retries`` failures in a row make the
container unhealthy. Failures inside ``StartPeriod`` do not count until the first success.

skiff extension: a container labelled ``skiff.restart-on-unhealthy=true`` is restarted (as
``docker restart`` would, counted in RestartCount) each time it turns unhealthy; dockerd only
reports the state and leaves acting on it to an orchestrator.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from skiff.daemon.containers.record import now_rfc3339
from skiff.errors import InvalidArgument, SkiffError
from skiff.shim.client import ShimClient, read_frames

STARTING, HEALTHY, UNHEALTHY = "starting", "healthy", "unhealthy"
NS = 1_000_000_000
_DEFAULT_INTERVAL = 30.0
_DEFAULT_TIMEOUT = 30.0
_DEFAULT_START_INTERVAL = 5.0
_DEFAULT_RETRIES = 3
MAX_OUTPUT = 4096  # bytes of a probe's output kept, as dockerd keeps
MAX_LOG = 5  # results kept in State.Health.Log
_MIN_DURATION = 0.001  # dockerd refuses durations under 1 ms (other than 0, the default)


def _seconds(hc: Mapping[str, Any], key: str, default: float) -> float:
    value = hc.get(key) or 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"Healthcheck.{key}: must be a non-negative integer "
                              "(nanoseconds)")
    if value and value / NS < _MIN_DURATION:
        raise InvalidArgument(f"Interval in {key} must be at least 1ms")
    return value / NS if value else default


@dataclass(frozen=True)
class HealthConfig:
    test: tuple[str, ...]  # the argv of the probe
    interval: float = _DEFAULT_INTERVAL
    timeout: float = _DEFAULT_TIMEOUT
    start_period: float = 0.0
    start_interval: float = _DEFAULT_START_INTERVAL
    retries: int = _DEFAULT_RETRIES

    @classmethod
    def parse(cls, value: object) -> HealthConfig | None:
        """Config.Healthcheck; None when there is none or it is ``["NONE"]``."""
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise InvalidArgument("Healthcheck: must be an object")
        test = value.get("Test") or []
        if not isinstance(test, list) or not all(isinstance(t, str) for t in test):
            raise InvalidArgument("Healthcheck.Test: must be a list of strings")
        if not test or test[0] == "NONE":
            return None
        kind = test[0]
        if kind == "CMD":
            argv = tuple(test[1:])
        elif kind == "CMD-SHELL":
            argv = ("/bin/sh", "-c", " ".join(test[1:]))
        else:
            raise InvalidArgument(f"Healthcheck.Test: unknown type {kind!r} "
                                  "(NONE, CMD or CMD-SHELL)")
        if not argv or not argv[-1]:
            raise InvalidArgument("Healthcheck.Test: no command given")
        retries = value.get("Retries") or 0
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidArgument("Healthcheck.Retries: must be a non-negative integer")
        return cls(argv, _seconds(value, "Interval", _DEFAULT_INTERVAL),
                   _seconds(value, "Timeout", _DEFAULT_TIMEOUT),
                   _seconds(value, "StartPeriod", 0.0),
                   _seconds(value, "StartInterval", _DEFAULT_START_INTERVAL),
                   retries or _DEFAULT_RETRIES)


def merge_image_healthcheck(config: Mapping[str, Any], image: Mapping[str, Any] | None
                            ) -> dict[str, Any] | None:
    """The container's healthcheck: the request's fields over the image's, as dockerd
    merges them (a request without Test keeps the image's test)."""
    mine = config.get("Healthcheck")
    theirs = image.get("Healthcheck") if isinstance(image, Mapping) else None
    if not isinstance(theirs, Mapping):
        return dict(mine) if isinstance(mine, Mapping) else None
    if not isinstance(mine, Mapping):
        return dict(theirs)
    out = dict(mine)
    for key in ("Test", "Interval", "Timeout", "StartPeriod", "StartInterval", "Retries"):
        if not out.get(key) and theirs.get(key):
            out[key] = theirs[key]
    return out


def probe_process(base: Mapping[str, Any], argv: tuple[str, ...]) -> dict[str, Any]:
    """The container's OCI process with the probe's arguments (no terminal)."""
    proc = dict(base)
    proc["args"] = list(argv)
    proc["terminal"] = False
    proc.pop("consoleSize", None)
    return proc


@dataclass(frozen=True)
class ProbeResult:
    start: str
    end: str
    exit_code: int
    output: str

    def to_json(self) -> dict[str, Any]:
        return {"Start": self.start, "End": self.end, "ExitCode": self.exit_code,
                "Output": self.output}


@dataclass
class Health:
    """State.Health, and the rule that moves it."""

    status: str = STARTING
    failing_streak: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: object) -> Health:
        if not isinstance(data, Mapping):
            return cls()
        log = data.get("Log")
        return cls(str(data.get("Status") or STARTING), int(data.get("FailingStreak") or 0),
                   list(log) if isinstance(log, list) else [])

    def to_json(self) -> dict[str, Any]:
        return {"Status": self.status, "FailingStreak": self.failing_streak,
                "Log": list(self.log)}

    def record(self, result: ProbeResult, retries: int, in_start_period: bool) -> bool:
        """Take one probe's result; True when the status changed."""
        before = self.status
        self.log = [*self.log, result.to_json()][-MAX_LOG:]
        if result.exit_code == 0:
            self.status, self.failing_streak = HEALTHY, 0
        elif not (self.status == STARTING and in_start_period):
            self.failing_streak += 1
            if self.failing_streak >= retries:
                self.status = UNHEALTHY
        return self.status != before


def run_probe(shim: ShimClient, exec_id: str, process: dict[str, Any], timeout: float
              ) -> ProbeResult:
    """Exec the probe and collect its output and exit code (blocking); a probe that runs
    past ``timeout`` is killed and reported with exit code -1, as dockerd does."""
    start = now_rfc3339()
    deadline = time.monotonic() + timeout
    try:
        sock = shim.exec_attached(exec_id, process)
    except SkiffError as exc:
        return ProbeResult(start, now_rfc3339(), -1, f"health probe failed to start: {exc}")
    out = bytearray()
    timed_out = False
    try:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        for _stream, data in read_frames(sock):
            if len(out) < MAX_OUTPUT:
                out += data[: MAX_OUTPUT - len(out)]
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
    except TimeoutError:
        timed_out = True
    except (SkiffError, OSError):
        pass  # the stream broke: the exit code below still decides
    finally:
        sock.close()
    if timed_out:
        with contextlib.suppress(SkiffError, OSError):
            shim.kill(9, exec_id=exec_id)
        return ProbeResult(start, now_rfc3339(), -1,
                           f"Health check exceeded timeout ({timeout:g}s)")
    try:
        record = shim.wait(exec_id, timeout=max(deadline - time.monotonic(), 1.0))
        code = int(record.get("exit_code", -1))
    except (SkiffError, OSError) as exc:
        return ProbeResult(start, now_rfc3339(), -1, f"health probe lost: {exc}")
    with contextlib.suppress(SkiffError, OSError):
        shim.exec_delete(exec_id)  # or the shim keeps every probe it ever ran
    return ProbeResult(start, now_rfc3339(), code, out.decode("utf-8", "replace"))


async def monitor(cfg: HealthConfig, started: float, probe: Callable[[], Awaitable[ProbeResult]],
                  on_result: Callable[[ProbeResult, bool], Awaitable[None]],
                  paused: Callable[[], bool]) -> None:
    """Probe every interval until cancelled; ``started`` is the run's monotonic start."""
    while True:
        in_start = time.monotonic() - started < cfg.start_period
        await asyncio.sleep(cfg.start_interval if in_start else cfg.interval)
        if paused():  # a frozen container cannot answer; dockerd skips it too
            continue
        in_start = time.monotonic() - started < cfg.start_period
        result = await probe()
        await on_result(result, in_start)
