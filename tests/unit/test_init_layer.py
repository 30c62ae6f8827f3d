"""The init layer's mount points: made when missing, confined to the layer's root."""

from __future__ import annotations

from pathlib import Path

import pytest

from skiff.daemon.containers.initlayer import DIRS, FILES, populate
from skiff.errors import SystemFailure


def test_missing_mount_points_are_made_and_existing_ones_kept(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("from-the-image\n")
    populate(str(root))
    for rel in DIRS:
        assert (root / rel).is_dir(), rel
    for rel in FILES:
        assert (root / rel).is_file(), rel
    assert (root / "etc" / "hostname").read_text() == "from-the-image\n"
    assert (root / "etc" / "hosts").read_text() == ""


def test_an_image_symlink_cannot_send_the_files_to_the_host(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "etc").symlink_to(victim)  # absolute: resolved inside root, where it is missing
    with pytest.raises(SystemFailure, match="init layer"):
        populate(str(root))
    assert list(victim.iterdir()) == []


def test_a_relative_symlink_inside_the_image_is_followed_within_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr" / "etc").mkdir(parents=True)
    (root / "etc").symlink_to("usr/etc")
    populate(str(root))
    assert (root / "usr" / "etc" / "resolv.conf").is_file()
