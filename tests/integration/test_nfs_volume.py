"""NFS volumes of the local driver on a kernel without an NFS client: skiff's userspace NFSv3
client through FUSE, against a real NFS server.

The server is Debian's nfs-ganesha (userspace; this kernel has no nfsd either) with rpcbind,
both running in a network namespace the module creates, reached over a veth pair; they get a
private /run so they never meet the host's rpcbind. Two VolumeService instances with separate
data roots stand for two hosts sharing one export (`type=nfs, o=addr=<ip>, device=:/export`);
containers run by skiff-runtime use those mounts, and two private skiffd instances share a
volume made with `docker volume create --driver local --opt type=nfs ...`.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import os
import random
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from skiff.errors import InvalidArgument, PermissionDenied, Unavailable
from skiff.plugins.volumes.local import LocalDriver
from skiff.plugins.volumes.nfs import nfs3
from skiff.plugins.volumes.nfs.launch import kernel_has_nfs, stale_fuse_mount
from skiff.plugins.volumes.store import SqliteVolumeStore
from skiff.services.volumes import VolumeService
from tests.integration.daemon_support import IMAGE, Skiffd, private_skiffd
from tests.integration.support import RuntimeDriver, new_id, read_config, write_config

T = TypeVar("T")
HELPER_MODULE = b"skiff.plugins.volumes.nfs"

_GANESHA_CONF = """
NFS_CORE_PARAM {{
  Protocols = 3;
  Enable_NLM = false;
  Enable_RQUOTA = false;
  Mount_Path_Pseudo = true;
}}
NFSV4 {{ RecoveryRoot = "{root}/recovery"; Graceless = true; }}
EXPORT {{
  Export_Id = 1;
  Path = "{root}/export";
  Pseudo = "/export";
  Protocols = 3;
  Transports = TCP;
  Access_Type = RW;
  Squash = No_Root_Squash;
  Sectype = sys;
  FSAL {{ Name = VFS; }}
}}
"""


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


class GaneshaServer:
    """ganesha.nfsd + rpcbind in a fresh network namespace, exporting ``root/export``."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}"
        self.ns = f"sknfs{tag}"
        self.host_if, self.ns_if = f"sknh{tag}", f"sknn{tag}"
        # a /30 out of 10.253/16; a clash with an address on this machine is avoided below
        net = random.randrange(1 << 14) * 4
        self.host_ip = f"10.253.{net >> 8}.{(net & 0xFF) + 1}"
        self.ip = f"10.253.{net >> 8}.{(net & 0xFF) + 2}"
        self.root = Path(tempfile.mkdtemp(prefix="sknfs", dir="/tmp"))
        self.export = self.root / "export"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        (self.root / "recovery").mkdir()
        self.export.mkdir(mode=0o755)
        os.chmod(self.export, 0o755)
        conf = self.root / "ganesha.conf"
        conf.write_text(_GANESHA_CONF.format(root=self.root))
        taken = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True,
                               check=True).stdout
        if f" {self.ip.rsplit('.', 1)[0]}." in taken:
            pytest.skip(f"the test subnet near {self.ip} is in use on this machine")
        _run("ip", "netns", "add", self.ns)
        _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        _run("ip", "link", "set", self.ns_if, "netns", self.ns)
        _run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        _run("ip", "link", "set", self.host_if, "up")
        for cmd in (["ip", "addr", "add", f"{self.ip}/30", "dev", self.ns_if],
                    ["ip", "link", "set", self.ns_if, "up"], ["ip", "link", "set", "lo", "up"]):
            _run("ip", "netns", "exec", self.ns, *cmd)
        # rpcbind keeps its socket and state under /run: a private tmpfs there keeps this
        # one apart from the host's; ganesha (exec'd last) is the process we own and stop
        script = ("mount -t tmpfs tmpfs /run && mkdir -p /run/rpcbind && "
                  "chown _rpc /run/rpcbind && rpcbind -f -w & sleep 0.3; "
                  f"exec ganesha.nfsd -F -f {conf} -L {self.root}/ganesha.log "
                  f"-p {self.root}/ganesha.pid -N NIV_EVENT")
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, "unshare", "-m",
                                      "--propagation", "private", "sh", "-c", script],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                nfs3.getport(self.ip, nfs3.MOUNT_PROG, nfs3.MOUNT_VERS, timeout=1)
                nfs3.getport(self.ip, nfs3.NFS_PROG, nfs3.NFS_VERS, timeout=1)
                return
            except (Unavailable, OSError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = (self.root / "ganesha.log")
                    raise AssertionError("ganesha did not come up: " + (
                        log.read_text()[-2000:] if log.exists() else "no log")) from None
                time.sleep(0.2)

    def ns_pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True,
                             text=True, check=False).stdout
        return [int(p) for p in out.split()]

    def stop(self) -> None:
        """Stop ganesha and rpcbind (the processes started in our namespace)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for pid in self.ns_pids():  # rpcbind, started by the script above
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while self.ns_pids() and time.monotonic() < deadline:
            time.sleep(0.05)

    def destroy(self) -> None:
        self.stop()
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def server() -> Iterator[GaneshaServer]:
    for tool in ("ganesha.nfsd", "rpcbind", "ip", "unshare"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install nfs-ganesha "
                        "nfs-ganesha-vfs rpcbind iproute2)")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse is missing: the userspace NFS client needs FUSE")
    if kernel_has_nfs():
        pytest.skip("this kernel has an NFS client: the local driver uses it, not FUSE")
    srv = GaneshaServer()
    try:
        srv.start()
        yield srv
    finally:
        srv.destroy()
    # nothing of ours may outlive the module: namespace, veth, server processes
    assert srv.ns not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                        text=True, check=False).stdout
    assert not Path(f"/sys/class/net/{srv.host_if}").exists()


def _helpers() -> list[int]:
    """Pids of live userspace NFS client processes (zombies have stopped serving)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            continue
        if HELPER_MODULE in cmdline and b"\0mount\0" in cmdline and state != "Z":
            out.append(int(entry))
    return out


