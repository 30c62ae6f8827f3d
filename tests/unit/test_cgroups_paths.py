"""cgroup_path_for, systemd slice expansion, detect_mode and new_manager selection."""

from __future__ import annotations

from pathlib import Path

import pytest

from skiff.errors import InvalidArgument
from skiff.runtime.cgroups import (
    V1Manager,
    V2Manager,
    cgroup_path_for,
    detect,
    detect_mode,
    new_manager,
)
from skiff.runtime.cgroups.paths import expand_slice


@pytest.mark.parametrize(("given", "expected"), [
    (None, "/skiff/abc"),
    ("", "/skiff/abc"),
    ("/docker/abc", "/docker/abc"),
    ("/a//b/./c/", "/a/b/c"),
    ("rel/x", "/rel/x"),
    ("/../../etc", "/etc"),
    ("//x", "/x"),
])
def test_cgroupfs_paths(given: str | None, expected: str) -> None:
    assert cgroup_path_for(given, "abc") == expected


@pytest.mark.parametrize(("given", "expected"), [
    ("system.slice:docker:abc", "/system.slice/docker-abc.scope"),
    ("machine-vm.slice:libpod:abc", "/machine.slice/machine-vm.slice/libpod-abc.scope"),
    (":docker:abc", "/system.slice/docker-abc.scope"),
    ("system.slice:docker:", "/system.slice/docker-abc.scope"),
    ("-.slice:docker:abc", "/docker-abc.scope"),
    ("system.slice::abc", "/system.slice/abc.scope"),
    ("system.slice:docker:custom-x.slice", "/custom.slice/custom-x.slice"),
    (None, "/system.slice/skiff-abc.scope"),
])
def test_systemd_paths(given: str | None, expected: str) -> None:
    assert cgroup_path_for(given, "abc", systemd=True) == expected


@pytest.mark.parametrize(("given", "systemd"), [
    ("system.slice:docker", True),
    ("/abs/path", True),
    ("nope:docker:abc", True),
    ("system.slice:do/cker:abc", True),
    ("a--b.slice:p:n", True),
    ("system.slice:docker:abc", False),
])
def test_invalid_paths(given: str, systemd: bool) -> None:
    with pytest.raises(InvalidArgument, match=r"cgroupsPath|slice"):
        cgroup_path_for(given, "abc", systemd=systemd)


def test_container_id_must_be_a_single_component() -> None:
    with pytest.raises(InvalidArgument):
        cgroup_path_for(None, "a/b")


def test_expand_slice() -> None:
    assert expand_slice("a-b-c.slice") == "/a.slice/a-b.slice/a-b-c.slice"
    for bad in ("a.scope", "-a.slice", "a-.slice", ".slice"):
        with pytest.raises(InvalidArgument):
            expand_slice(bad)


def _fake_magic(monkeypatch: pytest.MonkeyPatch, table: dict[str, int]) -> None:
    def magic(path: str) -> int:
        return table[path]
    monkeypatch.setattr(detect, "fs_magic", magic)


def test_detect_mode_from_magic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root = str(tmp_path)
    unified = str(tmp_path / "unified")
    _fake_magic(monkeypatch, {root: detect.CGROUP2_SUPER_MAGIC})
    assert detect_mode(root) == "v2"
    (tmp_path / "unified").mkdir()
    _fake_magic(monkeypatch, {root: detect.TMPFS_MAGIC, unified: detect.CGROUP2_SUPER_MAGIC})
    assert detect_mode(root) == "hybrid"
    _fake_magic(monkeypatch, {root: detect.TMPFS_MAGIC, unified: detect.TMPFS_MAGIC})
    assert detect_mode(root) == "v1"


def test_real_statfs_reads_this_filesystem(tmp_path: Path) -> None:
    # /proc is procfs everywhere (PROC_SUPER_MAGIC); proves the ctypes struct is read right.
    assert detect.fs_magic("/proc") == 0x9FA0
    assert detect_mode(str(tmp_path)) == "v1"  # a plain directory is neither v2 nor hybrid


def test_new_manager_picks_the_implementation(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    assert isinstance(new_manager("/x", root=str(tmp_path), mode="v1"), V1Manager)
    assert isinstance(new_manager("/x", root=str(tmp_path), mode="v2"), V2Manager)
    _fake_magic(monkeypatch, {str(tmp_path): detect.CGROUP2_SUPER_MAGIC})
    assert isinstance(new_manager("/x", root=str(tmp_path)), V2Manager)
    with pytest.raises(InvalidArgument):
        new_manager("/x", root=str(tmp_path), mode="v3")
    with pytest.raises(InvalidArgument):
        new_manager("relative", root=str(tmp_path), mode="v2")
    with pytest.raises(InvalidArgument):
        new_manager("/a/../b", root=str(tmp_path), mode="v2")


def test_remove_if_empty_takes_only_empty_parents(tmp_path: Path) -> None:
    from skiff.errors import InvalidArgument
    from skiff.runtime.cgroups import remove_if_empty

    for h in ("memory", "pids", "unified", "systemd"):
        (tmp_path / h / "skiff").mkdir(parents=True)
    (tmp_path / "pids" / "skiff" / "still-running").mkdir()
    remove_if_empty("/skiff", root=str(tmp_path))
    assert sorted(p.parent.name for p in tmp_path.glob("*/skiff")) == ["pids"]
    with pytest.raises(InvalidArgument):
        remove_if_empty("/skiff/../..", root=str(tmp_path))
