"""Validation of OCI linux.resources and the device-rule model shared by v1 and v2."""

from __future__ import annotations

from typing import Any

import pytest

from skiff.errors import InvalidArgument, Unavailable
from skiff.runtime.cgroups.resources import (
    DeviceRule,
    effective_device_rules,
    parse_resources,
)


def test_full_object_parses_into_typed_records() -> None:
    r = parse_resources({
        "memory": {"limit": 1 << 20, "swap": -1, "swappiness": 10, "disableOOMKiller": True},
        "cpu": {"shares": 512, "quota": -1, "period": 100000, "cpus": "0-1,3", "mems": ""},
        "pids": {"limit": 0},
        "blockIO": {"weight": 500, "weightDevice": [{"major": 8, "minor": 0, "weight": 20}],
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1024}]},
        "devices": [{"allow": False, "access": "rwm"},
                    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "wr"}],
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}],
        "network": {"classID": 0x100001, "priorities": [{"name": "eth0", "priority": 5}]},
        "unified": {"memory.high": "1000000"},
    })
    assert r.memory is not None and r.memory.limit == 1 << 20 and r.memory.swap == -1
    assert r.memory.disable_oom_killer is True and r.memory.reservation is None
    assert r.cpu is not None and (r.cpu.shares, r.cpu.quota, r.cpu.cpus) == (512, -1, "0-1,3")
    assert r.pids_limit == 0
    assert r.block_io is not None and r.block_io.weight == 500
    assert r.block_io.weight_device[0].weight == 20
    assert r.block_io.read_bps[0].rate == 1024
    assert r.devices is not None and r.devices[1].access == "rw"  # canonical order
    assert r.devices[0].type == "a" and r.devices[0].major == -1  # OCI defaults
    assert r.hugepages is not None and r.hugepages[0].page_size == "2MB"
    assert r.network is not None and r.network.priorities == (("eth0", 5),)
    assert r.unified == {"memory.high": "1000000"}


def test_partial_object_leaves_everything_else_unset() -> None:
    r = parse_resources({"memory": {"limit": 5}})
    assert r.cpu is None and r.devices is None and r.pids_limit is None
    assert r.memory is not None and r.memory.swap is None
    assert parse_resources(None).memory is None


@pytest.mark.parametrize(("raw", "message"), [
    ({"memory": {"limit": "abc"}},
     'linux.resources.memory.limit: must be an integer >= -1, got "abc"'),
    ({"memory": {"limit": -2}}, "linux.resources.memory.limit: must be an integer >= -1, got -2"),
    ({"memory": {"limit": True}}, "linux.resources.memory.limit: must be an integer"),
    ({"memory": {"swappiness": 101}}, "linux.resources.memory.swappiness: must be an integer in 0..100"),
    ({"memory": {"disableOOMKiller": 1}}, "linux.resources.memory.disableOOMKiller: must be a boolean"),
    ({"memory": {"bogus": 1}}, "linux.resources.memory.bogus: unknown field"),
    ({"bogus": {}}, "linux.resources.bogus: unknown field"),
    ({"cpu": {"cpus": "0-a"}}, "linux.resources.cpu.cpus: must match"),
    ({"cpu": {"shares": -5}}, "linux.resources.cpu.shares: must be an integer"),
    ({"cpu": {"idle": 2}}, "linux.resources.cpu.idle: must be an integer in 0..1"),
    ({"blockIO": {"weight": 5}}, "linux.resources.blockIO.weight: must be 0 (unset) or in 10..1000"),
    ({"blockIO": {"weight": 1001}}, "linux.resources.blockIO.weight: must be an integer in 0..1000"),
    ({"blockIO": {"throttleReadBpsDevice": [{"major": 8, "rate": 1}]}},
     "linux.resources.blockIO.throttleReadBpsDevice[0]: major and minor are required"),
    ({"devices": [{"access": "r"}]}, "linux.resources.devices[0].allow: required"),
    ({"devices": [{"allow": True, "type": "x"}]}, "linux.resources.devices[0].type: must be one of"),
    ({"devices": [{"allow": True, "access": "rwx"}]},
     'linux.resources.devices[0].access: must be letters from "rwm", got "rwx"'),
    ({"devices": [{"allow": True, "major": -2}]}, "linux.resources.devices[0].major"),
    ({"devices": {"allow": True}}, "linux.resources.devices: must be an array"),
    ({"hugepageLimits": [{"pageSize": "2mb", "limit": 1}]},
     "linux.resources.hugepageLimits[0].pageSize: must match"),
    ({"network": {"priorities": [{"name": "eth0 9\nlo", "priority": 1}]}},
     "linux.resources.network.priorities[0].name: must match"),
    ({"unified": {"../escape": "1"}}, "linux.resources.unified: keys must be cgroup file names"),
    ({"unified": {"cgroup.procs": "1"}}, "linux.resources.unified.cgroup.procs: managed by the runtime"),
    ({"unified": {"memory.high": 5}}, "linux.resources.unified.memory.high: must be a string"),
    ({"pids": {"limit": 1.5}}, "linux.resources.pids.limit: must be an integer"),
])
def test_bad_values_are_rejected_naming_the_field(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_resources(raw)
    assert message in str(info.value)


def test_rdma_is_unavailable() -> None:
    with pytest.raises(Unavailable, match="rdma"):
        parse_resources({"rdma": {"mlx5_0": {"hcaHandles": 1}}})


def rule(allow: bool, type_: str = "a", major: int = -1, minor: int = -1,
         access: str = "rwm") -> DeviceRule:
    return DeviceRule(allow, type_, major, minor, access)


def test_v1_lines_spell_narrow_all_type_rules_as_char_and_block() -> None:
    assert rule(False).v1_lines() == ["a"]
    assert rule(True, "c", 1, 3, "rw").v1_lines() == ["c 1:3 rw"]
    assert rule(True, "b", -1, 0).v1_lines() == ["b *:0 rwm"]
    assert rule(False, "a", 5, -1, "m").v1_lines() == ["c 5:* m", "b 5:* m"]


def test_effective_rules_reset_on_all_devices_rule() -> None:
    default, kept = effective_device_rules((rule(False, "c", 1, 3), rule(False),
                                            rule(True, "c", 1, 5)))
    assert default is False and kept == (rule(True, "c", 1, 5),)
    default, kept = effective_device_rules((rule(False, "c", 1, 3, "w"),))
    assert default is True and kept == (rule(False, "c", 1, 3, "w"),)
