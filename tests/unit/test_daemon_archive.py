"""The pieces of docker cp / diff / commit that need no daemon: path rules, the stat header,
confined tar out and in over a plain directory, the change list, the commit config, and commit
itself into real content and metadata stores (the container's snapshot is a pair of dirs)."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from skiff.core.reference import parse_reference
from skiff.core.snapshots import LayerDirs, WhiteoutForm
from skiff.daemon.containers.archive import (
    GO_CHARDEV,
    GO_DEVICE,
    GO_DIR,
    GO_PIPE,
    GO_SETUID,
    GO_STICKY,
    GO_SYMLINK,
    ContainerFS,
    check_read_only_rootfs,
    go_file_mode,
    split_path,
)
from skiff.daemon.containers.commit import (
    ADDED,
    DELETED,
    MODIFIED,
    CommitRequest,
    commit,
    container_changes,
    image_config,
)
from skiff.daemon.containers.record import Container
from skiff.errors import InvalidArgument, NotFound, PermissionDenied
from skiff.plugins.content.local import LocalContentStore
from skiff.plugins.metadata.sqlite import SqliteMetadata
from skiff.services.images import Image, ImageService
from skiff.services.interchange import Interchange

# --- pure rules ----------------------------------------------------------------------------


def test_go_file_mode_bits() -> None:
    assert go_file_mode(stat.S_IFREG | 0o644) == 0o644
    assert go_file_mode(stat.S_IFDIR | 0o755) == GO_DIR | 0o755
    assert go_file_mode(stat.S_IFLNK | 0o777) == GO_SYMLINK | 0o777
    assert go_file_mode(stat.S_IFCHR | 0o666) == GO_DEVICE | GO_CHARDEV | 0o666
    assert go_file_mode(stat.S_IFBLK | 0o660) == GO_DEVICE | 0o660
    assert go_file_mode(stat.S_IFIFO | 0o600) == GO_PIPE | 0o600
    assert go_file_mode(stat.S_IFREG | stat.S_ISUID | 0o755) == GO_SETUID | 0o755
    assert go_file_mode(stat.S_IFDIR | stat.S_ISVTX | 0o777) == GO_DIR | GO_STICKY | 0o777


@pytest.mark.parametrize("path,name,is_dir", [
    ("/etc/passwd", "passwd", False),
    ("etc/passwd", "passwd", False),
    ("/etc/", "etc", True),
    ("/etc/.", ".", True),
    ("/", "/", True),
])
def test_split_path(path: str, name: str, is_dir: bool) -> None:
    sp = split_path(path)
    assert sp.display_name == name
    assert sp.names_directory is is_dir
    assert sp.abs_path.startswith("/")


def test_split_path_refuses_empty_and_nul() -> None:
    with pytest.raises(InvalidArgument):
        split_path("")
    with pytest.raises(InvalidArgument):
        split_path("/a\0b")


def test_read_only_rootfs_refuses_copy_in() -> None:
    check_read_only_rootfs(False, "c")
    with pytest.raises(PermissionDenied):
        check_read_only_rootfs(True, "c")


# --- over a directory standing in for a container root -------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "data" / "sub").mkdir(parents=True)
    (r / "data" / "hello.txt").write_text("hello\n")
    (r / "data" / "sub" / "f").write_text("deep\n")
    os.symlink("hello.txt", r / "data" / "link")
    os.symlink("/", r / "escape")
    os.symlink("../../../../..", r / "dots")
    os.symlink("data/sub", r / "dlink")
    (r / "etc").mkdir()
    (r / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1234:4321::/:/bin/sh\n")
    (r / "etc" / "group").write_text("root:x:0:\n")
    # a decoy beside the root: what an escape through "../" would reach
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("DECOY\n")
    return r


def _header(fs: ContainerFS, path: str) -> dict[str, object]:
    decoded: dict[str, object] = json.loads(base64.b64decode(fs.stat(path).header()))
    return decoded


def test_stat(root: Path) -> None:
    with ContainerFS(str(root), "c") as fs:
        st = _header(fs, "/data/hello.txt")
        assert (st["name"], st["size"], st["mode"], st["linkTarget"]) == ("hello.txt", 6, 0o644, "")
        link = _header(fs, "/data/link")
        assert int(str(link["mode"])) & GO_SYMLINK and link["linkTarget"] == "/data/hello.txt"
        assert _header(fs, "/escape")["linkTarget"] == "/"
        assert _header(fs, "/dots")["linkTarget"] == "/"
        followed = _header(fs, "/dlink/")  # a trailing slash follows the last element
        assert followed["name"] == "dlink" and followed["mode"] == GO_DIR | 0o755
        with pytest.raises(NotFound):
            fs.stat("/data/hello.txt/")  # a file is no directory
        with pytest.raises(NotFound, match="Could not find the file /nope in container c"):
            fs.stat("/nope")


def _tar_of(fs: ContainerFS, path: str) -> dict[str, tarfile.TarInfo | bytes]:
    buf = io.BytesIO()
    fs.write_tar(path, buf)
    buf.seek(0)
    out: dict[str, tarfile.TarInfo | bytes] = {}
    with tarfile.open(fileobj=buf) as tar:
        for m in tar:
            f = tar.extractfile(m) if m.isfile() else None
            out[m.name] = f.read() if f is not None else m
    return out


def test_tar_names_follow_docker_rules(root: Path) -> None:
    with ContainerFS(str(root), "c") as fs:
        assert sorted(_tar_of(fs, "/data")) == ["data", "data/hello.txt", "data/link",
                                                "data/sub", "data/sub/f"]
        assert sorted(_tar_of(fs, "/data/.")) == [".", "./hello.txt", "./link", "./sub",
                                                  "./sub/f"]
        link = _tar_of(fs, "/data/link")["link"]
        assert isinstance(link, tarfile.TarInfo) and link.linkname == "hello.txt"
        followed = _tar_of(fs, "/dlink/")  # named as asked, content of the target
        assert sorted(followed) == ["dlink", "dlink/f"] and followed["dlink/f"] == b"deep\n"


def test_tar_through_escaping_links_stays_inside(root: Path) -> None:
    with ContainerFS(str(root), "c") as fs:
        for path in ("/escape/etc/passwd", "/dots/etc/passwd", "/../../etc/passwd"):
            got = _tar_of(fs, path)["passwd"]
            assert isinstance(got, bytes) and got.startswith(b"root:x:0:0"), path


def _tar(*members: tuple[str, bytes | None, str]) -> io.BytesIO:
    """(name, data or None, symlink target or "") -> a tar in memory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, target in members:
            info = tarfile.TarInfo(name)
            if target:
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
            elif data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def test_extract_into_directory(root: Path) -> None:
    with ContainerFS(str(root), "c") as fs:
        fs.extract("/data", _tar(("new", None, ""), ("new/x", b"X", "")),
                   no_overwrite_dir_non_dir=True, owner=None)
        # a symlinked destination resolves inside the root: /escape -> / is the root itself
        fs.extract("/escape/etc", _tar(("y", b"Y", "")), no_overwrite_dir_non_dir=True,
                   owner=None)
    assert (root / "data" / "new" / "x").read_text() == "X"
    assert (root / "etc" / "y").read_text() == "Y"


