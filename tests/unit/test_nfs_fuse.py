"""The FUSE kernel protocol as the userspace NFS client speaks it: request parsing, reply
layouts (sizes and fields of <linux/fuse.h>), dispatch of each opcode to a filesystem, and the
mount helper's option parsing."""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Sequence
from pathlib import Path

import pytest

from skiff.errors import InvalidArgument, Unavailable
from skiff.plugins.volumes.nfs import fuse
from skiff.plugins.volumes.nfs.fuse import Attr, Ctx, DirItem, Entry, SetAttr
from skiff.plugins.volumes.nfs.helper import parse_config
from skiff.plugins.volumes.nfs.launch import helper_budget, kernel_has_nfs, mount_fuse

ROOT = 1


def _attr(ino: int, mode: int, size: int = 0) -> Attr:
    return Attr(ino=ino, mode=mode, nlink=1, uid=1000, gid=100, size=size, blocks=0,
                atime=(1, 2), mtime=(3, 4), ctime=(5, 6))


class MemFs(fuse.Operations):
    """A tiny in-memory filesystem: a root directory of regular files."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[int, bytearray]] = {}
        self.forgotten: list[tuple[int, int]] = []
        self.changes: list[SetAttr] = []

    def _ino(self, name: str) -> int:
        return self.files[name][0]

    def lookup(self, ctx: Ctx, parent: int, name: str) -> Entry:
        if name not in self.files:
            raise OSError(errno.ENOENT, name)
        ino, data = self.files[name]
        return Entry(ino, _attr(ino, 0o100644, len(data)))

    def forget(self, nodeid: int, nlookup: int) -> None:
        self.forgotten.append((nodeid, nlookup))

    def getattr(self, ctx: Ctx, nodeid: int) -> Attr:
        if nodeid == ROOT:
            return _attr(ROOT, 0o040755)
        raise Unavailable("server gone")  # what an unreachable NFS server looks like

    def setattr(self, ctx: Ctx, nodeid: int, changes: SetAttr) -> Attr:
        self.changes.append(changes)
        return _attr(nodeid, 0o100000 | (changes.mode or 0o644))

    def create(self, ctx: Ctx, parent: int, name: str, mode: int,
               flags: int) -> tuple[Entry, int]:
        ino = 100 + len(self.files)
        self.files[name] = (ino, bytearray())
        return Entry(ino, _attr(ino, 0o100000 | mode)), 7

    def write(self, ctx: Ctx, nodeid: int, fh: int, offset: int, data: bytes) -> int:
        buf = next(d for i, d in self.files.values() if i == nodeid)
        buf.extend(b"\0" * max(0, offset - len(buf)))  # a write past the end leaves a hole
        buf[offset:offset + len(data)] = data
        return len(data)

    def read(self, ctx: Ctx, nodeid: int, fh: int, offset: int, size: int) -> bytes:
        buf = next(d for i, d in self.files.values() if i == nodeid)
        return bytes(buf[offset:offset + size])

    def readdir(self, ctx: Ctx, nodeid: int, fh: int, offset: int) -> Sequence[DirItem]:
        items = [DirItem(".", ROOT, 0o040000), DirItem("..", ROOT, 0o040000)]
        items += [DirItem(n, i, 0o100000) for n, (i, _) in sorted(self.files.items())]
        return items[offset:]

    def rename(self, ctx: Ctx, parent: int, name: str, newparent: int, newname: str) -> None:
        self.files[newname] = self.files.pop(name)


def _request(opcode: int, body: bytes = b"", nodeid: int = ROOT, unique: int = 9) -> bytes:
    size = fuse.IN_HEADER.size + len(body)
    return fuse.IN_HEADER.pack(size, opcode, unique, nodeid, 1000, 100, 4242, 0, 0) + body


def _answer(fs: fuse.Operations, opcode: int, body: bytes = b"",
            nodeid: int = ROOT) -> tuple[int, bytes]:
    """(errno, payload) of the reply; checks the header's length and unique."""
    reply = fuse.Session(fs, timeout=1.5).handle(fuse.parse_request(
        _request(opcode, body, nodeid, unique=77)))
    assert reply is not None
    length, error, unique = fuse.OUT_HEADER.unpack_from(reply)
    assert (length, unique) == (len(reply), 77)
    return -error, reply[fuse.OUT_HEADER.size:]


def test_request_header_is_parsed_and_checked() -> None:
    req = fuse.parse_request(_request(fuse.LOOKUP, b"name\0", nodeid=5))
    assert (req.opcode, req.nodeid, req.ctx, req.body) == (
        fuse.LOOKUP, 5, Ctx(1000, 100, 4242), b"name\0")
    with pytest.raises(ValueError, match="header says"):
        fuse.parse_request(_request(fuse.LOOKUP, b"x\0")[:-1])
    with pytest.raises(ValueError, match="shorter than its header"):
        fuse.parse_request(b"\0" * 8)


@pytest.mark.parametrize("kernel_minor, size, minor", [(40, 64, 31), (26, 64, 26),
                                                       (22, 24, 22)])
