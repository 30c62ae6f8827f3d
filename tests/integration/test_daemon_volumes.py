"""Volumes, binds and tmpfs through skiffd, driven by the stock docker CLI and raw HTTP.

One private daemon for the module (``check_parent_cgroup=False``: other daemons may run beside
it); every test removes what it made, and the fixture's leak check then finds no mounts that
mention the daemon's directories (volume mounts included).
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.daemon_support import IMAGE, Skiffd, private_skiffd
from tests.integration.support import mounts_mentioning

HEX64 = re.compile(r"[0-9a-f]{64}\Z")


@pytest.fixture(scope="module")
def skiffd(busybox_rootfs: Path) -> Iterator[Skiffd]:
    with private_skiffd(busybox_rootfs, check_parent_cgroup=False) as d:
        yield d


@pytest.fixture
def host_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="skvol-", dir="/tmp"))
    try:
        yield path
    finally:
        for line in reversed(mounts_mentioning(str(path))):
            subprocess.run(["umount", "-l", line.split()[4]], check=False)
        subprocess.run(["rm", "-rf", str(path)], check=False)


def _inspect(d: Skiffd, ref: str) -> dict[str, object]:
    out: dict[str, object] = json.loads(d.out("inspect", ref))[0]
    return out


def _mounts(d: Skiffd, ref: str) -> list[dict[str, object]]:
    mounts = _inspect(d, ref)["Mounts"]
    assert isinstance(mounts, list)
    return mounts


def _volumes(d: Skiffd) -> set[str]:
    return set(d.out("volume", "ls", "-q").split())


def _run(d: Skiffd, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    return d.docker("run", "--rm", *args, check=check)


def _volume_path(d: Skiffd, name: str) -> Path:
    return d.data / "volumes" / name / "_data"


# --- named volumes ---------------------------------------------------------------------------


def test_named_volume_written_in_one_container_read_in_another(skiffd: Skiffd) -> None:
    skiffd.docker("volume", "create", "--label", "team=a", "shared1")
    info = json.loads(skiffd.out("volume", "inspect", "shared1"))[0]
    assert (info["Name"], info["Driver"], info["Labels"]) == ("shared1", "local", {"team": "a"})
    assert info["Mountpoint"] == str(_volume_path(skiffd, "shared1"))
    _run(skiffd, "-v", "shared1:/data", IMAGE, "sh", "-c", "echo hello > /data/greeting")
    assert _run(skiffd, "-v", "shared1:/data:ro", IMAGE, "cat",
                "/data/greeting").stdout == b"hello\n"
    assert (_volume_path(skiffd, "shared1") / "greeting").read_text() == "hello\n"
    cid = skiffd.out("create", "-v", "shared1:/data", IMAGE, "true").strip()
    try:
        assert _mounts(skiffd, cid) == [{
            "Type": "volume", "Name": "shared1", "Source": str(_volume_path(skiffd, "shared1")),
            "Destination": "/data", "Driver": "local", "Mode": "z", "RW": True,
            "Propagation": ""}]
        listed = skiffd.api("GET", "/containers/json?all=1")[1]
        assert next(c["Mounts"] for c in listed if c["Id"] == cid)[0]["Name"] == "shared1"
        # a created (never started) container counts as a user: Docker refuses too
        status, body = skiffd.api("DELETE", "/volumes/shared1")
        assert status == 409 and cid in body["message"], body
        res = skiffd.docker("volume", "rm", "shared1", check=False)
        assert res.returncode != 0 and b"in use" in res.stderr
    finally:
        skiffd.docker("rm", cid)
    skiffd.docker("volume", "rm", "shared1")
    assert "shared1" not in _volumes(skiffd)
    assert not _volume_path(skiffd, "shared1").exists()


def test_volume_survives_container_and_daemon_sigkill(skiffd: Skiffd) -> None:
    cid = skiffd.run_d("-v", "durable:/data", IMAGE, "sh", "-c",
                       "echo before > /data/f; while true; do sleep 0.1; done")
    deadline = time.monotonic() + 10
    while not (_volume_path(skiffd, "durable") / "f").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert skiffd.stop(signal.SIGKILL) == -signal.SIGKILL
    skiffd.start()
    try:
        assert _inspect(skiffd, cid)["State"]["Running"] is True  # type: ignore[index]
        assert skiffd.api("DELETE", "/volumes/durable")[0] == 409  # still in use after restart
        skiffd.docker("exec", cid, "sh", "-c", "echo after >> /data/f")
        skiffd.docker("rm", "-f", cid)
        assert _run(skiffd, "-v", "durable:/d", IMAGE, "cat", "/d/f").stdout == \
            b"before\nafter\n"
        assert skiffd.stop() == 0  # a clean restart too
        skiffd.start()
        assert "durable" in _volumes(skiffd)
        assert (_volume_path(skiffd, "durable") / "f").read_text() == "before\nafter\n"
    finally:
        skiffd.docker("rm", "-f", cid, check=False)
        skiffd.docker("volume", "rm", "durable")


def test_volume_ls_inspect_prune_and_df(skiffd: Skiffd) -> None:
    skiffd.docker("volume", "create", "p-named")
    skiffd.docker("volume", "create", "p-used")
    user = skiffd.out("create", "-v", "p-used:/u", "-v", "/anon", IMAGE, "true").strip()
    gone = skiffd.out("create", "-v", "/leftover", IMAGE, "true").strip()
    leftover = next(m["Name"] for m in _mounts(skiffd, gone))
    assert isinstance(leftover, str) and HEX64.match(leftover)
    skiffd.docker("rm", gone)  # without -v: its anonymous volume stays, unused
    anon_of_user = next(m["Name"] for m in _mounts(skiffd, user) if m["Destination"] == "/anon")
    try:
        assert {"p-named", "p-used", leftover, anon_of_user} <= _volumes(skiffd)
        dangling = set(skiffd.out("volume", "ls", "-q", "--filter", "dangling=true").split())
        assert {"p-named", leftover} <= dangling and not {"p-used", anon_of_user} & dangling
        df = skiffd.api("GET", "/system/df")[1]
        usage = {v["Name"]: v["UsageData"] for v in df["Volumes"]}
        assert usage["p-used"]["RefCount"] == 1 and usage["p-named"]["RefCount"] == 0
        out = skiffd.out("volume", "prune", "-f")  # anonymous and unused only
        assert leftover in out
        assert leftover not in _volumes(skiffd)
        assert {"p-named", "p-used", anon_of_user} <= _volumes(skiffd)
        skiffd.out("volume", "prune", "-f", "--all")  # named ones too, still not used ones
        remaining = _volumes(skiffd)
        assert "p-named" not in remaining and {"p-used", anon_of_user} <= remaining
    finally:
        skiffd.docker("rm", "-v", user)
    assert anon_of_user not in _volumes(skiffd)  # rm -v took the anonymous one
    assert "p-used" in _volumes(skiffd)  # ... never a named one
    skiffd.docker("volume", "rm", "p-used")


def test_volume_extensions_export_import_rename(skiffd: Skiffd) -> None:
    skiffd.docker("volume", "create", "exp-src")
    skiffd.docker("volume", "create", "exp-dst")
    try:
        _run(skiffd, "-v", "exp-src:/v", IMAGE, "sh", "-c",
             "mkdir /v/dir && echo x > /v/dir/file && ln -s dir/file /v/link")
        status, tar_bytes = skiffd.api("GET", "/volumes/exp-src/export")
        assert status == 200
        with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
            names = {m.name: m for m in tar.getmembers()}
        assert names["link"].issym() and names["link"].linkname == "dir/file"
        assert skiffd.api("PUT", "/volumes/exp-dst/import", raw=tar_bytes)[0] == 204
        assert _run(skiffd, "-v", "exp-dst:/v", IMAGE, "cat", "/v/link").stdout == b"x\n"
        # import into a volume that has content is refused
        assert skiffd.api("PUT", "/volumes/exp-dst/import", raw=tar_bytes)[0] == 409
        status, body = skiffd.api("POST", "/volumes/exp-dst/rename?name=exp-new")
        assert status == 200 and body["Name"] == "exp-new"
        assert "exp-dst" not in _volumes(skiffd)
        assert (_volume_path(skiffd, "exp-new") / "dir" / "file").read_text() == "x\n"
        status, body = skiffd.api("POST", "/volumes/exp-new/rename?name=..%2Fup")
        assert status == 400
    finally:
        for name in ("exp-src", "exp-dst", "exp-new"):
            skiffd.docker("volume", "rm", "-f", name, check=False)


# --- anonymous volumes and copy-up -----------------------------------------------------------


def test_anonymous_volume_from_v_and_rm_v(skiffd: Skiffd) -> None:
    before = _volumes(skiffd)
    cid = skiffd.out("create", "-v", "/scratch", IMAGE, "true").strip()
    (mount,) = _mounts(skiffd, cid)
    name = mount["Name"]
    assert isinstance(name, str) and HEX64.match(name)
    assert (mount["Type"], mount["Destination"], mount["RW"]) == ("volume", "/scratch", True)
    assert _volumes(skiffd) - before == {name}
    labels = json.loads(skiffd.out("volume", "inspect", name))[0]["Labels"]
    assert "com.docker.volume.anonymous" in labels
    skiffd.docker("rm", "-v", cid)
    assert name not in _volumes(skiffd)
    assert not _volume_path(skiffd, name).parent.exists()
    # docker run --rm takes its anonymous volumes along as well
    since = str(int(time.time()) - 1)
    _run(skiffd, "-v", "/gone", IMAGE, "true")
    assert _volumes(skiffd) == before
    events = skiffd.out("events", "--since", since, "--until", str(int(time.time()) + 1),
                        "--filter", "type=volume", "--format", "{{.Action}}").split()
    assert events[-4:] == ["create", "mount", "unmount", "destroy"]


def test_image_volume_gets_the_image_content_copied_up(skiffd: Skiffd) -> None:
    src = skiffd.out("create", IMAGE, "sh", "-c",
                     "mkdir -p /data/sub && echo seed > /data/sub/seed && "
                     "ln -s sub/seed /data/link && chown 1234:4321 /data && chmod 750 /data")
    skiffd.docker("start", "-a", src.strip())
    skiffd.docker("commit", "--change", "VOLUME /data", src.strip(), "volimg:1")
    skiffd.docker("rm", src.strip())
    try:
        cid = skiffd.out("create", "volimg:1", "sh", "-c", "cat /data/link; stat -c '%u:%g %a' /data").strip()
        (mount,) = _mounts(skiffd, cid)
        assert (mount["Type"], mount["Destination"], mount["Mode"]) == ("volume", "/data", "")
        host = _volume_path(skiffd, str(mount["Name"]))
        assert (host / "sub" / "seed").read_text() == "seed\n"
        assert os.readlink(host / "link") == "sub/seed"
        st = host.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 4321, 0o750)
        assert skiffd.out("start", "-a", cid) == "seed\n1234:4321 750\n"
        skiffd.docker("rm", "-v", cid)
        # nocopy: a new volume stays empty
        out = _run(skiffd, "--mount", "type=volume,src=nocopy1,dst=/data,volume-nocopy",
                   "volimg:1", "ls", "-A", "/data").stdout
        assert out == b""
        # a named volume that already has content is not overwritten
        _run(skiffd, "-v", "filled:/data", IMAGE, "sh", "-c", "echo mine > /data/own")
        out = _run(skiffd, "-v", "filled:/data", "volimg:1", "ls", "/data").stdout
        assert out == b"own\n"
    finally:
        skiffd.docker("volume", "rm", "-f", "nocopy1", "filled", check=False)
        skiffd.docker("rmi", "volimg:1", check=False)


# --- binds -----------------------------------------------------------------------------------


def test_read_only_bind_stays_read_only(skiffd: Skiffd, host_dir: Path) -> None:
    (host_dir / "in").write_text("host\n")
    res = _run(skiffd, "-v", f"{host_dir}:/b:ro", IMAGE, "sh", "-c",
               "cat /b/in; echo x > /b/new; echo rc=$?", check=False)
    assert b"host\n" in res.stdout and b"rc=1" in res.stdout
    assert b"Read-only file system" in res.stderr
    assert not (host_dir / "new").exists()
    cid = skiffd.out("create", "--mount", f"type=bind,src={host_dir},dst=/m,readonly",
                     "-v", f"{host_dir}:/rw", IMAGE, "true").strip()
    try:
        by_dest = {m["Destination"]: m for m in _mounts(skiffd, cid)}
        assert by_dest["/m"] == {"Type": "bind", "Source": str(host_dir), "Destination": "/m",
                                 "Mode": "", "RW": False, "Propagation": "rprivate"}
        assert by_dest["/rw"]["RW"] is True and by_dest["/rw"]["Mode"] == ""
    finally:
        skiffd.docker("rm", cid)
    _run(skiffd, "-v", f"{host_dir}:/b", IMAGE, "sh", "-c", "echo y > /b/new")
    assert (host_dir / "new").read_text() == "y\n"


def test_missing_bind_source_made_for_v_refused_for_mount(skiffd: Skiffd,
                                                        host_dir: Path) -> None:
    made = host_dir / "made" / "here"
    _run(skiffd, "-v", f"{made}:/m", IMAGE, "touch", "/m/f")
    assert made.is_dir() and (made / "f").exists()
    before = skiffd.out("ps", "-aq")
    res = skiffd.docker("run", "--rm", "--mount", f"type=bind,src={host_dir}/absent,dst=/m",
                        IMAGE, "true", check=False)
    assert res.returncode == 125
    assert b"bind source path does not exist" in res.stderr
    assert not (host_dir / "absent").exists()
    assert skiffd.out("ps", "-aq") == before


@pytest.mark.parametrize("mode", ["rshared", "rslave"])
def test_bind_propagation_carries_host_mounts_in(skiffd: Skiffd, host_dir: Path,
                                                 mode: str) -> None:
    src = host_dir / "src"
    (src / "sub").mkdir(parents=True)
    # a shared mount at the source, so that mounts under it propagate (Docker requires it)
    subprocess.run(["mount", "--bind", str(src), str(src)], check=True)
    subprocess.run(["mount", "--make-shared", str(src)], check=True)
    cid = skiffd.run_d("-v", f"{src}:/p:{mode}", IMAGE, "sleep", "60")
    try:
        assert [m["Propagation"] for m in _mounts(skiffd, cid)] == [mode]
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "late", str(src / "sub")],
                       check=True)
        (src / "sub" / "marker").write_text("late\n")
        out = skiffd.out("exec", cid, "cat", "/p/sub/marker")
        assert out == "late\n"
    finally:
        skiffd.docker("rm", "-f", cid)
        subprocess.run(["umount", "-l", str(src / "sub")], check=False)
        subprocess.run(["umount", "-l", str(src)], check=False)


def test_private_bind_does_not_see_later_host_mounts(skiffd: Skiffd, host_dir: Path) -> None:
    src = host_dir / "src"
    (src / "sub").mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(src), str(src)], check=True)
    subprocess.run(["mount", "--make-shared", str(src)], check=True)
    cid = skiffd.run_d("-v", f"{src}:/p", IMAGE, "sleep", "60")
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "late", str(src / "sub")],
                       check=True)
        (src / "sub" / "marker").write_text("late\n")
        res = skiffd.docker("exec", cid, "cat", "/p/sub/marker", check=False)
        assert res.returncode != 0  # rprivate (the default): the new mount stays outside
    finally:
        skiffd.docker("rm", "-f", cid)
        subprocess.run(["umount", "-l", str(src / "sub")], check=False)
        subprocess.run(["umount", "-l", str(src)], check=False)


def test_symlinked_target_in_image_cannot_redirect_a_bind_to_the_host(
        skiffd: Skiffd, host_dir: Path) -> None:
    victim = host_dir / "victim"
    victim.mkdir()
    src = host_dir / "src"
    src.mkdir()
    (src / "payload").write_text("payload\n")
    # /evil -> the host's victim path, which exists inside the image too: resolved in the
    # container's root the bind lands in the image's copy; followed on the host it would
    # land on the host's directory
    maker = skiffd.out("create", IMAGE, "sh", "-c",
                       f"mkdir -p {victim}/sub && ln -s {victim} /evil").strip()
    skiffd.docker("start", "-a", maker)
    skiffd.docker("commit", maker, "evilimg:1")
    skiffd.docker("rm", maker)
    try:
        out = _run(skiffd, "-v", f"{src}:/evil/sub", "evilimg:1", "cat",
                   "/evil/sub/payload", f"{victim}/sub/payload").stdout
        assert out == b"payload\npayload\n"  # mounted, inside the container's own tree
        assert list(victim.iterdir()) == []  # nothing made or mounted on the host's path
        assert mounts_mentioning(str(victim)) == []
    finally:
        skiffd.docker("rmi", "evilimg:1", check=False)


# --- tmpfs -----------------------------------------------------------------------------------


def test_tmpfs_size_and_mode(skiffd: Skiffd) -> None:
    script = ("stat -c %a /m; dd if=/dev/zero of=/t/big bs=1k count=2048 2>/dev/null; "
              "echo t=$?; dd if=/dev/zero of=/m/big bs=1k count=2048 2>/dev/null; echo m=$?")
    cid = skiffd.out("create", "--tmpfs", "/t:size=1m",
                     "--mount", "type=tmpfs,dst=/m,tmpfs-size=1m,tmpfs-mode=1770",
                     IMAGE, "sh", "-c", script).strip()
    try:
        assert _mounts(skiffd, cid) == [{"Type": "tmpfs", "Source": "", "Destination": "/m",
                                          "Mode": "", "RW": True, "Propagation": ""}]
        assert skiffd.out("start", "-a", cid) == "1770\nt=1\nm=1\n"
    finally:
        skiffd.docker("rm", cid)


# --- volumes-from ----------------------------------------------------------------------------


def test_volumes_from_and_read_only(skiffd: Skiffd, host_dir: Path) -> None:
    donor = skiffd.out("create", "--name", "donor", "-v", "vf-named:/named", "-v", "/anon",
                       "-v", f"{host_dir}:/bound", IMAGE, "true").strip()
    try:
        _run(skiffd, "--volumes-from", "donor", IMAGE, "sh", "-c",
             "echo n > /named/f && echo a > /anon/f && echo b > /bound/f")
        assert (host_dir / "f").read_text() == "b\n"
        res = _run(skiffd, "--volumes-from", "donor:ro", IMAGE, "sh", "-c",
                   "cat /named/f /anon/f /bound/f; echo x > /named/g; echo rc=$?", check=False)
        assert res.stdout == b"n\na\nb\nrc=1\n"
        reader = skiffd.out("create", "--volumes-from", "donor:ro", IMAGE, "true").strip()
        try:
            by_dest = {m["Destination"]: m for m in _mounts(skiffd, reader)}
            assert set(by_dest) == {"/named", "/anon", "/bound"}
            assert not any(m["RW"] for m in by_dest.values())
            anon = by_dest["/anon"]["Name"]
        finally:
            skiffd.docker("rm", "-v", reader)
        assert anon in _volumes(skiffd)  # rm -v of the borrower keeps the donor's volume
        bad = skiffd.docker("create", "--volumes-from", "donor:zz", IMAGE, "true", check=False)
        assert bad.returncode != 0
    finally:
        skiffd.docker("rm", "-v", donor)
    assert anon not in _volumes(skiffd)
    skiffd.docker("volume", "rm", "vf-named")


# --- cp --------------------------------------------------------------------------------------


def test_cp_into_and_out_of_a_volume(skiffd: Skiffd, host_dir: Path) -> None:
    (host_dir / "file").write_text("one\n")
    (host_dir / "tree" / "deep").mkdir(parents=True)
    (host_dir / "tree" / "deep" / "x").write_text("x\n")
    os.symlink("deep/x", host_dir / "tree" / "ln")
    cid = skiffd.run_d("-v", "cpvol:/vol", "-v", f"{host_dir}:/bound:ro", IMAGE, "sleep", "60")
    try:
        vol = _volume_path(skiffd, "cpvol")
        skiffd.docker("cp", str(host_dir / "file"), f"{cid}:/vol/")
        skiffd.docker("cp", str(host_dir / "tree"), f"{cid}:/vol/tree")
        assert (vol / "file").read_text() == "one\n"
        assert (vol / "tree" / "deep" / "x").read_text() == "x\n"
        assert os.readlink(vol / "tree" / "ln") == "deep/x"
        assert skiffd.out("exec", cid, "cat", "/vol/tree/ln") == "x\n"
        upper = skiffd.out("exec", cid, "sh", "-c", "ls /vol")  # and the container sees them
        assert upper.split() == ["file", "tree"]
        out_dir = host_dir / "out"
        skiffd.docker("cp", f"{cid}:/vol/tree", str(out_dir))
        assert (out_dir / "deep" / "x").read_text() == "x\n"
        assert os.readlink(out_dir / "ln") == "deep/x"
        skiffd.docker("exec", cid, "sh", "-c", "echo inside > /vol/made")
        res = skiffd.docker("cp", f"{cid}:/vol/made", "-")
        with tarfile.open(fileobj=io.BytesIO(res.stdout)) as tar:
            member = tar.extractfile("made")
            assert member is not None and member.read() == b"inside\n"
        # out of a bind, and a read-only bind refuses a copy in
        assert skiffd.docker("cp", f"{cid}:/bound/file", "-").returncode == 0
        res = skiffd.docker("cp", str(host_dir / "file"), f"{cid}:/bound/again", check=False)
        assert res.returncode != 0 and b"mounted volume is marked read-only" in res.stderr
        assert not (host_dir / "again").exists()
        skiffd.docker("stop", "-t", "0", cid)
        # a stopped container: its volumes are still where cp looks
        skiffd.docker("cp", str(host_dir / "file"), f"{cid}:/vol/later")
        assert (vol / "later").read_text() == "one\n"
    finally:
        skiffd.docker("rm", "-f", cid)
        skiffd.docker("volume", "rm", "cpvol")
    assert mounts_mentioning(str(skiffd.run / "cp")) == []


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(("host_config", "wording"), [
    ({"Binds": ["/tmp:relative/path"]}, "invalid"),
    ({"Binds": [""]}, "invalid volume specification"),
    ({"Binds": ["/tmp:/x:bogus"]}, "invalid mode"),
    ({"Binds": ["../escape:/data"]}, "invalid characters"),
    ({"Binds": ["/tmp:/"]}, "can't be '/'"),
    ({"Binds": ["/tmp:/a", "/var:/a"]}, "Duplicate mount point"),
    ({"Mounts": [{"Type": "bind", "Source": "/nonexistent-skiff", "Target": "/m"}]},
     "bind source path does not exist"),
    ({"Mounts": [{"Type": "volume", "Source": "ok", "Target": "rel"}]}, "must be absolute"),
    ({"Mounts": [{"Type": "volume", "Source": "ok", "Target": ""}]}, "Target must not be empty"),
    ({"Mounts": [{"Type": "bogus", "Target": "/m"}]}, "mount type unknown"),
    ({"Mounts": [{"Type": "volume", "Source": "a/../b", "Target": "/m"}]}, "invalid volume"),
    ({"Mounts": [{"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": -1}}]},
     "TmpfsOptions"),
    ({"VolumesFrom": ["no-such-container"]}, "No such container"),
    ({"Binds": "/tmp:/x"}, "Binds"),
])
def test_bad_mount_input_is_refused_and_nothing_is_made(
        skiffd: Skiffd, host_config: dict[str, object], wording: str) -> None:
    before_c, before_v = skiffd.out("ps", "-aq"), _volumes(skiffd)
    status, body = skiffd.api("POST", "/containers/create",
                              {"Image": IMAGE, "Cmd": ["true"], "HostConfig": host_config})
    assert status in (400, 404), (status, body)
    assert wording in body["message"], body
    assert skiffd.out("ps", "-aq") == before_c
    assert _volumes(skiffd) == before_v
    assert not os.path.exists("/nonexistent-skiff")


def test_bad_volume_names_are_refused(skiffd: Skiffd) -> None:
    before = _volumes(skiffd)
    for name in ("../x", "a/b", ".hidden", "x"):
        status, body = skiffd.api("POST", "/volumes/create", {"Name": name})
        assert status == 400 and "invalid characters" in body["message"], (name, body)
    status, body = skiffd.api("POST", "/volumes/create",
                              {"Name": "okname", "DriverOpts": {"bogus": "1"}})
    assert status == 400 and "bogus" in body["message"]
    status, _ = skiffd.api("POST", "/volumes/create", {"Name": "okname", "Driver": "nope"})
    assert status == 404
    assert _volumes(skiffd) == before
    assert sorted(p.name for p in (skiffd.data / "volumes").iterdir()
                  if p.is_dir()) == sorted(before)


def test_create_failing_after_volumes_were_made_leaves_none_behind(skiffd: Skiffd) -> None:
    before_c, before_v = skiffd.out("ps", "-aq"), _volumes(skiffd)
    # the volume is made before the spec, whose device is refused
    status, body = skiffd.api("POST", "/containers/create", {
        "Image": IMAGE, "Cmd": ["true"], "Volumes": {"/anon": {}},
        "HostConfig": {"Devices": [{"PathOnHost": "/dev/skiff-none", "PathInContainer":
                                    "/dev/x", "CgroupPermissions": "rwm"}]}})
    assert status == 400, body
    assert "/dev/skiff-none" in body["message"]
    assert skiffd.out("ps", "-aq") == before_c
    assert _volumes(skiffd) == before_v


def test_a_mount_the_runtime_refuses_fails_the_start(skiffd: Skiffd, host_dir: Path) -> None:
    """As with Docker, whose runtime makes the container at start: valid input creates, the
    runtime's refusal (a file onto a directory) fails the start, and rm -v leaves nothing."""
    (host_dir / "f").write_text("a file\n")
    before_v = _volumes(skiffd)
    cid = skiffd.out("create", "-v", "/anon", "-v", f"{host_dir}/f:/etc", IMAGE,
                     "true").strip()
    res = skiffd.docker("start", cid, check=False)
    assert res.returncode != 0 and b"/etc" in res.stderr, res.stderr
    assert _volumes(skiffd) != before_v  # its anonymous volume, until it goes with it
    skiffd.docker("rm", "-v", cid)
    assert _volumes(skiffd) == before_v


