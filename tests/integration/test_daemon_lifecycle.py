"""skiffd's container lifecycle end to end: restart, rename, pause, update, restart policies,
healthchecks, prune and list filters, driven by the stock docker CLI and raw HTTP.

One private daemon for the module; each test removes what it made and the fixture checks
that nothing (containers, mounts, shims, cgroups) is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from skiff.devtools.daemon import UnixHTTP
from tests.integration.daemon_support import IMAGE, Skiffd, private_skiffd


@pytest.fixture(scope="module")
def skiffd(busybox_rootfs: Path) -> Iterator[Skiffd]:
    with private_skiffd(busybox_rootfs, check_parent_cgroup=False) as d:
        yield d


def state(d: Skiffd, ref: str) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(d.out("inspect", ref))[0]
    return info


def until(cond: Callable[[], bool], timeout: float = 15, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def cgroup_file(pid: int, controller: str, name: str) -> Path:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return Path("/sys/fs/cgroup") / controllers / path.lstrip("/") / name
    pytest.skip(f"no v1 {controller} controller for pid {pid} on this machine")


def q(obj: object) -> str:
    return urllib.parse.quote(json.dumps(obj))


def events(d: Skiffd, since: float, cid: str) -> list[dict[str, Any]] | None:
    """The daemon's events for ``cid`` since ``since``; None while /events is not served."""
    conn = UnixHTTP(str(d.sock), 30)
    try:
        conn.request("GET", f"/events?since={since:.3f}&until={time.time():.3f}"
                     f"&filters={q({'container': [cid]})}")
        resp = conn.getresponse()
        payload = resp.read()
    finally:
        conn.close()
    if resp.status == 404:
        return None
    assert resp.status == 200, payload
    return [json.loads(line) for line in payload.decode().splitlines() if line.strip()]


# --- exit ---------------------------------------------------------------------------------


def test_wait_right_after_a_quick_exit_gets_its_code(skiffd: Skiffd) -> None:
    # The exit's bookkeeping runs beside the runtime's cleanup: a wait arriving in between
    # must still get this run's code, never the record's previous one (docker-py's
    # containers.run(detach=True) then .wait() does exactly this).
    for code in (3, 0, 7, 2, 5, 1, 9, 4, 6, 8, 11, 12):
        status, reply = skiffd.api("POST", "/containers/create",
                                   {"Image": IMAGE, "Cmd": ["sh", "-c", f"exit {code}"],
                                    "HostConfig": {"NetworkMode": "none"}})
        assert status == 201, reply
        cid = reply["Id"]
        skiffd.seen.add(cid)
        assert skiffd.api("POST", f"/containers/{cid}/start")[0] == 204
        for _ in range(3):
            assert skiffd.api("POST", f"/containers/{cid}/wait")[1]["StatusCode"] == code
        assert skiffd.api("DELETE", f"/containers/{cid}")[0] == 204


# --- restart, rename -----------------------------------------------------------------------


def test_restart_gives_a_new_process(skiffd: Skiffd) -> None:
    cid = skiffd.run_d("--name", "lc-restart", IMAGE, "sleep", "60")
    before = state(skiffd, cid)["State"]
    t0 = time.time() - 1
    skiffd.docker("restart", "-t", "0", cid)
    after = state(skiffd, cid)["State"]
    assert after["Status"] == "running"
    assert after["Pid"] != before["Pid"] and after["StartedAt"] != before["StartedAt"]
    assert os.path.exists(f"/proc/{after['Pid']}") and not os.path.exists(
        f"/proc/{before['Pid']}")
    seen = events(skiffd, t0, cid)
    if seen is not None:
        actions = [e["Action"] for e in seen]
        assert actions[-1] == "restart" and "die" in actions and "start" in actions
        die = next(e for e in seen if e["Action"] == "die")
        assert die["Actor"]["Attributes"]["name"] == "lc-restart"
        assert die["Actor"]["Attributes"]["image"] == IMAGE
    skiffd.docker("rm", "-f", cid)


