"""The handles by which stage 2 joins its cgroups (cgroups.join), on a fake cgroupfs tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from skiff.runtime.cgroups import V1Manager, V2Manager
from skiff.runtime.cgroups.join import open_join


def _v1_tree(root: Path, path: str) -> None:
    for h in ("cpu,cpuacct", "memory", "pids"):
        d = root / h / path.lstrip("/")
        d.mkdir(parents=True)
        (d / "tasks").write_text("")
    (root / "unified" / path.lstrip("/")).mkdir(parents=True)


def test_enter_self_writes_zero_to_every_v1_tasks_file_and_closes(tmp_path: Path) -> None:
    _v1_tree(tmp_path, "/skiff/c1")
    join = V1Manager("/skiff/c1", str(tmp_path), hybrid=True).open_join()
    fds = [*join.task_fds, join.clone_fd]
    assert len(join.task_fds) == 3
    assert join.clone_dir == str(tmp_path / "unified" / "skiff" / "c1")
    join.enter_self()
    for h in ("cpu,cpuacct", "memory", "pids"):
        assert (tmp_path / h / "skiff" / "c1" / "tasks").read_text() == "0"
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)  # type: ignore[arg-type]
    assert join.task_fds == [] and join.clone_fd is None


def test_v2_join_is_a_directory_to_clone_into(tmp_path: Path) -> None:
    (tmp_path / "skiff" / "c2").mkdir(parents=True)
    join = V2Manager("/skiff/c2", str(tmp_path)).open_join()
    try:
        assert join.task_fds == []
        assert join.clone_fd is not None
        assert os.path.samefile(f"/proc/self/fd/{join.clone_fd}", tmp_path / "skiff" / "c2")
    finally:
        join.close()


def test_missing_tasks_file_is_an_error_and_leaks_nothing(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "tasks").write_text("")
    (tmp_path / "b").mkdir()  # no tasks: not a cgroup directory
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(FileNotFoundError):
        open_join([str(tmp_path / "a"), str(tmp_path / "b")], None)
    assert set(os.listdir("/proc/self/fd")) == before


def test_enter_self_names_the_file_that_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "tasks").write_text("")
    join = open_join([str(tmp_path / "a")], None)
    os.close(join.task_fds[0])
    join.task_fds = [os.open("/proc/self/stat", os.O_RDONLY)]  # a write to it fails (EBADF)
    with pytest.raises(Exception, match=r"join cgroup .*a/tasks"):
        join.enter_self()