def test_cp_into_a_writable_volume_of_a_read_only_root(skiffd: Skiffd) -> None:
    cid = skiffd.out("create", "--read-only", "-v", "rovol:/vol", IMAGE, "true").strip()
    try:
        skiffd.docker("cp", "-", f"{cid}:/vol", input=_tar_of("in.txt", b"ok\n"))
        assert (_volume_path(skiffd, "rovol") / "in.txt").read_bytes() == b"ok\n"
        res = skiffd.docker("cp", "-", f"{cid}:/", input=_tar_of("root.txt", b"no\n"),
                            check=False)
        assert res.returncode != 0 and b"read-only" in res.stderr
    finally:
        skiffd.docker("rm", cid)
        skiffd.docker("volume", "rm", "rovol")


def _tar_of(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_driver_volume_is_mounted_while_a_container_uses_it(skiffd: Skiffd) -> None:
    skiffd.docker("volume", "create", "--opt", "type=tmpfs", "--opt", "device=tmpfs",
                  "--opt", "o=size=1m", "tvol")
    path = str(_volume_path(skiffd, "tvol"))

    def mounted() -> bool:
        return any(line.split()[4] == path for line in mounts_mentioning(path))

    assert not mounted()
    first = skiffd.run_d("-v", "tvol:/t", IMAGE, "sleep", "60")
    second = skiffd.run_d("-v", "tvol:/t", IMAGE, "sleep", "60")
    try:
        assert mounted()
        skiffd.docker("exec", first, "sh", "-c", "echo shared > /t/f")
        assert skiffd.out("exec", second, "cat", "/t/f") == "shared\n"
        skiffd.docker("rm", "-f", first)
        assert mounted()  # the second one still uses it
        assert skiffd.stop(signal.SIGKILL) == -signal.SIGKILL
        skiffd.start()
        assert mounted()
        skiffd.docker("stop", "-t", "0", second)
        assert not mounted()  # its last user is gone (found again after the restart)
        skiffd.docker("start", second)
        assert mounted()
    finally:
        skiffd.docker("rm", "-f", first, second, check=False)
    assert not mounted()
    skiffd.docker("volume", "rm", "tvol")


def test_cp_through_a_symlink_in_a_volume_stays_in_the_container(skiffd: Skiffd,
                                                                host_dir: Path) -> None:
    (host_dir / "secret").write_text("host only\n")
    cid = skiffd.out("create", "-v", "symvol:/vol", IMAGE, "true").strip()
    try:
        # planted in the volume: an absolute link naming a real host directory
        os.symlink(str(host_dir), _volume_path(skiffd, "symvol") / "esc")
        skiffd.docker("cp", "-", f"{cid}:/vol/esc", input=_tar_of("dropped", b"x\n"),
                      check=False)
        assert not (host_dir / "dropped").exists()
        res = skiffd.docker("cp", f"{cid}:/vol/esc/secret", "-", check=False)
        assert b"host only" not in res.stdout
    finally:
        skiffd.docker("rm", cid)
        skiffd.docker("volume", "rm", "symvol")


def test_cp_reaches_a_driver_volume_of_a_stopped_container(skiffd: Skiffd,
                                                           host_dir: Path) -> None:
    skiffd.docker("volume", "create", "--opt", "type=none", "--opt", "o=bind",
                  "--opt", f"device={host_dir}", "bvol")
    path = str(_volume_path(skiffd, "bvol"))
    skiffd.docker("run", "--name", "bstop", "-v", "bvol:/b", IMAGE, "true")
    cid = "bstop"
    try:
        assert mounts_mentioning(path) == []  # exited: no user holds it mounted
        skiffd.docker("cp", "-", f"{cid}:/b", input=_tar_of("via-cp", b"cp\n"))
        assert (host_dir / "via-cp").read_text() == "cp\n"  # the volume's data, not _data
        assert not os.path.exists(os.path.join(path, "via-cp"))
        assert mounts_mentioning(path) == []  # mounted for the copy only
    finally:
        skiffd.docker("rm", cid)
        skiffd.docker("volume", "rm", "bvol")
