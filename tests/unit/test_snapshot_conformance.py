"""The Snapshotter conformance suite (metadata and files; mounts are in the integration suite).

Every snapshotter runs the same tests through the ``snapshotter`` fixture.
"""

from __future__ import annotations

import io
import multiprocessing
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from skiff.core.snapshots import Kind, Snapshotter, WhiteoutForm
from skiff.errors import Conflict, InvalidArgument, NotFound
from skiff.plugins.diff.changes import iter_changes
from skiff.plugins.diff.tar import apply_layer
from skiff.plugins.snapshots.base import DirSnapshotter
from skiff.plugins.snapshots.copy import CopySnapshotter
from skiff.plugins.snapshots.overlay import OverlaySnapshotter, overlay_supported
from tests.unit.test_layer_support import E, make_tar

ROOT = os.geteuid() == 0
Factory = Callable[[str], DirSnapshotter]
FACTORIES: dict[str, Factory] = {"copy": CopySnapshotter, "overlay": OverlaySnapshotter}


@pytest.fixture(params=sorted(FACTORIES))
def factory(request: pytest.FixtureRequest) -> Factory:
    if request.param == "overlay" and not overlay_supported():
        pytest.skip("no overlayfs in this kernel")
    return FACTORIES[str(request.param)]


@pytest.fixture
def snapshotter(factory: Factory, tmp_path: Path) -> Iterator[DirSnapshotter]:
    sn = factory(str(tmp_path / "snap"))
    yield sn
    sn.close()


def _layer(sn: DirSnapshotter, key: str, parent: str | None, entries: list[E]) -> None:
    """prepare -> apply -> commit, as the unpack service does."""
    sn.prepare(f"{key}-active", parent)
    dirs = sn.layer_dirs(f"{key}-active")
    apply_layer(io.BytesIO(make_tar(entries)), dirs.upper, dirs.whiteouts, dirs.lowers)
    sn.commit(key, f"{key}-active")


def test_is_a_snapshotter(snapshotter: DirSnapshotter) -> None:
    sn: Snapshotter = snapshotter  # the type checker verifies the protocol
    assert list(sn.walk()) == []


def test_prepare_commit_and_chain(snapshotter: DirSnapshotter) -> None:
    sn = snapshotter
    _layer(sn, "base", None, [E("a", data=b"a"), E("gone", data=b"g")])
    _layer(sn, "top", "base", [E("b", data=b"b"), E(".wh.gone")])
    info = sn.stat("top")
    assert (info.key, info.parent, info.kind) == ("top", "base", Kind.COMMITTED)
    assert sn.stat("base").parent is None
    with pytest.raises(NotFound):
        sn.stat("top-active")  # commit renames: the active key is gone
    assert sorted(i.key for i in sn.walk()) == ["base", "top"]

    sn.prepare("container", "top", labels={"owner": "test"})
    assert sn.stat("container").kind is Kind.ACTIVE
    assert sn.stat("container").labels == {"owner": "test"}
    mounts = sn.mounts("container")
    assert mounts and all(m.type in ("bind", "overlay") for m in mounts)
    if isinstance(sn, OverlaySnapshotter):
        lower = next(o for o in mounts[0].options if o.startswith("lowerdir="))
        # nearest parent first, as overlayfs stacks them
        top_fs, base_fs = lower[len("lowerdir="):].split(":")
        assert os.path.exists(os.path.join(top_fs, "b")) and os.path.exists(os.path.join(base_fs, "a"))
    else:
        fs = mounts[0].source
        assert sorted(os.listdir(fs)) == ["a", "b"]  # a full copy, the whiteout applied


def test_errors(snapshotter: DirSnapshotter) -> None:
    sn = snapshotter
    _layer(sn, "base", None, [E("a", data=b"a")])
    sn.prepare("work", "base")
    with pytest.raises(Conflict):
        sn.prepare("work", "base")
    with pytest.raises(NotFound, match="missing"):
        sn.prepare("x", "missing")
    with pytest.raises(InvalidArgument, match="not committed"):
        sn.prepare("x", "work")  # a child of an active snapshot
    with pytest.raises(Conflict, match="work"):
        sn.remove("base")  # has a child
    with pytest.raises(Conflict):
        sn.commit("base", "work")  # name taken
    with pytest.raises(InvalidArgument):
        sn.commit("again", "base")  # not active
    with pytest.raises(InvalidArgument):
        sn.mounts("base")
    assert os.path.isfile(os.path.join(sn.layer_dirs("base").upper, "a"))  # committed: readable
    with pytest.raises(NotFound):
        sn.remove("nope")
    sn.remove("work")
    sn.remove("base")
    assert list(sn.walk()) == []
    assert os.listdir(os.path.join(sn.root, "snapshots")) == []  # no directories left behind


def test_view_is_read_only_kind(snapshotter: DirSnapshotter) -> None:
    sn = snapshotter
    _layer(sn, "base", None, [E("a", data=b"a")])
    mounts = sn.view("v", "base")
    assert sn.stat("v").kind is Kind.VIEW
    assert all("ro" in m.options for m in mounts if m.type == "bind")
    with pytest.raises(InvalidArgument):
        sn.commit("v2", "v")
    with pytest.raises(InvalidArgument):
        sn.layer_dirs("v")


