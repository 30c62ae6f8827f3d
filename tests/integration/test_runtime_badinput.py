"""Bad bundles: one clear line naming the field, a non-zero exit, and nothing left behind."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.support import (
    RuntimeDriver,
    cgroup_dirs,
    mounts_mentioning,
    new_id,
    read_config,
    write_config,
)

Bundle = Callable[..., Path]


def _break(kind: str, cfg: dict[str, Any], bundle: Path) -> None:
    if kind == "namespace":
        cfg["linux"]["namespaces"].append({"type": "bogus"})
    elif kind == "capability":
        cfg["process"]["capabilities"]["bounding"].append("CAP_NOT_A_THING")
    elif kind == "seccomp-action":
        cfg["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                                   "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOPE"}]}
    elif kind == "rootfs":
        cfg["root"]["path"] = "does-not-exist"
    elif kind == "args":
        cfg["process"]["args"] = []
    elif kind == "mount-dest":
        cfg["mounts"].append({"destination": "relative/path", "type": "tmpfs"})
    elif kind == "rlimit":
        cfg["process"]["rlimits"] = [{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]
    elif kind == "memory":
        cfg["linux"]["resources"]["memory"] = {"limit": "lots"}


EXPECT = {
    "namespace": "linux.namespaces[",
    "capability": "CAP_NOT_A_THING",
    "seccomp-action": "SCMP_ACT_NOPE",
    "rootfs": "root.path",
    "args": "process.args",
    "mount-dest": "destination",
    "rlimit": "RLIMIT_BOGUS",
    "memory": "memory.limit",
}


@pytest.mark.parametrize("kind", sorted(EXPECT))
def test_bad_spec_field_is_named_and_nothing_is_left(kind: str, runtime: RuntimeDriver,
                                                     make_bundle: Bundle) -> None:
    b = make_bundle(["true"])
    cfg = read_config(b)
    _break(kind, cfg, b)
    write_config(b, cfg)
    cid = new_id("bad")
    res = runtime("create", "--bundle", str(b), cid, check=False)
    assert res.code != 0
    lines = [line for line in res.err.splitlines() if line.strip()]
    assert len(lines) == 1, res.err
    assert EXPECT[kind] in lines[0]
    assert not (runtime.root / cid).exists()
    assert cgroup_dirs(cid) == []
    assert mounts_mentioning(str(b)) == []


def test_malformed_json_and_missing_config(runtime: RuntimeDriver, make_bundle: Bundle,
                                           tmp_path: Path) -> None:
    b = make_bundle(["true"])
    (b / "config.json").write_text('{"ociVersion": "1.0.2", "process": ')
    res = runtime("create", "--bundle", str(b), new_id(), check=False)
    assert res.code != 0 and "malformed JSON" in res.err
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runtime("create", "--bundle", str(empty), new_id(), check=False)
    assert res.code != 0 and "config.json not found" in res.err


def test_bad_ids_signals_and_commands(runtime: RuntimeDriver, make_bundle: Bundle) -> None:
    b = make_bundle(["true"])
    res = runtime("create", "--bundle", str(b), "../escape", check=False)
    assert res.code != 0 and "invalid container id" in res.err
    assert runtime("state", "no-such-container", check=False).code != 0
    assert "does not exist" in runtime("kill", "no-such", "9", check=False).err
    cid = new_id("sig")
    runtime("run", "-d", "--bundle", str(make_bundle(["sleep", "30"])), cid)
    res = runtime("kill", cid, "SIGNOPE", check=False)
    assert res.code != 0 and "invalid signal" in res.err
    assert runtime("frobnicate", check=False).code != 0
    assert "flag provided but not defined" in runtime("create", "--nope", "x", check=False).err
    runtime("delete", "-f", cid)


def test_duplicate_id_is_refused_without_touching_the_first(runtime: RuntimeDriver,
                                                            make_bundle: Bundle) -> None:
    cid = new_id("dup")
    b = make_bundle(["sleep", "30"])
    runtime("run", "-d", "--bundle", str(b), cid)
    res = runtime("create", "--bundle", str(b), cid, check=False)
    assert res.code != 0 and "already exists" in res.err
    assert runtime.state(cid)["status"] == "running"
    runtime("delete", "-f", cid)
    assert json.loads(runtime("list", "-f", "json").out) == []


def test_errors_go_to_the_log_file_as_json(runtime: RuntimeDriver, make_bundle: Bundle,
                                           tmp_path: Path) -> None:
    # containerd's shim reads the runtime's last error from --log in JSON: it must be there.
    b = make_bundle(["no-such-binary"])
    log = tmp_path / "runtime.log"
    res = runtime("--log", str(log), "--log-format", "json", "create", "--bundle", str(b),
                  new_id("log"), check=False)
    assert res.code != 0
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert entries[-1]["level"] == "error"
    assert "executable file not found" in entries[-1]["msg"]
    assert "time" in entries[-1]
