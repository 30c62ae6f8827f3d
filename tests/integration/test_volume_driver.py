"""The local driver's option mounts (tmpfs, bind) for real: made for the first user, undone
after the last, and left alone for a plain directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiff.errors import NotFound
from skiff.plugins.volumes.local import LocalDriver
from skiff.plugins.volumes.store import SqliteVolumeStore
from skiff.services.volumes import VolumeService


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[VolumeService]:
    store = SqliteVolumeStore(str(tmp_path / "volumes.db"))
    yield VolumeService(store, {"local": LocalDriver(str(tmp_path / "volumes"))},
                        in_use=lambda _name: [])
    store.close()


def _fs(path: str) -> str | None:
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if fields[1] == path:
                return fields[2]
    return None


def test_tmpfs_volume_is_mounted_for_its_users_only(svc: VolumeService) -> None:
    svc.create("scratch", options={"type": "tmpfs", "device": "tmpfs", "o": "size=4m,mode=0750"})
    path = svc.path("scratch")
    assert _fs(path) is None  # nothing mounted until someone uses it
    assert svc.mount("scratch", "c1") == path
    assert _fs(path) == "tmpfs"
    assert os.stat(path).st_mode & 0o7777 == 0o750
    svc.mount("scratch", "c2")
    svc.unmount("scratch", "c1")
    assert _fs(path) == "tmpfs"  # c2 still has it
    svc.unmount("scratch", "c2")
    assert _fs(path) is None
    svc.remove("scratch")
    assert not os.path.exists(path)


def test_tmpfs_size_limit_holds(svc: VolumeService) -> None:
    svc.create("small", options={"type": "tmpfs", "device": "tmpfs", "o": "size=1m"})
    path = Path(svc.mount("small", "c1"))
    try:
        with pytest.raises(OSError) as err, open(path / "big", "wb") as f:
            f.write(b"\0" * (2 << 20))
            f.flush()
        assert err.value.errno == 28  # ENOSPC
    finally:
        svc.unmount("small", "c1")
        svc.remove("small")


def test_bind_volume_shows_the_host_directory(svc: VolumeService, tmp_path: Path) -> None:
    host = tmp_path / "hostdir"
    host.mkdir()
    (host / "seen.txt").write_text("from the host")
    svc.create("hostbind", options={"type": "none", "o": "bind", "device": str(host)})
    path = Path(svc.mount("hostbind", "c1"))
    try:
        assert (path / "seen.txt").read_text() == "from the host"
    finally:
        svc.unmount("hostbind", "c1")
    assert not (path / "seen.txt").exists()
    svc.remove("hostbind")
    assert (host / "seen.txt").exists()  # removing the volume never touches the host dir


def test_bind_volume_of_a_missing_directory_fails_clearly(svc: VolumeService,
                                                           tmp_path: Path) -> None:
    svc.create("gone", options={"type": "none", "o": "bind", "device": str(tmp_path / "nope")})
    with pytest.raises(NotFound, match="does not exist"):
        svc.mount("gone", "c1")
    assert svc.store.refs("gone") == []
    svc.remove("gone")