def test_labels_merge_on_commit(snapshotter: DirSnapshotter) -> None:
    snapshotter.prepare("k", None, labels={"a": "1"})
    snapshotter.commit("c", "k", labels={"b": "2"})
    assert snapshotter.stat("c").labels == {"a": "1", "b": "2"}


def test_usage_counts_this_layer(snapshotter: DirSnapshotter) -> None:
    sn = snapshotter
    _layer(sn, "base", None, [E("big", data=b"x" * 200_000)])
    _layer(sn, "small", "base", [E("s", data=b"y")])
    base_bytes, base_inodes = sn.usage("base")
    assert base_bytes >= 200_000 and base_inodes == 2  # the root and the file
    small_bytes, small_inodes = sn.usage("small")
    if isinstance(sn, OverlaySnapshotter):
        assert small_bytes < 100_000 and small_inodes == 2  # shares, does not copy
    else:
        assert small_bytes >= 200_000 and small_inodes == 3


def test_changes_of_an_active_snapshot(snapshotter: DirSnapshotter) -> None:
    sn = snapshotter
    _layer(sn, "base", None, [E("etc", "dir"), E("etc/a", data=b"a"), E("etc/b", data=b"b")])
    sn.prepare("c", "base")
    dirs = sn.layer_dirs("c")
    if dirs.whiteouts is WhiteoutForm.OVERLAY and not ROOT:
        pytest.skip("writing overlay whiteouts needs root")
    # the change a container makes, expressed as a layer applied to it
    apply_layer(io.BytesIO(make_tar([E("etc/.wh.a"), E("etc/new", data=b"n")])), dirs.upper,
                dirs.whiteouts)
    names = set(iter_changes(dirs))
    assert {"etc/.wh.a", "etc/new"} <= names and "etc/b" not in names


def test_persists_across_reopen(factory: Factory, tmp_path: Path) -> None:
    sn = factory(str(tmp_path / "snap"))
    _layer(sn, "base", None, [E("a", data=b"a")])
    sn.prepare("c", "base")
    sn.close()
    again = factory(str(tmp_path / "snap"))
    assert {(i.key, i.kind) for i in again.walk()} == {("base", Kind.COMMITTED), ("c", Kind.ACTIVE)}
    again.close()


def _crash_during_create(root: str, kind: str, when: str) -> None:
    """Child process: start a prepare and die abruptly at ``when``."""
    sn = FACTORIES[kind](root)
    real_rename = os.rename
    if when == "build":
        sn._build = lambda *a: os._exit(3)  # type: ignore[method-assign]
    else:
        def rename_then_die(src: str, dst: str) -> None:
            real_rename(src, dst)
            os._exit(3)  # after the directory got its id, before the row is committed
        os.rename = rename_then_die  # type: ignore[assignment]  # this child dies anyway
    sn.prepare("doomed", "base")


@pytest.mark.parametrize("when", ["build", "rename"])
def test_crash_in_the_middle_of_prepare_leaves_a_consistent_store(factory: Factory, tmp_path: Path,
                                                                   when: str) -> None:
    root = tmp_path / "snap"
    sn = factory(str(root))
    _layer(sn, "base", None, [E("a", data=b"a")])
    sn.close()
    kind = next(k for k, f in FACTORIES.items() if f is factory)
    proc = multiprocessing.get_context("fork").Process(target=_crash_during_create,
                                                       args=(str(root), kind, when))
    proc.start()
    proc.join(30)
    assert proc.exitcode == 3
    assert len(os.listdir(root / "snapshots")) == 2  # base + debris of the dead create
    again = factory(str(root))
    assert [i.key for i in again.walk()] == ["base"]
    # the debris was collected, and the key is usable
    assert len(os.listdir(root / "snapshots")) == 1
    again.prepare("doomed", "base")
    again.close()


def test_remove_of_a_busy_tree_can_be_collected_later(factory: Factory, tmp_path: Path) -> None:
    root = tmp_path / "snap"
    sn = factory(str(root))
    sn.prepare("k", None)
    row_dir = sn.store.dir_of(sn.store.get("k").id)
    os.makedirs(os.path.join(row_dir, "fs", "deep", "er"))
    sn.remove("k")
    assert not os.path.exists(row_dir)
    sn.close()


def test_directories_a_layer_implies_keep_their_metadata(snapshotter: DirSnapshotter) -> None:
    """``home/user/f`` without a ``home/user/`` entry must not reset home/user's owner and mode."""
    sn = snapshotter
    uid = 1000 if ROOT else os.geteuid()
    _layer(sn, "base", None, [E("home", "dir", mode=0o755),
                              E("home/user", "dir", mode=0o750, uid=uid, mtime=1_234_567_890)])
    _layer(sn, "top", "base", [E("home/user/f", data=b"f")])
    sn.prepare("c", "top")
    dirs = sn.layer_dirs("c")
    # overlay: the directory was made in the top layer's upper; copy: it is in the whole tree
    top_fs = sn.layer_dirs("top").upper if dirs.whiteouts is WhiteoutForm.OVERLAY else dirs.upper
    st = os.stat(os.path.join(top_fs, "home/user"))
    assert oct(st.st_mode & 0o7777) == oct(0o750)
    assert st.st_uid == uid  # (its mtime moves on: the layer added a file to it)