def test_init_announces_our_version_and_limits(kernel_minor: int, size: int,
                                               minor: int) -> None:
    body = struct.pack("<IIII", 7, kernel_minor, 65536, fuse.FUSE_BIG_WRITES | 1) + b"\0" * 48
    session = fuse.Session(MemFs(), max_write=65536)
    reply = session.handle(fuse.parse_request(_request(fuse.INIT, body)))
    assert reply is not None
    payload = reply[fuse.OUT_HEADER.size:]
    assert len(payload) == size
    major, got_minor, _ra, flags = struct.unpack_from("<IIII", payload)
    assert (major, got_minor, flags) == (7, minor, fuse.FUSE_BIG_WRITES)  # only what we want
    assert struct.unpack_from("<I", payload, 20)[0] == 65536  # max_write


def test_init_from_another_major_version_is_refused() -> None:
    code, _ = _answer(MemFs(), fuse.INIT, struct.pack("<IIII", 8, 0, 0, 0))
    assert code == errno.EPROTO


def test_lookup_answers_an_entry_with_its_cache_timeouts() -> None:
    fs = MemFs()
    fs.files["a.txt"] = (42, bytearray(b"hello"))
    code, payload = _answer(fs, fuse.LOOKUP, b"a.txt\0")
    assert code == 0 and len(payload) == 128  # fuse_entry_out
    nodeid, _gen, entry_valid, attr_valid, entry_nsec, _nsec = struct.unpack_from(
        "<QQQQII", payload)
    assert (nodeid, entry_valid, attr_valid, entry_nsec) == (42, 1, 1, 500_000_000)
    attr = fuse.decode_attr(payload[40:])
    assert (attr.ino, attr.size, attr.mode, attr.uid) == (42, 5, 0o100644, 1000)
    assert attr.mtime == (3, 4)


def test_errors_travel_as_negative_errno() -> None:
    code, payload = _answer(MemFs(), fuse.LOOKUP, b"missing\0")
    assert (code, payload) == (errno.ENOENT, b"")


def test_an_unreachable_server_is_eio_and_an_unknown_opcode_enosys() -> None:
    assert _answer(MemFs(), fuse.GETATTR, b"\0" * 16, nodeid=5)[0] == errno.EIO
    assert _answer(MemFs(), 4096)[0] == errno.ENOSYS
    assert _answer(MemFs(), fuse.SYMLINK, b"l\0t\0")[0] == errno.ENOSYS  # default Operations


def test_getattr_answers_attr_out() -> None:
    code, payload = _answer(MemFs(), fuse.GETATTR, b"\0" * 16)
    assert code == 0 and len(payload) == 104  # fuse_attr_out
    assert fuse.decode_attr(payload[16:]).mode == 0o040755


def test_forgets_take_no_reply() -> None:
    fs = MemFs()
    session = fuse.Session(fs)
    assert session.handle(fuse.parse_request(
        _request(fuse.FORGET, struct.pack("<Q", 3), nodeid=42))) is None
    batch = struct.pack("<II", 2, 0) + struct.pack("<QQ", 5, 1) + struct.pack("<QQ", 6, 2)
    assert session.handle(fuse.parse_request(_request(fuse.BATCH_FORGET, batch))) is None
    assert fs.forgotten == [(42, 3), (5, 1), (6, 2)]


def test_setattr_passes_only_the_valid_fields() -> None:
    fs = MemFs()
    valid = fuse.FATTR_MODE | fuse.FATTR_SIZE | fuse.FATTR_MTIME_NOW | fuse.FATTR_ATIME
    body = struct.pack("<IIQQQQQQIIIIIIII", valid, 0, 0, 10, 0, 111, 222, 0, 5, 6, 0,
                       0o100640, 0, 1000, 1000, 0)
    code, _ = _answer(fs, fuse.SETATTR, body, nodeid=42)
    assert code == 0
    assert fs.changes == [SetAttr(mode=0o640, size=10, atime=(111, 5), mtime="now")]


def test_create_write_read_round_trip() -> None:
    fs = MemFs()
    code, payload = _answer(fs, fuse.CREATE, struct.pack("<IIII", os.O_WRONLY, 0o600, 0o22, 0)
                            + b"new\0")
    assert code == 0 and len(payload) == 128 + 16  # entry + fuse_open_out
    nodeid = struct.unpack_from("<Q", payload)[0]
    assert struct.unpack_from("<QII", payload, 128)[0] == 7  # the file handle
    data = b"x" * 5000
    body = struct.pack("<QQIIQII", 7, 3, len(data), 0, 0, 0, 0) + data
    code, payload = _answer(fs, fuse.WRITE, body, nodeid=nodeid)
    assert (code, struct.unpack("<II", payload)) == (0, (len(data), 0))
    code, payload = _answer(fs, fuse.READ, struct.pack("<QQIIQII", 7, 0, 10, 0, 0, 0, 0),
                            nodeid=nodeid)
    assert (code, payload) == (0, b"\0\0\0xxxxxxx")


