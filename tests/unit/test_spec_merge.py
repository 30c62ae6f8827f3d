"""Docker's create-time merge of the image config, and the builder's robustness to bad input."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from skiff.errors import InvalidArgument, SkiffError
from skiff.services.spec import SpecInputs, build_spec, merge_image_config

IMAGE = {"User": "app", "Env": ["PATH=/usr/bin:/bin", "FOO=img"],
         "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"], "WorkingDir": "/home/app",
         "Labels": {"il": "1", "both": "image"}, "StopSignal": "SIGQUIT"}


def test_image_defaults_fill_unset_fields() -> None:
    out = merge_image_config({}, IMAGE)
    assert out["User"] == "app" and out["WorkingDir"] == "/home/app"
    assert out["Env"] == ["PATH=/usr/bin:/bin", "FOO=img"]
    assert out["Entrypoint"] == ["/bin/sh", "-c"] and out["Cmd"] == ["echo hi"]
    assert out["StopSignal"] == "SIGQUIT"


def test_request_wins_key_by_key() -> None:
    out = merge_image_config({"Env": ["FOO=ctr", "BAR=2"], "User": "0",
                              "Labels": {"both": "ctr"}, "WorkingDir": "/w"}, IMAGE)
    assert out["Env"] == ["FOO=ctr", "BAR=2", "PATH=/usr/bin:/bin"]
    assert out["Labels"] == {"il": "1", "both": "ctr"}
    assert out["User"] == "0" and out["WorkingDir"] == "/w"


def test_cmd_replaces_image_cmd_but_keeps_entrypoint() -> None:
    out = merge_image_config({"Cmd": ["sleep 1"]}, IMAGE)
    assert out["Entrypoint"] == ["/bin/sh", "-c"] and out["Cmd"] == ["sleep 1"]


def test_entrypoint_replaces_both() -> None:
    out = merge_image_config({"Entrypoint": ["/bin/sleep"]}, IMAGE)
    assert out["Entrypoint"] == ["/bin/sleep"] and out["Cmd"] is None


def test_empty_entrypoint_clears_the_image_entrypoint() -> None:
    # docker run --entrypoint "" IMAGE sleep 1
    out = merge_image_config({"Entrypoint": [""], "Cmd": ["sleep", "1"]}, IMAGE)
    assert out["Entrypoint"] is None and out["Cmd"] == ["sleep", "1"]
    with pytest.raises(InvalidArgument, match="No command specified"):
        merge_image_config({"Entrypoint": [""]}, IMAGE)


def test_empty_list_entrypoint_keeps_image_cmd() -> None:
    out = merge_image_config({"Entrypoint": []}, IMAGE)
    assert out["Entrypoint"] == [] and out["Cmd"] == ["echo hi"]


def test_string_command_is_one_element() -> None:
    out = merge_image_config({"Cmd": "echo a b"}, {})
    assert out["Cmd"] == ["echo a b"]


def test_no_command_at_all() -> None:
    with pytest.raises(InvalidArgument, match="No command specified"):
        merge_image_config({}, {"Env": ["A=1"]})


def test_bad_types() -> None:
    with pytest.raises(InvalidArgument, match="invalid Cmd"):
        merge_image_config({"Cmd": 5}, {})


# Wrong shapes for every field the builder reads: it may accept or refuse, never crash.
_FIELDS = ["CapAdd", "CapDrop", "SecurityOpt", "Devices", "DeviceCgroupRules", "Ulimits",
           "Tmpfs", "Mounts", "Sysctls", "Memory", "MemorySwap", "MemorySwappiness",
           "NanoCpus", "CpuShares", "CpusetCpus", "PidsLimit", "BlkioWeight",
           "BlkioWeightDevice", "BlkioDeviceReadBps", "OomScoreAdj", "ShmSize", "IpcMode",
           "PidMode", "NetworkMode", "UTSMode", "CgroupnsMode", "CgroupParent", "Annotations",
           "MaskedPaths", "ReadonlyPaths", "ConsoleSize", "Init", "Privileged", "GroupAdd"]
_CONFIG_FIELDS = ["Cmd", "Entrypoint", "Env", "WorkingDir", "Hostname", "Domainname", "Tty"]
_BAD = [5, "x", ["x"], [5], {"a": 1}, [{"Path": 5}], [{}], True, -1, [None]]


@pytest.mark.parametrize("field, value", list(itertools.product(_FIELDS, _BAD)))
def test_host_config_garbage_never_crashes(field: str, value: Any) -> None:
    try:
        build_spec({"Cmd": ["sh"]}, {field: value},
                   SpecInputs(container_id="c" * 64, rootfs="/r"))
    except SkiffError:
        pass


@pytest.mark.parametrize("field, value", list(itertools.product(_CONFIG_FIELDS, _BAD)))
def test_config_garbage_never_crashes(field: str, value: Any) -> None:
    config: dict[str, Any] = {"Cmd": ["sh"], field: value}
    try:
        build_spec(config, {}, SpecInputs(container_id="c" * 64, rootfs="/r"))
    except SkiffError:
        pass
    try:
        merge_image_config(config, {})
    except SkiffError:
        pass


def test_non_object_bodies() -> None:
    with pytest.raises(InvalidArgument, match="invalid HostConfig"):
        build_spec({"Cmd": ["sh"]}, ["x"], SpecInputs(container_id="c", rootfs="/r"))  # type: ignore[arg-type]
