"""docker compose (Debian's docker-compose 1.29, a docker-py client) against a private skiffd:
a project with a user network, a named volume and two services that find each other by name.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.daemon_support import Skiffd, private_skiffd

COMPOSE = shutil.which("docker-compose")

PROJECT = """\
version: "3.8"
services:
  web:
    image: busybox:latest
    command: sh -c 'echo web-up; httpd -f -p 8080'
    networks: [back]
  client:
    image: busybox:latest
    command: sleep 300
    depends_on: [web]
    networks: [back]
    volumes: [data:/data]
networks:
  back:
    ipam:
      config: [{subnet: 10.213.77.0/24}]
volumes:
  data: {}
"""


@pytest.fixture(scope="module")
def skiffd(busybox_rootfs: Path) -> Iterator[Skiffd]:
    if COMPOSE is None:
        pytest.fail("docker-compose is not installed (scripts/bootstrap installs Debian's)")
    with private_skiffd(busybox_rootfs, check_parent_cgroup=False) as d:
        yield d


def _compose(d: Skiffd, project: Path, *args: str, check: bool = True
             ) -> subprocess.CompletedProcess[str]:
    assert COMPOSE is not None
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "DOCKER_HOST": f"unix://{d.sock}",
           "DOCKER_CONFIG": str(d.base / "docker-config"), "COMPOSE_INTERACTIVE_NO_CLI": "1"}
    res = subprocess.run([COMPOSE, "-p", "skt", *args], cwd=project, env=env,
                         capture_output=True, text=True, timeout=180, check=False)
    if check:
        assert res.returncode == 0, (args, res.stdout, res.stderr)
    return res


def test_up_exec_by_name_volume_and_down(skiffd: Skiffd, tmp_path: Path) -> None:
    (tmp_path / "docker-compose.yml").write_text(PROJECT)
    try:
        _compose(skiffd, tmp_path, "up", "-d")
        ps = _compose(skiffd, tmp_path, "ps").stdout
        assert "skt_web_1" in ps and "skt_client_1" in ps and ps.count(" Up ") == 2
        # the services reach each other by name on the project's network (embedded DNS)
        out = _compose(skiffd, tmp_path, "exec", "-T", "client", "sh", "-c",
                       "ping -c1 -W3 web >/dev/null && echo reached; echo kept > /data/f").stdout
        assert "reached" in out
        assert "web-up" in _compose(skiffd, tmp_path, "logs", "web").stdout
        # the named volume outlives a re-created container
        _compose(skiffd, tmp_path, "rm", "-sf", "client")
        _compose(skiffd, tmp_path, "up", "-d", "client")
        assert _compose(skiffd, tmp_path, "exec", "-T", "client", "cat",
                        "/data/f").stdout == "kept\n"
    finally:
        _compose(skiffd, tmp_path, "down", "-v", check=False)
    assert skiffd.out("ps", "-aq") == ""
    assert "skt_back" not in skiffd.out("network", "ls")
    assert "skt_data" not in skiffd.out("volume", "ls")
