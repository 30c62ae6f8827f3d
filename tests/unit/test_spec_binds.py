"""Binds/Mounts parsing (moby's Linux rules) and dockerd's create-time HostConfig defaults."""

from __future__ import annotations

import pytest

from skiff.errors import InvalidArgument
from skiff.services.spec import (
    MountRequest,
    ResolvedMount,
    apply_create_defaults,
    parse_api_mount,
    parse_bind,
)


@pytest.mark.parametrize("raw, expected", [
    ("/data", MountRequest("volume", "", "/data")),
    ("/data:ro", MountRequest("volume", "", "/data", writable=False)),
    ("vol:/data", MountRequest("volume", "vol", "/data")),
    ("vol:/data:ro,nocopy", MountRequest("volume", "vol", "/data", writable=False,
                                         copy_data=False)),
    ("/h:/c", MountRequest("bind", "/h", "/c", propagation="rprivate")),
    ("/h/../h2/:/c/:ro,rshared,Z", MountRequest("bind", "/h2", "/c", writable=False,
                                                propagation="rshared", relabel="Z")),
    ("/h:/c:rw,slave,cached", MountRequest("bind", "/h", "/c", propagation="slave")),
])
def test_parse_bind(raw: str, expected: MountRequest) -> None:
    assert parse_bind(raw) == expected


@pytest.mark.parametrize("raw, message", [
    ("", "invalid volume specification"),
    ("a:b:c:d", "invalid volume specification: 'a:b:c:d'"),
    ("/h:rel", "mount path must be absolute"),
    ("/h:/", "destination can't be '/'"),
    ("/h:/c:ro,rw", "invalid mode: ro,rw"),
    ("/h:/c:bogus", "invalid mode: bogus"),
    ("/h:/c:nocopy", "invalid mode: nocopy"),
    ("bad name!:/c", "includes invalid characters for a local volume name"),
])
def test_parse_bind_errors(raw: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_bind(raw)


def test_resolving_a_request() -> None:
    bind = parse_bind("/h:/c:ro")
    assert bind.resolved() == ResolvedMount("/h", "/c", False, "rprivate", False)
    vol = parse_bind("vv:/d")
    assert vol.resolved("/var/lib/skiff/volumes/vv/_data") == ResolvedMount(
        "/var/lib/skiff/volumes/vv/_data", "/d", True, "", False)
    with pytest.raises(InvalidArgument, match="volume has no host path"):
        parse_bind("/anon").resolved()


def test_parse_api_mount() -> None:
    assert parse_api_mount({"Type": "tmpfs", "Target": "/t"}) is None
    assert parse_api_mount({"Type": "bind", "Source": "/h", "Target": "/c", "ReadOnly": True,
                            "BindOptions": {"NonRecursive": True, "Propagation": "rslave"}}) \
        == MountRequest("bind", "/h", "/c", False, "rslave", True)
    assert parse_api_mount({"Type": "volume", "Source": "vv", "Target": "/c",
                            "VolumeOptions": {"NoCopy": True}}) \
        == MountRequest("volume", "vv", "/c", copy_data=False)


@pytest.mark.parametrize("mount, message", [
    ({"Type": "nfs", "Target": "/c"}, "mount type unknown"),
    ({"Type": "bind", "Target": "/c"}, "field Source must not be empty"),
    ({"Type": "bind", "Source": "rel", "Target": "/c"}, "mount path must be absolute"),
    ({"Type": "bind", "Source": "/h"}, "field Target must not be empty"),
    ({"Type": "bind", "Source": "/h", "Target": "/c", "VolumeOptions": {"NoCopy": True}},
     "field VolumeOptions must not be specified"),
    ({"Type": "volume", "Target": "/c", "BindOptions": {"NonRecursive": True}},
     "field BindOptions must not be specified"),
    ({"Type": "bind", "Source": "/h", "Target": "/c", "BindOptions": {"Propagation": "x"}},
     "invalid propagation mode"),
    ({"Type": "volume", "Source": "no/slash", "Target": "/c"}, "invalid volume name"),
    ({"Type": "bind", "Source": "/h", "Target": "/c", "BindOptions": 5},
     "invalid BindOptions"),
])
def test_parse_api_mount_errors(mount: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_api_mount(mount)


def test_create_defaults() -> None:
    hc = apply_create_defaults({"Memory": 32 << 20})
    assert hc["MemorySwap"] == 64 << 20
    assert hc["ShmSize"] == 64 << 20
    assert hc["IpcMode"] == "private" and hc["CgroupnsMode"] == "host"
    assert hc["NetworkMode"] == "default"
    assert "/proc/kcore" in hc["MaskedPaths"] and "/proc/sys" in hc["ReadonlyPaths"]
    assert apply_create_defaults({}, cgroup_version=2)["CgroupnsMode"] == "private"
    # Explicit values stay; privileged containers keep null path lists (nothing is masked).
    kept = apply_create_defaults({"Memory": 32 << 20, "MemorySwap": -1, "ShmSize": 1 << 20,
                                  "IpcMode": "host", "MaskedPaths": [], "Privileged": True})
    assert kept["MemorySwap"] == -1 and kept["ShmSize"] == 1 << 20
    assert kept["IpcMode"] == "host" and kept["MaskedPaths"] == []
    assert "ReadonlyPaths" not in kept


def test_create_defaults_bad_body() -> None:
    with pytest.raises(InvalidArgument, match="invalid HostConfig"):
        apply_create_defaults([])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="invalid Memory"):
        apply_create_defaults({"Memory": "1g"})


def test_one_letter_volume_names_are_refused_as_docker_does() -> None:
    # moby's volume name pattern wants at least two characters.
    with pytest.raises(InvalidArgument, match="invalid characters for a local volume name"):
        parse_bind("v:/d")
