"""``docker export`` semantics: a tar of a snapshot's merged view, on both snapshotters.

A layered busybox image (busybox, then a layer with owners, modes, an xattr, a hardlink, a
symlink and a device, then a layer deleting a file and making a directory opaque) is unpacked
for real, then exported as an image top (COMMITTED) and as a container root (ACTIVE, changed
by the container, exported while it is mounted). The archive must show exactly the merged tree
and never a whiteout, and nothing the export made (mount point, view) may remain.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
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
from skiff.services.export import export_snapshot
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


def _mounted_under(path: Path) -> list[str]:
    with open("/proc/self/mounts") as f:
        return [line.split()[1] for line in f if line.split()[1].startswith(str(path))]


def _put(content: LocalContentStore, raw: bytes) -> tuple[Descriptor, Digest]:
    blob = gzip.compress(raw, compresslevel=1)
    info = content.put(blob)
    return Descriptor(GZIP, info.digest, info.size), Digest.from_bytes(raw)


def _image(snapshotter: DirSnapshotter, tmp_path: Path, rootfs: Path) -> str:
    content = LocalContentStore(str(tmp_path / "content"))
    layers = [
        _put(content, tar_tree(rootfs)),
        _put(content, make_tar([
            E("etc", "dir"), E("etc/motd", data=b"hello\n", mode=0o640, uid=1000, gid=100),
            E("etc/motd.hard", "hardlink", link="etc/motd"),
            E("etc/motd.link", "symlink", link="motd"),
            E("etc/secret", data=b"gone in layer 3\n"),
            E("etc/noted", data=b"x", xattrs={"user.note": b"kept"}),
            E("usr/local/bin/suid", data=b"#!/bin/sh\n", mode=0o4755),
            E("dev", "dir"), E("dev/null", "char", dev=(1, 3), mode=0o666),
            E("dev/loop9", "block", dev=(7, 9), mode=0o660, gid=6),
            E("home", "dir"), E("home/user", "dir", uid=1000, gid=1000, mode=0o700),
        ])),
        _put(content, make_tar([E("etc/.wh.secret"), E("etc/issue", data=b"layer 3\n"),
                                E("home/.wh..wh..opq"), E("home/other", "dir", uid=1001)])),
    ]
    return Unpacker(content, snapshotter, TarDiffer())([d for d, _ in layers],
                                                       [i for _, i in layers])


def _export(snapshotter: DirSnapshotter, key: str, tmp: Path) -> dict[str, tarfile.TarInfo]:
    tmp.mkdir(exist_ok=True)
    buf = io.BytesIO()
    got = export_snapshot(snapshotter, key, buf, writer=TarDiffer(), mount=mnt.mount_all,
                          unmount=mnt.unmount_all, tmpdir=str(tmp))
    raw = buf.getvalue()
    assert got.size == len(raw) and got.diff_id == Digest.from_bytes(raw)
    assert list(tmp.iterdir()) == [] and _mounted_under(tmp) == []  # mount point gone
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        members = tf.getmembers()
    names = [m.name.rstrip("/") for m in members]
    assert len(names) == len(set(names)), "an entry appears twice"
    assert not [n for n in names if ".wh." in os.path.basename(n)], "a whiteout leaked out"
    return {n: m for n, m in zip(names, members, strict=True)}


def _check_image_tree(tree: dict[str, tarfile.TarInfo]) -> None:
    assert tree["bin/busybox"].isfile() and tree["bin/busybox"].mode & 0o111
    assert tree["bin/sh"].issym() and tree["bin/sh"].linkname == "/bin/busybox"
    motd = tree["etc/motd"]
    assert motd.isfile() and (motd.mode, motd.uid, motd.gid) == (0o640, 1000, 100)
    hard = tree["etc/motd.hard"]
    assert hard.islnk() and hard.linkname == "etc/motd"  # one inode, written once
    assert tree["etc/motd.link"].issym() and tree["etc/motd.link"].linkname == "motd"
    assert tree["etc/noted"].pax_headers.get("SCHILY.xattr.user.note") == "kept"
    assert tree["usr/local/bin/suid"].mode == 0o4755
    null = tree["dev/null"]
    assert null.ischr() and (null.devmajor, null.devminor) == (1, 3)
    loop = tree["dev/loop9"]
    assert loop.isblk() and (loop.devmajor, loop.devminor, loop.gid) == (7, 9, 6)
    assert "etc/secret" not in tree  # deleted by layer 3
    assert "home/user" not in tree and tree["home/other"].uid == 1001  # opaque directory


def test_export_image_top(snapshotter: DirSnapshotter, tmp_path: Path,
                          busybox_rootfs: Path) -> None:
    top = _image(snapshotter, tmp_path, busybox_rootfs)
    before = {i.key for i in snapshotter.walk()}
    tree = _export(snapshotter, top, tmp_path / "exp")
    _check_image_tree(tree)
    assert tree["etc/issue"].isfile()
    # the merged view is the same as the tree itself: the files match what busybox has
    busybox = busybox_rootfs / "bin" / "busybox"
    assert tree["bin/busybox"].size == busybox.stat().st_size
    assert {i.key for i in snapshotter.walk()} == before  # the temporary view is gone


def test_export_container_root_while_mounted(snapshotter: DirSnapshotter, tmp_path: Path,
                                             busybox_rootfs: Path) -> None:
    top = _image(snapshotter, tmp_path, busybox_rootfs)
    target = tmp_path / "rootfs"
    target.mkdir()
    try:
        with mnt.mounted(snapshotter.prepare("ctr", top), str(target)) as root:
            Path(root, "etc/issue").unlink()  # the container deletes an image file...
            Path(root, "root/new").write_bytes(b"made in the container\n")  # ...and adds one
            tree = _export(snapshotter, "ctr", tmp_path / "exp")  # while it "runs"
            assert Path(root, "root/new").read_bytes() == b"made in the container\n"
    finally:
        leftover = _mounted_under(target)
        mnt.unmount_all(str(target), detach=True)
    assert leftover == []
    _check_image_tree(tree)
    assert "etc/issue" not in tree
    assert tree["root/new"].isfile() and tree["root/new"].size == 22
    # the ACTIVE snapshot is still writable and intact after the export
    assert snapshotter.stat("ctr").kind.value == "active"
    snapshotter.remove("ctr")


def test_export_of_unknown_snapshot_is_not_found(snapshotter: DirSnapshotter,
                                                 tmp_path: Path) -> None:
    from skiff.errors import NotFound

    tmp = tmp_path / "exp"
    tmp.mkdir()
    with pytest.raises(NotFound):
        export_snapshot(snapshotter, "sha256:nope", io.BytesIO(), writer=TarDiffer(),
                        mount=mnt.mount_all, unmount=mnt.unmount_all, tmpdir=str(tmp))
    assert list(tmp.iterdir()) == []
