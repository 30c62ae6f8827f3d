"""The registry client against a real peer: Debian's docker-registry (distribution 2.8).

This module also holds the registry fixtures and the OCI-layout image builder that
test_pull.py and test_push.py import: a docker-registry on 127.0.0.1:<free port> with its own
config and a temp storage dir, with and without htpasswd (bcrypt) auth, images put in with
skopeo from locally built layers (busybox), never the internet.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from skiff.core.content import Descriptor, Digest
from skiff.core.images import Manifest, parse_manifest
from skiff.core.registry import PushOutcome, Repository
from skiff.errors import InvalidArgument, NotFound, PermissionDenied, Unavailable
from skiff.plugins.content.local import LocalContentStore
from skiff.plugins.registry.client import HttpRegistryClient, RegistryConfig, login, logout
from skiff.plugins.registry.credentials import Credentials, CredentialStore

REGISTRY_BIN = "/usr/bin/docker-registry"
USER, PASSWORD = "skiffer", "s3cret-pw"


def _need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed (apt-get install docker-registry skopeo apache2-utils)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    _need(REGISTRY_BIN)
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
    log = open(workdir / "registry.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([REGISTRY_BIN, "serve", str(cfg)], stdout=log, stderr=log)
    log.close()
    deadline = time.monotonic() + 15
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            break
        except urllib.error.HTTPError:
            break  # 401: up, wants auth
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("docker-registry did not start: "
                                   + (workdir / "registry.log").read_text()) from None
            time.sleep(0.05)
    return Registry(f"127.0.0.1:{port}", workdir, proc, creds)


def stop_registry(reg: Registry) -> None:
    reg.proc.terminate()
    try:
        reg.proc.wait(10)
    except subprocess.TimeoutExpired:
        reg.proc.kill()
        reg.proc.wait()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    yield reg
    stop_registry(reg)
    assert reg.proc.poll() is not None


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    htpasswd = _need("htpasswd")
    work = tmp_path_factory.mktemp("auth-registry")
    line = subprocess.run([htpasswd, "-Bbn", USER, PASSWORD], check=True,
                          capture_output=True).stdout
    (work / "htpasswd").write_bytes(line)
    reg = start_registry(work, {"htpasswd": {"realm": "skiff-test",
                                             "path": str(work / "htpasswd")}},
                         Credentials(USER, PASSWORD))
    yield reg
    stop_registry(reg)


# --- images, built locally --------------------------------------------------------------


def tar_gz(files: dict[str, bytes], *, from_dir: Path | None = None) -> tuple[bytes, bytes]:
    """(tar, gzip'd tar) of a layer: ``files`` (name -> content) plus, if given, a directory tree."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        if from_dir is not None:
            for entry in sorted(from_dir.iterdir()):
                tf.add(entry, arcname=entry.name)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 1700000000
            tf.addfile(info, io.BytesIO(data))
    return raw.getvalue(), gzip.compress(raw.getvalue(), compresslevel=1, mtime=0)


@dataclass
class BuiltImage:
    layout: Path  # an OCI image layout dir with the image tagged "latest"
    layers: list[bytes]  # compressed layer blobs
    config: bytes
    manifest: bytes

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
                platforms: list[str] | None = None) -> BuiltImage:
    """Write an OCI layout with one image (or an index of ``platforms`` images) tagged latest.

    The first layer holds ``rootfs`` (busybox) when given; each dict in ``layer_files`` is one
    more layer. With ``platforms``, every platform gets its own config (so its own digest) over
    the same layers, and ``latest`` names the index.
    """
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    raws_gz = []
    if rootfs is not None:
        raws_gz.append(tar_gz({}, from_dir=rootfs))
    raws_gz.extend(tar_gz(files) for files in layer_files)
    diff_ids = [str(Digest.from_bytes(raw)) for raw, _ in raws_gz]
    layers = [gz for _, gz in raws_gz]
    layer_descs = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": str(_put_blob(layout, gz)), "size": len(gz)} for gz in layers]

    def one(arch_: str) -> tuple[bytes, bytes]:
        config = json.dumps({
            "architecture": arch_, "os": "linux",
            "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": f"layer {i}"} for i in range(len(layers))],
        }).encode()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": str(_put_blob(layout, config)), "size": len(config)},
            "layers": layer_descs,
        }).encode()
        _put_blob(layout, manifest)
        return config, manifest

    if platforms:
        entries = []
        first: tuple[bytes, bytes] | None = None
        for plat in platforms:
            config, manifest = one(plat.split("/")[1])
            first = first or (config, manifest)
            entries.append({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": str(Digest.from_bytes(manifest)), "size": len(manifest),
                            "platform": {"os": "linux", "architecture": plat.split("/")[1]}})
        index = json.dumps({"schemaVersion": 2,
                            "mediaType": "application/vnd.oci.image.index.v1+json",
                            "manifests": entries}).encode()
        top = {"mediaType": "application/vnd.oci.image.index.v1+json",
               "digest": str(_put_blob(layout, index)), "size": len(index)}
        assert first is not None
        config, manifest = first
    else:
        config, manifest = one(arch)
        top = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
               "digest": str(Digest.from_bytes(manifest)), "size": len(manifest)}
    top["annotations"] = {"org.opencontainers.image.ref.name": "latest"}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    return BuiltImage(layout, layers, config, manifest)


