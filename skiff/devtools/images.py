"""Real peers for the image tests and benches: local images, docker-registry, a private dockerd.

Nothing here may touch the internet: images are built from local files (busybox), the
registry is Debian's ``docker-registry`` on 127.0.0.1:<free port> with its own storage, and
dockerd runs with private data/exec roots, socket and pidfile, no bridge and no iptables.
Tests (``tests/integration``) and benches (``bench/``) import these; nothing in the engine does.

Missing programs raise ``ToolMissing`` (naming the Debian package), which test fixtures turn
into a skip with that reason and benches into an exit message.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from skiff.core.content import Digest
from skiff.plugins.registry.credentials import Credentials

REGISTRY_BIN = "/usr/bin/docker-registry"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
_FIXED_MTIME = 1700000000  # layers built twice from the same files get the same digest


class ToolMissing(FileNotFoundError):
    """A program a peer needs is not installed; the message says which Debian package has it."""


def need(binary: str, package: str | None = None) -> str:
    """The path of ``binary`` or ToolMissing."""
    path = shutil.which(binary) or (binary if os.path.isabs(binary) and os.access(binary, os.X_OK)
                                    else None)
    if path is None:
        raise ToolMissing(f"{binary} is not installed (apt-get install "
                          f"{package or os.path.basename(binary)})")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the peer binds it right after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- images, built locally --------------------------------------------------------------------


def tar_tree(src: Path) -> bytes:
    """An uncompressed PAX tar of the tree under ``src`` (names relative to it): a rootfs layer."""
    return tar_gz({}, from_dir=src, compress=False)[0]


def tar_gz(files: Mapping[str, bytes], *, from_dir: Path | None = None,
           compress: bool = True) -> tuple[bytes, bytes]:
    """(tar, gzip'd tar) of a layer: ``files`` (name -> content) plus, if given, a directory tree.

    ``compress=False`` leaves the second item empty (for callers that only want the tar).
    """
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        if from_dir is not None:
            for entry in sorted(from_dir.iterdir()):
                tf.add(entry, arcname=entry.name)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = _FIXED_MTIME
            tf.addfile(info, io.BytesIO(data))
    tar = raw.getvalue()
    return tar, gzip.compress(tar, compresslevel=1, mtime=0) if compress else b""


@dataclass
class BuiltImage:
    layout: Path  # an OCI image layout dir with the image tagged "latest"
    layers: list[bytes]  # compressed layer blobs
    config: bytes
    manifest: bytes
    diff_ids: list[Digest] = field(default_factory=list)

    @property
    def manifest_digest(self) -> Digest:
        return Digest.from_bytes(self.manifest)

    @property
    def total_bytes(self) -> int:
        return sum(len(b) for b in self.layers)


def _put_blob(layout: Path, data: bytes) -> Digest:
    d = Digest.from_bytes(data)
    path = layout / "blobs" / "sha256" / d.hex
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return d


def build_image(layout: Path, layer_files: list[dict[str, bytes]], *,
                rootfs: Path | None = None, arch: str = "amd64",
                platforms: list[str] | None = None,
                layer_dirs: Sequence[Path] = ()) -> BuiltImage:
    """Write an OCI layout with one image (or an index of ``platforms`` images) tagged latest.

    The first layer holds ``rootfs`` (e.g. the busybox tree of ``devtools.busybox``) when
    given; then one layer per directory of ``layer_dirs``, then one per dict in
    ``layer_files``. With ``platforms``, every platform
    gets its own config (so its own digest) over the same layers, and ``latest`` names the index.
    """
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    raws_gz = []
    if rootfs is not None:
        raws_gz.append(tar_gz({}, from_dir=rootfs))
    raws_gz.extend(tar_gz({}, from_dir=d) for d in layer_dirs)
    raws_gz.extend(tar_gz(files) for files in layer_files)
    diff_ids = [Digest.from_bytes(raw) for raw, _ in raws_gz]
    layers = [gz for _, gz in raws_gz]
    del raws_gz  # benches build hundreds of MB: keep only the compressed copies
    layer_descs = [{"mediaType": OCI_LAYER_GZIP, "digest": str(_put_blob(layout, gz)),
                    "size": len(gz)} for gz in layers]

    def one(arch_: str) -> tuple[bytes, bytes]:
        config = json.dumps({
            "architecture": arch_, "os": "linux",
            "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [str(d) for d in diff_ids]},
            "history": [{"created_by": f"layer {i}"} for i in range(len(layers))],
        }).encode()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": str(_put_blob(layout, config)),
                       "size": len(config)},
            "layers": layer_descs,
        }).encode()
        _put_blob(layout, manifest)
        return config, manifest

    top: dict[str, object]
    if platforms:
        entries = []
        first: tuple[bytes, bytes] | None = None
        for plat in platforms:
            config, manifest = one(plat.split("/")[1])
            first = first or (config, manifest)
            entries.append({"mediaType": OCI_MANIFEST,
                            "digest": str(Digest.from_bytes(manifest)), "size": len(manifest),
                            "platform": {"os": "linux", "architecture": plat.split("/")[1]}})
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                            "manifests": entries}).encode()
        top = {"mediaType": OCI_INDEX, "digest": str(_put_blob(layout, index)),
               "size": len(index)}
        assert first is not None
        config, manifest = first
    else:
        config, manifest = one(arch)
        top = {"mediaType": OCI_MANIFEST, "digest": str(Digest.from_bytes(manifest)),
               "size": len(manifest)}
    top["annotations"] = {"org.opencontainers.image.ref.name": "latest"}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    return BuiltImage(layout, layers, config, manifest, diff_ids)


def make_tree(root: Path, size_mb: int, seed: int = 7) -> int:
    """Fill ``root`` with about ``size_mb`` of rootfs-like files; returns how many.

    Deterministic for a seed. Mostly small files (as a Debian rootfs: ~15 kB on average),
    some medium, a few large; half compressible text, half random; a symlink every 50 files.
    """
    rng = random.Random(seed)
    words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz_", k=rng.randint(2, 12))) for _ in range(4000)]
    budget = size_mb * 1_000_000
    written = 0
    n = 0
    while written < budget:
        d = root / f"usr/lib/pkg{n // 200:04d}/sub{n % 7}"
        d.mkdir(parents=True, exist_ok=True)
        r = rng.random()
        # about a Debian rootfs's mix: mostly small files (~15 kB on average overall)
        size = rng.randint(200, 7_000) if r < 0.93 else (
            rng.randint(20_000, 150_000) if r < 0.999 else rng.randint(2_000_000, 10_000_000))
        if rng.random() < 0.5:  # text-like: compresses ~4x, like code and docs
            chunk = b" ".join(rng.choices(words, k=2000)) + b"\n"
            data = (chunk * (size // len(chunk) + 1))[:size]
        else:  # binary-like: does not compress, like already-compressed assets
            data = rng.randbytes(size)
        (d / f"f{n}").write_bytes(data)
        if n % 50 == 0:
            os.symlink(f"f{n}", d / f"link{n}")
        written += size
        n += 1
    return n


@contextlib.contextmanager
def scratch_ext4(where: Path, size_gb: int = 8) -> Iterator[Path]:
    """A fresh journaled ext4 (a sparse file on a loop device) mounted at ``where``.

    For benchmarks that create and delete many files: they all start from the same clean
    filesystem rather than one aged by whatever ran before (and some hosts' root is ext4
    without a journal, which will not reuse a deleted inode for a minute and pays for
    skipping it on every create). Needs root, mkfs.ext4 and loop devices.
    """
    mkfs = need("mkfs.ext4", "e2fsprogs")
    where.mkdir(parents=True, exist_ok=True)
    image = where.with_name(where.name + ".img")
    with open(image, "wb") as f:
        f.truncate(size_gb << 30)
    try:
        subprocess.run([mkfs, "-q", "-F", "-O", "^metadata_csum", str(image)], check=True,
                       capture_output=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(where)], check=True,
                       capture_output=True)
        try:
            yield where
        finally:
            subprocess.run(["umount", str(where)], check=True, capture_output=True)
    finally:
        image.unlink()


# --- docker-registry --------------------------------------------------------------------------


@dataclass
class Registry:
    host: str  # "127.0.0.1:port"
    root: Path
    proc: subprocess.Popen[bytes]
    creds: Credentials | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}"


def start_registry(workdir: Path, auth: dict[str, object] | None = None,
                   creds: Credentials | None = None) -> Registry:
    """docker-registry serving ``workdir/storage`` on a free loopback port, up when returned."""
    exe = need(REGISTRY_BIN, "docker-registry")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    storage = workdir / "storage"
    storage.mkdir()
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }
    if auth:
        config["auth"] = auth
    cfg = workdir / "config.yml"
    cfg.write_text(json.dumps(config))  # YAML is a superset of JSON
    with open(workdir / "registry.log", "wb") as log:
        proc = subprocess.Popen([exe, "serve", str(cfg)], stdout=log, stderr=log)
    wait_until_up(proc, f"http://127.0.0.1:{port}/v2/", workdir / "registry.log",
                  "docker-registry")
    return Registry(f"127.0.0.1:{port}", workdir, proc, creds)


def wait_until_up(proc: subprocess.Popen[bytes], url: str, log: Path, what: str,
                  context: ssl.SSLContext | None = None, timeout: float = 15) -> None:
    """Poll ``url`` until the registry answers (a 401 counts: up, wants auth); on failure kill
    ``proc`` and raise with its log."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1, context=context).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"{what} did not start: " + log.read_text()) from None
            time.sleep(0.05)


def start_auth_registry(workdir: Path, username: str, password: str) -> Registry:
    """A registry that wants HTTP basic auth (htpasswd with bcrypt, as docker's docs set up)."""
    htpasswd = need("htpasswd", "apache2-utils")
    workdir.mkdir(parents=True, exist_ok=True)
    line = subprocess.run([htpasswd, "-Bbn", username, password], check=True,
                          capture_output=True).stdout
    (workdir / "htpasswd").write_bytes(line)
    return start_registry(workdir, {"htpasswd": {"realm": "skiff-test",
                                                 "path": str(workdir / "htpasswd")}},
                          Credentials(username, password))


def stop_registry(reg: Registry) -> None:
    reg.proc.terminate()
    try:
        reg.proc.wait(10)
    except subprocess.TimeoutExpired:
        reg.proc.kill()
        reg.proc.wait()


# --- skopeo -----------------------------------------------------------------------------------


def skopeo(*args: str) -> subprocess.CompletedProcess[bytes]:
    exe = need("skopeo")
    proc = subprocess.run([exe, "--insecure-policy", *args], capture_output=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"skopeo {' '.join(args)} failed: {proc.stderr.decode()}")
    return proc


def skopeo_push(image: BuiltImage, reg: Registry, repo: str, tag: str = "latest") -> None:
    """Copy the layout's ``latest`` (all platforms) to ``reg``/``repo``:``tag``."""
    args = ["copy", "--all", "--dest-tls-verify=false"]
    if reg.creds:
        args += ["--dest-creds", f"{reg.creds.username}:{reg.creds.password}"]
    skopeo(*args, f"oci:{image.layout}:latest", f"docker://{reg.host}/{repo}:{tag}")


def skopeo_raw_manifest(reg: Registry, repo: str, tag: str) -> bytes:
    args = ["inspect", "--raw", "--tls-verify=false"]
    if reg.creds:
        args += ["--creds", f"{reg.creds.username}:{reg.creds.password}"]
    return skopeo(*args, f"docker://{reg.host}/{repo}:{tag}").stdout


# --- a private dockerd ------------------------------------------------------------------------


def docker_cli() -> str:
    return "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else need("docker", "docker.io")


class Dockerd:
    """dockerd with everything under ``root``: it never meets the host's docker (if any)."""

    def __init__(self, root: Path, storage_driver: str = "vfs",
                 extra_config: dict[str, object] | None = None, bridge_cidr: str = "") -> None:
        self.extra_config = dict(extra_config or {})
        # "": no networking (no bridge, no iptables); else docker0 gets this address and
        # dockerd programs its iptables rules and userland proxy, as a stock install does
        self.bridge_cidr = bridge_cidr
        self.root = root
        self.sock = root / "d.sock"
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{self.sock}")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "dockerd.log"
        self.storage_driver = storage_driver

    def start(self) -> str | None:
        """Start; return None, or why it cannot run here (for a skip reason)."""
        exe = need("dockerd", "docker.io")
        cli = docker_cli()
        cfg = self.root / "daemon.json"
        # the trust key would otherwise be written to /etc/docker/key.json
        cfg.write_text(json.dumps({"deprecated-key-path": str(self.root / "key.json"),
                                   **self.extra_config}))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [exe, "--config-file", str(cfg), "--data-root", str(self.root / "data"),
                 "--exec-root", str(self.root / "exec"), "-H", f"unix://{self.sock}",
                 "--pidfile", str(self.root / "d.pid"), *self._network_flags(),
                 f"--storage-driver={self.storage_driver}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"dockerd exited with {self.proc.returncode}: {self.log.read_text()[-600:]}"
            if self.sock.exists() and subprocess.run(
                    [cli, "version"], env=self.env, capture_output=True,
                    timeout=30).returncode == 0:
                return None
            time.sleep(0.3)
        return f"dockerd did not answer within 60s: {self.log.read_text()[-600:]}"

    def _network_flags(self) -> list[str]:
        if not self.bridge_cidr:
            return ["--bridge=none", "--iptables=false", "--ip-masq=false", "--ip6tables=false"]
        return [f"--bip={self.bridge_cidr}", "--ip6tables=false"]

    def docker(self, *args: str, stdin: bytes | None = None, timeout: float = 180) -> bytes:
        proc = subprocess.run([docker_cli(), *args], env=self.env, input=stdin,
                              capture_output=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {proc.stderr.decode()}")
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
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def _mounts() -> list[str]:
    with open("/proc/mounts") as f:
        return [line.split()[1] for line in f]


def _docker_cgroup_dirs() -> set[str]:
    base = "/sys/fs/cgroup"
    try:
        names = os.listdir(base)
    except OSError:
        return set()
    found = {os.path.join(base, n, "docker") for n in names}
    found.add(os.path.join(base, "docker"))
    return {d for d in found if os.path.isdir(d)}


class DockerdUnavailable(RuntimeError):
    """dockerd is installed but cannot run here; the message says why."""


def _nft_tables() -> set[str]:
    res = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=False)
    return {line.strip() for line in res.stdout.splitlines() if line.startswith("table ")}


@contextlib.contextmanager
def private_dockerd(storage_driver: str = "vfs", parent: str = "/tmp",
                    extra_config: dict[str, object] | None = None,
                    bridge_cidr: str = "") -> Iterator[Dockerd]:
    """A running private dockerd; on exit it is stopped and its mounts and files removed.

    Its root is a new directory under ``parent`` (keep that path short: the API socket lives
    there and unix socket paths are limited to 107 bytes). ``extra_config`` is merged into its
    daemon.json (e.g. ``{"runtimes": {...}}``).
    """
    run_docker_existed = os.path.exists("/run/docker")
    cgroups_existed = {d for d in _docker_cgroup_dirs()}
    root = Path(tempfile.mkdtemp(prefix="skdk", dir=parent))
    d = Dockerd(root, storage_driver, extra_config, bridge_cidr)
    tables_before = _nft_tables() if bridge_cidr else set()
    try:
        why = d.start()
        if why is not None:
            raise DockerdUnavailable(f"cannot start a private dockerd here: {why}")
        yield d
    finally:
        d.stop()
        for m in reversed([m for m in _mounts() if str(root) in m]):
            subprocess.run(["umount", "-l", m], check=False)
        shutil.rmtree(root, ignore_errors=True)
        if not run_docker_existed:
            # dockerd insists on /run/docker/plugins; remove what it created for us
            for p in ("/run/docker/plugins", "/run/docker"):
                with contextlib.suppress(OSError):
                    os.rmdir(p)
        if bridge_cidr:  # what its networking left: docker0 and the iptables(-nft) tables
            subprocess.run(["ip", "link", "delete", "docker0"], capture_output=True,
                           check=False)
            for table in sorted(_nft_tables() - tables_before):
                subprocess.run(["nft", "delete", *table.split()], capture_output=True,
                               check=False)
        # The "docker" parent cgroups it made in every hierarchy (empty once it is gone).
        for top in _docker_cgroup_dirs() - cgroups_existed:
            for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(dirpath)
        left = [m for m in _mounts() if str(root) in m]
        if left:
            raise RuntimeError(f"private dockerd left mounts behind: {left}")
