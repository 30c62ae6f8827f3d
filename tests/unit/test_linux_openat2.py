"""The openat2 wrapper: confinement answers come back as OSError errnos callers act on."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from skiff.linux.openat2 import RESOLVE_BENEATH, openat2

_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "usr" / "bin").mkdir(parents=True)
    (tmp_path / "root" / "bin").symlink_to("usr/bin")      # stays inside: followed
    (tmp_path / "root" / "out").symlink_to(str(tmp_path))  # absolute: leaves the root
    try:
        os.close(openat2(-100, b".", _DIR, 0))
    except OSError as exc:
        if exc.errno in (errno.ENOSYS, errno.EPERM):
            pytest.skip(f"openat2 unavailable here: {exc}")
        raise
    return tmp_path / "root"


def test_beneath_follows_inner_links_and_refuses_escapes(root: Path) -> None:
    dirfd = os.open(root, _DIR)
    try:
        fd = openat2(dirfd, "bin", _DIR, RESOLVE_BENEATH)
        try:
            assert os.path.samestat(os.fstat(fd), os.stat(root / "usr" / "bin"))
        finally:
            os.close(fd)
        for escape in (b"out", b"../", b"usr/../../", str(root).encode()):
            with pytest.raises(OSError) as info:
                os.close(openat2(dirfd, escape, _DIR, RESOLVE_BENEATH))
            assert info.value.errno == errno.EXDEV, escape
        with pytest.raises(FileNotFoundError):
            openat2(dirfd, "missing", _DIR, RESOLVE_BENEATH)
    finally:
        os.close(dirfd)
