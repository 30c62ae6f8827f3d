"""skiffd's docker cp / diff / export / commit, driven by the stock docker CLI and raw HTTP.

Each case runs on a running container and on an exited one (whose snapshot is mounted only
for the operation): the module's daemon fixture checks at teardown that no mount, shim or
container is left, and each test checks the temporary mount directory is empty.
"""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiff.devtools.daemon import UnixHTTP
from tests.integration.daemon_support import IMAGE, Skiffd, private_skiffd
from tests.integration.support import mounts_mentioning

GO_DIR = 1 << 31
GO_SYMLINK = 1 << 27


@pytest.fixture(scope="module")
def skiffd(busybox_rootfs: Path) -> Iterator[Skiffd]:
    with private_skiffd(busybox_rootfs, check_parent_cgroup=False) as d:
        yield d
        log = d.logfile.read_text()
        assert "Traceback" not in log, log  # no request of ours ended in an unexpected 500


@pytest.fixture(params=["running", "exited"])
def ctr(request: pytest.FixtureRequest, skiffd: Skiffd) -> Iterator[str]:
    """A container with a few known files, running (sleeping) or exited."""
    setup = ("mkdir -p /data/sub && echo hello > /data/hello.txt && echo deep > /data/sub/f && "
             "ln -s hello.txt /data/link && ln -s / /escape && ln -s ../../../../.. /dots && "
             "rm /etc/group && echo extra:x:7:7::/:/bin/sh >> /etc/passwd")
    # (not /etc/hostname: as in Docker, it is bind-mounted from the container's own files,
    # so writes to it never reach the rootfs, its diff, export or commit)
    if request.param == "running":
        cid = skiffd.run_d(IMAGE, "sh", "-c", setup + " && touch /ready && sleep 300")
        _wait_for(skiffd, cid, "/ready")
    else:
        cid = skiffd.out("create", IMAGE, "sh", "-c", setup + " && touch /ready").strip()
        skiffd.seen.add(cid)
        skiffd.docker("start", "-a", cid)
    yield cid
    skiffd.docker("rm", "-f", cid)
    assert _scratch_entries(skiffd) == []