def test_rename(skiffd: Skiffd) -> None:
    a = skiffd.run_d("--name", "lc-ren-a", IMAGE, "sleep", "60")
    b = skiffd.out("create", "--name", "lc-ren-b", IMAGE, "true").strip()
    skiffd.seen.add(b)
    skiffd.docker("rename", "lc-ren-a", "lc-ren-c")
    assert state(skiffd, a)["Name"] == "/lc-ren-c"
    assert skiffd.docker("inspect", "lc-ren-a", check=False).returncode != 0
    status, body = skiffd.api("POST", "/containers/lc-ren-c/rename?name=lc-ren-b")
    assert status == 409 and "already in use" in body["message"]
    status, body = skiffd.api("POST", "/containers/lc-ren-c/rename?name=bad%20name")
    assert status == 400 and "Invalid container name" in body["message"]
    status, _ = skiffd.api("POST", "/containers/nope-nope/rename?name=x1")
    assert status == 404
    # the old name is free again
    skiffd.docker("rename", "lc-ren-b", "lc-ren-a")
    assert state(skiffd, b)["Name"] == "/lc-ren-a"
    skiffd.docker("rm", "-f", a, b)


# --- pause ---------------------------------------------------------------------------------


def test_pause_freezes_and_kill_thaws(skiffd: Skiffd) -> None:
    cid = skiffd.run_d("--name", "lc-pause", IMAGE, "sh", "-c", "while :; do :; done")
    pid = state(skiffd, cid)["State"]["Pid"]
    skiffd.docker("pause", cid)
    st = state(skiffd, cid)["State"]
    assert (st["Status"], st["Paused"], st["Running"]) == ("paused", True, True)
    freezer = cgroup_file(pid, "freezer", "freezer.state")
    assert freezer.read_text().strip() == "FROZEN"
    ticks = cpu_ticks(pid)
    time.sleep(0.5)
    assert cpu_ticks(pid) == ticks, "a paused container's process kept running"
    assert "(Paused)" in skiffd.out("ps", "--filter", "name=lc-pause", "--format",
                                    "{{.Status}}")
    assert skiffd.out("ps", "-q", "--no-trunc", "--filter", "status=paused").split() == [cid]
    status, body = skiffd.api("POST", f"/containers/{cid}/pause")
    assert status == 409 and "already paused" in body["message"]
    skiffd.docker("unpause", cid)
    assert freezer.read_text().strip() == "THAWED"
    ticks = cpu_ticks(pid)
    until(lambda: cpu_ticks(pid) > ticks, 5, "the thawed process to run")
    assert state(skiffd, cid)["State"]["Paused"] is False
    skiffd.docker("pause", cid)
    skiffd.docker("kill", cid)  # SIGKILL reaches a frozen process only once it is thawed
    assert skiffd.out("wait", cid).strip() == "137"
    st = state(skiffd, cid)["State"]
    assert (st["Status"], st["Paused"]) == ("exited", False)
    status, body = skiffd.api("POST", f"/containers/{cid}/unpause")
    assert status == 409
    skiffd.docker("rm", cid)


def test_stop_a_paused_container(skiffd: Skiffd) -> None:
    cid = skiffd.run_d(IMAGE, "sh", "-c", "trap 'exit 5' TERM; while :; do sleep 0.1; done")
    skiffd.docker("pause", cid)
    skiffd.docker("stop", "-t", "5", cid)
    st = state(skiffd, cid)["State"]
    assert (st["Status"], st["ExitCode"], st["Paused"]) == ("exited", 5, False)
    skiffd.docker("rm", cid)
    cid = skiffd.run_d(IMAGE, "sleep", "60")
    skiffd.docker("pause", cid)
    status, body = skiffd.api("DELETE", f"/containers/{cid}")
    assert status == 409 and "paused" in body["message"]
    skiffd.docker("rm", "-f", cid)  # SIGKILL, then thawed so that it can die
    assert skiffd.out("ps", "-aq") == ""


# --- update --------------------------------------------------------------------------------


