"""linux.resources, devices, rlimits, OOM score: values and dockerd's validation messages."""

from __future__ import annotations

from typing import Any

import pytest

from skiff.errors import InvalidArgument
from skiff.services.spec import DeviceNode, SpecInputs, build_spec

MB = 1024 * 1024
NODES = {"/dev/null": DeviceNode("c", 1, 3, 0o666), "/dev/vda": DeviceNode("b", 254, 0, 0o660)}


def build(hc: dict[str, Any], **inputs: Any) -> dict[str, Any]:
    return build_spec({"Cmd": ["sh"]}, hc, SpecInputs(container_id="c" * 64, rootfs="/r",
                                                      device_nodes=NODES, **inputs))


def resources(hc: dict[str, Any], **inputs: Any) -> dict[str, Any]:
    out: dict[str, Any] = build(hc, **inputs)["linux"]["resources"]
    return out


def test_memory() -> None:
    mem = resources({"Memory": 64 * MB, "MemoryReservation": 32 * MB, "MemorySwap": 128 * MB,
                     "MemorySwappiness": 10, "OomKillDisable": True})["memory"]
    assert mem == {"limit": 64 * MB, "reservation": 32 * MB, "swap": 128 * MB,
                   "swappiness": 10, "disableOOMKiller": True}


def test_unlimited_swap_and_unset_swappiness_are_absent() -> None:
    mem = resources({"Memory": 64 * MB, "MemorySwap": -1, "MemorySwappiness": -1})["memory"]
    assert mem == {"limit": 64 * MB, "disableOOMKiller": False}


