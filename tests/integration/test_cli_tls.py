"""The skiff CLI over TCP + TLS (--tlsverify with a client certificate) against a private
skiffd listening on 127.0.0.1 only."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.daemon_support import IMAGE, Skiffd, private_skiffd
from tests.integration.test_daemon_config import free_port, make_certs

SKIFF = [sys.executable, "-m", "skiff.cli.main"]


class TLSDaemon:
    def __init__(self, d: Skiffd, certs: dict[str, Path], port: int) -> None:
        self.d, self.certs, self.port = d, certs, port

    def skiff(self, *args: str, tls: list[str] | None = None, input: bytes | None = None
              ) -> subprocess.CompletedProcess[bytes]:
        c = self.certs
        flags = tls if tls is not None else [
            "--tlsverify", "--tlscacert", str(c["ca"]), "--tlscert", str(c["cert"]),
            "--tlskey", str(c["key"])]
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DOCKER_", "SKIFF_"))}
        return subprocess.run([*SKIFF, *flags, "-H", f"tcp://127.0.0.1:{self.port}", *args],
                              input=input, capture_output=True, env=env, timeout=60,
                              check=False)


@pytest.fixture(scope="module")
def tlsd(busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[TLSDaemon]:
    certs = make_certs(tmp_path_factory.mktemp("cli-tls") / "certs")
    port = free_port()
    with private_skiffd(busybox_rootfs, "-H", f"tcp://127.0.0.1:{port}", "--tlsverify",
                        "--tlscacert", str(certs["ca"]), "--tlscert",
                        str(certs["server-cert"]), "--tlskey", str(certs["server-key"]),
                        check_parent_cgroup=False) as d:
        yield TLSDaemon(d, certs, port)


def test_commands_over_tls(tlsd: TLSDaemon) -> None:
    res = tlsd.skiff("version", "--format", "{{.Server.Version}}")
    assert res.returncode == 0 and res.stdout.strip(), res.stderr
    res = tlsd.skiff("run", "--rm", IMAGE, "echo", "over tls")
    assert (res.returncode, res.stdout) == (0, b"over tls\n"), res.stderr
    res = tlsd.skiff("run", "--rm", "-i", IMAGE, "sh", "-c", "cat; echo done",
                     input=b"piped\n")
    assert (res.returncode, res.stdout) == (0, b"piped\ndone\n"), res.stderr
    res = tlsd.skiff("ps", "-aq")
    assert (res.returncode, res.stdout) == (0, b"")


def test_tls_failures_are_reported(tlsd: TLSDaemon) -> None:
    c = tlsd.certs
    # verification on, but no client certificate: the daemon refuses the handshake
    res = tlsd.skiff("ps", tls=["--tlsverify", "--tlscacert", str(c["ca"])])
    assert res.returncode == 125 and b"127.0.0.1" in res.stderr
    assert b"Traceback" not in res.stderr
    # plain HTTP to a TLS port
    res = tlsd.skiff("ps", tls=[])
    assert res.returncode == 125 and b"Traceback" not in res.stderr
    # the server's certificate checked against the wrong CA
    res = tlsd.skiff("ps", tls=["--tlsverify", "--tlscacert", str(c["cert"]), "--tlscert",
                                str(c["cert"]), "--tlskey", str(c["key"])])
    assert res.returncode == 125 and b"Traceback" not in res.stderr
    assert b"TLS handshake with the skiff daemon at tcp://127.0.0.1" in res.stderr
    assert b"certificate verify failed" in res.stderr
    # a TLS file that is not there
    res = tlsd.skiff("ps", tls=["--tlsverify", "--tlscacert", str(c["ca"]) + ".missing"])
    assert res.returncode == 125 and b"could not load the TLS files" in res.stderr