def test_update_applies_limits_live(skiffd: Skiffd) -> None:
    cid = skiffd.run_d("--name", "lc-update", IMAGE, "sleep", "60")
    pid = state(skiffd, cid)["State"]["Pid"]
    limit = cgroup_file(pid, "memory", "memory.limit_in_bytes")
    shares = cgroup_file(pid, "cpu", "cpu.shares")
    pids_max = cgroup_file(pid, "pids", "pids.max")
    assert int(limit.read_text()) > 1 << 40  # unlimited to start with
    skiffd.docker("update", "--memory", "64m", "--memory-swap", "128m", "--cpu-shares", "512",
                  "--pids-limit", "50", "--restart", "on-failure:3", cid)
    assert int(limit.read_text()) == 64 << 20
    assert int(shares.read_text()) == 512
    assert pids_max.read_text().strip() == "50"
    hc = state(skiffd, cid)["HostConfig"]
    assert (hc["Memory"], hc["MemorySwap"], hc["CpuShares"], hc["PidsLimit"]) == (
        64 << 20, 128 << 20, 512, 50)
    assert hc["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    status, body = skiffd.api("POST", f"/containers/{cid}/update", {"Memory": 1024})
    assert status == 400 and "Minimum memory" in body["message"]
    status, body = skiffd.api("POST", f"/containers/{cid}/update", {"CpuShares": 256})
    assert (status, body) == (200, {"Warnings": []})
    assert int(shares.read_text()) == 256
    skiffd.docker("update", "--cpu-shares", "300", cid)  # the CLI sends an empty policy
    assert state(skiffd, cid)["HostConfig"]["RestartPolicy"]["Name"] == "on-failure"
    assert int(limit.read_text()) == 64 << 20  # untouched by a partial update
    skiffd.docker("rm", "-f", cid)


# --- restart policies ----------------------------------------------------------------------


def test_on_failure_retries_then_gives_up(skiffd: Skiffd) -> None:
    cid = skiffd.run_d("--restart", "on-failure:2", IMAGE, "sh", "-c", "exit 3")

    def settled() -> bool:
        st = state(skiffd, cid)
        return (st["State"]["Status"] == "exited" and not st["State"]["Restarting"]
                and st["RestartCount"] == 2)

    until(settled, 20, "two restarts and a final exit")
    time.sleep(0.5)  # and no third run
    info = state(skiffd, cid)
    assert (info["RestartCount"], info["State"]["ExitCode"]) == (2, 3)
    assert info["State"]["Status"] == "exited"
    skiffd.docker("rm", cid)


def test_always_restarts_until_stopped(skiffd: Skiffd) -> None:
    cid = skiffd.run_d("--restart", "always", IMAGE, "sh", "-c", "sleep 0.3")
    until(lambda: state(skiffd, cid)["RestartCount"] >= 2, 20, "restarts")
    skiffd.docker("stop", "-t", "1", cid)
    info = state(skiffd, cid)
    assert info["State"]["Status"] == "exited" and not info["State"]["Restarting"]
    count = info["RestartCount"]
    time.sleep(1.0)
    info = state(skiffd, cid)
    assert (info["State"]["Status"], info["RestartCount"]) == ("exited", count)
    # a fresh start begins counting again
    skiffd.docker("start", cid)
    assert state(skiffd, cid)["RestartCount"] == 0
    skiffd.docker("rm", "-f", cid)


def test_kill_is_not_restarted_by_policy(skiffd: Skiffd) -> None:
    cid = skiffd.run_d("--restart", "unless-stopped", IMAGE, "sleep", "60")
    skiffd.docker("kill", cid)
    assert skiffd.out("wait", cid).strip() == "137"
    time.sleep(0.5)
    info = state(skiffd, cid)
    assert (info["State"]["Status"], info["RestartCount"]) == ("exited", 0)
    skiffd.docker("rm", cid)


def test_restart_policy_validation(skiffd: Skiffd) -> None:
    base = {"Image": IMAGE, "Cmd": ["true"]}
    for hc, word in (({"AutoRemove": True, "RestartPolicy": {"Name": "always"}}, "AutoRemove"),
                     ({"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": -1}},
                      "negative"),
                     ({"RestartPolicy": {"Name": "sometimes"}}, "sometimes")):
        status, body = skiffd.api("POST", "/containers/create", {**base, "HostConfig": hc})
        assert status == 400 and word in body["message"], body
    assert skiffd.out("ps", "-aq") == ""
    cid = skiffd.out("create", IMAGE, "true").strip()
    status, body = skiffd.api("DELETE", f"/containers/{cid}?link=true")
    assert status == 400 and "links" in body["message"]
    status, _ = skiffd.api("DELETE", f"/containers/{cid}?v=true")
    assert status == 204


def test_daemon_sigkill_brings_always_containers_back(skiffd: Skiffd) -> None:
    always = skiffd.run_d("--restart", "always", IMAGE, "sleep", "60")
    stopped = skiffd.run_d("--restart", "unless-stopped", IMAGE, "sleep", "60")
    skiffd.docker("stop", "-t", "0", stopped)
    pid = state(skiffd, always)["State"]["Pid"]
    assert skiffd.stop(signal.SIGKILL) == -signal.SIGKILL
    os.kill(pid, signal.SIGKILL)  # its process dies while no daemon is there
    until(lambda: not os.path.exists(f"/proc/{pid}"), 5, "the container process to go")
    skiffd.start()
    until(lambda: state(skiffd, always)["State"]["Status"] == "running", 15,
          "the always container to run again")
    info = state(skiffd, always)
    assert info["State"]["Pid"] != pid and info["RestartCount"] == 1
    assert state(skiffd, stopped)["State"]["Status"] == "exited"
    skiffd.docker("rm", "-f", always, stopped)


