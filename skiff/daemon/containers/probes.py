"""The healthcheck loops of running containers: one task each, probing through the shim.

What a result does to the container (State.Health, events, restart-on-unhealthy) is the
manager's business: it passes ``on_result``, which runs under the container's lock.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from skiff.daemon.containers.health import (
    HealthConfig,
    ProbeResult,
    monitor,
    probe_process,
    run_probe,
)
from skiff.daemon.containers.record import now_rfc3339
from skiff.daemon.containers.runner import Runner
from skiff.errors import os_error

OnResult = Callable[[str, HealthConfig, ProbeResult, bool], Awaitable[None]]
Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]


class HealthProbes:
    def __init__(self, runner: Runner, spawn: Spawn, on_result: OnResult,
                 paused: Callable[[str], bool]) -> None:
        self.runner = runner
        self.spawn = spawn
        self.on_result = on_result
        self.paused = paused
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def watch(self, cid: str, cfg: HealthConfig) -> None:
        """Start probing ``cid`` (its run starts now), replacing any earlier loop."""
        self.unwatch(cid)
        started = time.monotonic()

        async def probe() -> ProbeResult:
            return await asyncio.to_thread(self.probe, cid, cfg)

        async def on_result(result: ProbeResult, in_start: bool) -> None:
            await self.on_result(cid, cfg, result, in_start)

        self._tasks[cid] = self.spawn(monitor(cfg, started, probe, on_result,
                                              paused=lambda: self.paused(cid)))

    def unwatch(self, cid: str) -> None:
        task = self._tasks.pop(cid, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def close(self) -> None:
        for cid in list(self._tasks):
            self.unwatch(cid)

    def probe(self, cid: str, cfg: HealthConfig) -> ProbeResult:
        """One probe (blocking): the container's own process with the test's argv."""
        path = os.path.join(self.runner.paths.bundle(cid), "config.json")
        try:
            with open(path, encoding="utf-8") as f:
                base = json.load(f).get("process") or {}
        except (OSError, ValueError) as exc:
            err = os_error("read the spec of", cid, exc) if isinstance(exc, OSError) else exc
            now = now_rfc3339()
            return ProbeResult(now, now, -1, f"health probe: {err}")
        exec_id = f"health-{secrets.token_hex(8)}"
        return run_probe(self.runner.shim(cid), exec_id, probe_process(base, cfg.test),
                         cfg.timeout)