@pytest.mark.parametrize("members", [
    (("../../outside", b"x", ""),),
    (("/abs", b"x", ""),),
    (("l", None, "/"), ("l/outside", b"x", "")),
    (("l", None, "../../.."), ("l/outside", b"x", "")),
    ((".wh.hello.txt", b"", ""),),
])
def test_extract_refuses_hostile_entries(root: Path,
                                         members: tuple[tuple[str, bytes | None, str], ...]
                                         ) -> None:
    before = sorted(p.name for p in root.parent.iterdir())
    with ContainerFS(str(root), "c") as fs, pytest.raises(InvalidArgument):
        fs.extract("/data", _tar(*members), no_overwrite_dir_non_dir=False, owner=None)
    assert sorted(p.name for p in root.parent.iterdir()) == before
    assert not (root / "outside").exists() and not (root / "abs").exists()
    assert (root / "data" / "hello.txt").exists()  # a whiteout name deleted nothing


def test_extract_destination_rules(root: Path) -> None:
    with ContainerFS(str(root), "c") as fs:
        with pytest.raises(NotFound):
            fs.extract("/nope", _tar(("x", b"", "")), no_overwrite_dir_non_dir=True, owner=None)
        with pytest.raises(InvalidArgument, match="not a directory"):
            fs.extract("/data/hello.txt", _tar(("x", b"", "")), no_overwrite_dir_non_dir=True,
                       owner=None)
        with pytest.raises(InvalidArgument, match="cannot overwrite non-directory"):
            fs.extract("/data", _tar(("hello.txt", None, "")), no_overwrite_dir_non_dir=True,
                       owner=None)
        with pytest.raises(InvalidArgument, match="cannot overwrite directory"):
            fs.extract("/data", _tar(("sub", b"file", "")), no_overwrite_dir_non_dir=True,
                       owner=None)
        assert (root / "data" / "sub" / "f").exists()
        # without the flag a file may replace a directory, as tar does
        fs.extract("/data", _tar(("sub", b"file", "")), no_overwrite_dir_non_dir=False,
                   owner=None)
    assert (root / "data" / "sub").read_text() == "file"