def skopeo(*args: str) -> subprocess.CompletedProcess[bytes]:
    exe = _need("skopeo")
    proc = subprocess.run([exe, "--insecure-policy", *args], capture_output=True, timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"skopeo {' '.join(args)} failed: {proc.stderr.decode()}")
    return proc


def skopeo_push(image: BuiltImage, reg: Registry, repo: str, tag: str = "latest") -> None:
    args = ["copy", "--all", "--dest-tls-verify=false"]
    if reg.creds:
        args += ["--dest-creds", f"{reg.creds.username}:{reg.creds.password}"]
    skopeo(*args, f"oci:{image.layout}:latest", f"docker://{reg.host}/{repo}:{tag}")


def skopeo_raw_manifest(reg: Registry, repo: str, tag: str) -> bytes:
    args = ["inspect", "--raw", "--tls-verify=false"]
    if reg.creds:
        args += ["--creds", f"{reg.creds.username}:{reg.creds.password}"]
    return skopeo(*args, f"docker://{reg.host}/{repo}:{tag}").stdout


@pytest.fixture(scope="module")
def small_image(tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: Path) -> BuiltImage:
    return build_image(tmp_path_factory.mktemp("img") / "layout",
                       [{"etc/hello": b"hello\n"}, {"data/blob": os.urandom(300_000)}],
                       rootfs=busybox_rootfs)


# --- the client ---------------------------------------------------------------------------


@pytest.fixture
def client() -> Iterator[HttpRegistryClient]:
    with HttpRegistryClient() as c:
        yield c


@pytest.fixture
def store(tmp_path: Path) -> LocalContentStore:
    return LocalContentStore(str(tmp_path / "content"))


def test_resolve_fetch_manifest_and_blobs(registry: Registry, small_image: BuiltImage,
                                          client: HttpRegistryClient,
                                          store: LocalContentStore) -> None:
    skopeo_push(small_image, registry, "cli/basic")
    repo = Repository(registry.host, "cli/basic")
    desc = client.resolve(repo, "latest")
    assert desc.digest == small_image.manifest_digest
    assert desc.size == len(small_image.manifest)
    assert client.resolve(repo, str(desc.digest)).digest == desc.digest
    raw = client.fetch_manifest(repo, desc)
    assert raw == small_image.manifest
    manifest = parse_manifest(raw, desc.media_type)
    assert isinstance(manifest, Manifest)
    for layer, data in zip(manifest.layers, small_image.layers, strict=True):
        seen: list[int] = []
        info = client.fetch_blob(repo, layer, store.writer(f"t-{layer.digest}"), seen.append)
        assert info.digest == layer.digest
        assert store.read(layer.digest) == data
        assert seen[-1] == len(data)
    assert client.list_tags(repo) == ["latest"]


