"""runc's place taken: Debian's dockerd (through containerd's runc shim) drives skiff-runtime.

dockerd is private to the test (its own roots, socket, no bridge, no iptables); skiff-runtime
is registered as the runtime "skiff" and picked per container with --runtime, exactly as a user
would add runc, crun or youki.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiff.devtools.images import Dockerd, DockerdUnavailable, ToolMissing, private_dockerd
from tests.integration.support import cgroup_dirs

IMAGE = "skiff-test/bb:1"


@pytest.fixture(scope="module")
def dockerd(busybox_rootfs: Path, venv_bin: Path) -> Iterator[Dockerd]:
    runtimes = {"skiff": {"path": str(venv_bin / "skiff-runtime")}}
    try:
        with private_dockerd(extra_config={"runtimes": runtimes}) as d:
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                tar.add(busybox_rootfs, arcname=".")
            d.docker("import", "-", IMAGE, stdin=buf.getvalue())
            yield d
    except (ToolMissing, DockerdUnavailable) as exc:
        pytest.skip(str(exc))


def docker(d: Dockerd, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    from skiff.devtools.images import docker_cli

    proc = subprocess.run([docker_cli(), *args], env=d.env, capture_output=True, text=True,
                          timeout=120, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {proc.stderr}")
    return proc


RUN = ("run", "--runtime", "skiff", "--network", "none")


def test_docker_run_with_skiff_runtime(dockerd: Dockerd) -> None:
    out = docker(dockerd, *RUN, "--rm", IMAGE, "sh", "-c",
                 "echo hello; echo $$; grep Seccomp: /proc/self/status").stdout.split()
    assert out[0] == "hello"
    assert out[1] == "1"
    assert out[2:] == ["Seccomp:", "2"]  # docker's default profile, enforced by skiff-runtime
    assert docker(dockerd, *RUN, "--rm", IMAGE, "sh", "-c", "exit 3", check=False).returncode == 3
    tty = docker(dockerd, *RUN, "--rm", "-t", IMAGE, "tty").stdout
    assert tty.strip() == "/dev/pts/0"  # the pty came over containerd's --console-socket


def test_docker_lifecycle_with_skiff_runtime(dockerd: Dockerd) -> None:
    cid = docker(dockerd, *RUN, "-d", "--memory", "64m", IMAGE, "sleep", "300").stdout.strip()
    try:
        assert docker(dockerd, "exec", cid, "sh", "-c", "echo in-exec").stdout == "in-exec\n"
        top = docker(dockerd, "top", cid).stdout
        assert "sleep 300" in top
        docker(dockerd, "pause", cid)
        assert docker(dockerd, "inspect", "-f", "{{.State.Status}}", cid).stdout.strip() == \
            "paused"
        docker(dockerd, "unpause", cid)
        docker(dockerd, "update", "--memory", "96m", "--memory-swap", "192m", cid)
        limit = Path(f"/sys/fs/cgroup/memory/docker/{cid}/memory.limit_in_bytes")
        assert limit.read_text().strip() == str(96 * 1024 * 1024)
        docker(dockerd, "stop", "-t", "1", cid)
        assert docker(dockerd, "inspect", "-f", "{{.State.ExitCode}}", cid).stdout.strip() == \
            "137"
    finally:
        docker(dockerd, "rm", "-f", cid, check=False)
    assert cgroup_dirs(cid) == []
