"""Shared fixtures: a busybox bundle factory and the root/integration split.

Tests under ``tests/integration`` need root and a real kernel; they are marked ``root``
automatically and skipped, with the reason, when not run as root. Tests under ``tests/unit``
need neither.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from skiff.devtools import busybox

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    is_root = os.geteuid() == 0
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.root)
            if not is_root:
                item.add_marker(pytest.mark.skip(reason="integration test: needs root"))


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox root filesystem built once per session; copy it, never change it."""
    try:
        busybox.find_busybox()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))  # the bootstrap installs it: its absence is a broken setup
    return busybox.make_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


@pytest.fixture
def make_bundle(tmp_path: Path, busybox_rootfs: Path) -> Callable[..., Path]:
    """Factory: ``make_bundle(["sh", "-c", "..."], hostname="x")`` -> a fresh bundle dir."""
    from skiff.runtime.specgen import default_spec

    counter = iter(range(1000))

    def factory(args: list[str] | None = None, terminal: bool = False,
                **overrides: Any) -> Path:
        bundle = tmp_path / f"bundle{next(counter)}"
        bundle.mkdir()
        shutil.copytree(busybox_rootfs, bundle / "rootfs", symlinks=True)
        spec = default_spec(args or ["true"], terminal=terminal)
        spec["root"]["readonly"] = False  # tests that want a read-only root say so
        spec.update(overrides)
        busybox.save_config(bundle, spec)
        return bundle

    return factory


@pytest.fixture(scope="session")
def venv_bin() -> Path:
    return VENV_BIN


@pytest.fixture
def state_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private ``--root`` for skiff-runtime, so tests never see each other's containers."""
    d = Path(tmp_path_factory.mktemp("runtime-root"))
    yield d