def test_rename_passes_both_names_and_the_new_directory() -> None:
    fs = MemFs()
    fs.files["old"] = (50, bytearray())
    code, payload = _answer(fs, fuse.RENAME, struct.pack("<Q", ROOT) + b"old\0new\0")
    assert (code, payload) == (0, b"")
    assert list(fs.files) == ["new"]


def test_readdir_resumes_at_the_offset_the_kernel_sends_back() -> None:
    fs = MemFs()
    for i in range(20):
        fs.files[f"file-{i:02}"] = (100 + i, bytearray())
    seen: list[str] = []
    offset = 0
    while True:
        body = struct.pack("<QQIIQII", 0, offset, 200, 0, 0, 0, 0)  # a small buffer
        code, payload = _answer(fs, fuse.READDIR, body)
        assert code == 0 and len(payload) <= 200
        ents = fuse.decode_dirents(payload)
        if not ents:
            break
        seen += [name for _, _, _, name in ents]
        offset = ents[-1][1]
    assert seen == [".", ".."] + [f"file-{i:02}" for i in range(20)]


def test_dirents_are_padded_to_eight_bytes() -> None:
    data = fuse.encode_dirents([DirItem("a", 5, 0o040000), DirItem("bcdefghij", 6, 0o120000)],
                               0, 4096)
    assert len(data) == 32 + 40  # 24-byte header + name, each rounded up to 8
    assert fuse.decode_dirents(data) == [(5, 1, 4, "a"), (6, 2, 10, "bcdefghij")]


def test_statfs_layout() -> None:
    data = fuse.encode_statfs(fuse.StatFs(blocks=10, bfree=5, bavail=4, files=100, ffree=50))
    assert len(data) == 80  # fuse_kstatfs
    assert struct.unpack_from("<QQQQQII", data) == (10, 5, 4, 100, 50, 4096, 255)


# --- the helper's options ----------------------------------------------------------------


def test_docker_style_options_become_a_mount_config() -> None:
    cfg = parse_config(":/export", "addr=10.0.0.5,rw,noexec,port=2049,mountport=20048,"
                                   "timeo=25,retrans=4,actimeo=0,nolock,hard,vers=3")
    assert (cfg.host, cfg.export, cfg.port, cfg.mountport) == (
        "10.0.0.5", "/export", 2049, 20048)
    assert (cfg.timeout, cfg.retries, cfg.cache, cfg.flags) == (2.5, 4, 0.0, ["rw", "noexec"])
    assert parse_config("10.0.0.7:/srv/x", "").host == "10.0.0.7"


@pytest.mark.parametrize("source, options, message", [
    (":/export", "addr=10.0.0.5,vers=4", "NFSv3 only"),
    (":/export", "addr=10.0.0.5,proto=udp", "TCP only"),
    (":/export", "addr=10.0.0.5,sec=krb5", "sec=sys"),
    (":/export", "addr=10.0.0.5,frobnicate", "'frobnicate' is not supported"),
    (":/export", "addr=10.0.0.5,port=x", "port=x: not a number"),
    (":/export", "", "no server address"),
    ("/export", "addr=10.0.0.5", "want \\[ADDR\\]:/export"),
    (":export", "addr=10.0.0.5", "want"),
])
def test_bad_options_are_refused_by_name(source: str, options: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_config(source, options)


def test_the_mount_budget_follows_timeo() -> None:
    assert helper_budget(["addr=x"]) == 5 * 10 + 15
    assert helper_budget(["timeo=20"]) == 5 * 2 + 15


def test_kernel_nfs_is_read_from_proc_filesystems(tmp_path: Path) -> None:
    with_nfs = tmp_path / "with"
    with_nfs.write_text("nodev\tsysfs\nnodev\tnfs\nnodev\tnfs4\n\text4\n")
    assert kernel_has_nfs(str(with_nfs))
    without = tmp_path / "without"
    without.write_text("nodev\tsysfs\nnodev\tnfsd\nnodev\tfuse\n\text4\n")  # nfsd is the server
    assert kernel_has_nfs(str(without)) == os.path.exists(
        f"/lib/modules/{os.uname().release}/kernel/fs/nfs")


# --- the helper process, as the driver starts it ------------------------------------------


def test_an_unreachable_server_fails_the_helper_with_its_reason(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, never listening: the connection is refused
        port = s.getsockname()[1]
        with pytest.raises(Unavailable) as err:
            mount_fuse(":/export", str(tmp_path), ["addr=127.0.0.1", f"port={port}",
                                                   f"mountport={port}", "timeo=10"],
                       pidfile=str(tmp_path / "pid"), log=str(tmp_path / "log"))
    assert str(err.value) == (f"mount nfs :/export on {tmp_path}: connect to "
                              f"127.0.0.1:{port}: ECONNREFUSED (Connection refused)")
    assert not (tmp_path / "pid").exists()  # nothing started, nothing to wait for


def test_a_bad_option_fails_the_helper_as_invalid_argument(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"vers=4\.1: this kernel has no NFS client"):
        mount_fuse(":/export", str(tmp_path), ["addr=127.0.0.1", "vers=4.1"],
                   pidfile=str(tmp_path / "pid"), log=str(tmp_path / "log"))
