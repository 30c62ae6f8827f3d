"""save/load against real peers: skopeo (docker-archive, oci-archive) and a private dockerd.

The image is a busybox root filesystem imported with ``import_rootfs``; nothing comes from the
network. dockerd runs with its own data/exec roots, socket and pidfile, no bridge and no
iptables, vfs storage, and is stopped (and its leftovers removed) after the module.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiff.core.reference import parse_reference
from skiff.devtools.images import (
    Dockerd,
    DockerdUnavailable,
    ToolMissing,
    private_dockerd,
    tar_tree,
)
from skiff.plugins.content.local import LocalContentStore
from skiff.plugins.metadata.sqlite import SqliteMetadata
from skiff.services.images import Image, ImageService
from skiff.services.interchange import Interchange

SKOPEO = shutil.which("skopeo")


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


@pytest.fixture(scope="module")
def rootfs_tar(busybox_rootfs: Path) -> bytes:
    return tar_tree(busybox_rootfs)


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


@pytest.fixture(scope="module")
def dockerd() -> Iterator[Dockerd]:
    try:
        with private_dockerd() as d:
            yield d
    except (ToolMissing, DockerdUnavailable) as exc:
        pytest.skip(str(exc))


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