def test_errors_name_the_object(registry: Registry, small_image: BuiltImage,
                                client: HttpRegistryClient, store: LocalContentStore) -> None:
    skopeo_push(small_image, registry, "cli/errors")
    repo = Repository(registry.host, "cli/errors")
    with pytest.raises(NotFound, match=r"cli/errors:nope"):
        client.resolve(repo, "nope")
    with pytest.raises(NotFound, match="cli/missing"):
        client.resolve(Repository(registry.host, "cli/missing"), "latest")
    ghost = Descriptor("application/octet-stream", Digest.from_bytes(b"ghost"), 5)
    w = store.writer("ghost")
    with pytest.raises(NotFound, match=str(ghost.digest)):
        client.fetch_blob(repo, ghost, w)
    w.close()
    # Wrong size for a real blob: more bytes than declared is refused and the ingest dropped.
    real = Digest.from_bytes(small_image.config)
    short = Descriptor("application/octet-stream", real, len(small_image.config) - 10)
    with pytest.raises(InvalidArgument, match=str(real)):
        client.fetch_blob(repo, short, store.writer("short"))
    assert not store.exists(real)
    with store.writer("short") as again:
        assert again.offset == 0
    # Nothing listening: Unavailable naming the registry.
    dead = Repository(f"127.0.0.1:{free_port()}", "x/y")
    with pytest.raises(Unavailable, match=dead.domain):
        client.resolve(dead, "latest")


def test_push_blob_exists_monolithic_chunked_and_mount(registry: Registry,
                                                       store: LocalContentStore) -> None:
    config = RegistryConfig(monolithic_limit=100_000, chunk_size=16_384)
    data = os.urandom(250_000)  # 3 PATCH chunks with this limit
    small = b"small blob"
    big = Descriptor("application/octet-stream", store.put(data).digest, len(data))
    little = Descriptor("application/octet-stream", store.put(small).digest, len(small))
    repo = Repository(registry.host, "push/one")
    other = Repository(registry.host, "push/two")
    with HttpRegistryClient(config) as client:
        seen: list[int] = []
        assert client.push_blob(repo, big, store, progress=seen.append) == PushOutcome.PUSHED
        assert seen[-1] == len(data)
        assert client.push_blob(repo, little, store) == PushOutcome.PUSHED
        assert client.push_blob(repo, little, store) == PushOutcome.EXISTS
        assert client.blob_exists(repo, big.digest)
        assert not client.blob_exists(other, big.digest)
        assert client.push_blob(other, big, store, mount_from="push/one") == PushOutcome.MOUNTED
        assert client.blob_exists(other, big.digest)
        # The bytes the registry holds are ours.
        fresh = LocalContentStore(str(Path(store.root).parent / "fresh"))
        client.fetch_blob(other, big, fresh.writer("x"))
        assert fresh.read(big.digest) == data


def test_push_manifest_readable_by_skopeo(registry: Registry, small_image: BuiltImage,
                                          store: LocalContentStore, tmp_path: Path) -> None:
    repo = Repository(registry.host, "push/manifest")
    with HttpRegistryClient() as client:
        for blob in [*small_image.layers, small_image.config]:
            d = store.put(blob).digest
            client.push_blob(repo, Descriptor("application/octet-stream", d, len(blob)), store)
        mt = "application/vnd.oci.image.manifest.v1+json"
        digest = client.push_manifest(repo, "v1", mt, small_image.manifest)
        assert digest == small_image.manifest_digest
        assert "v1" in client.list_tags(repo)
    assert skopeo_raw_manifest(registry, "push/manifest", "v1") == small_image.manifest
    skopeo("copy", "--src-tls-verify=false", f"docker://{registry.host}/push/manifest:v1",
           f"oci:{tmp_path / 'back'}:v1")
    for blob in small_image.layers:
        d = Digest.from_bytes(blob)
        assert (tmp_path / "back" / "blobs" / "sha256" / d.hex).read_bytes() == blob


