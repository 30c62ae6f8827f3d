"""``POST /containers/{id}/update``: the new HostConfig and the partial OCI resources for it.

The docker CLI sends every resource field, unset ones as 0 or "": as dockerd does, a zero
means "leave as it is" (PidsLimit, a pointer in Go, is the exception: present means set).
The merged HostConfig goes through the same checks as at create.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from skiff.daemon.containers.restart import check_host_config
from skiff.errors import InvalidArgument
from skiff.services.spec import resources as res

_INT_FIELDS = ("Memory", "MemoryReservation", "MemorySwap", "KernelMemory", "CpuShares",
               "CpuQuota", "CpuPeriod", "CpuRealtimePeriod", "CpuRealtimeRuntime", "NanoCpus",
               "BlkioWeight")
_STR_FIELDS = ("CpusetCpus", "CpusetMems")
_CFS_PERIOD = 100_000


def _given(body: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _INT_FIELDS:
        value = body.get(key)
        if value in (None, 0):
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArgument(f"update: {key} must be an integer")
        out[key] = value
    for key in _STR_FIELDS:
        value = body.get(key)
        if value in (None, ""):
            continue
        if not isinstance(value, str):
            raise InvalidArgument(f"update: {key} must be a string")
        out[key] = value
    if body.get("PidsLimit") is not None:
        out["PidsLimit"] = body["PidsLimit"]
    return out


def plan_update(hc: Mapping[str, Any], body: Mapping[str, Any]
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the container's new HostConfig, the OCI ``linux.resources`` to apply live)."""
    if not isinstance(body, Mapping):
        raise InvalidArgument("update: the body must be a JSON object")
    given = _given(body)
    new = dict(hc)
    swap = int(hc.get("MemorySwap") or 0)
    if "Memory" in given and "MemorySwap" not in given and swap > 0 \
            and given["Memory"] > swap:
        raise InvalidArgument("Memory limit should be smaller than already set memoryswap "
                              "limit, update the memoryswap at the same time")
    if "NanoCpus" in given:  # one way of limiting CPU replaces the other
        new["CpuQuota"], new["CpuPeriod"] = 0, 0
    if "CpuQuota" in given or "CpuPeriod" in given:
        new["NanoCpus"] = 0
    new.update(given)
    policy_in = body.get("RestartPolicy")
    # the docker CLI always sends the policy; an empty Name means "not being changed"
    if isinstance(policy_in, Mapping) and policy_in.get("Name"):
        new["RestartPolicy"] = policy_in
    elif policy_in is not None and not isinstance(policy_in, Mapping):
        raise InvalidArgument("update: RestartPolicy must be an object")
    policy = check_host_config(new)
    new["RestartPolicy"] = policy.to_json()
    # the same checks as create, on the merged result
    res.memory(new)
    res.cpu(new, os.cpu_count())
    res.pids(new)
    return new, _resources(given, new)


def _resources(given: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    memory: dict[str, Any] = {}
    for key, name in (("Memory", "limit"), ("MemoryReservation", "reservation"),
                      ("MemorySwap", "swap")):
        if key in given:
            memory[name] = given[key]
    if "Memory" in given and "MemorySwap" not in given and int(new.get("MemorySwap") or 0) > 0:
        memory["swap"] = new["MemorySwap"]  # v1 wants memsw >= limit: send both, in order
    cpu: dict[str, Any] = {}
    for key, name in (("CpuShares", "shares"), ("CpuQuota", "quota"), ("CpuPeriod", "period"),
                      ("CpuRealtimePeriod", "realtimePeriod"),
                      ("CpuRealtimeRuntime", "realtimeRuntime"), ("CpusetCpus", "cpus"),
                      ("CpusetMems", "mems")):
        if key in given:
            cpu[name] = given[key]
    if "NanoCpus" in given:
        cpu["quota"] = given["NanoCpus"] * _CFS_PERIOD // 10**9
        cpu["period"] = _CFS_PERIOD
    out: dict[str, Any] = {}
    if memory:
        out["memory"] = memory
    if cpu:
        out["cpu"] = cpu
    if "PidsLimit" in given:
        pids = res.pids(new)
        if pids:
            out["pids"] = pids
    if "BlkioWeight" in given:
        out["blockIO"] = {"weight": given["BlkioWeight"]}
    return out