def test_a_created_container_whose_shim_is_gone_starts_attached(skiffd: Skiffd) -> None:
    """A container created before the daemon went down, whose shim died meanwhile (or the
    machine restarted), keeps its record: `start -a` makes the shim and the runtime's
    container again, deleting what the lost shim left of the old one first."""
    cid = skiffd.out("create", "--name", "lc-reborn", IMAGE, "echo", "again").strip()
    until(lambda: bool(list(skiffd.run.glob(f"runtime/*/{cid}/state.json"))), 10,
          "the runtime's side of the create")
    assert skiffd.stop(signal.SIGKILL) == -signal.SIGKILL
    for pid in skiffd.shim_pids():  # the shim and the container's waiting init
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    until(lambda: not skiffd.shim_pids(), 5, "the shim to go")
    assert list(skiffd.run.glob(f"runtime/*/{cid}/state.json"))  # the runtime's, left
    skiffd.start()
    assert skiffd.out("start", "-a", cid) == "again\n"
    skiffd.docker("rm", cid)


def test_restart_removes_what_a_lost_record_left(skiffd: Skiffd) -> None:
    """Container records are not power safe: a power loss may roll back the last seconds of
    them, a create's too. A restart removes the writable layer and the files of a container
    whose record is gone, and leaves the others alone."""
    lost = skiffd.out("create", "--name", "lc-lost", IMAGE, "true").strip()
    assert skiffd.out("start", "-a", lost) == ""  # it ran and exited: no shim is left
    kept = skiffd.out("create", "--name", "lc-kept", IMAGE, "true").strip()
    layers = skiffd.data / "snapshots" / "overlay" / "metadata.db"

    def has_layer(cid: str) -> bool:
        with sqlite3.connect(layers) as db:
            return bool(db.execute("SELECT 1 FROM snapshots WHERE key = ?",
                                   (f"container-{cid}",)).fetchall())

    assert has_layer(lost) and (skiffd.data / "containers" / lost).is_dir()
    assert skiffd.stop() == 0
    with sqlite3.connect(skiffd.data / "containers.db") as db:
        db.execute("DELETE FROM containers WHERE id = ?", (lost,))
    skiffd.start()
    assert not has_layer(lost)
    assert not (skiffd.data / "containers" / lost).exists()
    assert has_layer(kept) and (skiffd.data / "containers" / kept).is_dir()
    assert skiffd.out("ps", "-aq", "--no-trunc").split() == [kept]
    assert skiffd.out("start", "-a", kept) == ""
    skiffd.docker("rm", kept)


# --- healthchecks --------------------------------------------------------------------------


def test_healthcheck_healthy_and_unhealthy(skiffd: Skiffd) -> None:
    t0 = time.time() - 1
    good = skiffd.run_d("--name", "lc-healthy", "--health-cmd", "echo ok; test -e /tmp/up",
                        "--health-interval", "300ms", "--health-retries", "2", IMAGE,
                        "sh", "-c", "touch /tmp/up; sleep 60")
    bad = skiffd.run_d("--name", "lc-sick", "--health-cmd", "echo nope >&2; exit 1",
                       "--health-interval", "300ms", "--health-retries", "2", IMAGE,
                       "sleep", "60")
    assert state(skiffd, good)["State"]["Health"]["Status"] in ("starting", "healthy")
    until(lambda: state(skiffd, good)["State"]["Health"]["Status"] == "healthy", 15,
          "healthy")
    until(lambda: state(skiffd, bad)["State"]["Health"]["Status"] == "unhealthy", 15,
          "unhealthy")
    health = state(skiffd, good)["State"]["Health"]
    assert health["FailingStreak"] == 0
    assert health["Log"][-1]["ExitCode"] == 0 and health["Log"][-1]["Output"] == "ok\n"
    sick = state(skiffd, bad)["State"]["Health"]
    assert sick["FailingStreak"] >= 2 and sick["Log"][-1]["Output"] == "nope\n"
    until(lambda: len(state(skiffd, bad)["State"]["Health"]["Log"]) == 5, 15, "5 results")
    time.sleep(0.7)
    assert len(state(skiffd, bad)["State"]["Health"]["Log"]) == 5  # never more than 5
    assert "(healthy)" in skiffd.out("ps", "--filter", "name=lc-healthy", "--format",
                                     "{{.Status}}")
    assert "(unhealthy)" in skiffd.out("ps", "--filter", "name=lc-sick", "--format",
                                       "{{.Status}}")
    assert skiffd.out("ps", "-q", "--no-trunc", "--filter", "health=unhealthy").split() == [
        bad]
    seen = events(skiffd, t0, bad)
    if seen is not None:
        assert "health_status: unhealthy" in [e["Action"] for e in seen]
    skiffd.docker("rm", "-f", good, bad)


