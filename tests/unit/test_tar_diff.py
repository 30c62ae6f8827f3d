"""write_diff: changes -> tar with OCI whiteouts, and back again."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from skiff.core.snapshots import LayerDirs, WhiteoutForm
from skiff.plugins.diff.changes import iter_changes, write_diff
from skiff.plugins.diff.tar import apply_layer
from tests.unit.test_layer_support import E, make_tar

ROOT = os.geteuid() == 0


def _tree(path: Path) -> dict[str, tuple[int, int, bytes | str | None]]:
    out: dict[str, tuple[int, int, bytes | str | None]] = {}
    for p in sorted(path.rglob("*")):
        st = p.lstat()
        content: bytes | str | None = None
        if stat.S_ISREG(st.st_mode):
            content = p.read_bytes()
        elif stat.S_ISLNK(st.st_mode):
            content = os.readlink(p)
        mtime = 0 if stat.S_ISDIR(st.st_mode) else st.st_mtime_ns // 10**9
        out[str(p.relative_to(path))] = (st.st_mode, mtime, content)
    return out


def _base(dest: Path) -> None:
    apply_layer(io.BytesIO(make_tar([
        E("etc", "dir", mode=0o755), E("etc/a", data=b"a"), E("etc/b", data=b"b"),
        E("var", "dir", mode=0o700), E("var/lib", "dir"), E("var/lib/x", data=b"x"),
        E("opt", "dir"), E("opt/y", data=b"y"), E("link", "symlink", link="etc/a"),
    ])), str(dest))


def test_compare_mode_diff_round_trips(tmp_path: Path) -> None:
    lower, upper, replay = tmp_path / "lower", tmp_path / "upper", tmp_path / "replay"
    for d in (lower, upper, replay):
        d.mkdir()
    _base(lower)
    subprocess.run(["cp", "-a", f"{lower}/.", str(upper)], check=True)
    subprocess.run(["cp", "-a", f"{lower}/.", str(replay)], check=True)
    (upper / "etc/a").write_bytes(b"changed")
    (upper / "etc/b").unlink()
    shutil.rmtree(upper / "opt")
    (upper / "var/lib/new").write_bytes(b"new")
    os.symlink("etc/b", upper / "newlink")
    (upper / "link").unlink()
    (upper / "link").mkdir()  # a symlink replaced by a directory

    buf = io.BytesIO()
    made = write_diff(LayerDirs(str(upper), WhiteoutForm.DELETE, str(lower)), buf)
    names = list(iter_changes(LayerDirs(str(upper), WhiteoutForm.DELETE, str(lower))))
    assert "etc/.wh.b" in names and ".wh.opt" in names
    assert "etc/a" in names and "var/lib/new" in names and "newlink" in names
    assert "var/lib/x" not in names  # unchanged files are not in the diff
    assert "var" in names  # ...but the parents of changed ones are, with their modes
    assert made.size == len(buf.getvalue())

    applied = apply_layer(io.BytesIO(buf.getvalue()), str(replay))
    assert applied.diff_id == made.diff_id
    assert _tree(replay) == _tree(upper)


def test_same_changes_give_the_same_diff_id(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    upper.mkdir()
    _base(lower)
    subprocess.run(["cp", "-a", f"{lower}/.", str(upper)], check=True)
    (upper / "etc/a").write_bytes(b"z")
    dirs = LayerDirs(str(upper), WhiteoutForm.DELETE, str(lower))
    assert write_diff(dirs, io.BytesIO()).diff_id == write_diff(dirs, io.BytesIO()).diff_id


def test_hardlinks_are_written_once(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"data")
    os.link(tmp_path / "f", tmp_path / "g")
    buf = io.BytesIO()
    write_diff(LayerDirs(str(tmp_path), WhiteoutForm.DELETE), buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        members = {m.name: m for m in tar}
    assert members["f"].isfile() and members["g"].islnk() and members["g"].linkname == "f"


@pytest.mark.skipif(not ROOT, reason="overlay whiteouts (char 0:0 devices, trusted.* xattrs) need root")
def test_overlay_upper_becomes_oci_whiteouts(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "etc").mkdir()
    (upper / "etc/new").write_bytes(b"n")
    os.mknod(upper / "etc/gone", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    (upper / "opq").mkdir()
    os.setxattr(upper / "opq", "trusted.overlay.opaque", b"y")
    (upper / "opq/kept").write_bytes(b"k")
    os.mknod(upper / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a real device stays one
    names = list(iter_changes(LayerDirs(str(upper), WhiteoutForm.OVERLAY)))
    assert names == ["etc", "etc/.wh.gone", "etc/new", "null", "opq", "opq/.wh..wh..opq", "opq/kept"]

    # and applying it in overlay form gives back the same upper directory
    buf = io.BytesIO()
    write_diff(LayerDirs(str(upper), WhiteoutForm.OVERLAY), buf)
    again = tmp_path / "again"
    again.mkdir()
    apply_layer(io.BytesIO(buf.getvalue()), str(again), WhiteoutForm.OVERLAY)
    assert stat.S_ISCHR((again / "etc/gone").lstat().st_mode)
    assert (again / "etc/gone").lstat().st_rdev == 0
    assert os.getxattr(again / "opq", "trusted.overlay.opaque") == b"y"
    assert (again / "null").lstat().st_rdev == os.makedev(1, 3)


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_a_written_diff_compresses_and_applies_back(tmp_path: Path, kind: str) -> None:
    from skiff.plugins.diff.compression import open_compressor, sniff
    from skiff.plugins.diff.tar import TarDiffer

    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"hello " * 1000)
    blob = io.BytesIO()
    with open_compressor(blob, kind) as zout:
        made = write_diff(LayerDirs(str(src), WhiteoutForm.DELETE), zout)
    assert sniff(blob.getvalue()[:6]) == kind
    assert len(blob.getvalue()) < made.size  # it did compress
    dest = tmp_path / "dest"
    dest.mkdir()
    back = TarDiffer().apply(LayerDirs(str(dest), WhiteoutForm.DELETE), io.BytesIO(blob.getvalue()), "")
    assert back.diff_id == made.diff_id
    assert (dest / "f").read_bytes() == b"hello " * 1000
