"""`skiff build`, `skiff volume`, `skiff network`, stats streaming, cp between containers and
the TLS path, end to end against a private skiffd (its own socket and roots).

Networks use only 10.213.x.0/24 inside the namespaces the daemon makes (network safety).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.daemon_support import IMAGE, Skiffd, private_skiffd

SKIFF = [sys.executable, "-m", "skiff.cli.main"]


@pytest.fixture(scope="module")
def skiffd(busybox_rootfs: Path) -> Iterator[Skiffd]:
    with private_skiffd(busybox_rootfs, check_parent_cgroup=False) as d:
        yield d


def skiff(d: Skiffd, *args: str, input: bytes | None = None, timeout: float = 120,
          cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "DOCKER_CONFIG": str(d.base / "skiff-config")}
    env.pop("DOCKER_HOST", None)
    env.pop("SKIFF_HOST", None)
    return subprocess.run([*SKIFF, "-H", f"unix://{d.sock}", *args], input=input, cwd=cwd,
                          capture_output=True, env=env, timeout=timeout, check=False)


def out(d: Skiffd, *args: str, **kw: object) -> str:
    res = skiff(d, *args, **kw)  # type: ignore[arg-type]
    assert res.returncode == 0, (args, res.stdout, res.stderr)
    return res.stdout.decode()


DOCKERFILE = f"""\
FROM {IMAGE}
ARG GREETING=hello
ENV WHO=skiff
WORKDIR /app
COPY data.txt ./
RUN echo "$GREETING $WHO" > greeting && cat data.txt >> greeting
CMD ["cat", "/app/greeting"]
"""


@pytest.fixture()
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "data.txt").write_text("from the context\n")
    (ctx / "secret.txt").write_text("never sent\n")
    (ctx / ".dockerignore").write_text("secret.txt\n")
    return ctx


def _rmi(d: Skiffd, *names: str) -> None:
    skiff(d, "rmi", "-f", *names)


def _without_sending(text: str) -> list[str]:
    return [ln.strip("\r") for ln in text.splitlines()
            if ln.strip() and not ln.startswith("Sending build context")]


def test_build_run_cached_quiet(skiffd: Skiffd, context: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    res = skiff(skiffd, "build", "-t", "cli-built:1", "--build-arg", "GREETING=hi",
                str(context))
    text = res.stdout.decode()
    assert res.returncode == 0, (text, res.stderr)
    assert text.startswith("Sending build context to Docker daemon  ")
    steps = [ln for ln in text.splitlines() if ln.startswith("Step ")]
    assert steps[0] == f"Step 1/7 : FROM {IMAGE}" and len(steps) == 7
    assert " ---> " in text and "Successfully tagged cli-built:1" in text
    built = [ln for ln in text.splitlines() if ln.startswith("Successfully built ")]
    assert len(built) == 1
    try:
        ran = out(skiffd, "run", "--rm", "cli-built:1")
        assert ran == "hi skiff\nfrom the context\n"
        # .dockerignore applied on the client: the file never reached the daemon.
        res = skiff(skiffd, "run", "--rm", "cli-built:1", "ls", "/app")
        assert res.stdout.decode().split() == ["data.txt", "greeting"]

        again = out(skiffd, "build", "-t", "cli-built:1", "--build-arg", "GREETING=hi",
                    str(context))
        step_blocks = again.split("Step ")[2:]  # FROM has nothing to cache
        assert len(step_blocks) == 6
        assert all("Using cache" in block for block in step_blocks), again
        assert f"Successfully built {built[0].split()[-1]}" in again

        # The same lines the docker CLI's classic builder prints (both from cache here).
        monkeypatch.setenv("DOCKER_BUILDKIT", "0")
        theirs = skiffd.docker("build", "-t", "cli-built:1", "--build-arg", "GREETING=hi",
                               str(context)).stdout.decode()
        assert _without_sending(theirs) == _without_sending(again)

        quiet = out(skiffd, "build", "-q", "--build-arg", "GREETING=hi", str(context))
        assert quiet.strip().startswith("sha256:") and quiet.count("\n") == 1
        image_id = json.loads(out(skiffd, "inspect", "cli-built:1"))[0]["Id"]
        assert quiet.strip() == image_id
    finally:
        _rmi(skiffd, "cli-built:1")


def test_build_dockerfile_outside_context_and_stdin(skiffd: Skiffd, context: Path,
                                                      tmp_path: Path) -> None:
    outside = tmp_path / "Other.dockerfile"
    outside.write_text(f"FROM {IMAGE}\nCOPY . /ctx/\nCMD [\"ls\", \"-a\", \"/ctx\"]\n")
    try:
        out(skiffd, "build", "-q", "-t", "cli-outside", "-f", str(outside), str(context))
        listing = out(skiffd, "run", "--rm", "cli-outside").split()
        # The added Dockerfile (a random .dockerfile.* name) is not copied by `COPY .`.
        assert not [n for n in listing if n.startswith(".dockerfile.")], listing
        assert "data.txt" in listing and "secret.txt" not in listing

        piped = out(skiffd, "build", "-q", "-t", "cli-stdin", "-",
                    input=f"FROM {IMAGE}\nCMD [\"echo\", \"piped\"]\n".encode())
        assert piped.startswith("sha256:")
        assert out(skiffd, "run", "--rm", "cli-stdin") == "piped\n"
    finally:
        _rmi(skiffd, "cli-outside", "cli-stdin")


def test_build_errors_exit_1(skiffd: Skiffd, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(f"FROM {IMAGE}\nRUN true\nFROBNICATE now\n")
    res = skiff(skiffd, "build", str(tmp_path))
    assert res.returncode == 1
    assert "line 3" in res.stderr.decode() and "frobnicate" in res.stderr.decode().lower()

    (tmp_path / "Dockerfile").write_text(f"FROM {IMAGE}\nRUN exit 7\n")
    res = skiff(skiffd, "build", str(tmp_path))
    assert res.returncode == 1
    assert "Step 2/2 : RUN exit 7" in res.stdout.decode()
    assert "returned a non-zero code: 7" in res.stderr.decode()

    res = skiff(skiffd, "build", str(tmp_path / "missing"))
    assert res.returncode == 1 and "not found" in res.stderr.decode()


# --- volumes ---------------------------------------------------------------------------------


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _skip_unless(d: Skiffd, probe: list[str], what: str, volume: str = "") -> None:
    """Skip when the daemon cannot do ``what`` yet (its container side is wired separately);
    the probe goes through the stock docker CLI, so a CLI bug cannot cause the skip."""
    res = d.docker("run", "--rm", *probe, check=False)
    if volume:
        d.docker("volume", "rm", "-f", volume, check=False)
    if res.returncode != 0:
        pytest.skip(f"skiffd does not {what} yet (docker CLI probe failed: "
                    f"{res.stderr.strip()[:200]!r})")


def _files(tar_bytes: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        return {m.name.removeprefix("./"): tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar.getmembers() if m.isfile()}


def out_bytes(d: Skiffd, *args: str) -> bytes:
    res = skiff(d, *args)
    assert res.returncode == 0, (args, res.stderr)
    return res.stdout


def test_volume_commands(skiffd: Skiffd, tmp_path: Path) -> None:
    assert out(skiffd, "volume", "create", "--label", "team=cli", "clivol") == "clivol\n"
    try:
        listing = out(skiffd, "volume", "ls").splitlines()
        assert listing[0].split() == ["DRIVER", "VOLUME", "NAME"]
        assert ["local", "clivol"] in [ln.split() for ln in listing[1:]]
        assert out(skiffd, "volume", "ls", "-q", "--filter", "label=team=cli") == "clivol\n"
        doc = json.loads(out(skiffd, "volume", "inspect", "clivol"))
        assert doc[0]["Name"] == "clivol" and doc[0]["Labels"] == {"team": "cli"}
        assert out(skiffd, "volume", "inspect", "-f", "{{.Driver}}", "clivol") == "local\n"

        out(skiffd, "volume", "import", "clivol", "-",
            input=_tar({"hello.txt": b"imported\n", "sub/deep.txt": b"deep\n"}))
        exported = tmp_path / "vol.tar"
        out(skiffd, "volume", "export", "clivol", "-o", str(exported))
        assert _files(exported.read_bytes()) == {"hello.txt": b"imported\n",
                                                 "sub/deep.txt": b"deep\n"}
        piped = skiff(skiffd, "volume", "export", "clivol")
        assert piped.returncode == 0 and _files(piped.stdout) == _files(exported.read_bytes())
        # From a FILE; the daemon refuses to import over existing content.
        res = skiff(skiffd, "volume", "import", "clivol", str(exported))
        assert res.returncode == 125 and b"not empty" in res.stderr
        out(skiffd, "volume", "create", "clicopy")
        out(skiffd, "volume", "import", "clicopy", str(exported))
        assert _files(out_bytes(skiffd, "volume", "export", "clicopy")) == \
            _files(exported.read_bytes())

        out(skiffd, "volume", "rename", "clivol", "clivol2")
        assert out(skiffd, "volume", "ls", "-q", "--filter", "name=clivol").split() == \
            ["clivol2"]
        res = skiff(skiffd, "volume", "inspect", "clivol")
        assert res.returncode == 1 and "clivol" in res.stderr.decode()
    finally:
        skiff(skiffd, "volume", "rm", "-f", "clivol", "clivol2", "clicopy")
    res = skiff(skiffd, "volume", "rm", "clivol2")
    assert res.returncode == 1 and "Error response from daemon" in res.stderr.decode()
    res = skiff(skiffd, "volume", "import", "nosuchvol", "-", input=_tar({"a": b"a"}))
    assert res.returncode != 0 and "nosuchvol" in res.stderr.decode()

    out(skiffd, "volume", "create", "cliprune")
    pruned = out(skiffd, "volume", "prune", "-a", "-f")
    assert "Deleted Volumes:\ncliprune\n" in pruned and "Total reclaimed space:" in pruned
    assert "cliprune" not in out(skiffd, "volume", "ls", "-q").split()


def test_run_volume_flags(skiffd: Skiffd) -> None:
    _skip_unless(skiffd, ["-v", "cliprobe:/p", IMAGE, "test", "-d", "/p"],
                 "mount volumes into containers", volume="cliprobe")
    name = "cli-vfrom-src"
    out(skiffd, "create", "--name", name, "-v", "clivfrom:/shared", IMAGE, "true")
    try:
        out(skiffd, "run", "--rm", "--volumes-from", name, IMAGE, "sh", "-c",
            "echo via > /shared/f")
        assert out(skiffd, "run", "--rm", "--mount", "type=volume,source=clivfrom,target=/x",
                   IMAGE, "cat", "/x/f") == "via\n"
        mounts = out(skiffd, "run", "--rm", "--tmpfs", "/scratch:size=1m", IMAGE,
                     "grep", " /scratch ", "/proc/mounts")
        assert mounts.split()[2] == "tmpfs"
    finally:
        skiff(skiffd, "rm", "-f", name)
        skiff(skiffd, "volume", "rm", "-f", "clivfrom")


# --- networks ------------------------------------------------------------------------------


def test_network_commands(skiffd: Skiffd) -> None:
    created = out(skiffd, "network", "create", "--subnet", "10.213.7.0/24", "--gateway",
                  "10.213.7.1", "--label", "team=cli", "clinet").strip()
    assert len(created) == 64
    try:
        rows = [ln.split() for ln in out(skiffd, "network", "ls").splitlines()]
        assert rows[0] == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
        assert [created[:12], "clinet", "bridge", "local"] in rows
        assert out(skiffd, "network", "ls", "-q", "--no-trunc", "--filter",
                   "label=team=cli") == created + "\n"
        doc = json.loads(out(skiffd, "network", "inspect", "clinet"))[0]
        assert doc["IPAM"]["Config"][0]["Subnet"] == "10.213.7.0/24"
        assert doc["IPAM"]["Config"][0]["Gateway"] == "10.213.7.1"
        assert doc["Labels"] == {"team": "cli"} and doc["Id"] == created
        res = skiff(skiffd, "network", "create", "--gateway", "10.213.9.1", "nosubnet")
        assert res.returncode == 125 and b"corresponding subnet" in res.stderr
    finally:
        skiff(skiffd, "network", "rm", "clinet")
    assert "clinet" not in out(skiffd, "network", "ls", "--format", "{{.Name}}").split()
    res = skiff(skiffd, "network", "rm", "clinet")
    assert res.returncode == 1 and "Error response from daemon" in res.stderr.decode()

    out(skiffd, "network", "create", "--subnet", "10.213.8.0/24", "cliprune")
    pruned = out(skiffd, "network", "prune", "-f")
    assert "Deleted Networks:\ncliprune\n" in pruned
    assert "cliprune" not in out(skiffd, "network", "ls", "--format", "{{.Name}}").split()


def test_run_network_flags_connect(skiffd: Skiffd) -> None:
    out(skiffd, "network", "create", "--subnet", "10.213.7.0/24", "clirun")
    try:
        _skip_unless(skiffd, ["--network", "clirun", IMAGE, "ip", "link", "show", "eth0"],
                     "attach containers to user networks")
        ran = out(skiffd, "run", "--rm", "--network", "clirun", "--ip", "10.213.7.50",
                  "--network-alias", "web", "--add-host", "extra.test:10.213.7.99",
                  "--dns-search", "example.test", "--hostname", "boxy", IMAGE, "sh", "-c",
                  "ip -4 -o addr show eth0; hostname; grep extra.test /etc/hosts; "
                  "grep search /etc/resolv.conf")
        assert "10.213.7.50/24" in ran
        assert "boxy\n" in ran and "10.213.7.99" in ran and "example.test" in ran

        other = out(skiffd, "run", "-d", IMAGE, "sleep", "30").strip()
        try:
            out(skiffd, "network", "connect", "--ip", "10.213.7.60", "--alias", "db",
                "clirun", other)
            assert "10.213.7.60/24" in out(skiffd, "exec", other, "ip", "-4", "-o", "addr")
            res = skiff(skiffd, "network", "rm", "clirun")
            assert res.returncode == 1 and "Error response from daemon" in res.stderr.decode()
            out(skiffd, "network", "disconnect", "clirun", other)
            assert "10.213.7.60" not in out(skiffd, "exec", other, "ip", "-4", "-o", "addr")
        finally:
            skiff(skiffd, "rm", "-f", other)
    finally:
        skiff(skiffd, "network", "rm", "clirun")


# --- the gaps: cp between containers, stats streaming ------------------------------------------


def test_cp_between_containers_refused(skiffd: Skiffd) -> None:
    res = skiff(skiffd, "cp", "a:/x", "b:/y")
    assert (res.returncode, res.stderr) == (1, b"copying between containers is not supported\n")
    res = skiff(skiffd, "cp", "/a", "/b")
    assert (res.returncode, res.stderr) == (1, b"must specify at least one container source\n")


def test_stats_streams(skiffd: Skiffd) -> None:
    cid = out(skiffd, "run", "-d", "--name", "cli-stats", IMAGE, "sleep", "30").strip()
    proc = subprocess.Popen([*SKIFF, "-H", f"unix://{skiffd.sock}", "stats", "--format",
                             "{{.Name}} {{.PIDs}}", cid], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        time.sleep(3)
        skiff(skiffd, "rm", "-f", cid)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        skiff(skiffd, "rm", "-f", cid)
    lines = stdout.decode().splitlines()
    # Redrawn from the stream several times, then ended when the container went away.
    assert lines.count("cli-stats 1") >= 3, (lines, stderr)
    assert proc.returncode == 0, stderr
