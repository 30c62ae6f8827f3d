"""Planning a container's mount points (pure): precedence, Docker's JSON, refusals; and the
rule for copies into volumes."""

from __future__ import annotations

import re
from typing import Any

import pytest

from skiff.core.volumes import ANONYMOUS_LABEL
from skiff.daemon.containers.archive import VolumeBind, check_copy_target
from skiff.daemon.containers.record import Container
from skiff.daemon.volumes.plan import plan_mounts
from skiff.daemon.volumes.points import MountPoint, docker_mounts, load
from skiff.errors import InvalidArgument, NotFound, PermissionDenied

HEX64 = re.compile(r"[0-9a-f]{64}\Z")


def _no_container(ref: str) -> list[MountPoint]:
    raise NotFound(f"No such container: {ref}")


def _plan(hc: dict[str, Any], config: dict[str, Any] | None = None,
          image: dict[str, Any] | None = None, *, exists: bool = True,
          others: dict[str, list[MountPoint]] | None = None) -> list[MountPoint]:
    def lookup(ref: str) -> list[MountPoint]:
        if others and ref in others:
            return others[ref]
        return _no_container(ref)

    return plan_mounts(config or {}, hc, image or {}, lookup, lambda _p: exists).points


def _by_dest(points: list[MountPoint]) -> dict[str, MountPoint]:
    return {m.destination: m for m in points}


def test_binds_give_docker_mount_points() -> None:
    points = _plan({"Binds": ["/host/a:/a:ro", "named:/n", "named2:/n2:ro,nocopy", "/b:/b",
                              "/c:/c:rslave"]})
    got = [m.docker_json() for m in points]
    assert got == [
        {"Type": "bind", "Source": "/host/a", "Destination": "/a", "Mode": "ro", "RW": False,
         "Propagation": "rprivate"},
        {"Type": "volume", "Name": "named", "Source": "", "Destination": "/n",
         "Driver": "local", "Mode": "z", "RW": True, "Propagation": ""},
        {"Type": "volume", "Name": "named2", "Source": "", "Destination": "/n2",
         "Driver": "local", "Mode": "ro,nocopy", "RW": False, "Propagation": ""},
        {"Type": "bind", "Source": "/b", "Destination": "/b", "Mode": "", "RW": True,
         "Propagation": "rprivate"},
        {"Type": "bind", "Source": "/c", "Destination": "/c", "Mode": "rslave", "RW": True,
         "Propagation": "rslave"},
    ]
    assert _by_dest(points)["/n2"].copy_data is False
    assert not any(m.anonymous for m in points)


