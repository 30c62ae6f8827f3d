"""save/load against real peers: skopeo (docker-archive, oci-archive) and a private dockerd.

The image is a busybox root filesystem imported with ``import_rootfs``; nothing comes from the
network. dockerd runs with its own data/exec roots, socket and pidfile, no bridge and no
iptables, vfs storage, and is stopped (and its leftovers removed) after the module.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiff.core.reference import parse_reference
from skiff.plugins.content.local import LocalContentStore
from skiff.plugins.metadata.sqlite import SqliteMetadata
from skiff.services.images import Image, ImageService
from skiff.services.interchange import Interchange

SKOPEO = shutil.which("skopeo")
DOCKERD = shutil.which("dockerd")
DOCKER = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else shutil.which("docker")


class Store:
    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.content = LocalContentStore(str(root / "content"))
        self.meta = SqliteMetadata(str(root / "meta.db"))
        self.images = ImageService(self.content, self.meta)
        self.x = Interchange(self.images, self.meta, tmpdir=str(root))

    def save(self, path: Path, *names: str) -> None:
        with open(path, "wb") as f:
            self.x.save(list(names), f)

    def load(self, path: Path) -> list[str]:
        with open(path, "rb") as f:
            return self.x.load(f).messages


def tar_dir(src: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for entry in sorted(src.iterdir()):
            tf.add(entry, arcname=entry.name, recursive=True)
    return buf.getvalue()


@pytest.fixture(scope="module")
def rootfs_tar(busybox_rootfs: Path) -> bytes:
    return tar_dir(busybox_rootfs)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "ours")
    yield s
    s.meta.close()


@pytest.fixture
def busybox_image(store: Store, rootfs_tar: bytes) -> Image:
    return store.x.import_rootfs(io.BytesIO(rootfs_tar),
                                 names=[parse_reference("skiff-test/busybox:1")],
                                 changes=['CMD ["sh"]', "ENV HELLO=world"])


def run(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                          env=env)
    assert proc.returncode == 0, f"{args}: {proc.stderr}"
    return proc.stdout


# --- skopeo -----------------------------------------------------------------------------------

needs_skopeo = pytest.mark.skipif(SKOPEO is None, reason="skopeo not installed (apt install skopeo)")


@needs_skopeo
def test_skopeo_reads_our_save_as_both_formats(store: Store, busybox_image: Image,
                                               tmp_path: Path) -> None:
    ours = tmp_path / "ours.tar"
    store.save(ours, "skiff-test/busybox:1")
    for transport in ("docker-archive", "oci-archive"):
        cfg = json.loads(run("skopeo", "inspect", "--config", f"{transport}:{ours}"))
        assert cfg["config"]["Cmd"] == ["sh"], transport
        assert cfg["rootfs"]["diff_ids"] == [str(d) for d in busybox_image.config.diff_ids]
        raw = run("skopeo", "inspect", "--raw", f"{transport}:{ours}")
        assert json.loads(raw)["config"]["digest"] == str(busybox_image.id)
    # skopeo copies every layer out of our archive, verifying digests as it goes
    run("skopeo", "--insecure-policy", "copy", f"oci-archive:{ours}", f"oci:{tmp_path / 'layout'}:x")
    assert (tmp_path / "layout" / "index.json").exists()


@needs_skopeo
@pytest.mark.parametrize("dest", ["docker-archive", "oci-archive"])
def test_we_load_what_skopeo_writes(store: Store, busybox_image: Image, tmp_path: Path,
                                    dest: str) -> None:
    ours = tmp_path / "ours.tar"
    store.save(ours, "skiff-test/busybox:1")
    theirs = tmp_path / f"theirs-{dest}.tar"
    src = "docker-archive" if dest == "oci-archive" else "oci-archive"
    run("skopeo", "--insecure-policy", "copy", f"{src}:{ours}", f"{dest}:{theirs}:copied/busybox:2")
    fresh = Store(tmp_path / "fresh")
    try:
        assert fresh.load(theirs) == ["Loaded image: copied/busybox:2"]
        img = fresh.images.get("copied/busybox:2")
        if dest == "docker-archive":
            assert img.id == busybox_image.id
        # else skopeo converted the Docker config to an OCI one (dropping Docker-only fields
        # such as "comment"), which changes the ID; the filesystem and settings stay
        assert img.config.diff_ids == busybox_image.config.diff_ids
        assert img.config.config["Env"] == ["HELLO=world"]
    finally:
        fresh.meta.close()


# --- docker -----------------------------------------------------------------------------------


class Dockerd:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.sock = root / "d.sock"
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{self.sock}")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "dockerd.log"

    def start(self) -> str | None:
        """Start; return None, or why it cannot run here (for the skip reason)."""
        assert DOCKERD is not None
        cfg = self.root / "daemon.json"
        # the trust key would otherwise be written to /etc/docker/key.json
        cfg.write_text(json.dumps({"deprecated-key-path": str(self.root / "key.json")}))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [DOCKERD, "--config-file", str(cfg), "--data-root", str(self.root / "data"),
                 "--exec-root", str(self.root / "exec"), "-H", f"unix://{self.sock}",
                 "--pidfile", str(self.root / "d.pid"), "--bridge=none", "--iptables=false",
                 "--ip-masq=false", "--ip6tables=false", "--storage-driver=vfs"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"dockerd exited with {self.proc.returncode}: {self.log.read_text()[-600:]}"
            if self.sock.exists() and subprocess.run(
                    [DOCKER or "docker", "version"], env=self.env, capture_output=True,
                    timeout=30).returncode == 0:
                return None
            time.sleep(0.3)
        return f"dockerd did not answer within 60s: {self.log.read_text()[-600:]}"

    def docker(self, *args: str, stdin: bytes | None = None) -> bytes:
        proc = subprocess.run([DOCKER or "docker", *args], env=self.env, input=stdin,
                              capture_output=True, timeout=180)
        assert proc.returncode == 0, f"docker {args}: {proc.stderr.decode()}"
        return proc.stdout

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        # its managed containerd shuts down with it; make sure, by process group
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            pass
        else:
            os.killpg(self.proc.pid, signal.SIGKILL)


def _mounts() -> list[str]:
    with open("/proc/mounts") as f:
        return [line.split()[1] for line in f]


@pytest.fixture(scope="module")
def dockerd() -> Iterator[Dockerd]:
    if DOCKERD is None or DOCKER is None:
        pytest.skip("dockerd/docker not installed (apt install docker.io)")
    run_docker_existed = os.path.exists("/run/docker")
    root = Path(tempfile.mkdtemp(prefix="skdk", dir="/tmp"))  # short: unix socket paths
    d = Dockerd(root)
    try:
        why = d.start()
        if why is not None:
            pytest.skip(f"cannot start a private dockerd here: {why}")
        yield d
    finally:
        d.stop()
        mounts = [m for m in _mounts() if str(root) in m]
        for m in reversed(mounts):
            subprocess.run(["umount", "-l", m], check=False)
        shutil.rmtree(root, ignore_errors=True)
        if not run_docker_existed:
            # dockerd insists on /run/docker/plugins; remove what it created for us
            for p in ("/run/docker/plugins", "/run/docker"):
                try:
                    os.rmdir(p)
                except OSError:
                    pass
        assert not [m for m in _mounts() if str(root) in m]


def derived_image(store: Store, base: Image) -> Image:
    """busybox plus a second layer: a multi-layer image sharing its base with ``base``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("etc/app.conf")
        data = b"answer=42\n"
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    layer = store.x.import_rootfs(io.BytesIO(buf.getvalue()))
    cfg = dict(base.config.raw_json)
    cfg["rootfs"] = {"type": "layers", "diff_ids": [str(base.config.diff_ids[0]),
                                                    str(layer.config.diff_ids[0])]}
    cfg["history"] = [{"created_by": "import"}, {"created_by": "ADD app.conf /etc"}]
    cfg["config"] = {"Cmd": ["cat", "/etc/app.conf"]}
    img = store.images.store_image(cfg, [base.manifest.layers[0], layer.manifest.layers[0]],
                                   [parse_reference("skiff-test/app:2")])
    store.images.remove(str(layer.id))
    return img