@pytest.mark.parametrize("hc, message", [
    ({"Memory": 4 * MB}, "Minimum memory limit allowed is 6MB"),
    ({"MemorySwap": 64 * MB}, "You should always set the Memory limit when using Memoryswap"),
    ({"Memory": 64 * MB, "MemorySwap": 32 * MB}, "Minimum memoryswap limit should be larger"),
    ({"MemoryReservation": MB}, "Minimum memory reservation allowed is 6MB"),
    ({"Memory": 16 * MB, "MemoryReservation": 32 * MB},
     "Minimum memory limit can not be less than memory reservation limit"),
    ({"MemorySwappiness": 101}, "valid memory swappiness range is 0-100"),
    ({"Memory": "lots"}, "invalid Memory: must be an integer"),
])
def test_memory_errors(hc: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        build(hc)


def test_nano_cpus_become_quota_over_100ms() -> None:
    assert resources({"NanoCpus": 1_500_000_000})["cpu"] == {"shares": 0, "quota": 150000,
                                                             "period": 100000}
    assert resources({"NanoCpus": 10_000_000})["cpu"]["quota"] == 1000


def test_cpu_fields() -> None:
    cpu = resources({"CpuShares": 512, "CpuQuota": 50000, "CpuPeriod": 200000,
                     "CpusetCpus": "0-1,3", "CpusetMems": "0", "CpuRealtimeRuntime": 950,
                     "CpuRealtimePeriod": 1000})["cpu"]
    assert cpu == {"shares": 512, "quota": 50000, "period": 200000, "cpus": "0-1,3",
                   "mems": "0", "realtimeRuntime": 950, "realtimePeriod": 1000}


@pytest.mark.parametrize("hc, message", [
    ({"NanoCpus": 10**9, "CpuPeriod": 100000}, "Nano CPUs and CPU Period cannot both be set"),
    ({"NanoCpus": 10**9, "CpuQuota": 100000}, "Nano CPUs and CPU Quota cannot both be set"),
    ({"NanoCpus": -1}, "the number of CPUs can not be negative"),
    ({"CpuPeriod": 500}, "CPU cfs period can not be less than 1ms"),
    ({"CpuPeriod": 2_000_000}, "larger than 1s"),
    ({"CpuQuota": 999}, "CPU cfs quota can not be less than 1ms"),
    ({"CpusetCpus": "0-"}, "Invalid value 0- for cpuset cpus"),
    ({"CpusetMems": "a"}, "Invalid value a for cpuset mems"),
    ({"CpuShares": -2}, "shares can not be negative"),
])
def test_cpu_errors(hc: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        build(hc)


def test_nano_cpus_above_host_cpus() -> None:
    with pytest.raises(InvalidArgument, match="as there are only 2 CPUs available"):
        build({"NanoCpus": 3 * 10**9}, ncpu=2)
    assert resources({"NanoCpus": 2 * 10**9}, ncpu=2)["cpu"]["quota"] == 200000
    with pytest.raises(InvalidArgument, match=r"Range of CPUs is from 0\.01 to 2\.00"):
        build({"NanoCpus": -1}, ncpu=2)


def test_pids_limit() -> None:
    assert "pids" not in resources({})
    assert resources({"PidsLimit": 50})["pids"] == {"limit": 50}
    # 0 and negatives mean unlimited, which runtimes are told as -1.
    assert resources({"PidsLimit": 0})["pids"] == {"limit": -1}


def test_blkio() -> None:
    blk = resources({"BlkioWeight": 300,
                     "BlkioWeightDevice": [{"Path": "/dev/vda", "Weight": 200}],
                     "BlkioDeviceReadBps": [{"Path": "/dev/vda", "Rate": MB}],
                     "BlkioDeviceWriteBps": [{"Path": "/dev/vda", "Rate": 2 * MB}],
                     "BlkioDeviceReadIOps": [{"Path": "/dev/vda", "Rate": 10}],
                     "BlkioDeviceWriteIOps": [{"Path": "/dev/vda", "Rate": 100}]})["blockIO"]
    assert blk == {"weight": 300,
                   "weightDevice": [{"major": 254, "minor": 0, "weight": 200}],
                   "throttleReadBpsDevice": [{"major": 254, "minor": 0, "rate": MB}],
                   "throttleWriteBpsDevice": [{"major": 254, "minor": 0, "rate": 2 * MB}],
                   "throttleReadIOPSDevice": [{"major": 254, "minor": 0, "rate": 10}],
                   "throttleWriteIOPSDevice": [{"major": 254, "minor": 0, "rate": 100}]}


@pytest.mark.parametrize("hc, message", [
    ({"BlkioWeight": 5}, "Range of blkio weight is from 10 to 1000"),
    ({"BlkioWeightDevice": [{"Path": "/dev/vda", "Weight": 2000}]}, "Range of blkio weight"),
    ({"BlkioDeviceReadBps": [{"Path": "/dev/nope", "Rate": 1}]},
     'adding throttle device "/dev/nope": no such file or directory'),
    ({"BlkioDeviceReadBps": [{"Path": "/dev/vda", "Rate": -1}]}, "invalid BlkioDeviceReadBps"),
])
def test_blkio_errors(hc: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        build(hc)


def test_devices_and_cgroup_rules() -> None:
    spec = build({"Devices": [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/mynull",
                               "CgroupPermissions": "r"},
                              {"PathOnHost": "/dev/vda", "PathInContainer": "",
                               "CgroupPermissions": ""}],
                  "DeviceCgroupRules": ["c 42:* rmw", "b 7:0 r", "a *:* m"]})
    assert spec["linux"]["devices"] == [
        {"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666,
         "uid": 0, "gid": 0},
        {"path": "/dev/vda", "type": "b", "major": 254, "minor": 0, "fileMode": 0o660,
         "uid": 0, "gid": 0}]
    rules = spec["linux"]["resources"]["devices"]
    assert rules[8:] == [
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "r"},
        {"allow": True, "type": "b", "major": 254, "minor": 0, "access": "rwm"},
        {"allow": True, "type": "c", "major": 42, "minor": -1, "access": "rmw"},
        {"allow": True, "type": "b", "major": 7, "minor": 0, "access": "r"},
        {"allow": True, "type": "a", "major": -1, "minor": -1, "access": "m"}]


@pytest.mark.parametrize("hc, message", [
    ({"Devices": [{"PathOnHost": "/dev/null", "CgroupPermissions": "rx"}]},
     "invalid device mode: rx"),
    ({"Devices": [{"PathOnHost": "/dev/gone"}]},
     'adding custom device "/dev/gone": no such file or directory'),
    ({"Devices": [{"PathOnHost": "/dev/null", "PathInContainer": "rel"}]},
     "invalid device path in container"),
    ({"DeviceCgroupRules": ["c 1:2"]}, "invalid device cgroup rule format"),
    ({"DeviceCgroupRules": ["x 1:2 r"]}, "invalid device cgroup rule format"),
])
def test_device_errors(hc: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        build(hc)


def test_ulimits() -> None:
    spec = build({"Ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": 2048},
                              {"Name": "nproc", "Soft": 100, "Hard": 100}]})
    assert spec["process"]["rlimits"] == [
        {"type": "RLIMIT_NOFILE", "hard": 2048, "soft": 1024},
        {"type": "RLIMIT_NPROC", "hard": 100, "soft": 100}]
    assert "rlimits" not in build({})["process"]


@pytest.mark.parametrize("ulimit, message", [
    ({"Name": "files", "Soft": 1, "Hard": 1}, "invalid ulimit type: files"),
    ({"Name": "nofile", "Soft": 10, "Hard": 1}, "soft limit must be less than or equal"),
    ({"Name": "nofile", "Soft": "1", "Hard": 1}, "must be integers"),
])
def test_ulimit_errors(ulimit: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        build({"Ulimits": [ulimit]})


def test_oom_score_adj() -> None:
    assert build({"OomScoreAdj": -500})["process"]["oomScoreAdj"] == -500
    with pytest.raises(InvalidArgument, match=r"range for oom score adj is \[-1000, 1000\]"):
        build({"OomScoreAdj": 1001})
