"""skiff-runtime: cgroup limits, stats, events and update on real containers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from tests.integration.support import RuntimeDriver, cgroup_dirs, new_id, read_config, write_config

Bundle = Callable[..., Path]


def _with_resources(b: Path, resources: dict[str, object]) -> None:
    cfg = read_config(b)
    cfg["linux"]["resources"] = {**cfg["linux"].get("resources", {}), **resources}
    write_config(b, cfg)


def test_memory_limit_kills_a_hog_with_137_and_oom_is_recorded(runtime: RuntimeDriver,
                                                                 make_bundle: Bundle) -> None:
    cid = new_id("oom")
    # tail keeps everything since the last newline, and /dev/zero has none: it grows forever.
    b = make_bundle(["tail", "/dev/zero"])
    _with_resources(b, {"memory": {"limit": 32 * 1024 * 1024, "swap": 32 * 1024 * 1024}})
    runtime("create", "--bundle", str(b), cid)
    events = runtime.popen("events", "--interval", "100ms", cid, stdout=-1, stderr=-1)
    time.sleep(0.3)
    runtime("start", cid)
    st = runtime.wait_status(cid, "stopped", timeout=30)
    assert st["status"] == "stopped"
    out, err = events.communicate(timeout=10)
    kinds = [json.loads(line)["type"] for line in out.splitlines() if line.strip()]
    assert "oom" in kinds, (out, err)
    runtime("delete", cid)
    # And run's exit status is 128+SIGKILL.
    res = runtime("run", "--bundle", str(b), new_id("oom2"), check=False)
    assert res.code == 137
    assert cgroup_dirs(cid) == []


def test_pids_limit_stops_a_fork_bomb(runtime: RuntimeDriver, make_bundle: Bundle) -> None:
    cid = new_id("pids")
    b = make_bundle(["sleep", "100"])
    _with_resources(b, {"pids": {"limit": 12}})
    runtime("run", "-d", "--bundle", str(b), cid)
    # A shell that forks 40 sleepers: the 12th process is the last the kernel allows.
    bomb = runtime("exec", cid, "sh", "-c",
                   "i=0; while [ $i -lt 40 ]; do sleep 100 & i=$((i+1)); done", check=False)
    pids = json.loads(runtime("ps", "--format", "json", cid).out)
    stats = json.loads(runtime("events", "--stats", cid).out)
    runtime("delete", "--force", cid)
    assert bomb.code != 0
    assert "can't fork" in bomb.err or "Resource temporarily unavailable" in bomb.err
    assert 2 <= len(pids) <= 12
    assert stats["data"]["pids"]["limit"] == 12


def test_cpu_and_memory_settings_are_applied_and_updatable(runtime: RuntimeDriver,
                                                           make_bundle: Bundle) -> None:
    cid = new_id("res")
    b = make_bundle(["sleep", "100"])
    _with_resources(b, {"memory": {"limit": 64 * 1024 * 1024},
                        "cpu": {"shares": 512, "quota": 50000, "period": 100000},
                        "pids": {"limit": 100}})
    runtime("run", "-d", "--bundle", str(b), cid)
    cg = f"/sys/fs/cgroup/memory/skiff/{cid}"
    assert Path(cg, "memory.limit_in_bytes").read_text().strip() == str(64 * 1024 * 1024)
    cpu = f"/sys/fs/cgroup/cpu/skiff/{cid}"
    assert Path(cpu, "cpu.shares").read_text().strip() == "512"
    assert Path(cpu, "cpu.cfs_quota_us").read_text().strip() == "50000"
    runtime("update", "--memory", "128m", "--pids-limit", "50", "--cpu-shares", "256", cid)
    assert Path(cg, "memory.limit_in_bytes").read_text().strip() == str(128 * 1024 * 1024)
    assert Path(f"/sys/fs/cgroup/pids/skiff/{cid}/pids.max").read_text().strip() == "50"
    assert Path(cpu, "cpu.shares").read_text().strip() == "256"
    runtime("update", "--resources", "-", cid, input=json.dumps({"pids": {"limit": 70}}))
    assert Path(f"/sys/fs/cgroup/pids/skiff/{cid}/pids.max").read_text().strip() == "70"
    bad = runtime("update", "--memory", "lots", cid, check=False)
    assert bad.code != 0 and "--memory" in bad.err
    stats = json.loads(runtime("events", "--stats", cid).out)
    assert stats["type"] == "stats" and stats["id"] == cid
    assert stats["data"]["memory"]["usage"]["limit"] == 128 * 1024 * 1024
    assert stats["data"]["memory"]["usage"]["usage"] > 0
    assert stats["data"]["pids"]["current"] >= 1
    assert "total" in stats["data"]["cpu"]["usage"]
    runtime("delete", "--force", cid)
    assert cgroup_dirs(cid) == []


def test_devices_cgroup_denies_unlisted_devices(runtime: RuntimeDriver,
                                                make_bundle: Bundle) -> None:
    # A node for /dev/sda's numbers made inside the container cannot be opened: the default
    # device rules allow mknod but not access.
    b = make_bundle(["sh", "-c", "mknod /dev/blk b 8 0 && (head -c1 /dev/blk >/dev/null 2>&1 "
                     "&& echo open-ok || echo open-denied); head -c1 /dev/zero | wc -c"])
    cfg = read_config(b)
    cfg["process"]["capabilities"] = {k: [*v, "CAP_MKNOD"]
                                      for k, v in cfg["process"]["capabilities"].items()}
    write_config(b, cfg)
    res = runtime("run", "--bundle", str(b), new_id("dev"), check=False)
    assert res.out.split() == ["open-denied", "1"], res.err
