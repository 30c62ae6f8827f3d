"""Which way the runtime makes a container's process: one clone3 or the two-stage fork."""

from __future__ import annotations

import pytest

from skiff.runtime import syscalls as sc
from skiff.runtime.process.init import Launch
from skiff.runtime.process.launcher import _can_clone_directly

NEW = sc.CLONE_NEWNS | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC | sc.CLONE_NEWPID | sc.CLONE_NEWNET


def _launch(**kw: object) -> Launch:
    base: dict[str, object] = dict(spec={}, process={}, bundle="/b", rootfs="/b/rootfs",
                                   ns_flags=NEW, ns_join=[], cgroup_mode="hybrid",
                                   cgroup_path="/skiff/c")
    base.update(kw)
    return Launch(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kw", "direct"), [
    ({}, True),  # docker run --network none
    ({"ns_flags": NEW & ~sc.CLONE_NEWNET,
      "ns_join": [("network", "/run/netns/x")]}, True),  # a network made by the daemon
    ({"ns_join": [("ipc", "/proc/9/ns/ipc"), ("uts", "/proc/9/ns/uts")]}, True),
    ({"ns_flags": NEW & ~sc.CLONE_NEWPID, "ns_join": [("pid", "/proc/9/ns/pid")]}, False),
    ({"ns_flags": NEW | sc.CLONE_NEWUSER, "userns": True}, False),
    ({"ns_join": [("user", "/proc/9/ns/user")], "userns": True}, False),
    ({"ns_flags": NEW | sc.CLONE_NEWTIME}, False),
    ({"is_exec": True, "ns_flags": 0, "ns_join": [("pid", "/proc/9/ns/pid")]}, False),
])
def test_stage_one_only_where_a_fork_must_follow_a_namespace_change(
        kw: dict[str, object], direct: bool) -> None:
    assert _can_clone_directly(_launch(**kw)) is direct
