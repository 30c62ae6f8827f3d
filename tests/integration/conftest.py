"""Fixtures for real containers: a runtime driver and a syscall probe."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiff.devtools.images import (
    Registry,
    ToolMissing,
    start_auth_registry,
    start_registry,
    stop_registry,
)
from skiff.plugins.content.local import LocalContentStore
from skiff.plugins.metadata.sqlite import SqliteMetadata
from skiff.runtime.cgroups import remove_if_empty
from skiff.runtime.cgroups.paths import DEFAULT_PARENT
from tests.integration.support import HELPERS, PASSWORD, USER, RuntimeDriver


@pytest.fixture(scope="session", autouse=True)
def default_cgroup_parent() -> Iterator[None]:
    """skiff-runtime, like runc, leaves the parent of its containers' cgroups (``/skiff``)
    in place, and skiffd removes it when it stops: the runtime's tests leave it empty, and
    the session takes it away (rmdir only succeeds on an empty one)."""
    yield
    remove_if_empty(DEFAULT_PARENT)


@pytest.fixture
def runtime(state_root: Path, venv_bin: Path) -> Iterator[RuntimeDriver]:
    drv = RuntimeDriver([str(venv_bin / "skiff-runtime")], state_root)
    yield drv
    # Whatever a test left, take it down, so one failure does not leak into the next test.
    for d in state_root.iterdir() if state_root.exists() else []:
        drv("delete", "--force", d.name, check=False)


@pytest.fixture
def runc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeDriver]:
    path = shutil.which("runc")
    if path is None:
        pytest.fail("runc is not installed (scripts/bootstrap installs Debian's runc)")
    root = tmp_path_factory.mktemp("runc-root")
    drv = RuntimeDriver([path], root)
    yield drv
    for d in root.iterdir():
        drv("delete", "--force", d.name, check=False)


@pytest.fixture(scope="session")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A static binary that tries one syscall and prints ok or the errno name."""
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to build the syscall probe (scripts/bootstrap installs it)")
    out = tmp_path_factory.mktemp("probe") / "probe"
    subprocess.run(["gcc", "-static", "-O2", "-o", str(out), str(HELPERS / "probe.c")],
                   check=True)
    return out


# --- Debian's docker-registry, shared by the registry-client, pull and push tests ----------


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    try:
        reg = start_registry(tmp_path_factory.mktemp("registry"))
    except ToolMissing as exc:
        pytest.skip(str(exc))
    yield reg
    stop_registry(reg)
    assert reg.proc.poll() is not None


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    try:
        reg = start_auth_registry(tmp_path_factory.mktemp("auth-registry"), USER, PASSWORD)
    except ToolMissing as exc:
        pytest.skip(str(exc))
    yield reg
    stop_registry(reg)
    assert reg.proc.poll() is not None


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[LocalContentStore, SqliteMetadata]]:
    """An empty content store and metadata database."""
    meta = SqliteMetadata(str(tmp_path / "meta.db"))
    yield LocalContentStore(str(tmp_path / "content")), meta
    meta.close()
