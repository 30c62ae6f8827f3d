"""The volume service over the local driver's plain directories and the SQLite store."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiff.core.volumes import ANONYMOUS_LABEL, check_volume_name
from skiff.errors import Conflict, InvalidArgument, NotFound
from skiff.plugins.volumes.local import LocalDriver
from skiff.plugins.volumes.store import SqliteVolumeStore
from skiff.services.volumes import VolumeService


@pytest.fixture
def users() -> dict[str, list[str]]:
    return {}


@pytest.fixture
def svc(tmp_path: Path, users: dict[str, list[str]]) -> Iterator[VolumeService]:
    store = SqliteVolumeStore(str(tmp_path / "volumes.db"))
    yield VolumeService(store, {"local": LocalDriver(str(tmp_path / "volumes"))},
                        in_use=lambda name: users.get(name, []))
    store.close()


def _tar(files: dict[str, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


@pytest.mark.parametrize("bad", ["", "a", "../x", "a/b", "-x", "x y", ".hidden", "x\n"])
def test_names_with_path_tricks_are_refused(svc: VolumeService, bad: str,
                                            tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="invalid characters"):
        svc.create(bad) if bad else check_volume_name(bad)
    assert not (tmp_path / "x").exists() and svc.list() == []


def test_create_inspect_list_remove(svc: VolumeService, tmp_path: Path) -> None:
    rec = svc.create("data", labels={"team": "a"})
    info = svc.inspect("data")
    assert info["Name"] == "data" and info["Driver"] == "local" and info["Scope"] == "local"
    assert info["Mountpoint"] == str(tmp_path / "volumes" / "data" / "_data")
    assert Path(info["Mountpoint"]).is_dir()
    assert info["Labels"] == {"team": "a"} and info["Options"] is None
    assert svc.create("data") == rec  # idempotent, as docker volume create
    assert [v["Name"] for v in svc.list({"label": ["team=a"]})] == ["data"]
    assert svc.list({"label": ["team=b"]}) == []
    assert [v["Name"] for v in svc.list({"name": ["at"]})] == ["data"]
    svc.remove("data")
    assert not (tmp_path / "volumes" / "data").exists()
    with pytest.raises(NotFound):
        svc.inspect("data")
    with pytest.raises(NotFound):
        svc.remove("data")
    svc.remove("data", force=True)  # force: a missing volume is fine


def test_anonymous_volumes_get_a_hex_name_and_the_label(svc: VolumeService) -> None:
    rec = svc.create()
    assert len(rec.name) == 64 and rec.anonymous
    assert ANONYMOUS_LABEL in svc.inspect(rec.name)["Labels"]


def test_in_use_cannot_be_removed_or_renamed(svc: VolumeService,
                                             users: dict[str, list[str]]) -> None:
    svc.create("busy")
    users["busy"] = ["c1"]
    with pytest.raises(Conflict, match=r"volume is in use - \[c1\]"):
        svc.remove("busy")
    with pytest.raises(Conflict, match="in use"):
        svc.rename("busy", "other")
    assert svc.list({"dangling": ["true"]}) == []
    assert [v["Name"] for v in svc.list({"dangling": ["false"]})] == ["busy"]
    users.clear()
    svc.remove("busy")


def test_prune_takes_only_unused_anonymous_volumes_unless_all(
        svc: VolumeService, users: dict[str, list[str]]) -> None:
    named = svc.create("keepme")
    anon_used, anon_free = svc.create(), svc.create()
    users[anon_used.name] = ["c1"]
    report = svc.prune()
    assert report["VolumesDeleted"] == [anon_free.name]
    assert {v["Name"] for v in svc.list()} == {named.name, anon_used.name}
    report = svc.prune(all_volumes=True)
    assert report["VolumesDeleted"] == [named.name]


def test_prune_label_filters(svc: VolumeService) -> None:
    svc.create("va", labels={"keep": "no"})
    svc.create("vb", labels={"keep": "yes"})
    assert svc.prune(all_volumes=True, label=["!keep=yes"])["VolumesDeleted"] == ["va"]


def test_bad_driver_and_options(svc: VolumeService) -> None:
    with pytest.raises(NotFound, match="plugin"):
        svc.create("vx", driver="nosuch")
    with pytest.raises(InvalidArgument, match="'size'"):
        svc.create("vx", options={"size": "1g"})
    with pytest.raises(InvalidArgument, match="addr="):
        svc.create("vx", options={"type": "nfs", "device": ":/export"})
    with pytest.raises(InvalidArgument, match="absolute"):
        svc.create("vx", options={"type": "none", "o": "bind", "device": "rel/dir"})
    with pytest.raises(InvalidArgument, match="'bogus'"):
        svc.create("vx", options={"type": "tmpfs", "o": "bogus"})
    assert svc.list() == []  # nothing half-made


def test_export_import_and_rename(svc: VolumeService, tmp_path: Path) -> None:
    svc.create("src")
    data = Path(svc.inspect("src")["Mountpoint"])
    (data / "dir").mkdir()
    (data / "dir" / "f.txt").write_text("hello")
    (data / "link").symlink_to("/etc/passwd")
    out = io.BytesIO()
    svc.export("src", out)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        names = sorted(tar.getnames())
        assert names == ["dir", "dir/f.txt", "link"]
        assert tar.getmember("link").issym()
    out.seek(0)
    svc.create("dst")
    svc.import_tar("dst", out)
    dst = Path(svc.inspect("dst")["Mountpoint"])
    assert (dst / "dir" / "f.txt").read_text() == "hello"
    assert (dst / "link").is_symlink()
    with pytest.raises(Conflict, match="not empty"):
        svc.import_tar("dst", _tar({"x": b"1"}))
    renamed = svc.rename("dst", "copy")
    assert renamed.name == "copy"
    assert (Path(svc.inspect("copy")["Mountpoint"]) / "dir" / "f.txt").read_text() == "hello"
    with pytest.raises(NotFound):
        svc.inspect("dst")
    with pytest.raises(InvalidArgument):
        svc.rename("copy", "../escape")


def test_hostile_import_is_confined(svc: VolumeService, tmp_path: Path) -> None:
    svc.create("vv")
    with pytest.raises(InvalidArgument):
        svc.import_tar("vv", _tar({"../../outside.txt": b"x"}))
    assert not (tmp_path / "outside.txt").exists()
    assert not (tmp_path / "volumes" / "outside.txt").exists()


def test_mount_refs_persist(svc: VolumeService, tmp_path: Path) -> None:
    svc.create("vv")
    path = svc.mount("vv", "c1")
    assert path == svc.path("vv")
    svc.mount("vv", "c2")
    reopened = SqliteVolumeStore(str(tmp_path / "volumes.db"))
    try:
        assert reopened.refs("vv") == ["c1", "c2"]
    finally:
        reopened.close()
    svc.unmount("vv", "c1")
    svc.unmount("vv", "c2")
    assert svc.store.refs("vv") == []
