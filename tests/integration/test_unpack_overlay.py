"""Unpack into real overlay (and copy) snapshots, mount the result, and run busybox in it."""

from __future__ import annotations

import gzip
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiff.core.content import Descriptor, Digest
from skiff.devtools.images import tar_tree
from skiff.plugins.content.local import LocalContentStore
from skiff.plugins.diff.tar import TarDiffer
from skiff.plugins.snapshots import mount as mnt
from skiff.plugins.snapshots.base import DirSnapshotter
from skiff.plugins.snapshots.copy import CopySnapshotter
from skiff.plugins.snapshots.overlay import OverlaySnapshotter, overlay_supported
from skiff.services.unpack import Unpacker
from tests.unit.test_layer_support import E, make_tar

GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


@pytest.fixture(params=["overlay", "copy"])
def snapshotter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DirSnapshotter]:
    if request.param == "overlay" and not overlay_supported():
        pytest.skip("no overlayfs in this kernel")
    cls = OverlaySnapshotter if request.param == "overlay" else CopySnapshotter
    sn = cls(str(tmp_path / "snap"))
    yield sn
    sn.close()


@pytest.fixture
def target(tmp_path: Path) -> Iterator[str]:
    t = tmp_path / "rootfs"
    t.mkdir()
    yield str(t)
    leftover = mnt.is_mountpoint(str(t))
    mnt.unmount_all(str(t), detach=True)
    assert not leftover, "the test left its rootfs mounted"


def _put(content: LocalContentStore, raw: bytes) -> tuple[Descriptor, Digest]:
    blob = gzip.compress(raw, compresslevel=1)
    info = content.put(blob)
    return Descriptor(GZIP, info.digest, info.size), Digest.from_bytes(raw)


def test_busybox_image_runs_from_unpacked_layers(snapshotter: DirSnapshotter, target: str,
                                                 tmp_path: Path, busybox_rootfs: Path) -> None:
    content = LocalContentStore(str(tmp_path / "content"))
    layers = [
        _put(content, tar_tree(busybox_rootfs)),
        _put(content, make_tar([E("etc", "dir", mode=0o755),
                                E("etc/motd", data=b"hello from layer 2\n"),
                                E("dev", "dir", mode=0o755), E("dev/null", "char", dev=(1, 3), mode=0o666),
                                E("home", "dir"), E("home/user", "dir", uid=1000, gid=1000, mode=0o700)])),
        _put(content, make_tar([E("etc/.wh.motd"), E("etc/issue", data=b"layer 3\n"),
                                E("home/.wh..wh..opq"), E("home/other", "dir", uid=1001)])),
    ]
    top = Unpacker(content, snapshotter, TarDiffer())([d for d, _ in layers], [i for _, i in layers])
    with mnt.mounted(snapshotter.prepare("ctr", top), target) as root:
        out = subprocess.run(["chroot", root, "/bin/sh", "-c",
                              "cat /etc/issue; ls /etc/motd 2>&1; ls /home; echo ok > /tmp-file"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr  # the last command (the write) decides
        assert "layer 3" in out.stdout
        assert "motd" in out.stdout + out.stderr and "No such file" in out.stdout + out.stderr
        assert out.stdout.split("\n")[-2:] == ["other", ""]  # opaque: user from layer 2 hidden
        null = os.lstat(os.path.join(root, "dev/null"))
        assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
        assert os.stat(os.path.join(root, "home/other")).st_uid == 1001
    assert "tmp-file" in os.listdir(snapshotter.layer_dirs("ctr").upper)