def test_docker_loads_our_save(dockerd: Dockerd, store: Store, busybox_image: Image,
                               tmp_path: Path) -> None:
    app = derived_image(store, busybox_image)
    ours = tmp_path / "ours.tar"
    store.save(ours, "skiff-test/busybox:1", "skiff-test/app:2")
    out = dockerd.docker("load", "-i", str(ours)).decode()
    assert "Loaded image: skiff-test/busybox:1" in out
    assert "Loaded image: skiff-test/app:2" in out
    info = json.loads(dockerd.docker("image", "inspect", "skiff-test/busybox:1"))[0]
    assert info["Id"] == str(busybox_image.id)
    assert info["Config"]["Cmd"] == ["sh"]
    assert info["RootFS"]["Layers"] == [str(d) for d in busybox_image.config.diff_ids]
    info = json.loads(dockerd.docker("image", "inspect", "skiff-test/app:2"))[0]
    assert info["Id"] == str(app.id)
    assert len(info["RootFS"]["Layers"]) == 2
    history = dockerd.docker("history", "--no-trunc", "--format", "{{.CreatedBy}}",
                             "skiff-test/app:2").decode().split("\n")
    assert history[:2] == ["ADD app.conf /etc", "import"]
    # and back: docker's own save of both loads here to the same images
    theirs = tmp_path / "theirs.tar"
    dockerd.docker("save", "-o", str(theirs), "skiff-test/busybox:1", "skiff-test/app:2")
    fresh = Store(tmp_path / "fresh")
    try:
        assert sorted(fresh.load(theirs)) == ["Loaded image: skiff-test/app:2",
                                              "Loaded image: skiff-test/busybox:1"]
        assert fresh.images.get("skiff-test/busybox:1").id == busybox_image.id
        assert fresh.images.get("skiff-test/app:2").id == app.id
        assert fresh.images.history("skiff-test/app:2")[0]["CreatedBy"] == "ADD app.conf /etc"
    finally:
        fresh.meta.close()
    dockerd.docker("rmi", "skiff-test/busybox:1", "skiff-test/app:2")


def test_we_load_dockers_own_image(dockerd: Dockerd, store: Store, rootfs_tar: bytes,
                                   tmp_path: Path) -> None:
    dockerd.docker("import", "-c", "CMD [\"echo\", \"hi\"]", "-c", "WORKDIR /tmp",
                   "-m", "made by docker", "-", "docker-made/bb:7", stdin=rootfs_tar)
    dinfo = json.loads(dockerd.docker("image", "inspect", "docker-made/bb:7"))[0]
    theirs = tmp_path / "docker-save.tar"
    dockerd.docker("save", "-o", str(theirs), "docker-made/bb:7")
    assert store.load(theirs) == ["Loaded image: docker-made/bb:7"]
    ours = store.images.inspect("docker-made/bb:7")
    assert ours["Id"] == dinfo["Id"]
    assert ours["Config"]["Cmd"] == ["echo", "hi"] and ours["Config"]["WorkingDir"] == "/tmp"
    assert ours["RootFS"]["Layers"] == dinfo["RootFS"]["Layers"]
    assert ours["Comment"] == "made by docker"
    dockerd.docker("rmi", "docker-made/bb:7")