def _wait_for(d: Skiffd, cid: str, path: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status, _ = d.api("HEAD", f"/containers/{cid}/archive?path={path}")
        if status == 200:
            return
        time.sleep(0.1)
    raise AssertionError(f"{path} never appeared in {cid}")


def _scratch_entries(d: Skiffd) -> list[str]:
    scratch = d.run / "cp"
    return os.listdir(scratch) if scratch.exists() else []


def _stat(d: Skiffd, cid: str, path: str) -> tuple[int, dict[str, object]]:
    conn_path = f"/containers/{cid}/archive?path={urllib.parse.quote(path)}"
    conn = UnixHTTP(str(d.sock))
    try:
        conn.request("HEAD", conn_path)
        resp = conn.getresponse()
        resp.read()
        header = resp.getheader("X-Docker-Container-Path-Stat")
        return resp.status, json.loads(base64.b64decode(header)) if header else {}
    finally:
        conn.close()


# --- HEAD ----------------------------------------------------------------------------------


def test_stat_header(skiffd: Skiffd, ctr: str) -> None:
    status, st = _stat(skiffd, ctr, "/data/hello.txt")
    assert status == 200
    assert st["name"] == "hello.txt" and st["size"] == 6
    assert st["mode"] == 0o644 and st["linkTarget"] == ""
    assert isinstance(st["mtime"], str) and st["mtime"].endswith("Z")
    status, st = _stat(skiffd, ctr, "/data")
    assert status == 200 and st["mode"] == GO_DIR | 0o755 and st["name"] == "data"
    status, st = _stat(skiffd, ctr, "/data/link")
    assert status == 200 and int(str(st["mode"])) & GO_SYMLINK
    assert st["linkTarget"] == "/data/hello.txt"
    status, _ = _stat(skiffd, ctr, "/nope")
    assert status == 404
    status, body = skiffd.api("GET", f"/containers/{ctr}/archive?path=/nope")
    assert status == 404 and "Could not find the file /nope" in body["message"]
    status, body = skiffd.api("GET", f"/containers/{ctr}/archive")
    assert status == 400 and "path" in body["message"]
    status, _ = skiffd.api("GET", "/containers/nosuchctr/archive?path=/")
    assert status == 404


# --- docker cp out ---------------------------------------------------------------------------


def test_cp_file_dir_and_contents_out(skiffd: Skiffd, ctr: str, tmp_path: Path) -> None:
    skiffd.docker("cp", f"{ctr}:/data/hello.txt", str(tmp_path / "h.txt"))
    assert (tmp_path / "h.txt").read_text() == "hello\n"
    skiffd.docker("cp", f"{ctr}:/data", str(tmp_path / "d1"))
    assert (tmp_path / "d1" / "sub" / "f").read_text() == "deep\n"
    assert os.readlink(tmp_path / "d1" / "link") == "hello.txt"  # a link stays a link
    (tmp_path / "d2").mkdir()
    skiffd.docker("cp", f"{ctr}:/data/.", str(tmp_path / "d2"))
    assert sorted(os.listdir(tmp_path / "d2")) == ["hello.txt", "link", "sub"]
    # -L follows a symlink named last
    skiffd.docker("cp", "-L", f"{ctr}:/data/link", str(tmp_path / "followed"))
    assert (tmp_path / "followed").read_text() == "hello\n"
    assert not (tmp_path / "followed").is_symlink()


def test_cp_whole_root_out(skiffd: Skiffd, tmp_path: Path) -> None:
    # (the fixture's container has links escaping "/", which the CLI itself refuses locally)
    cid = skiffd.out("create", IMAGE, "true").strip()
    skiffd.seen.add(cid)
    try:
        skiffd.docker("cp", f"{cid}:/", str(tmp_path / "whole"))
        assert (tmp_path / "whole" / "bin" / "busybox").is_file()
        assert (tmp_path / "whole" / "etc" / "passwd").is_file()
    finally:
        skiffd.docker("rm", "-f", cid)


def test_cp_to_stdout_is_a_tar(skiffd: Skiffd, ctr: str) -> None:
    raw = skiffd.docker("cp", f"{ctr}:/data", "-").stdout
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        names = sorted(tar.getnames())
        assert names == ["data", "data/hello.txt", "data/link", "data/sub", "data/sub/f"]
        link = tar.getmember("data/link")
        assert link.issym() and link.linkname == "hello.txt"
        f = tar.extractfile("data/hello.txt")
        assert f is not None and f.read() == b"hello\n"
    raw = skiffd.docker("cp", f"{ctr}:/data/.", "-").stdout
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        assert "./hello.txt" in tar.getnames()


def test_symlink_escapes_stay_in_the_container(skiffd: Skiffd, ctr: str, tmp_path: Path) -> None:
    # the container removed its /etc/group: the host's must not be served instead
    own_passwd = skiffd.docker("cp", f"{ctr}:/etc/passwd", "-").stdout
    for path in ("/escape/etc/passwd", "/dots/etc/passwd", "/../../../../etc/passwd"):
        raw = skiffd.docker("cp", f"{ctr}:{path}", "-").stdout
        assert raw == own_passwd, path
    with open("/etc/passwd", "rb") as f:
        host = f.read()
    with tarfile.open(fileobj=io.BytesIO(own_passwd)) as tar:
        member = tar.extractfile("passwd")
        assert member is not None and member.read() != host
    for path in ("/escape/etc/group", "/dots/etc/group"):
        res = skiffd.docker("cp", f"{ctr}:{path}", str(tmp_path / "g"), check=False)
        assert res.returncode != 0 and not (tmp_path / "g").exists(), path
    status, st = _stat(skiffd, ctr, "/escape")
    assert status == 200 and st["linkTarget"] == "/"


# --- docker cp in ----------------------------------------------------------------------------


def test_cp_into_container(skiffd: Skiffd, ctr: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "inner").mkdir(parents=True)
    (src / "a.txt").write_text("A")
    (src / "inner" / "b.txt").write_text("B")
    os.symlink("a.txt", src / "ln")
    skiffd.docker("cp", str(src / "a.txt"), f"{ctr}:/data/")
    skiffd.docker("cp", str(src), f"{ctr}:/data/copied")
    skiffd.docker("cp", str(src) + "/.", f"{ctr}:/data/sub")
    # through a symlinked destination directory that points at / of the container
    skiffd.docker("cp", str(src / "a.txt"), f"{ctr}:/escape/tmp/")
    out = skiffd.docker("cp", f"{ctr}:/data", "-").stdout
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        names = set(tar.getnames())
        assert {"data/a.txt", "data/copied/a.txt", "data/copied/inner/b.txt",
                "data/sub/a.txt", "data/sub/inner/b.txt", "data/sub/f"} <= names
        assert tar.getmember("data/copied/ln").linkname == "a.txt"
    assert not Path("/tmp/a.txt").exists() or Path("/tmp/a.txt").read_text() != "A"
    raw = skiffd.docker("cp", f"{ctr}:/tmp/a.txt", "-").stdout
    assert raw  # landed in the container's /tmp
    running = json.loads(skiffd.out("inspect", ctr))[0]["State"]["Running"]
    if running:  # the process sees the copied files in its own root
        assert skiffd.out("exec", ctr, "cat", "/data/copied/inner/b.txt") == "B"


def test_cp_archive_mode_takes_the_containers_user(skiffd: Skiffd, tmp_path: Path) -> None:
    """As Docker does (docker/cli#6870): ``-a`` chowns to the container's user; without it
    the tar's own ids are kept."""
    cid = skiffd.out("create", "-u", "1234:4321", IMAGE, "true").strip()
    skiffd.seen.add(cid)
    try:
        src = tmp_path / "f"
        src.write_text("x")
        os.chown(src, 77, 88)
        skiffd.docker("cp", "-a", str(src), f"{cid}:/tmp/owned")
        skiffd.docker("cp", str(src), f"{cid}:/tmp/kept")
        raw = skiffd.docker("cp", f"{cid}:/tmp", "-").stdout
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            owned, kept = tar.getmember("tmp/owned"), tar.getmember("tmp/kept")
            assert (owned.uid, owned.gid) == (1234, 4321)
            assert (kept.uid, kept.gid) == (77, 88)
    finally:
        skiffd.docker("rm", "-f", cid)


def test_put_errors(skiffd: Skiffd, ctr: str) -> None:
    tar = _tar([("x", b"1")])
    status, body = skiffd.api("PUT", f"/containers/{ctr}/archive?path=/nope", raw=tar)
    assert status == 404, body
    status, body = skiffd.api("PUT", f"/containers/{ctr}/archive?path=/data/hello.txt", raw=tar)
    assert status == 400 and "not a directory" in body["message"]
    # a directory over a file is refused with noOverwriteDirNonDir
    dir_tar = _tar([("hello.txt/", None)])
    status, body = skiffd.api(
        "PUT", f"/containers/{ctr}/archive?path=/data&noOverwriteDirNonDir=true", raw=dir_tar)
    assert status == 400 and "overwrite" in body["message"], body
    status, body = skiffd.api("PUT", f"/containers/{ctr}/archive?path=/data",
                              raw=b"not a tar at all" * 64)
    assert status == 400, body


def _tar(entries: list[tuple[str, bytes | None]], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            if name in (links or {}):
                info = tarfile.TarInfo(name)
                info.type, info.linkname = tarfile.SYMTYPE, (links or {})[name]
                tar.addfile(info)
            elif data is None:
                info = tarfile.TarInfo(name.rstrip("/"))
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("name,entries,links", [
    ("dotdot", [("../../../../../../tmp/skiff-cp-escape-dotdot", b"x")], {}),
    ("absolute", [("/tmp/skiff-cp-escape-absolute", b"x")], {}),
    ("through-link", [("lnk", None), ("lnk/skiff-cp-escape-through-link", b"x")],
     {"lnk": "/tmp"}),
    ("through-rel-link", [("up", None), ("up/tmp/skiff-cp-escape-through-rel-link", b"x")],
     {"up": "../../../../../../../.."}),
])
def test_hostile_tar_refused(skiffd: Skiffd, ctr: str, name: str,
                             entries: list[tuple[str, bytes | None]],
                             links: dict[str, str]) -> None:
    host = Path(f"/tmp/skiff-cp-escape-{name}")
    host.unlink(missing_ok=True)
    status, body = skiffd.api("PUT", f"/containers/{ctr}/archive?path=/data",
                              raw=_tar(entries, links))
    assert status == 400, body
    assert "refused" in body["message"] or "outside" in body["message"], body
    assert not host.exists()
    # the skiffd host's own files are untouched; nothing landed at the container's /tmp either
    status, _ = skiffd.api("HEAD", f"/containers/{ctr}/archive?path=/tmp/skiff-cp-escape-{name}")
    assert status == 404


def test_client_leaving_mid_stream_leaves_no_mount(skiffd: Skiffd) -> None:
    """An exited container's snapshot is mounted for a GET: a client that hangs up after the
    first bytes must still get it unmounted (the writer sees EPIPE and unwinds)."""
    cid = skiffd.out("create", IMAGE, "dd", "if=/dev/zero", "of=/big", "bs=1M",
                     "count=48").strip()
    skiffd.seen.add(cid)
    try:
        skiffd.docker("start", "-a", cid)
        for what in ("archive?path=/big", "export"):
            conn = UnixHTTP(str(skiffd.sock))
            conn.request("GET", f"/containers/{cid}/{what}")
            resp = conn.getresponse()
            assert resp.status == 200
            assert len(resp.read(1 << 16)) == 1 << 16
            conn.close()
            deadline = time.monotonic() + 10
            while (_scratch_entries(skiffd) or mounts_mentioning(str(skiffd.run / "cp"))) \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _scratch_entries(skiffd) == [], what
            assert mounts_mentioning(str(skiffd.run / "cp")) == [], what
        # and the daemon still serves the whole archive afterwards
        status, body = skiffd.api("GET", f"/containers/{cid}/archive?path=/big", timeout=60)
        assert status == 200 and len(body) > 48 << 20
    finally:
        skiffd.docker("rm", "-f", cid)


# --- diff / export ---------------------------------------------------------------------------


def test_docker_diff(skiffd: Skiffd, ctr: str) -> None:
    lines = set(skiffd.out("diff", ctr).splitlines())
    assert {"A /data", "A /data/hello.txt", "A /data/sub/f", "A /escape",
            "C /etc", "C /etc/passwd", "D /etc/group"} <= lines, lines
    assert not any(line.endswith(("/etc/hostname", "/etc/hosts", "/etc/resolv.conf"))
                   for line in lines), lines
    status, body = skiffd.api("GET", f"/containers/{ctr}/changes")
    assert status == 200
    assert {"Path": "/etc/group", "Kind": 2} in body
    assert {"Path": "/etc/passwd", "Kind": 0} in body
    assert {"Path": "/data/hello.txt", "Kind": 1} in body


def test_export(skiffd: Skiffd, ctr: str, tmp_path: Path) -> None:
    out = tmp_path / "fs.tar"
    skiffd.docker("export", "-o", str(out), ctr)
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
        assert {"bin/busybox", "data/hello.txt", "etc/passwd"} <= names
        assert "etc/group" not in names
        assert not any(".wh." in n for n in names)
        passwd = tar.extractfile("etc/passwd")
        assert passwd is not None and passwd.read().endswith(b"extra:x:7:7::/:/bin/sh\n")


# --- commit ----------------------------------------------------------------------------------


def test_commit_and_run(skiffd: Skiffd, ctr: str) -> None:
    tag = f"committed-{ctr[:8]}:v1"
    image_id = skiffd.out("commit", "-m", "a message", "-a", "me <me@x>",
                          "--change", 'CMD ["cat","/data/hello.txt"]', ctr, tag).strip()
    assert image_id.startswith("sha256:")
    try:
        assert skiffd.out("run", "--rm", tag) == "hello\n"
        assert skiffd.out("run", "--rm", tag, "tail", "-n1", "/etc/passwd") == \
            "extra:x:7:7::/:/bin/sh\n"
        assert skiffd.docker("run", "--rm", tag, "test", "-e", "/etc/group",
                             check=False).returncode == 1
        info = json.loads(skiffd.out("image", "inspect", tag))[0]
        assert info["Id"] == image_id
        assert info["Config"]["Cmd"] == ["cat", "/data/hello.txt"]
        assert info["Comment"] == "a message" and info["Author"] == "me <me@x>"
        base = json.loads(skiffd.out("image", "inspect", IMAGE))[0]
        assert info["RootFS"]["Layers"][:-1] == base["RootFS"]["Layers"]
        assert len(info["RootFS"]["Layers"]) == len(base["RootFS"]["Layers"]) + 1
        hist = skiffd.docker("history", "--no-trunc", "--format", "{{.Comment}}", tag,
                             check=False)
        if hist.returncode == 0:  # the images router may not serve history yet
            assert hist.stdout.decode().splitlines()[0] == "a message"
    finally:
        skiffd.docker("rmi", tag, check=False)


def test_commit_change_cmd_via_api(skiffd: Skiffd, ctr: str) -> None:
    q = urllib.parse.urlencode({"container": ctr, "repo": "apicommit", "tag": "t",
                                "changes": 'CMD ["echo","x"]', "pause": "false"})
    status, body = skiffd.api("POST", f"/commit?{q}", {"Env": ["FROM_BODY=1"]})
    assert status == 201, body
    try:
        assert skiffd.out("run", "--rm", "apicommit:t") == "x\n"
        env = skiffd.out("run", "--rm", "apicommit:t", "env")
        assert "FROM_BODY=1" in env
    finally:
        skiffd.docker("rmi", "apicommit:t", check=False)
    status, body = skiffd.api("POST", f"/commit?container={ctr}&changes=FROM+x")
    assert status == 400 and "FROM" in body["message"]
    status, body = skiffd.api("POST", "/commit?container=nosuch")
    assert status == 404


def test_commit_without_changes_adds_no_layer(skiffd: Skiffd) -> None:
    cid = skiffd.out("create", IMAGE, "true").strip()
    skiffd.seen.add(cid)
    try:
        image_id = skiffd.out("commit", cid).strip()
        info = json.loads(skiffd.out("image", "inspect", image_id))[0]
        base = json.loads(skiffd.out("image", "inspect", IMAGE))[0]
        assert info["RootFS"]["Layers"] == base["RootFS"]["Layers"]
        assert skiffd.out("diff", cid) == ""
        skiffd.docker("rmi", image_id)
    finally:
        skiffd.docker("rm", "-f", cid)


def _events(d: Skiffd, filters: dict[str, list[str]]) -> tuple[int, list[dict[str, object]]]:
    q = urllib.parse.urlencode({"since": "0", "until": str(int(time.time()) + 1),
                                "filters": json.dumps(filters)})
    conn = UnixHTTP(str(d.sock))
    try:
        conn.request("GET", f"/events?{q}")
        resp = conn.getresponse()
        body = resp.read().decode()
    finally:
        conn.close()
    if resp.status != 200:
        return resp.status, []
    return 200, [json.loads(line) for line in body.splitlines() if line.strip()]


def test_commit_event(skiffd: Skiffd) -> None:
    cid = skiffd.out("create", IMAGE, "true").strip()
    skiffd.seen.add(cid)
    try:
        image_id = skiffd.out("commit", "-m", "why", cid, "evtest:1").strip()
        status, events = _events(skiffd, {"event": ["commit"], "container": [cid]})
        if status != 404:  # an events router is wired: the commit must be in its history
            assert status == 200
            assert len(events) == 1, events
            actor = events[0]["Actor"]
            assert isinstance(actor, dict) and actor["ID"] == cid
            assert actor["Attributes"]["imageID"] == image_id
            assert actor["Attributes"]["comment"] == "why"
        skiffd.docker("rmi", "evtest:1")
    finally:
        skiffd.docker("rm", "-f", cid)


def test_no_mounts_left(skiffd: Skiffd) -> None:
    assert [m for m in mounts_mentioning(str(skiffd.run / "cp"))] == []
    assert _scratch_entries(skiffd) == []
