"""Capabilities applied for real, in forked children, in the order the container init uses.

Anything a child could change on the host if a capability were wrongly kept (mounts, the
hostname, a low port) happens inside new mount/UTS/network namespaces the child creates first,
so a failing test still leaves the host untouched.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

import pytest

from skiff.runtime import capabilities, syscalls

ADMIN = 1 << capabilities.CAPABILITIES["CAP_SYS_ADMIN"]
NET_BIND = 1 << capabilities.CAPABILITIES["CAP_NET_BIND_SERVICE"]
DOCKER_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
               "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
               "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]
PYTHON = "/usr/bin/python3"  # readable by any user, unlike a venv under a private home


def run_child(body: Callable[[], Any]) -> tuple[int, bytes]:
    """Fork; the child runs ``body`` with stdout on a pipe (it may exec). -> (status, output)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - reports through the pipe
        code = 0
        try:
            os.close(r)
            os.dup2(w, 1)
            out = body()
            os.write(1, json.dumps({"ok": out}).encode())
        except BaseException as exc:
            os.write(1, json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    return os.waitpid(pid, 0)[1], b"".join(chunks)


def result(output: bytes) -> Any:
    data = json.loads(output)
    if "error" in data:
        pytest.fail(f"child failed: {data['error']}")
    return data["ok"]


def status_caps() -> dict[str, int]:
    with open("/proc/self/status") as f:
        return {k: int(v, 16) for k, v in (line.split(":\t", 1) for line in f)
                if k.startswith("Cap")}


def caps_of(names: list[str]) -> dict[str, list[str]]:
    return {s: list(names) for s in ("bounding", "effective", "permitted", "inheritable")}


def test_without_cap_sys_admin_mount_and_sethostname_fail() -> None:
    caps = caps_of([c for c in capabilities.CAPABILITIES if c != "CAP_SYS_ADMIN"])

    def body() -> dict[str, Any]:
        syscalls.unshare(syscalls.CLONE_NEWNS | syscalls.CLONE_NEWUTS)
        syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE, None)
        capabilities.drop_bounding(caps)
        capabilities.apply(caps)
        out: dict[str, Any] = {"caps": status_caps()}
        try:
            syscalls.mount("none", "/mnt", "tmpfs", 0, None)
            out["mount"] = "ok"
        except OSError as exc:
            out["mount"] = errno.errorcode[exc.errno or 0]
        try:
            socket.sethostname("capability-test")  # a private UTS namespace: no harm if it works
            out["sethostname"] = "ok"
        except OSError as exc:
            out["sethostname"] = errno.errorcode[exc.errno or 0]
        return out

    status, output = run_child(body)
    res = result(output)
    assert os.waitstatus_to_exitcode(status) == 0
    assert res["mount"] == "EPERM"
    assert res["sethostname"] == "EPERM"
    for key in ("CapBnd", "CapEff", "CapPrm", "CapInh"):
        assert res["caps"][key] & ADMIN == 0, key
    assert res["caps"]["CapEff"] & NET_BIND  # the others are still there


def test_the_same_steps_with_cap_sys_admin_kept_do_succeed() -> None:
    # The control for the test above: proves the failures come from the dropped capability.
    caps = caps_of(list(capabilities.CAPABILITIES))

    def body() -> str:
        syscalls.unshare(syscalls.CLONE_NEWNS)
        syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE, None)
        capabilities.drop_bounding(caps)
        capabilities.apply(caps)
        syscalls.mount("none", "/mnt", "tmpfs", 0, None)  # private namespace: gone at exit
        return "mounted"

    assert result(run_child(body)[1]) == "mounted"


PROBE = """
import errno, json, os, socket
caps = {k: int(v, 16) for k, v in (l.split(":\\t", 1) for l in open("/proc/self/status"))
        if k.startswith("Cap")}
s = socket.socket()
try:
    s.bind(("0.0.0.0", 80))
    bound = "ok"
except OSError as exc:
    bound = errno.errorcode[exc.errno or 0]
print(json.dumps({"ok": {"uid": os.getuid(), "caps": caps, "bind80": bound}}))
"""


def _as_user_then_exec(caps: dict[str, list[str]]) -> Callable[[], Any]:
    def body() -> None:
        syscalls.unshare(syscalls.CLONE_NEWNET)  # port 80 is bound in a private netns
        capabilities.drop_bounding(caps)
        syscalls.prctl(syscalls.PR_SET_KEEPCAPS, 1)
        os.setgroups([])
        os.setresgid(1000, 1000, 1000)
        os.setresuid(1000, 1000, 1000)
        syscalls.prctl(syscalls.PR_SET_KEEPCAPS, 0)
        capabilities.apply(caps)
        sys.stdout.flush()
        os.execv(PYTHON, [PYTHON, "-I", "-S", "-c", PROBE])
    return body


def test_ambient_capability_survives_exec_as_non_root() -> None:
    caps = caps_of(["CAP_NET_BIND_SERVICE"]) | {"ambient": ["CAP_NET_BIND_SERVICE"]}
    status, output = run_child(_as_user_then_exec(caps))
    assert os.waitstatus_to_exitcode(status) == 0, output
    res = result(output)
    assert res["uid"] == 1000
    assert res["caps"]["CapEff"] == NET_BIND
    assert res["caps"]["CapPrm"] == NET_BIND
    assert res["caps"]["CapAmb"] == NET_BIND
    assert res["caps"]["CapBnd"] == NET_BIND
    assert res["bind80"] == "ok"


def test_without_ambient_exec_as_non_root_has_nothing() -> None:
    caps = caps_of(["CAP_NET_BIND_SERVICE"])
    status, output = run_child(_as_user_then_exec(caps))
    assert os.waitstatus_to_exitcode(status) == 0, output
    res = result(output)
    assert res["caps"]["CapEff"] == 0 and res["caps"]["CapAmb"] == 0
    assert res["bind80"] == "EACCES"


def test_docker_default_set_as_root() -> None:
    caps = caps_of(DOCKER_CAPS)

    def body() -> dict[str, int]:
        capabilities.drop_bounding(caps)
        capabilities.apply(caps)
        return status_caps()

    res = result(run_child(body)[1])
    want = capabilities.mask(DOCKER_CAPS)
    assert res == {"CapInh": want, "CapPrm": want, "CapEff": want, "CapBnd": want, "CapAmb": 0}


def test_no_capabilities_object_changes_nothing() -> None:
    def body() -> list[dict[str, int]]:
        before = status_caps()
        capabilities.drop_bounding(None)
        capabilities.apply(None)
        return [before, status_caps()]

    before, after = result(run_child(body)[1])
    assert before == after
    assert after["CapEff"] & ADMIN  # still root's full set, as with runc
