"""Snapshotters with real mounts (root): layer stacks, whiteouts, views, 120+ layers, cleanup."""

from __future__ import annotations

import errno
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiff.core.snapshots import Mount
from skiff.plugins.diff.changes import iter_changes, write_diff
from skiff.plugins.diff.tar import apply_layer
from skiff.plugins.snapshots import mount as mnt
from skiff.plugins.snapshots.base import DirSnapshotter
from skiff.plugins.snapshots.copy import CopySnapshotter
from skiff.plugins.snapshots.overlay import OverlaySnapshotter, overlay_supported
from tests.unit.test_layer_support import E, make_tar


@pytest.fixture(params=["copy", "overlay"])
def snapshotter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DirSnapshotter]:
    if request.param == "overlay":
        if not overlay_supported():
            pytest.skip("no overlayfs in this kernel")
        sn: DirSnapshotter = OverlaySnapshotter(str(tmp_path / "snap"))
    else:
        sn = CopySnapshotter(str(tmp_path / "snap"))
    yield sn
    sn.close()


@pytest.fixture
def target(tmp_path: Path) -> Iterator[str]:
    t = tmp_path / "mnt"
    t.mkdir()
    yield str(t)
    # the test must have unmounted: a leftover mount is a failure, then cleaned up
    leftover = mnt.is_mountpoint(str(t))
    mnt.unmount_all(str(t), detach=True)
    assert not leftover, f"{t} still mounted after the test"


def _layer(sn: DirSnapshotter, key: str, parent: str | None, entries: list[E]) -> None:
    sn.prepare(f"{key}-active", parent)
    dirs = sn.layer_dirs(f"{key}-active")
    apply_layer(io.BytesIO(make_tar(entries)), dirs.upper, dirs.whiteouts, dirs.lowers)
    sn.commit(key, f"{key}-active")


def _stack(sn: DirSnapshotter) -> None:
    _layer(sn, "l1", None, [E("etc", "dir", mode=0o755), E("etc/a", data=b"a1"),
                            E("etc/gone", data=b"g"), E("opq", "dir"), E("opq/old", data=b"o")])
    _layer(sn, "l2", "l1", [E("etc/a", data=b"a2"), E("etc/.wh.gone"), E("opq/.wh..wh..opq"),
                            E("opq/new", data=b"n")])


def test_container_view_of_a_layer_stack(snapshotter: DirSnapshotter, target: str) -> None:
    _stack(snapshotter)
    mounts = snapshotter.prepare("ctr", "l2")
    with mnt.mounted(mounts, target) as root:
        assert Path(root, "etc/a").read_bytes() == b"a2"
        assert not os.path.lexists(os.path.join(root, "etc/gone"))
        assert os.listdir(os.path.join(root, "opq")) == ["new"]
        Path(root, "etc/written").write_bytes(b"by the container")
        os.unlink(os.path.join(root, "etc/a"))
    assert not mnt.is_mountpoint(target)
    names = set(iter_changes(snapshotter.layer_dirs("ctr")))
    assert {"etc/written", "etc/.wh.a"} <= names
    assert not any(n.startswith("opq") for n in names)  # untouched by the container
    # the committed layers did not change under the container's writes
    view = snapshotter.view("v", "l2")
    with mnt.mounted(view, target) as root:
        assert Path(root, "etc/a").read_bytes() == b"a2"
        with pytest.raises(OSError) as info:
            Path(root, "etc/x").write_bytes(b"no")
        assert info.value.errno == errno.EROFS


def test_single_layer_view_and_base_prepare(snapshotter: DirSnapshotter, target: str) -> None:
    _layer(snapshotter, "only", None, [E("f", data=b"f")])
    with mnt.mounted(snapshotter.view("v", "only"), target) as root:
        assert os.listdir(root) == ["f"]
        with pytest.raises(OSError):
            Path(root, "g").write_bytes(b"")
    with mnt.mounted(snapshotter.prepare("fresh", None), target) as root:
        Path(root, "made").write_bytes(b"m")
    assert set(iter_changes(snapshotter.layer_dirs("fresh"))) == {"made"}


