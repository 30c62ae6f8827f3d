"""The container lifecycle without root: restart policies and back-off, healthcheck rules,
update planning, list/prune filters, and the manager's decisions and events driven through
a fake runner (a fake shim whose process exits when the test says so)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, cast

import pytest

from skiff import errors
from skiff.daemon.containers import health as hl
from skiff.daemon.containers.filters import list_matcher, parse_timestamp, prune_matcher
from skiff.daemon.containers.manager import ContainerManager, NotModified
from skiff.daemon.containers.record import EXITED, RUNNING, Container, now_rfc3339
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

# --- restart policies ------------------------------------------------------------------------


def test_backoff_doubles_from_100ms_caps_and_resets_after_a_long_run() -> None:
    b = Backoff()
    assert [b.next(0.5) for _ in range(5)] == [0.1, 0.2, 0.4, 0.8, 1.6]
    for _ in range(20):
        last = b.next(0.0)
    assert last == 60.0
    assert b.next(10.0) == 0.1  # ran 10 s: healthy, the sequence starts over
    assert b.next(9.9) == 0.2


@pytest.mark.parametrize("name,count,code,restarts,manual,want", [
    ("no", 0, 1, 0, False, False),
    ("always", 0, 0, 50, False, True),
    ("always", 0, 1, 0, True, False),
    ("unless-stopped", 0, 0, 0, False, True),
    ("unless-stopped", 0, 0, 0, True, False),
    ("on-failure", 0, 0, 0, False, False),
    ("on-failure", 0, 2, 99, False, True),
    ("on-failure", 2, 2, 1, False, True),
    ("on-failure", 2, 2, 2, False, False),
    ("on-failure", 2, 2, 0, True, False),
])
def test_should_restart(name: str, count: int, code: int, restarts: int, manual: bool,
                        want: bool) -> None:
    policy = RestartPolicy(name, count)
    assert should_restart(policy, exit_code=code, restart_count=restarts,
                          manually_stopped=manual) is want


def test_restore_on_boot_follows_dockerd() -> None:
    assert restore_on_boot(RestartPolicy("always"), manually_stopped=True)
    assert restore_on_boot(RestartPolicy("unless-stopped"), manually_stopped=False)
    assert not restore_on_boot(RestartPolicy("unless-stopped"), manually_stopped=True)
    assert not restore_on_boot(RestartPolicy("on-failure", 3), manually_stopped=False)
    assert not restore_on_boot(RestartPolicy("no"), manually_stopped=False)


@pytest.mark.parametrize("hc,word", [
    ({"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": -1}}, "negative"),
    ({"RestartPolicy": {"Name": "always", "MaximumRetryCount": 3}}, "on-failure"),
    ({"RestartPolicy": {"Name": "later"}}, "later"),
    ({"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": "3"}}, "integer"),
    ({"RestartPolicy": "always"}, "object"),
    ({"AutoRemove": True, "RestartPolicy": {"Name": "unless-stopped"}}, "AutoRemove"),
])
def test_bad_restart_policies_are_refused(hc: dict[str, Any], word: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=word):
        check_host_config(hc)


def test_good_restart_policies() -> None:
    assert check_host_config({}) == RestartPolicy("no", 0)
    assert check_host_config({"AutoRemove": True, "RestartPolicy": {"Name": "no"}}).name == "no"
    assert check_host_config({"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2}}
                             ).to_json() == {"Name": "on-failure", "MaximumRetryCount": 2}


# --- healthchecks ----------------------------------------------------------------------------


def test_health_config_parsing() -> None:
    assert hl.HealthConfig.parse(None) is None
    assert hl.HealthConfig.parse({"Test": ["NONE"]}) is None
    cfg = hl.HealthConfig.parse({"Test": ["CMD-SHELL", "curl -f x || exit 1"],
                                 "Interval": 2 * hl.NS, "Retries": 5})
    assert cfg is not None
    assert cfg.test == ("/bin/sh", "-c", "curl -f x || exit 1")
    assert (cfg.interval, cfg.timeout, cfg.start_period, cfg.start_interval, cfg.retries) == (
        2.0, 30.0, 0.0, 5.0, 5)
    cmd = hl.HealthConfig.parse({"Test": ["CMD", "true", "x"]})
    assert cmd is not None and cmd.test == ("true", "x") and cmd.retries == 3
    for bad in ({"Test": ["SHELL", "x"]}, {"Test": ["CMD"]}, {"Test": "true"},
                {"Test": ["CMD", "x"], "Interval": -1}, {"Test": ["CMD", "x"], "Interval": 10},
                {"Test": ["CMD", "x"], "Retries": -2}):
        with pytest.raises(errors.InvalidArgument):
            hl.HealthConfig.parse(bad)


def test_image_healthcheck_merge() -> None:
    image = {"Healthcheck": {"Test": ["CMD", "img"], "Interval": 5, "Retries": 2}}
    assert hl.merge_image_healthcheck({}, image) == image["Healthcheck"]
    assert hl.merge_image_healthcheck({"Healthcheck": {"Retries": 9}}, image) == {
        "Test": ["CMD", "img"], "Interval": 5, "Retries": 9}
    merged = hl.merge_image_healthcheck({"Healthcheck": {"Test": ["NONE"]}}, image)
    assert merged is not None and merged["Test"] == ["NONE"]
    assert hl.merge_image_healthcheck({}, {}) is None


def _result(code: int, output: str = "") -> hl.ProbeResult:
    now = now_rfc3339()
    return hl.ProbeResult(now, now, code, output)


def test_health_state_transitions() -> None:
    h = hl.Health()
    assert not h.record(_result(1), 2, in_start_period=True)  # start period: not counted
    assert (h.status, h.failing_streak) == (hl.STARTING, 0)
    assert not h.record(_result(1), 2, in_start_period=False)
    assert (h.status, h.failing_streak) == (hl.STARTING, 1)
    assert h.record(_result(1), 2, in_start_period=False)
    assert (h.status, h.failing_streak) == (hl.UNHEALTHY, 2)
    assert h.record(_result(0, "ok"), 2, in_start_period=False)
    assert (h.status, h.failing_streak) == (hl.HEALTHY, 0)
    # once healthy, a failure inside the start period counts
    assert not h.record(_result(3), 2, in_start_period=True)
    assert h.failing_streak == 1
    for i in range(7):
        h.record(_result(i % 2, str(i)), 2, in_start_period=False)
    assert len(h.log) == hl.MAX_LOG and h.log[-1]["Output"] == "6"
    assert hl.Health.from_json(h.to_json()) == h


def test_probe_process_replaces_args_only() -> None:
    base = {"args": ["sleep", "1"], "env": ["A=1"], "cwd": "/w", "terminal": True,
            "user": {"uid": 5, "gid": 5}, "consoleSize": {"height": 1, "width": 1}}
    proc = hl.probe_process(base, ("true",))
    assert proc["args"] == ["true"] and proc["terminal"] is False
    assert (proc["env"], proc["cwd"], proc["user"]) == (base["env"], "/w", base["user"])
    assert "consoleSize" not in proc and base["args"] == ["sleep", "1"]


# --- update ----------------------------------------------------------------------------------


def test_plan_update_ignores_zero_fields_and_merges() -> None:
    hc = {"Memory": 64 << 20, "MemorySwap": 128 << 20, "CpuShares": 0,
          "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0}}
    body = {"Memory": 0, "MemorySwap": 0, "CpuShares": 512, "CpusetCpus": "", "PidsLimit": 20,
            "RestartPolicy": {"Name": "always"}}
    new, res = plan_update(hc, body)
    assert res == {"cpu": {"shares": 512}, "pids": {"limit": 20}}
    assert (new["Memory"], new["CpuShares"], new["PidsLimit"]) == (64 << 20, 512, 20)
    assert new["RestartPolicy"] == {"Name": "always", "MaximumRetryCount": 0}
    assert hc["CpuShares"] == 0  # the old one is left alone
    # what the docker CLI sends without --restart: the policy stays
    kept, _ = plan_update(new, {"Memory": 0, "RestartPolicy": {"Name": "",
                                                               "MaximumRetryCount": 0}})
    assert kept["RestartPolicy"] == {"Name": "always", "MaximumRetryCount": 0}


def test_plan_update_memory_and_cpus() -> None:
    _, res = plan_update({}, {"Memory": 32 << 20, "NanoCpus": 500_000_000})
    assert res == {"memory": {"limit": 32 << 20},
                   "cpu": {"quota": 50_000, "period": 100_000}}
    with pytest.raises(errors.InvalidArgument, match="memoryswap"):
        plan_update({"Memory": 32 << 20, "MemorySwap": 64 << 20}, {"Memory": 128 << 20})
    _, res = plan_update({"Memory": 32 << 20, "MemorySwap": 64 << 20}, {"Memory": 48 << 20})
    assert res == {"memory": {"limit": 48 << 20, "swap": 64 << 20}}
    with pytest.raises(errors.InvalidArgument, match="Minimum memory"):
        plan_update({}, {"Memory": 1000})
    with pytest.raises(errors.InvalidArgument, match="AutoRemove"):
        plan_update({"AutoRemove": True}, {"RestartPolicy": {"Name": "always"}})
    with pytest.raises(errors.InvalidArgument):
        plan_update({}, {"CpuShares": "lots"})


# --- filters ---------------------------------------------------------------------------------


def _container(name: str, created: str, **kw: Any) -> Container:
    return Container(id=name * 8, name=name, image="busybox", image_id="sha256:x",
                     config={"Labels": kw.pop("labels", {})}, host_config={}, created=created,
                     **kw)


def test_parse_timestamp() -> None:
    assert parse_timestamp("1700000000.5") == 1700000000.5
    assert parse_timestamp("1h30m", now=10_000.0) == 10_000.0 - 5400
    assert parse_timestamp("2000-01-01T00:00:00Z") == 946684800.0
    with pytest.raises(errors.InvalidArgument):
        parse_timestamp("yesterday")


def test_list_and_prune_matchers() -> None:
    a = _container("aaaa", "2020-01-01T00:00:00.000000Z", status=EXITED, exit_code=3,
                   labels={"k": "v"})
    b = _container("bbbb", "2021-01-01T00:00:00.000000Z", status=RUNNING,
                   health={"Status": "healthy"})
    c = _container("cccc", "2022-01-01T00:00:00.000000Z", status=RUNNING, paused=True)
    every = {x.name: x for x in (a, b, c)}

    def find(ref: str) -> Container:
        return every[ref]

    def names(filters: dict[str, list[str]]) -> list[str]:
        match = list_matcher(filters, find)
        return [x.name for x in (a, b, c) if match(x)]

    assert names({"exited": ["3"]}) == ["aaaa"]
    assert names({"since": ["aaaa"]}) == ["bbbb", "cccc"]
    assert names({"before": ["cccc"]}) == ["aaaa", "bbbb"]
    assert names({"health": ["healthy"]}) == ["bbbb"]
    assert names({"health": ["none"]}) == ["aaaa", "cccc"]
    assert names({"status": ["paused"]}) == ["cccc"]
    assert names({"status": ["running"]}) == ["bbbb"]
    assert names({"network": ["x"], "is-task": ["true"]}) == ["aaaa", "bbbb", "cccc"]
    bads: list[dict[str, list[str]]] = [{"exited": ["x"]}, {"status": ["sleepy"]},
                                        {"health": ["meh"]}, {"nope": []}]
    for bad in bads:
        with pytest.raises(errors.InvalidArgument):
            names(bad)
    prune = prune_matcher({"until": ["2021-06-01T00:00:00Z"], "label!": ["k=v"]})
    assert [x.name for x in (a, b, c) if prune(x)] == ["bbbb"]
    with pytest.raises(errors.InvalidArgument):
        prune_matcher({"status": ["exited"]})


def test_record_shows_paused_restarting_and_health() -> None:
    c = _container("dddd", now_rfc3339(), status=RUNNING, started_at=now_rfc3339(),
                   paused=True)
    assert c.state == "paused" and c.status_text().endswith("(Paused)")
    assert c.inspect(log_path="", rootfs="")["State"]["Paused"] is True
    c.paused, c.health = False, {"Status": "starting", "FailingStreak": 0, "Log": []}
    assert c.status_text().endswith("(health: starting)")
    assert c.inspect(log_path="", rootfs="")["State"]["Health"]["Status"] == "starting"
    c.status, c.restarting, c.exit_code, c.finished_at = EXITED, True, 2, now_rfc3339()
    st = c.inspect(log_path="", rootfs="")["State"]
    assert (st["Status"], st["Restarting"], st["Running"]) == ("restarting", True, True)
    assert c.status_text().startswith("Restarting (2)")
    assert Container.from_row(c.to_row()) == c


# --- the manager, with a fake runner ----------------------------------------------------------


class FakeShim:
    def __init__(self, world: FakeWorld, cid: str) -> None:
        self.world, self.cid = world, cid

    def state(self) -> dict[str, Any]:
        if self.cid not in self.world.alive:
            raise errors.Unavailable("no shim")
        return {"pid": 4242, "status": "running"}

    def start(self) -> None:
        self.world.starts.append(self.cid)
        self.world.exits[self.cid] = threading.Event()

    def wait(self, exec_id: str | None = None, timeout: float | None = None) -> dict[str, Any]:
        event = self.world.exits[self.cid]
        event.wait(10)
        return {"exit_code": self.world.code, "oom_killed": False}

    def kill(self, sig: int | str = "SIGTERM", all: bool = False,
             exec_id: str | None = None) -> None:
        self.world.signals.append(int(sig))
        self.world.code = 128 + int(sig)
        self.world.exits[self.cid].set()


class FakeWorld:
    """What the fake runner records; ``code`` is the exit code the next exit reports."""

    def __init__(self) -> None:
        self.alive: set[str] = set()
        self.starts: list[str] = []
        self.signals: list[int] = []
        self.exits: dict[str, threading.Event] = {}
        self.code = 0


class FakeRunner:
    def __init__(self, world: FakeWorld) -> None:
        self.world = world

    def shim(self, cid: str, timeout: float | None = 30.0) -> FakeShim:
        return FakeShim(self.world, cid)

    def materialise(self, c: Container) -> None:
        self.world.alive.add(c.id)

    def teardown(self, c: Container) -> None:
        pass

    def delete_shim(self, c: Container, force: bool = False) -> None:
        self.world.alive.discard(c.id)

    def exit_record(self, cid: str) -> dict[str, Any] | None:
        return None


def _manager(tmp_path: Path) -> tuple[ContainerManager, FakeWorld, ContainerStore]:
    world = FakeWorld()
    store = ContainerStore(str(tmp_path / "c.db"))
    m = ContainerManager(store, cast(Runner, FakeRunner(world)), cast(Any, None),
                         cast(Any, None), lambda a, b: None, EventBus())
    return m, world, store


def _add(store: ContainerStore, name: str, policy: dict[str, Any] | None = None,
         **config: Any) -> Container:
    c = Container(id=name * 16, name=name, image="busybox", image_id="sha256:x",
                  config={"Labels": {"team": "a"}, **config},
                  host_config={"RestartPolicy": policy or {"Name": "no"}})
    store.add(c)
    return c


def _run(coro_fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(), 30))


async def _until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not cond():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


def _actions(m: ContainerManager, cid: str) -> list[str]:
    return [e.action for e in m.events.history(0, None, {"container": [cid]})]


def test_on_failure_restarts_with_backoff_then_stops(tmp_path: Path) -> None:
    m, world, store = _manager(tmp_path)
    c = _add(store, "flaky", {"Name": "on-failure", "MaximumRetryCount": 2})

    async def main() -> None:
        world.code = 3
        await m.start(c.id)
        for n in range(1, 4):
            await _until(lambda: len(world.starts) == n, "a start")  # noqa: B023 (awaited now)
            world.exits[c.id].set()  # the process fails
        await _until(lambda: not m.get(c.id).restarting
                     and m.get(c.id).restart_count == 2 and not m.is_running(c.id)
                     and _actions(m, c.id).count("die") == 3, "the final exit")
        await asyncio.sleep(0.3)
        got = m.get(c.id)
        assert (got.status, got.exit_code, got.restart_count) == (EXITED, 3, 2)
        assert len(world.starts) == 3
        assert _actions(m, c.id) == ["start", "die", "start", "die", "start", "die"]
        die = next(iter(m.events.history(0, None, {"event": ["die"]})))
        assert die.attributes == {"team": "a", "image": "busybox", "name": "flaky",
                                  "exitCode": "3", "execDuration": "0"}
        await m.shutdown()

    _run(main)
    store.close()


def test_stop_ends_an_always_container_for_good(tmp_path: Path) -> None:
    m, world, store = _manager(tmp_path)
    c = _add(store, "keeper", {"Name": "always"})

    async def main() -> None:
        await m.start(c.id)
        world.code = 0
        world.exits[c.id].set()  # exits by itself: restarted
        await _until(lambda: len(world.starts) == 2 and m.is_running(c.id), "a restart")
        assert m.get(c.id).restart_count == 1
        await m.stop(c.id, timeout=1)
        got = m.get(c.id)
        assert (got.status, got.manually_stopped, got.restarting) == (EXITED, True, False)
        await asyncio.sleep(0.3)
        assert len(world.starts) == 2 and world.signals == [15]
        assert _actions(m, c.id)[-3:] == ["kill", "die", "stop"]
        with pytest.raises(NotModified):
            await m.stop(c.id)
        await m.start(c.id)  # a fresh start: the count starts over
        assert (m.get(c.id).restart_count, m.get(c.id).manually_stopped) == (0, False)
        await m.kill(c.id)
        await _until(lambda: not m.is_running(c.id), "the kill")
        await asyncio.sleep(0.3)
        assert len(world.starts) == 3  # kill is explicit too: no restart
        await m.shutdown()

    _run(main)
    store.close()


def test_rename_update_and_pause_rules_publish_events(tmp_path: Path) -> None:
    m, _, store = _manager(tmp_path)
    c = _add(store, "old")
    _add(store, "taken")

    async def main() -> None:
        await m.rename(c.id, "new")
        assert m.get("new").id == c.id
        with pytest.raises(errors.NotFound):
            m.get("old")
        with pytest.raises(errors.Conflict, match="already in use"):
            await m.rename(c.id, "taken")
        with pytest.raises(errors.InvalidArgument):
            await m.rename(c.id, "no/slashes")
        with pytest.raises(errors.InvalidArgument, match="same name"):
            await m.rename(c.id, "new")
        warnings = await m.update(c.id, {"CpuShares": 300,
                                         "RestartPolicy": {"Name": "unless-stopped"}})
        assert warnings == []
        hc = m.get(c.id).host_config
        assert hc["CpuShares"] == 300 and hc["RestartPolicy"]["Name"] == "unless-stopped"
        with pytest.raises(errors.Conflict, match="not running"):
            await m.pause(c.id)
        with pytest.raises(errors.Conflict, match="not paused"):
            await m.unpause(c.id)
        events = list(m.events.history(0, None, {"container": [c.id]}))
        assert [e.action for e in events] == ["rename", "update"]
        assert events[0].attributes["oldName"] == "/old"
        assert events[0].attributes["name"] == "new"
        await m.shutdown()

    _run(main)
    store.close()


def test_wait_not_running_holds_through_a_restart_backoff(tmp_path: Path) -> None:
    m, world, store = _manager(tmp_path)
    c = _add(store, "waiter", {"Name": "always"})

    async def main() -> None:
        await m.start(c.id)
        world.code = 1
        world.exits[c.id].set()
        await _until(lambda: m.get(c.id).restarting or len(world.starts) == 2, "an exit")
        fut = m.waiter(c.id, "not-running")  # restarting counts as running, as in dockerd
        assert not fut.done()
        await m.stop(c.id, timeout=1)
        assert await asyncio.wait_for(fut, 5) in (1, 143)
        await m.shutdown()

    _run(main)
    store.close()