def test_api_mounts_and_tmpfs() -> None:
    points = _plan({"Mounts": [
        {"Type": "bind", "Source": "/h", "Target": "/m", "ReadOnly": True,
         "BindOptions": {"Propagation": "rshared", "NonRecursive": True}},
        {"Type": "volume", "Source": "vv", "Target": "/v",
         "VolumeOptions": {"NoCopy": True, "Labels": {"a": "b"},
                           "DriverConfig": {"Name": "local", "Options": {"type": "tmpfs"}}}},
        {"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1 << 20}},
    ]})
    m, v, t = points
    assert (m.type, m.rw, m.propagation, m.non_recursive, m.must_exist, m.mode) == (
        "bind", False, "rshared", True, True, "")
    assert (v.name, v.copy_data, v.volume_labels, v.volume_options, v.mode) == (
        "vv", False, {"a": "b"}, {"type": "tmpfs"}, "")
    assert t.docker_json() == {"Type": "tmpfs", "Source": "", "Destination": "/t", "Mode": "",
                               "RW": True, "Propagation": ""}


def test_missing_source_is_an_error_for_mount_not_for_binds() -> None:
    with pytest.raises(InvalidArgument, match="bind source path does not exist: /gone"):
        _plan({"Mounts": [{"Type": "bind", "Source": "/gone", "Target": "/m"}]}, exists=False)
    (point,) = _plan({"Binds": ["/gone:/m"]}, exists=False)
    assert point.must_exist is False  # made at the first run, as dockerd does
    (point,) = _plan({"Mounts": [{"Type": "bind", "Source": "/gone", "Target": "/m",
                                  "BindOptions": {"CreateMountpoint": True}}]}, exists=False)
    assert point.must_exist is False


def test_anonymous_volumes_from_v_and_the_image() -> None:
    points = _plan({"Binds": ["/h:/img-covered"], "Tmpfs": {"/tmpfs-covered": ""}},
                   config={"Volumes": {"/mine": {}}},
                   image={"Volumes": {"/data": {}, "/img-covered": {}, "/tmpfs-covered": {}}})
    by = _by_dest(points)
    assert set(by) == {"/img-covered", "/mine", "/data"}
    assert by["/img-covered"].type == "bind"
    for dest in ("/mine", "/data"):
        m = by[dest]
        assert m.anonymous and HEX64.match(m.name) and m.volume_labels == {ANONYMOUS_LABEL: ""}
        assert (m.mode, m.copy_data, m.rw) == ("", True, True)
    assert by["/mine"].name != by["/data"].name
    planned = plan_mounts({"Volumes": {"/mine": {}}}, {}, {"Volumes": {"/data": {}}},
                          _no_container, lambda _p: True)
    assert planned.volumes == {"/data": {}, "/mine": {}}


def test_volumes_from_copies_and_ro_and_precedence() -> None:
    donor = [MountPoint("volume", "/v", source="/vol/x/_data", name="x", driver="local",
                        anonymous=True),
             MountPoint("bind", "/b", source="/host", propagation="rprivate"),
             MountPoint("tmpfs", "/t")]
    points = _plan({"VolumesFrom": ["donor:ro"]}, others={"donor": donor})
    by = _by_dest(points)
    assert set(by) == {"/v", "/b"}
    assert not by["/v"].rw and not by["/b"].rw
    assert by["/v"].name == "x" and not by["/v"].anonymous and not by["/v"].copy_data
    # Binds replace what VolumesFrom put at the same place
    points = _plan({"VolumesFrom": ["donor"], "Binds": ["/other:/v"]}, others={"donor": donor})
    assert _by_dest(points)["/v"].source == "/other"
    with pytest.raises(NotFound):
        _plan({"VolumesFrom": ["ghost"]})
    with pytest.raises(InvalidArgument, match="volumes-from"):
        _plan({"VolumesFrom": ["donor:zz"]}, others={"donor": donor})


@pytest.mark.parametrize(("hc", "message"), [
    ({"Binds": ["/a:rel"]}, "invalid"),
    ({"Binds": [""]}, "invalid volume specification"),
    ({"Binds": ["/a:/x:bogus"]}, "invalid mode"),
    ({"Binds": ["../x:/x"]}, "invalid characters"),
    ({"Binds": ["/a:/x", "/b:/x"]}, "Duplicate mount point: /x"),
    ({"Binds": ["/a:/x"], "Mounts": [{"Type": "volume", "Source": "vv", "Target": "/x"}]},
     "Duplicate mount point: /x"),
    ({"Binds": ["/a:/x"], "Tmpfs": {"/x": ""}}, "Duplicate mount point: /x"),
    ({"Binds": "/a:/x"}, "Binds"),
    ({"Mounts": {"Type": "bind"}}, "Mounts"),
    ({"Mounts": [{"Type": "volume", "Source": "vv", "Target": ""}]}, "Target"),
    ({"Mounts": [{"Type": "volume", "Source": "vv", "Target": "/v",
                  "VolumeOptions": {"Labels": {"a": 1}}}]}, "Labels"),
    ({"VolumeDriver": 3}, "VolumeDriver"),
])
def test_bad_input_is_refused_naming_it(hc: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        _plan(hc)


def test_bad_image_volume_paths() -> None:
    with pytest.raises(InvalidArgument, match="absolute"):
        _plan({}, config={"Volumes": {"relative": {}}})
    with pytest.raises(InvalidArgument, match="can't be '/'"):
        _plan({}, image={"Volumes": {"/": {}}})


def test_record_round_trip_and_inspect_shape() -> None:
    points = _plan({"Binds": ["vv:/v", "/h:/h:ro"]})
    c = Container(id="c" * 64, name="n", image="busybox", image_id="sha256:" + "0" * 64,
                  config={"Cmd": ["true"]}, host_config={},
                  mount_points=[m.to_row() for m in points])
    again = Container.from_row(c.to_row())
    assert load(again.mount_points) == points
    shown = again.inspect(log_path="/l", rootfs="/r")["Mounts"]
    assert shown == docker_mounts(c.mount_points) == again.summary()["Mounts"]
    assert [m["Type"] for m in shown] == ["volume", "bind"]
    old = Container.from_row({k: v for k, v in c.to_row().items() if k != "mount_points"})
    assert old.mount_points == []  # records from before volumes load with none


def test_copy_target_rules() -> None:
    vols = [VolumeBind("/s1", "/data", True), VolumeBind("/s2", "/data/ro", False),
            VolumeBind("/s3", "/etc/conf", False)]
    check_copy_target("/data/x", True, vols, "c")  # writable volume over a read-only root
    check_copy_target("data/../data/y", True, vols, "c")
    check_copy_target("/datax/y", False, vols, "c")
    for path in ("/data/ro", "/data/ro/deeper", "/etc/conf/"):
        with pytest.raises(PermissionDenied, match="mounted volume is marked read-only"):
            check_copy_target(path, False, vols, "c")
    with pytest.raises(PermissionDenied, match="rootfs is marked read-only"):
        check_copy_target("/etc", True, vols, "c")