def test_many_layers_fit_the_mount_options(tmp_path: Path, target: str) -> None:
    if not overlay_supported():
        pytest.skip("no overlayfs in this kernel")
    # a deep root makes each absolute lowerdir long: 130 of them overflow one page
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "snap"
    sn = OverlaySnapshotter(str(deep))
    parent = None
    for i in range(130):
        entries = [E(f"layer{i:03d}", data=str(i).encode())]
        if i:
            entries.append(E(f".wh.layer{i - 1:03d}"))  # each layer hides the previous one's file
        if i == 64:
            entries.append(E("middle", data=b"m"))
        _layer(sn, f"chain{i}", parent, entries)
        parent = f"chain{i}"
    mounts = sn.prepare("ctr", parent)
    options = ",".join(mounts[0].options)
    assert len(options) > os.sysconf("SC_PAGE_SIZE")  # the helper really had to compact
    with mnt.mounted(mounts, target) as root:
        assert sorted(os.listdir(root)) == ["layer129", "middle"]
        assert Path(root, "middle").read_bytes() == b"m"
    sn.close()


def test_mount_all_undoes_on_failure(tmp_path: Path, target: str) -> None:
    good = tmp_path / "good"
    good.mkdir()
    bad = Mount("bind", str(tmp_path / "does-not-exist"), ("rbind",))
    with pytest.raises(Exception, match="does-not-exist"):
        mnt.mount_all([Mount("bind", str(good), ("rbind", "ro")), bad], target)
    assert not mnt.is_mountpoint(target)


def test_remove_after_unmount_leaves_nothing(snapshotter: DirSnapshotter, target: str) -> None:
    _stack(snapshotter)
    with mnt.mounted(snapshotter.prepare("ctr", "l2"), target):
        pass
    for key in ("ctr", "l2", "l1"):
        snapshotter.remove(key)
    assert os.listdir(os.path.join(snapshotter.root, "snapshots")) == []


def test_renaming_a_lower_directory_gives_a_complete_diff(tmp_path: Path, target: str) -> None:
    if not overlay_supported():
        pytest.skip("no overlayfs in this kernel")
    sn = OverlaySnapshotter(str(tmp_path / "snap"))
    _layer(sn, "base", None, [E("olddir", "dir"), E("olddir/f", data=b"content")])
    with mnt.mounted(sn.prepare("ctr", "base"), target) as root:
        with pytest.raises(OSError) as info:  # overlayfs refuses, as with redirect_dir=off...
            os.rename(os.path.join(root, "olddir"), os.path.join(root, "newdir"))
        assert info.value.errno == errno.EXDEV
        # ...and mv (here shutil.move) falls back to copy + delete, as in any container
        shutil.move(os.path.join(root, "olddir"), os.path.join(root, "newdir"))
    buf = io.BytesIO()
    write_diff(sn.layer_dirs("ctr"), buf)
    replay = tmp_path / "replay"
    replay.mkdir()
    # the diff applied on the base alone must reproduce the renamed tree, content included
    apply_layer(io.BytesIO(make_tar([E("olddir", "dir"), E("olddir/f", data=b"content")])), str(replay))
    apply_layer(io.BytesIO(buf.getvalue()), str(replay))
    assert sorted(os.listdir(replay)) == ["newdir"]
    assert (replay / "newdir/f").read_bytes() == b"content"
    sn.close()


def test_is_mountpoint_sees_bind_mounts_of_the_same_filesystem(tmp_path: Path) -> None:
    """A bind mount of a directory onto itself stays on the same filesystem (same st_dev):
    only the mount ids tell it apart. Paths under it, files and missing paths are not."""
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "file").write_bytes(b"x")
    assert not mnt.is_mountpoint(str(d))
    mnt.mount_one(Mount(type="bind", source=str(d), options=["bind"]), str(d))
    try:
        assert mnt.is_mountpoint(str(d))
        assert mnt.is_mountpoint(str(d) + "/")
        assert not mnt.is_mountpoint(str(d / "sub"))
        assert not mnt.is_mountpoint(str(d / "file"))
    finally:
        mnt.unmount(str(d))
    assert not mnt.is_mountpoint(str(d))
    assert not mnt.is_mountpoint(str(tmp_path / "missing"))
    assert mnt.is_mountpoint("/")