def test_basic_auth_with_config_json(auth_registry: Registry, small_image: BuiltImage,
                                     tmp_path: Path, store: LocalContentStore) -> None:
    skopeo_push(small_image, auth_registry, "auth/img")
    repo = Repository(auth_registry.host, "auth/img")
    creds_file = tmp_path / "docker" / "config.json"
    creds = CredentialStore(str(creds_file))
    with HttpRegistryClient(credentials=creds) as client:
        with pytest.raises(PermissionDenied, match="skiff login"):
            client.resolve(repo, "latest")
        with pytest.raises(PermissionDenied):
            login(creds, client, auth_registry.host, Credentials(USER, "wrong"))
        assert not creds_file.exists()
        login(creds, client, auth_registry.host, Credentials(USER, PASSWORD))
        assert oct(creds_file.stat().st_mode & 0o777) == "0o600"
        assert client.resolve(repo, "latest").digest == small_image.manifest_digest
    # The file is what the docker CLI writes, readable by any docker-config consumer.
    entry = json.loads(creds_file.read_text())["auths"][auth_registry.host]
    import base64
    assert base64.b64decode(entry["auth"]).decode() == f"{USER}:{PASSWORD}"
    logout(creds, auth_registry.host)
    with HttpRegistryClient(credentials=creds) as client:
        with pytest.raises(PermissionDenied):
            client.resolve(repo, "latest")
        # The daemon's per-request credentials (X-Registry-Auth) on the shared client.
        view = client.with_credentials(lambda host: Credentials(USER, PASSWORD))
        assert view.resolve(repo, "latest").digest == small_image.manifest_digest
        with pytest.raises(PermissionDenied):
            client.resolve(repo, "latest")  # the original is still anonymous


def test_mirror_first_then_fallback(registry: Registry, small_image: BuiltImage) -> None:
    skopeo_push(small_image, registry, "library/busybox")
    hub = Repository("docker.io", "library/busybox")
    dead = f"http://127.0.0.1:{free_port()}"
    # Dead mirror first, live one second: the live one answers.
    cfg = RegistryConfig(mirrors=(dead, registry.url), hub_endpoint=dead)
    with HttpRegistryClient(cfg) as client:
        assert client.resolve(hub, "latest").digest == small_image.manifest_digest
    # All mirrors dead: falls back to the "upstream" (here the local registry standing in).
    cfg = RegistryConfig(mirrors=(dead,), hub_endpoint=registry.url)
    with HttpRegistryClient(cfg) as client:
        assert client.resolve(hub, "latest").digest == small_image.manifest_digest
    # Mirror without the image (404) also falls back.
    cfg = RegistryConfig(mirrors=(registry.url,), hub_endpoint=registry.url)
    with HttpRegistryClient(cfg) as client, pytest.raises(NotFound, match="library/nothere"):
        client.resolve(Repository("docker.io", "library/nothere"), "latest")


def test_plain_http_only_for_loopback_or_insecure() -> None:
    with pytest.raises(InvalidArgument, match="plain HTTP"):
        HttpRegistryClient(RegistryConfig(mirrors=("http://mirror.example.com",)))._endpoints(
            "docker.io", True)
    cfg = RegistryConfig(insecure=frozenset({"mirror.example.com"}),
                         mirrors=("http://mirror.example.com",))
    eps = HttpRegistryClient(cfg)._endpoints("docker.io", True)
    assert eps[0].base == "http://mirror.example.com"
    assert eps[-1].base == "https://registry-1.docker.io"
    c = HttpRegistryClient()
    assert c._base(c._endpoints("registry.example.com", False)[0]) == "https://registry.example.com"


def test_manifest_digest_mismatch_and_size_limit(registry: Registry, small_image: BuiltImage,
                                                 client: HttpRegistryClient) -> None:
    skopeo_push(small_image, registry, "cli/verify")
    repo = Repository(registry.host, "cli/verify")
    desc = client.resolve(repo, "latest")
    # The registry serves by digest, so a descriptor with the right digest but a wrong size
    # is caught by the length check; a too-large size is refused before any request.
    with pytest.raises(InvalidArgument, match="bytes"):
        client.fetch_manifest(repo, Descriptor(desc.media_type, desc.digest, desc.size + 1))
    with pytest.raises(InvalidArgument, match="limit"):
        client.fetch_manifest(repo, Descriptor(desc.media_type, desc.digest, 64 << 20))