def test_owner_from_the_containers_passwd(root: Path) -> None:
    with ContainerFS(str(root), "c") as fs:
        assert fs.owner("app") == (1234, 4321)
        assert fs.owner("7:8") == (7, 8)
        with pytest.raises(InvalidArgument):
            fs.owner("nobody-here")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_extract_with_owner(root: Path) -> None:
    with ContainerFS(str(root), "c") as fs:
        fs.extract("/data", _tar(("owned", b"o", "")), no_overwrite_dir_non_dir=True,
                   owner=(1234, 4321))
    st = os.lstat(root / "data" / "owned")
    assert (st.st_uid, st.st_gid) == (1234, 4321)


# --- docker diff over the copy snapshotter's form ------------------------------------------


class _Dirs:
    def __init__(self, dirs: LayerDirs) -> None:
        self.dirs = dirs

    def layer_dirs(self, key: str) -> LayerDirs:
        assert key == "container-x"
        return self.dirs


def _container() -> Container:
    return Container(id="x", name="n", image="busybox", image_id="sha256:" + "0" * 64,
                     config={}, host_config={}, snapshot_key="container-x")


def test_changes_whole_tree_form(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    for d in (old, new):
        (d / "etc").mkdir(parents=True)
        (d / "etc" / "hostname").write_text("a\n")
        (d / "etc" / "group").write_text("g\n")
        (d / "same").mkdir()
        (d / "same" / "f").write_text("f")
        (d / "gone").mkdir()
        (d / "gone" / "inner").write_text("i")
    for d in (old, new):  # the copy snapshotter keeps times: unchanged files compare equal
        for f in ("etc/hostname", "etc/group", "same/f", "gone/inner"):
            os.utime(d / f, ns=(0, 0))
    (new / "etc" / "hostname").write_text("changed\n")
    (new / "etc" / "group").unlink()
    (new / "gone" / "inner").unlink()
    (new / "gone").rmdir()
    (new / "added" / "deep").mkdir(parents=True)
    (new / "added" / "deep" / "x").write_text("x")
    dirs = LayerDirs(str(new), WhiteoutForm.DELETE, str(old))
    got = {(c["Path"], c["Kind"]) for c in container_changes(_Dirs(dirs), _container())}  # type: ignore[arg-type]
    assert got == {("/etc", MODIFIED), ("/etc/hostname", MODIFIED), ("/etc/group", DELETED),
                   ("/gone", DELETED), ("/added", ADDED), ("/added/deep", ADDED),
                   ("/added/deep/x", ADDED)}


def test_changes_overlay_form(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "etc").mkdir(parents=True)
    (lower / "etc" / "hostname").write_text("a\n")
    (upper / "etc").mkdir(parents=True)
    (upper / "etc" / "hostname").write_text("b\n")
    (upper / "new").write_text("n")
    dirs = LayerDirs(str(upper), WhiteoutForm.OVERLAY, lowers=(str(lower),))
    got = [(c["Path"], c["Kind"]) for c in container_changes(_Dirs(dirs), _container())]  # type: ignore[arg-type]
    assert got == [("/etc", MODIFIED), ("/etc/hostname", MODIFIED), ("/new", ADDED)]


@pytest.mark.skipif(os.geteuid() != 0, reason="overlay whiteouts are 0:0 char devices (mknod)")
def test_changes_overlay_whiteout(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "etc").mkdir(parents=True)
    (lower / "etc" / "group").write_text("g")
    (upper / "etc").mkdir(parents=True)
    os.mknod(upper / "etc" / "group", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    dirs = LayerDirs(str(upper), WhiteoutForm.OVERLAY, lowers=(str(lower),))
    got = [(c["Path"], c["Kind"]) for c in container_changes(_Dirs(dirs), _container())]  # type: ignore[arg-type]
    assert got == [("/etc", MODIFIED), ("/etc/group", DELETED)]


# --- the committed image's config ------------------------------------------------------------


def test_image_config_merges_body_then_changes() -> None:
    container = {"Image": "busybox", "Cmd": ["sh"], "Env": ["A=1"], "WorkingDir": "/w",
                 "HostConfig": {"Privileged": True}}
    cfg = image_config(container, {"Env": ["B=2"], "Cmd": None, "User": ""},
                       ['CMD ["echo","x"]', "ENV C=3"])
    assert cfg["Cmd"] == ["echo", "x"]
    assert cfg["Env"] == ["B=2", "C=3"]
    assert cfg["WorkingDir"] == "/w"
    assert "Image" not in cfg and "HostConfig" not in cfg and "User" not in cfg
    with pytest.raises(InvalidArgument, match="FROM"):
        image_config(container, None, ["FROM scratch"])


def test_extract_takes_compressed_tars_and_refuses_garbage(root: Path) -> None:
    import gzip
    import lzma

    with ContainerFS(str(root), "c") as fs:
        fs.extract("/data", io.BytesIO(gzip.compress(_tar(("gz", b"G", "")).getvalue())),
                   no_overwrite_dir_non_dir=True, owner=None)
        fs.extract("/data", io.BytesIO(lzma.compress(_tar(("xz", b"X", "")).getvalue())),
                   no_overwrite_dir_non_dir=True, owner=None)
        with pytest.raises(InvalidArgument):
            fs.extract("/data", io.BytesIO(b"this is not a tar archive at all" * 40),
                       no_overwrite_dir_non_dir=True, owner=None)
    assert (root / "data" / "gz").read_text() == "G"
    assert (root / "data" / "xz").read_text() == "X"


# --- commit into a real content store and image service (the snapshot is a stand-in) -----


def _image_service(tmp_path: Path) -> tuple[ImageService, Image]:
    content = LocalContentStore(str(tmp_path / "content"))
    meta = SqliteMetadata(str(tmp_path / "meta.db"))
    images = ImageService(content, meta)
    base = Interchange(images, meta, tmpdir=str(tmp_path)).import_rootfs(
        io.BytesIO(_tar(("etc", None, ""), ("etc/hostname", b"a\n", "")).getvalue()),
        names=[parse_reference("base:1")], changes=['CMD ["sh"]'])
    return images, base


def _committer(tmp_path: Path, changed: bool) -> tuple[_Dirs, Container]:
    old, new = tmp_path / "old", tmp_path / "new"
    for d in (old, new):
        (d / "etc").mkdir(parents=True)
        (d / "etc" / "hostname").write_text("a\n")
        os.utime(d / "etc" / "hostname", ns=(0, 0))
    if changed:
        (new / "added.txt").write_text("new\n")
    dirs = _Dirs(LayerDirs(str(new), WhiteoutForm.DELETE, str(old)))
    return dirs, _container()


def test_commit_adds_a_layer_and_history(tmp_path: Path) -> None:
    images, base = _image_service(tmp_path)
    dirs, c = _committer(tmp_path, changed=True)
    c.image_id = str(base.id)
    c.config = {"Cmd": ["sh", "-c", "echo hi"], "Env": ["A=1"], "Image": "base:1"}
    req = CommitRequest(names=(parse_reference("out:2"),), comment="msg", author="me",
                        changes=("ENV B=2",))
    img = commit(images, dirs, c, req)  # type: ignore[arg-type]
    assert images.get("out:2").id == img.id
    assert img.config.diff_ids[:-1] == base.config.diff_ids
    assert len(img.config.diff_ids) == len(base.config.diff_ids) + 1
    assert img.config.config["Cmd"] == ["sh", "-c", "echo hi"]
    assert img.config.config["Env"] == ["A=1", "B=2"]
    assert "Image" not in img.config.config
    last = img.config.history[-1]
    assert (last.comment, last.author, last.created_by, last.empty_layer) == (
        "msg", "me", "sh -c echo hi", False)
    with images.content.open(img.config.diff_ids[-1]) as f, tarfile.open(fileobj=f) as tar:
        assert tar.getnames() == ["added.txt"]
    assert images.metadata.list_leases() == []  # the commit's lease is gone


def test_commit_of_no_changes_adds_only_history(tmp_path: Path) -> None:
    images, base = _image_service(tmp_path)
    dirs, c = _committer(tmp_path, changed=False)
    c.image_id = str(base.id)
    c.config = {"Cmd": ["true"]}
    img = commit(images, dirs, c, CommitRequest())  # type: ignore[arg-type]
    assert img.config.diff_ids == base.config.diff_ids
    assert img.config.history[-1].empty_layer is True
    assert len(img.config.history) == len(base.config.history) + 1
    assert img.dangling  # no name asked for
    with pytest.raises(InvalidArgument):
        commit(images, dirs, c, CommitRequest(changes=("RUN true",)))  # type: ignore[arg-type]