def test_restart_on_unhealthy_label(skiffd: Skiffd) -> None:
    cid = skiffd.run_d("--label", "skiff.restart-on-unhealthy=true", "--health-cmd", "false",
                       "--stop-timeout", "1",
                       "--health-interval", "200ms", "--health-retries", "1", IMAGE,
                       "sleep", "60")
    pid = state(skiffd, cid)["State"]["Pid"]
    until(lambda: state(skiffd, cid)["RestartCount"] >= 1, 20, "a restart when unhealthy")
    st = state(skiffd, cid)["State"]
    until(lambda: state(skiffd, cid)["State"]["Status"] == "running", 10, "running again")
    assert st["Pid"] != pid
    skiffd.docker("rm", "-f", cid)


def test_healthcheck_none_and_bad_config(skiffd: Skiffd) -> None:
    cid = skiffd.run_d("--no-healthcheck", IMAGE, "sleep", "60")
    assert "Health" not in state(skiffd, cid)["State"]
    skiffd.docker("rm", "-f", cid)
    status, body = skiffd.api("POST", "/containers/create", {
        "Image": IMAGE, "Cmd": ["true"], "Healthcheck": {"Test": ["WHAT", "x"]}})
    assert status == 400 and "Healthcheck" in body["message"]


# --- list filters, prune -------------------------------------------------------------------


def test_list_filters_and_prune(skiffd: Skiffd) -> None:
    first = skiffd.out("create", "--label", "lc=prune", IMAGE, "true").strip()
    three = skiffd.docker("run", "--label", "lc=prune", IMAGE, "sh", "-c", "exit 3",
                       check=False)
    assert three.returncode == 3
    failed = skiffd.out("ps", "-aq", "--no-trunc", "--filter", "exited=3").split()
    assert len(failed) == 1
    keep = skiffd.out("create", "--label", "lc=keep", IMAGE, "true").strip()
    skiffd.seen.update([first, keep, *failed])
    assert skiffd.out("ps", "-aq", "--no-trunc", "--filter", f"since={first}").split() == [
        keep, failed[0]]
    assert skiffd.out("ps", "-aq", "--no-trunc", "--filter", f"before={keep}").split() == [
        failed[0], first]
    for accepted in ("is-task=false", "network=bridge", "volume=v", "publish=80",
                     "expose=80"):
        skiffd.out("ps", "-aq", "--filter", accepted)
    status, body = skiffd.api("GET", "/containers/json?filters=" + q({"bogus": ["1"]}))
    assert status == 400 and "bogus" in body["message"]
    status, rows = skiffd.api("GET", "/containers/json?all=1&size=1")
    assert status == 200 and rows
    assert all(0 <= r["SizeRw"] < r["SizeRootFs"] for r in rows)  # busybox is not empty
    status, body = skiffd.api("POST", "/containers/prune?filters=" + q(
        {"label": ["lc=prune"]}))
    assert status == 200
    assert sorted(body["ContainersDeleted"]) == sorted([first, failed[0]])
    assert isinstance(body["SpaceReclaimed"], int)
    assert skiffd.out("ps", "-aq", "--no-trunc").split() == [keep]
    status, body = skiffd.api("POST", "/containers/prune?filters=" + q(
        {"until": ["2000-01-01T00:00:00Z"]}))
    assert (status, body["ContainersDeleted"]) == (200, None)
    skiffd.docker("rm", keep)


def test_wait_next_exit_sees_each_restart(skiffd: Skiffd) -> None:
    cid = skiffd.run_d("--restart", "on-failure:1", IMAGE, "sh", "-c", "sleep 0.5; exit 4")
    status, body = skiffd.api("POST", f"/containers/{cid}/wait?condition=next-exit",
                              timeout=20)
    assert (status, body["StatusCode"]) == (200, 4)
    status, body = skiffd.api("POST", f"/containers/{cid}/wait?condition=not-running",
                              timeout=20)
    assert (status, body["StatusCode"]) == (200, 4)
    until(lambda: state(skiffd, cid)["RestartCount"] == 1
          and state(skiffd, cid)["State"]["Status"] == "exited", 20, "the last exit")
    skiffd.docker("rm", cid)
