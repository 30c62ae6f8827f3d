"""Starting `skiff registry serve` as a real process, for the peer tests and bench/registry.py."""

from __future__ import annotations

import datetime
import ipaddress
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from skiff.devtools.images import Registry, free_port, wait_until_up
from skiff.plugins.registry.credentials import Credentials

SKIFF = str(Path(sys.executable).parent / "skiff")


def start_skiff_registry(workdir: Path, config: dict[str, Any] | None = None,
                         creds: Credentials | None = None, workers: int = 1,
                         scheme: str = "http") -> Registry:
    """`skiff registry serve` on a free loopback port over ``workdir/root``, up when returned."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = {"addr": f"127.0.0.1:{port}", "root": str(workdir / "root"), "workers": workers,
           **(config or {})}
    (workdir / "config.yml").write_text(json.dumps(cfg))
    with open(workdir / "registry.log", "wb") as log:
        proc = subprocess.Popen([SKIFF, "registry", "serve", "--config",
                                 str(workdir / "config.yml")], stdout=log, stderr=log)
    import ssl

    wait_until_up(proc, f"{scheme}://127.0.0.1:{port}/v2/", workdir / "registry.log",
                  "skiff registry", context=ssl._create_unverified_context())
    return Registry(f"127.0.0.1:{port}", workdir, proc, creds)


def stop(reg: Registry) -> None:
    reg.proc.terminate()
    try:
        assert reg.proc.wait(15) == 0, (reg.root / "registry.log").read_text()
    except subprocess.TimeoutExpired:
        reg.proc.kill()
        reg.proc.wait()
        raise


def self_signed(dest: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its own CA) and its key, as PEM files in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "skiff test registry")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    # The key lives beside the CA directory: containers/image reads *.key in a cert dir as
    # a client key and then wants its certificate.
    crt, pem = dest / "ca.crt", dest.parent / f"{dest.name}-server.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return crt, pem
