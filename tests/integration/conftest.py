"""Fixtures for real containers: a runtime driver and a syscall probe."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.support import HELPERS, RuntimeDriver


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