def _fuse_mounts(under: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f
                if line.split()[4].startswith(under)
                and line.split(" - ")[1].startswith("fuse")]


def _empty(directory: Path) -> None:
    for p in directory.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


class Host:
    """A VolumeService with its own data root: one 'host' of the shared export."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = SqliteVolumeStore(str(root / "volumes.db"))
        self.svc = VolumeService(self.store, {"local": LocalDriver(str(root / "volumes"))},
                                 in_use=lambda _name: [])

    def close(self) -> None:
        for rec in self.store.all():
            self.svc.unmount_all(rec.name)
            self.svc.remove(rec.name, force=True)
        self.store.close()


@pytest.fixture
def hosts(server: GaneshaServer) -> Iterator[tuple[Host, Host]]:
    base = Path(tempfile.mkdtemp(prefix="sknfsh", dir="/tmp"))
    os.chmod(base, 0o711)  # the unprivileged users of the ownership test pass through
    (base / "a").mkdir()
    (base / "b").mkdir()
    a, b = Host(base / "a"), Host(base / "b")
    try:
        yield a, b
    finally:
        a.close()
        b.close()
        left_mounts, left_helpers = _fuse_mounts(str(base)), _helpers()
        shutil.rmtree(base, ignore_errors=True)
        _empty(server.export)  # each test starts from an empty export
    assert left_mounts == [], "a FUSE mount outlived its volume"
    assert left_helpers == [], "a userspace NFS client outlived its mount"


def _nfs_opts(server: GaneshaServer, extra: str = "") -> dict[str, str]:
    o = f"addr={server.ip},rw" + (f",{extra}" if extra else "")
    return {"type": "nfs", "o": o, "device": ":/export"}


def _eventually(fn: Callable[[], T], timeout: float = 5.0) -> T:
    """fn() once it stops raising (the other host may trust cached attributes for actimeo)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (OSError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _check(ok: bool) -> None:
    assert ok


def _as_user(uid: int, gid: int, fn: Callable[[], None]) -> int:
    """Run fn in a forked child with those ids; its exit status (0 ok, errno on OSError)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            fn()
        except OSError as exc:
            code = exc.errno or 1
        except BaseException:
            code = 255
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


# --- sharing between hosts -------------------------------------------------------------


def test_two_hosts_share_files_dirs_symlinks_renames_and_deletes(
        server: GaneshaServer, hosts: tuple[Host, Host]) -> None:
    a, b = hosts
    for h in (a, b):
        h.svc.create("shared", options=_nfs_opts(server))
    pa, pb = Path(a.svc.mount("shared", "c1")), Path(b.svc.mount("shared", "c2"))
    assert pa != pb
    assert _fuse_mounts(str(pa)) == [str(pa)] and _fuse_mounts(str(pb)) == [str(pb)]

    (pa / "hello.txt").write_text("from host a\n")
    (pa / "dir" / "sub").mkdir(parents=True)
    (pa / "dir" / "sub" / "deep.txt").write_text("deep")
    (pa / "link").symlink_to("hello.txt")
    assert _eventually(lambda: (pb / "hello.txt").read_text()) == "from host a\n"
    assert (pb / "dir" / "sub" / "deep.txt").read_text() == "deep"
    assert os.readlink(pb / "link") == "hello.txt"
    assert (pb / "link").read_text() == "from host a\n"  # followed on b's side
    assert sorted(os.listdir(pb)) == ["dir", "hello.txt", "link"]
    # and it is really on the server, not in some client-side cache
    assert (server.export / "dir" / "sub" / "deep.txt").read_text() == "deep"
    assert os.stat(pb / "hello.txt").st_ino == os.stat(server.export / "hello.txt").st_ino

    (pa / "hello.txt").rename(pa / "dir" / "moved.txt")
    assert sorted(os.listdir(pb)) == ["dir", "link"]  # readdir is never cached
    assert (pb / "dir" / "moved.txt").read_text() == "from host a\n"
    # dangling now, once b's cached name (actimeo, 1s by default) has expired
    _eventually(lambda: _check(not (pb / "link").exists()))

    (pb / "dir" / "sub" / "deep.txt").unlink()  # b deletes, a sees it gone
    (pb / "dir" / "sub").rmdir()
    assert sorted(os.listdir(pa / "dir")) == ["moved.txt"]
    assert not (server.export / "dir" / "sub").exists()

    with pytest.raises(OSError) as err:
        (pa / "dir").rmdir()
    assert err.value.errno == errno.ENOTEMPTY  # the server's errno comes through

    # append, truncate and overwrite in place are seen by the other host
    with open(pa / "dir" / "moved.txt", "a") as f:
        f.write("more\n")
    assert _eventually(lambda: (pb / "dir" / "moved.txt").read_text()
                       ) == "from host a\nmore\n"
    os.truncate(pb / "dir" / "moved.txt", 4)
    assert _eventually(lambda: (pa / "dir" / "moved.txt").read_text()) == "from"


def test_large_file_crosses_hosts_intact(server: GaneshaServer,
                                         hosts: tuple[Host, Host]) -> None:
    a, b = hosts
    for h in (a, b):
        h.svc.create("big", options=_nfs_opts(server))
    pa, pb = Path(a.svc.mount("big", "c1")), Path(b.svc.mount("big", "c2"))
    blob = os.urandom(3 * 1024 * 1024 + 12345)  # many WRITEs and READs, odd tail
    (pa / "blob").write_bytes(blob)
    assert _eventually(lambda: (pb / "blob").read_bytes()) == blob
    assert (server.export / "blob").read_bytes() == blob
    with open(pb / "blob", "r+b") as f:  # a write in the middle, from the other side
        f.seek(1 << 20)
        f.write(b"X" * 100)
    want = blob[:1 << 20] + b"X" * 100 + blob[(1 << 20) + 100:]
    assert _eventually(lambda: (pa / "blob").read_bytes()) == want
    st = os.statvfs(pa)
    assert st.f_blocks > 0 and st.f_bsize == 4096  # FSSTAT made it through


def test_ownership_and_permissions_are_the_servers(server: GaneshaServer,
                                                   hosts: tuple[Host, Host]) -> None:
    a, b = hosts
    for h in (a, b):
        h.svc.create("owned", options=_nfs_opts(server))
    pa, pb = Path(a.svc.mount("owned", "c1")), Path(b.svc.mount("owned", "c2"))
    (pa / "pub").mkdir(mode=0o777)
    os.chmod(pa / "pub", 0o777)

    def write_private() -> None:
        fd = os.open(pa / "pub" / "mine", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o640)
        os.write(fd, b"secret")
        os.close(fd)
        os.mkdir(pa / "pub" / "mydir", 0o750)

    old = os.umask(0o022)
    try:
        assert _as_user(1000, 1000, write_private) == 0
    finally:
        os.umask(old)
    for where in (pb / "pub", server.export / "pub"):  # the other host and the server agree
        st = _eventually(functools.partial(os.stat, where / "mine"))
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1000, 1000, 0o640)
        st = os.stat(where / "mydir")
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1000, 1000, 0o750)

    # permissions hold on the other host: a stranger can neither read nor write it
    def read_it() -> None:
        (pb / "pub" / "mine").read_bytes()

    assert _as_user(1001, 1001, read_it) == errno.EACCES
    assert _as_user(1000, 1000, read_it) == 0
    # chown and chmod by root on one host reach the server and the other host
    os.chown(pb / "pub" / "mine", 1001, 1002)
    os.chmod(pb / "pub" / "mine", 0o604)
    st = os.stat(server.export / "pub" / "mine")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1001, 1002, 0o604)
    _eventually(lambda: _check(os.stat(pa / "pub" / "mine").st_uid == 1001))
    st = os.stat(pa / "pub" / "mine")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1001, 1002, 0o604)
    # a user's chmod of a file they do not own is refused (by the kernel's check and the
    # server's alike)
    assert _as_user(1000, 1000, lambda: os.chmod(pa / "pub" / "mine", 0o777)) == errno.EPERM


def test_containers_on_two_hosts_share_the_export(
        server: GaneshaServer, hosts: tuple[Host, Host], runtime: RuntimeDriver,
        make_bundle: Callable[..., Path]) -> None:
    """Real containers (skiff-runtime: own mount, pid, ipc, uts namespaces) with the volume
    bound in: the FUSE mount serves processes of another pid namespace, as root and not."""
    a, b = hosts
    for h in (a, b):
        h.svc.create("ctr", options=_nfs_opts(server))
    pa, pb = a.svc.mount("ctr", "c1"), b.svc.mount("ctr", "c2")

    def container(host_path: str, script: str, uid: int = 0) -> tuple[int, str, str]:
        bundle = make_bundle(["sh", "-c", script])
        cfg = read_config(bundle)
        cfg["process"]["user"] = {"uid": uid, "gid": uid}
        cfg["mounts"].append({"destination": "/data", "type": "bind", "source": host_path,
                              "options": ["rbind", "rw", "rprivate"]})
        write_config(bundle, cfg)
        res = runtime("run", "--bundle", str(bundle), new_id(), check=False)
        return res.code, res.out, res.err

    code, _, err = container(pa, "mkdir /data/d && echo by-root > /data/d/r && "
                                 "chmod 777 /data/d && ln -s r /data/d/link")
    assert code == 0, err
    code, _, err = container(pa, "umask 077 && echo by-1000 > /data/d/u", uid=1000)
    assert code == 0, err
    code, out, err = container(pb, "cat /data/d/link /data/d/u && "
                                   "stat -c '%u:%g %a' /data/d/u", uid=1000)
    assert (code, out.split()) == (0, ["by-root", "by-1000", "1000:1000", "600"]), err
    code, _, err = container(pb, "cat /data/d/u", uid=1001)
    assert code != 0 and "Permission denied" in err
    st = os.stat(server.export / "d" / "u")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1000, 1000, 0o600)


# --- lifecycle and errors --------------------------------------------------------------


def test_unmount_leaves_no_fuse_mount_and_no_client_process(
        server: GaneshaServer, hosts: tuple[Host, Host]) -> None:
    a, _ = hosts
    a.svc.create("tidy", options=_nfs_opts(server))
    path = a.svc.mount("tidy", "c1")
    assert a.svc.mount("tidy", "c2") == path  # a second user shares the mount
    pidfile = Path(path).parent / "nfs-client.pid"
    pid = int(pidfile.read_text())
    assert pid in _helpers()
    (Path(path) / "f").write_text("x")
    a.svc.unmount("tidy", "c1")
    assert _fuse_mounts(path) == [path]  # c2 still uses it
    a.svc.unmount("tidy", "c2")
    assert _fuse_mounts(path) == []
    assert pid not in _helpers() and not pidfile.exists()
    assert not (Path(path) / "f").exists()  # the bare directory underneath again
    assert (server.export / "f").read_text() == "x"
    # and it mounts again afterwards
    assert (Path(a.svc.mount("tidy", "c3")) / "f").read_text() == "x"
    a.svc.unmount("tidy", "c3")
    assert _fuse_mounts(path) == [] and _helpers() == []


def test_a_killed_client_leaves_a_mount_that_still_unmounts(
        server: GaneshaServer, hosts: tuple[Host, Host]) -> None:
    a, _ = hosts
    a.svc.create("orphan", options=_nfs_opts(server))
    path = a.svc.mount("orphan", "c1")
    pid = int((Path(path).parent / "nfs-client.pid").read_text())
    assert not stale_fuse_mount(path)
    os.kill(pid, signal.SIGKILL)  # the client process this test started, by its pid
    _eventually(lambda: _check(pid not in _helpers()))
    with pytest.raises(OSError) as err:
        os.listdir(path)
    assert err.value.errno == errno.ENOTCONN  # the kernel says so at once: no hang
    assert stale_fuse_mount(path)
    a.svc.unmount("orphan", "c1")
    assert _fuse_mounts(path) == []
    assert not (Path(path).parent / "nfs-client.pid").exists()


def test_unknown_export_is_a_clear_error_and_mounts_nothing(
        server: GaneshaServer, hosts: tuple[Host, Host]) -> None:
    a, _ = hosts
    a.svc.create("nope", options={"type": "nfs", "o": f"addr={server.ip}",
                                  "device": ":/no/such/export"})
    with pytest.raises(PermissionDenied) as err:  # ganesha answers EACCES for any unknown
        a.svc.mount("nope", "c1")
    assert f"{server.ip}:/no/such/export" in str(err.value)
    assert a.store.refs("nope") == []
    assert _fuse_mounts(str(a.root)) == [] and _helpers() == []


def test_nfsv4_is_refused_by_the_userspace_client(server: GaneshaServer,
                                                  hosts: tuple[Host, Host]) -> None:
    a, _ = hosts
    # refused when the volume is created, before anything is made or mounted
    with pytest.raises(InvalidArgument, match="NFSv3 only"):
        a.svc.create("v4", options=_nfs_opts(server, "vers=4"))
    assert a.svc.list() == []
    assert _fuse_mounts(str(a.root)) == [] and _helpers() == []


def test_a_silent_server_times_out_instead_of_hanging(hosts: tuple[Host, Host]) -> None:
    a, _ = hosts
    # a listener that never accepts: TCP connects (the backlog), no RPC reply ever comes
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        a.svc.create("silent", options={
            "type": "nfs", "device": ":/export",
            "o": f"addr=127.0.0.1,port={port},mountport={port},timeo=10,retrans=0"})
        started = time.monotonic()
        with pytest.raises(Unavailable, match=r"no reply within 1s"):
            a.svc.mount("silent", "c1")
        assert time.monotonic() - started < 10
    assert _fuse_mounts(str(a.root)) == [] and _helpers() == []


def _tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid = len(data), 0o640, 1000, 1000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _daemon_mounts_volumes(d: Skiffd) -> bool:
    """Whether this daemon mounts named volumes into containers yet (being wired)."""
    d.out("volume", "create", "probe")
    try:
        res = d.docker("run", "--rm", "-v", "probe:/probe", IMAGE, "test", "-d", "/probe",
                       check=False)
        return res.returncode == 0
    finally:
        d.docker("volume", "rm", "probe", check=False)


@pytest.fixture(scope="module")
def daemons(server: GaneshaServer, busybox_rootfs: Path) -> Iterator[tuple[Skiffd, Skiffd]]:
    """Two private skiffd instances: two hosts of the export, as the issue asks."""
    with private_skiffd(busybox_rootfs, check_parent_cgroup=False) as d1, \
            private_skiffd(busybox_rootfs, check_parent_cgroup=False) as d2:
        yield d1, d2
        assert _fuse_mounts(str(d1.base)) == [] == _fuse_mounts(str(d2.base))
    assert _helpers() == []


@pytest.fixture
def shared_volume(server: GaneshaServer, daemons: tuple[Skiffd, Skiffd]) -> Iterator[str]:
    """`docker volume create --driver local --opt type=nfs ...` of one name on both daemons."""
    opts = ["--driver", "local", "--opt", "type=nfs", "--opt", f"o=addr={server.ip},rw",
            "--opt", "device=:/export"]
    for d in daemons:
        assert d.out("volume", "create", *opts, "shared").strip() == "shared"
    yield "shared"
    for d in daemons:
        assert d.out("volume", "rm", "shared").strip() == "shared"
        assert _fuse_mounts(str(d.base)) == []
    assert _helpers() == []
    _empty(server.export)


def test_two_skiffd_instances_share_an_nfs_volume(server: GaneshaServer,
                                                  daemons: tuple[Skiffd, Skiffd],
                                                  shared_volume: str) -> None:
    """What one daemon puts in (skiff's volume import), the other gets out (export): each
    mounts the export through its own userspace client for the operation."""
    d1, d2 = daemons
    status, _ = d1.api("PUT", f"/volumes/{shared_volume}/import",
                       raw=_tar_of({"note": b"written-by-d1\n"}))
    assert status == 204
    st = os.stat(server.export / "note")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1000, 1000, 0o640)
    status, body = d2.api("GET", f"/volumes/{shared_volume}/export")
    assert status == 200
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        member = tar.getmember("note")
        assert (member.uid, member.gid, member.mode & 0o777) == (1000, 1000, 0o640)
        f = tar.extractfile(member)
        assert f is not None and f.read() == b"written-by-d1\n"
    # neither daemon keeps the export mounted once the operation is done
    assert _fuse_mounts(str(d1.base)) == [] == _fuse_mounts(str(d2.base))
    assert _helpers() == []


def test_containers_of_two_skiffd_instances_share_an_nfs_volume(
        daemons: tuple[Skiffd, Skiffd], shared_volume: str) -> None:
    d1, d2 = daemons
    if not _daemon_mounts_volumes(d1):
        pytest.skip("this skiffd does not mount named volumes into containers yet "
                    "(`docker run -v vol:/data` shows no /data)")
    d1.out("run", "--rm", "-v", f"{shared_volume}:/data", IMAGE, "sh", "-c",
           "mkdir /data/dir && echo from-a-container > /data/dir/c && "
           "ln -s c /data/dir/link && chown 1000:1000 /data/dir/c && chmod 640 /data/dir/c")
    out = d2.out("run", "--rm", "-v", f"{shared_volume}:/data", IMAGE, "sh", "-c",
                 "cat /data/dir/link && stat -c '%u:%g %a' /data/dir/c")
    assert out.split() == ["from-a-container", "1000:1000", "640"]
    # a non-root user in d2's container is held to the file's permissions
    res = d2.docker("run", "--rm", "-u", "1001:1001", "-v", f"{shared_volume}:/data", IMAGE,
                    "cat", "/data/dir/c", check=False)
    assert res.returncode != 0 and "Permission denied" in res.stderr.decode()
    # the last container gone, each daemon unmounts (--rm may return just before that)
    _eventually(lambda: _check(_fuse_mounts(str(d1.base)) == [] == _fuse_mounts(str(d2.base))))
    _eventually(lambda: _check(_helpers() == []))


def test_server_gone_gives_errors_not_hangs(server: GaneshaServer,
                                            hosts: tuple[Host, Host]) -> None:
    """Last in the module: it stops the server."""
    a, b = hosts
    a.svc.create("doomed", options=_nfs_opts(server, "timeo=10,retrans=1"))
    b.svc.create("late", options=_nfs_opts(server, "timeo=10"))
    pa = Path(a.svc.mount("doomed", "c1"))
    (pa / "f").write_text("before")
    server.stop()
    started = time.monotonic()
    with pytest.raises(OSError) as err:
        (pa / "g").write_text("after")  # soft semantics: EIO once the retries are spent
    assert err.value.errno == errno.EIO
    assert time.monotonic() - started < 15
    a.svc.unmount("doomed", "c1")  # still unmounts cleanly, and the client exits
    assert _fuse_mounts(str(pa)) == [] and _helpers() == []
    started = time.monotonic()
    with pytest.raises(Unavailable, match=server.ip):
        b.svc.mount("late", "c2")  # rpcbind is gone too: refused at once
    assert time.monotonic() - started < 15
    assert b.store.refs("late") == []
