"""Applying tar layers: formats, compression, metadata, whiteouts, the diffID."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard

from skiff.core.snapshots import LayerDirs, WhiteoutForm
from skiff.errors import InvalidArgument
from skiff.plugins.diff.compression import open_layer, sniff
from skiff.plugins.diff.tar import TarDiffer, apply_layer
from tests.unit.test_layer_support import E, make_tar

ROOT = os.geteuid() == 0


def _basic() -> list[E]:
    return [
        E("etc", "dir", mode=0o755, mtime=1_500_000_000),
        E("etc/hostname", data=b"skiff\n", mode=0o640, mtime=1_400_000_000),
        E("bin", "dir", mode=0o755),
        E("bin/tool", data=b"\x7fELF" + bytes(range(256)) * 40, mode=0o4755),
        E("bin/alias", "hardlink", link="bin/tool"),
        E("bin/sh", "symlink", link="/bin/tool"),
        E("run", "dir", mode=0o1777),
        E("run/pipe", "fifo", mode=0o600),
        E("deep/implied/file", data=b"x"),
    ]


def test_plain_tar_applies_and_reports_the_diff_id(tmp_path: Path) -> None:
    raw = make_tar(_basic())
    dest = tmp_path / "dest"
    dest.mkdir()
    applied = apply_layer(io.BytesIO(raw), str(dest))
    assert str(applied.diff_id) == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert applied.size == len(raw)
    assert (dest / "etc/hostname").read_bytes() == b"skiff\n"
    assert stat.S_IMODE((dest / "etc/hostname").stat().st_mode) == 0o640
    assert (dest / "etc/hostname").stat().st_mtime_ns == 1_400_000_000 * 10**9
    # directory times are set after their content was written
    assert (dest / "etc").stat().st_mtime_ns == 1_500_000_000 * 10**9
    tool = (dest / "bin/tool").stat()
    assert stat.S_IMODE(tool.st_mode) == 0o4755
    assert tool.st_nlink == 2 and (dest / "bin/alias").stat().st_ino == tool.st_ino
    assert os.readlink(dest / "bin/sh") == "/bin/tool"
    assert stat.S_IMODE((dest / "run").stat().st_mode) == 0o1777
    assert stat.S_ISFIFO((dest / "run/pipe").lstat().st_mode)
    assert (dest / "deep/implied/file").read_bytes() == b"x"


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT])
def test_long_names_in_every_tar_format(tmp_path: Path, fmt: int) -> None:
    long_dir = "/".join(["d" * 40] * 3)  # 122 chars: needs a prefix, a GNU long name or PAX
    name = f"{long_dir}/{'f' * 60}"
    entries = [E(long_dir, "dir"), E(name, data=b"long")]
    if fmt != tarfile.USTAR_FORMAT:
        entries.append(E("l", "symlink", link="t" * 150))
    applied = apply_layer(io.BytesIO(make_tar(entries, fmt)), str(tmp_path))
    assert (tmp_path / name).read_bytes() == b"long"
    if fmt != tarfile.USTAR_FORMAT:
        assert os.readlink(tmp_path / "l") == "t" * 150
    assert applied.size > 0


def test_non_utf8_names_survive(tmp_path: Path) -> None:
    name = b"caf\xe9".decode("utf-8", "surrogateescape")
    apply_layer(io.BytesIO(make_tar([E(name, data=b"latin1")])), str(tmp_path))
    assert os.path.exists(os.path.join(os.fsencode(tmp_path), b"caf\xe9"))


def _compressions(raw: bytes) -> dict[str, bytes]:
    return {"gzip": gzip.compress(raw), "zstd": zstandard.ZstdCompressor().compress(raw),
            "none": raw}


@pytest.mark.parametrize("kind", ["gzip", "zstd", "none"])
@pytest.mark.parametrize("claimed", [
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.v1.tar",
])
def test_compression_is_sniffed_whatever_the_media_type_says(tmp_path: Path, kind: str,
                                                              claimed: str) -> None:
    raw = make_tar(_basic())
    blob = _compressions(raw)[kind]
    assert sniff(blob[:6]) == kind
    dirs = LayerDirs(str(tmp_path), WhiteoutForm.DELETE)
    seen: list[int] = []
    applied = TarDiffer().apply(dirs, io.BytesIO(blob), claimed, seen.append)
    assert str(applied.diff_id) == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert (tmp_path / "etc/hostname").read_bytes() == b"skiff\n"
    assert seen and seen[-1] == len(blob)  # progress counts compressed bytes, ends at the total


def test_multi_member_gzip_and_trailing_zeros_are_hashed(tmp_path: Path) -> None:
    raw = make_tar([E("a", data=b"1")]) + b"\0" * 4096  # extra padding after the end marker
    half = len(raw) // 2
    blob = gzip.compress(raw[:half]) + gzip.compress(raw[half:])
    with open_layer(io.BytesIO(blob)) as stream:
        applied = apply_layer(stream, str(tmp_path))
    assert str(applied.diff_id) == "sha256:" + hashlib.sha256(raw).hexdigest()


def test_fallback_to_zlib_when_isal_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "isal", None)  # makes "from isal import ..." fail
    raw = make_tar(_basic())
    stream = open_layer(io.BytesIO(gzip.compress(raw)))
    assert type(stream).__name__ == "GzipFile"
    assert str(apply_layer(stream, str(tmp_path)).diff_id).endswith(hashlib.sha256(raw).hexdigest())


@pytest.mark.parametrize("blob,needle", [
    (b"this is not a tar archive at all" * 40, "not a tar stream"),
    (make_tar([E("f", data=b"x" * 5000)])[:2048], "truncated"),
    (gzip.compress(make_tar([E("f", data=os.urandom(9000))]))[:-40], "layer"),
    (b"\x1f\x8b\x08\x00garbage-after-a-gzip-magic" * 10, "layer"),
])
def test_corrupt_layers_fail_clearly(tmp_path: Path, blob: bytes, needle: str) -> None:
    with pytest.raises(InvalidArgument, match=needle):
        TarDiffer().apply(LayerDirs(str(tmp_path), WhiteoutForm.DELETE), io.BytesIO(blob), "")


def test_existing_entries_are_replaced_never_followed(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    outside = tmp_path / "outside"
    dest.mkdir()
    outside.write_bytes(b"sentinel")
    layer1 = make_tar([E("s", "symlink", link=str(outside)), E("d", "dir"), E("d/f", data=b"old")])
    apply_layer(io.BytesIO(layer1), str(dest))
    layer2 = make_tar([E("s", data=b"new"), E("d", data=b"now a file")])
    apply_layer(io.BytesIO(layer2), str(dest))
    assert outside.read_bytes() == b"sentinel"
    assert not (dest / "s").is_symlink() and (dest / "s").read_bytes() == b"new"
    assert (dest / "d").read_bytes() == b"now a file"


def test_whiteouts_delete_in_copy_mode(tmp_path: Path) -> None:
    apply_layer(io.BytesIO(make_tar([
        E("a", "dir"), E("a/x", data=b"x"), E("a/y", data=b"y"),
        E("b", "dir"), E("b/old", data=b"o"), E("b/sub", "dir"), E("b/sub/old", data=b"o"),
        E("gone", "dir"), E("gone/deep", data=b"d"),
    ])), str(tmp_path))
    apply_layer(io.BytesIO(make_tar([
        E("a/.wh.x"), E(".wh.gone"), E(".wh.never-existed"), E("nodir/.wh.x"),
        E("b", "dir"), E("b/sub", "dir"), E("b/sub/new", data=b"n"), E("b/.wh..wh..opq"),
        E("b/kept", data=b"k"),
    ])), str(tmp_path))
    assert sorted(os.listdir(tmp_path / "a")) == ["y"]
    assert not (tmp_path / "gone").exists()
    # opaque: lower content of b is gone, this layer's own entries (before or after it) stay
    assert sorted(os.listdir(tmp_path / "b")) == ["kept", "sub"]
    assert os.listdir(tmp_path / "b/sub") == ["new"]
    assert not (tmp_path / "nodir").exists()


def test_user_xattrs_are_kept_and_overlay_xattrs_dropped(tmp_path: Path) -> None:
    try:
        os.setxattr(tmp_path, "user.probe", b"1")
    except OSError:
        pytest.skip("the temp filesystem has no user xattrs")
    apply_layer(io.BytesIO(make_tar([
        E("f", data=b"x", xattrs={"user.mime": b"text/plain", "trusted.overlay.redirect": b"/etc"}),
        E("d", "dir", xattrs={"user.dir": b"\x00\xff"}),
    ])), str(tmp_path))
    assert os.getxattr(tmp_path / "f", "user.mime") == b"text/plain"
    assert os.getxattr(tmp_path / "d", "user.dir") == b"\x00\xff"
    if ROOT:
        assert "trusted.overlay.redirect" not in os.listxattr(tmp_path / "f")


@pytest.mark.skipif(not ROOT, reason="ownership, device nodes and capabilities need root")
def test_ownership_devices_and_capabilities_as_root(tmp_path: Path) -> None:
    cap = bytes.fromhex("01000002" "00200000" "00000000" "00000000" "00000000")  # cap_net_bind_service
    apply_layer(io.BytesIO(make_tar([
        E("home", "dir", uid=1000, gid=1000, mode=0o750),
        E("home/f", data=b"x", uid=1000, gid=100, mode=0o2755),
        E("ping", data=b"elf", uid=1000, mode=0o755, xattrs={"security.capability": cap}),
        E("l", "symlink", link="nowhere", uid=7, gid=8),
        E("null", "char", dev=(1, 3), mode=0o666),
        E("loop", "block", dev=(7, 0), mode=0o660, gid=6),
    ])), str(tmp_path))
    st = (tmp_path / "home/f").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 100, 0o2755)
    assert (tmp_path / "home").stat().st_uid == 1000
    assert stat.S_IMODE((tmp_path / "home").stat().st_mode) == 0o750
    # the capability must survive the chown that would clear it
    assert os.getxattr(tmp_path / "ping", "security.capability") == cap
    assert (tmp_path / "l").lstat().st_uid == 7
    null = (tmp_path / "null").lstat()
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(null.st_mode) == 0o666
    loop = (tmp_path / "loop").lstat()
    assert stat.S_ISBLK(loop.st_mode) and loop.st_gid == 6


@pytest.mark.skipif(not ROOT, reason="overlay whiteouts (char 0:0, trusted.* xattrs) need root")
def test_whiteouts_in_overlay_form(tmp_path: Path) -> None:
    apply_layer(io.BytesIO(make_tar([
        E("a", "dir"), E("a/.wh.x"), E(".wh.gone"), E("b/.wh..wh..opq"), E("b/new", data=b"n"),
        E("c", "dir", xattrs={"trusted.overlay.opaque": b"y"}),
    ])), str(tmp_path), WhiteoutForm.OVERLAY)
    for path in ("a/x", "gone"):
        st = (tmp_path / path).lstat()
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(tmp_path / "b", "trusted.overlay.opaque") == b"y"
    assert (tmp_path / "b/new").read_bytes() == b"n"
    # a layer cannot make a directory opaque by carrying the xattr itself
    assert "trusted.overlay.opaque" not in os.listxattr(tmp_path / "c")


def test_oversized_metadata_headers_are_refused(tmp_path: Path) -> None:
    raw = make_tar([E("p" * 50, data=b"x")])
    # a PAX header claiming 64 MiB: refused before anything is read into memory
    header = bytearray(raw[:512])
    header[156:157] = b"x"
    header[124:136] = b"%011o\0" % (64 << 20)
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    with pytest.raises(InvalidArgument, match="metadata header"):
        apply_layer(io.BytesIO(bytes(header) + b"\0" * 1024), str(tmp_path))


def test_nul_in_a_pax_name_is_refused(tmp_path: Path) -> None:
    info = tarfile.TarInfo("ok")
    info.pax_headers = {"path": "bad\0name"}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(InvalidArgument, match="NUL"):
        apply_layer(io.BytesIO(buf.getvalue()), str(tmp_path))


def test_old_style_directory_with_trailing_slash(tmp_path: Path) -> None:
    raw = bytearray(make_tar([E("olddir/", mode=0o750)], fmt=tarfile.GNU_FORMAT))
    raw[156:157] = b"\0"  # V7 typeflag: a "regular file" whose name ends in a slash
    raw[148:156] = b" " * 8
    raw[148:156] = b"%06o\0 " % sum(raw[:512])
    apply_layer(io.BytesIO(bytes(raw)), str(tmp_path))
    assert (tmp_path / "olddir").is_dir()
