"""skiff build's context tar (.dockerignore, the Dockerfile kept, -f outside the context,
stdin) and the flag mapping of build, network, volume and run's network flags."""

from __future__ import annotations

import io
import json
import os
import socket
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skiff.cli import buildcontext as bc
from skiff.cli import main as climain
from skiff.cli.commands import build as buildcmd
from skiff.cli.commands import networks, volumes
from skiff.cli.exits import UsageError
from skiff.cli.parsing import parser
from skiff.cli.runflags import add_run_flags, create_body
from skiff.errors import InvalidArgument, SkiffError


def read_tar(pieces: Iterator[bytes] | list[bytes]) -> dict[str, tarfile.TarInfo | bytes]:
    """name -> content (files) or TarInfo (the rest), checking the archive is well-formed."""
    data = b"".join(pieces)
    assert len(data) % 512 == 0 and data.endswith(b"\0" * 1024)
    out: dict[str, tarfile.TarInfo | bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            assert (m.uid, m.gid) == (0, 0)
            handle = tar.extractfile(m) if m.isfile() else None
            out[m.name] = handle.read() if handle else m
    return out


@pytest.fixture()
def ctx(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "src" / "deep").mkdir(parents=True)
    (root / "logs").mkdir()
    (root / "Dockerfile").write_text("FROM scratch\n")
    (root / "src" / "a.txt").write_text("a")
    (root / "src" / "deep" / "b.log").write_text("b")
    (root / "logs" / "x.log").write_text("x")
    (root / "logs" / "keep.log").write_text("keep")
    (root / "big.bin").write_bytes(os.urandom(200_000))
    os.symlink("src/a.txt", root / "link")
    (root / ("n" * 120)).write_text("long")  # beyond ustar's 100 bytes: PAX records
    (root / "naïve.txt").write_text("utf-8")
    return root


def test_whole_context_without_dockerignore(ctx: Path) -> None:
    got = read_tar(bc.tar_pieces(bc.plan(str(ctx), None)))
    assert set(got) == {"Dockerfile", "big.bin", "link", "logs", "logs/keep.log", "logs/x.log",
                        "src", "src/a.txt", "src/deep", "src/deep/b.log", "n" * 120,
                        "naïve.txt"}
    assert (got["n" * 120], got["naïve.txt"]) == (b"long", b"utf-8")
    info = got["src/deep"]
    assert isinstance(info, tarfile.TarInfo)
    assert info.mtime == int((ctx / "src" / "deep").stat().st_mtime)
    assert got["big.bin"] == (ctx / "big.bin").read_bytes()
    # without a .dockerignore the rules are not loaded: the same paths in the same order
    rules = bc.dockerignore_module()
    assert list(bc.entries(bc.plan(str(ctx), None))) == \
        list(rules.walk(str(ctx), rules.Matcher([])))
    link = got["link"]
    assert isinstance(link, tarfile.TarInfo) and link.issym() and link.linkname == "src/a.txt"
    src = got["src"]
    assert isinstance(src, tarfile.TarInfo) and src.isdir()
    assert src.mode == (ctx / "src").stat().st_mode & 0o7777


def test_dockerignore_applied_dockerfile_and_itself_kept(ctx: Path) -> None:
    (ctx / ".dockerignore").write_text("# comment\n**/*.log\n!logs/keep.log\nDockerfile\n"
                                       ".dockerignore\nbig.bin\n")
    got = read_tar(bc.tar_pieces(bc.plan(str(ctx), None)))
    assert set(got) == {"Dockerfile", ".dockerignore", "link", "logs", "logs/keep.log", "src",
                        "src/a.txt", "src/deep", "n" * 120, "naïve.txt"}
    assert got[".dockerignore"] == (ctx / ".dockerignore").read_bytes()


def test_dockerfile_in_a_subdirectory_is_named_relative(ctx: Path) -> None:
    (ctx / "src" / "Build.df").write_text("FROM scratch\n")
    (ctx / ".dockerignore").write_text("src\n")
    plan = bc.plan(str(ctx), str(ctx / "src" / "Build.df"))
    assert (plan.dockerfile, plan.extra) == ("src/Build.df", None)
    got = read_tar(bc.tar_pieces(plan))
    assert got["src/Build.df"] == b"FROM scratch\n" and "src/a.txt" not in got


def test_dockerfile_outside_the_context_is_added_and_ignored(ctx: Path, tmp_path: Path
                                                            ) -> None:
    outside = tmp_path / "elsewhere.df"
    outside.write_bytes(b"FROM scratch\nCOPY . /\n")
    (ctx / ".dockerignore").write_text("logs")
    plan = bc.plan(str(ctx), str(outside))
    assert plan.extra is not None
    name, content = plan.extra
    assert name.startswith(".dockerfile.") and len(name) == len(".dockerfile.") + 20
    assert content == outside.read_bytes() and plan.dockerfile == ""
    got = read_tar(bc.tar_pieces(plan))
    assert got[name] == content
    # appended to .dockerignore, so the daemon never lets `COPY .` see it
    assert got[".dockerignore"] == b"logs\n" + name.encode() + b"\n"
    assert "logs" not in got and "Dockerfile" in got
    # without a .dockerignore, one is made holding just the name
    os.unlink(ctx / ".dockerignore")
    plan = bc.plan(str(ctx), str(outside))
    assert plan.extra is not None
    assert read_tar(bc.tar_pieces(plan))[".dockerignore"] == \
        b"\n" + plan.extra[0].encode() + b"\n"
    assert bc.plan(str(ctx), str(outside)).extra != plan.extra  # random each time


def test_stdin_dockerfile_and_missing_paths(ctx: Path) -> None:
    plan = bc.plan(str(ctx), "-", b"FROM scratch\n")
    assert plan.extra is not None and plan.extra[1] == b"FROM scratch\n"
    with pytest.raises(InvalidArgument, match="not found"):
        bc.plan(str(ctx / "nope"), None)
    with pytest.raises(InvalidArgument, match="no such file"):
        bc.plan(str(ctx), str(ctx / "Nope.df"))


def test_unreadable_file_names_it(ctx: Path) -> None:
    paths = ["src", "src/gone.txt"]  # listed, then vanished before it was read
    with pytest.raises(SkiffError, match=r"gone\.txt"):
        b"".join(bc.tar_pieces(bc.plan(str(ctx), None), paths))


def test_pieces_are_gathered_and_counted(ctx: Path) -> None:
    counted = bc.Counted(bc.tar_pieces(bc.plan(str(ctx), None)))
    pieces = list(counted)
    assert counted.total == sum(map(len, pieces))
    assert all(len(p) >= bc.PIECE for p in pieces[:-1])  # no tiny chunks on the wire


def test_stdin_archive_detection() -> None:
    assert not bc.is_archive(b"FROM busybox\nRUN true\n")
    tar_bytes = bc.dockerfile_tar(b"FROM busybox\n")
    assert bc.is_archive(tar_bytes[:512]) and bc.is_archive(b"\x1f\x8b\x08rest")
    assert read_tar([tar_bytes]) == {"Dockerfile": b"FROM busybox\n"}
    assert b"".join(bc.stdin_pieces(b"ab", io.BytesIO(b"cd"))) == b"abcd"


def test_dockerignore_module_is_the_daemons_without_the_package() -> None:
    saved = {k: v for k, v in sys.modules.items() if k.startswith("skiff.services.builder")}
    for key in saved:
        del sys.modules[key]
    try:
        module = bc.dockerignore_module()
        assert "skiff.services.builder" not in sys.modules  # the package was not run
        assert module.load("*.log\n!keep.log").excluded("a.log")
        assert not module.load("*.log\n!keep.log").excluded("keep.log")
    finally:
        for key in [k for k in sys.modules if k.startswith("skiff.services.builder")]:
            del sys.modules[key]
        sys.modules.update(saved)


# --- flag mapping --------------------------------------------------------------------------


def build_query(*argv: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    args = buildcmd.build_parser().parse([*argv, "."])
    return buildcmd.build_query(args, "Dockerfile", env or {})


def test_build_query() -> None:
    q = build_query("-t", "a:1", "-t", "b", "--build-arg", "X=1", "--build-arg", "HOME",
                    "--build-arg", "UNSET", "--target", "t", "--no-cache", "--pull", "-q",
                    "--label", "k=v", "--network", "none", env={"HOME": "/root"})
    assert q["t"] == ["a:1", "b"] and q["dockerfile"] == "Dockerfile"
    assert json.loads(q["buildargs"]) == {"X": "1", "HOME": "/root", "UNSET": None}
    assert json.loads(q["labels"]) == {"k": "v"}
    assert (q["target"], q["nocache"], q["pull"], q["q"], q["networkmode"], q["rm"]) == \
        ("t", True, True, True, "none", True)
    plain = build_query()
    assert plain["t"] is None and "buildargs" not in plain and plain["nocache"] is None
    assert build_query("--rm=false")["rm"] is False
    with pytest.raises(UsageError):
        build_query("--build-arg", "=x")


def test_network_create_body() -> None:
    p = parser("x")
    args_argv = ["--subnet", "10.213.1.0/24", "--gateway", "10.213.1.1", "--ip-range",
                 "10.213.1.128/25", "--internal", "--label", "a=b", "-o", "mtu=1400", "n1"]
    body = _network_args(p, args_argv)
    assert body == {"Name": "n1", "Driver": "bridge", "Internal": True, "Attachable": False,
                    "EnableIPv6": False, "Options": {"mtu": "1400"}, "Labels": {"a": "b"},
                    "IPAM": {"Driver": "default", "Options": {},
                             "Config": [{"Subnet": "10.213.1.0/24", "Gateway": "10.213.1.1",
                                         "IPRange": "10.213.1.128/25"}]}}
    assert _network_args(parser("x"), ["n2"])["IPAM"]["Config"] == []
    with pytest.raises(UsageError, match="corresponding subnet"):
        _network_args(parser("x"), ["--gateway", "10.213.1.1", "n3"])
    with pytest.raises(UsageError, match="one --subnet"):
        _network_args(parser("x"), ["--subnet", "10.213.1.0/24", "--subnet",
                                    "10.213.2.0/24", "n4"])
    assert networks.endpoint_config("10.213.1.5", ["db"], []) == {
        "IPAMConfig": {"IPv4Address": "10.213.1.5"}, "Aliases": ["db"]}


def _network_args(p: Any, argv: list[str]) -> dict[str, Any]:
    # the parser of `network create`, captured by running the command without a daemon
    captured: dict[str, Any] = {}

    class FakeClient:
        def post(self, path: str, query: Any, body: dict[str, Any]) -> dict[str, str]:
            captured.update(body)
            return {"Id": "x"}

    class FakeCli:
        client = FakeClient()

    networks.cmd_network_create(FakeCli(), argv)  # type: ignore[arg-type]
    return captured


def test_volume_create_body() -> None:
    assert volumes.create_body("v", "local", ["type=tmpfs", "o=size=1m"], ["a=b"]) == {
        "Name": "v", "Driver": "local", "DriverOpts": {"type": "tmpfs", "o": "size=1m"},
        "Labels": {"a": "b"}}


def run_body(*argv: str) -> dict[str, Any]:
    p = parser("skiff run")
    add_run_flags(p)
    return create_body(p.parse(list(argv)), {})


def test_run_network_flags() -> None:
    body = run_body("--network", "net1", "--ip", "10.213.1.9", "--network-alias", "web",
                    "--link", "db:database", "--dns", "10.213.1.1", "--dns-search", "ex.test",
                    "--dns-option", "ndots:2", "--add-host", "h:10.213.1.7", "-h", "box",
                    "-P", "-p", "8080:80", "--volumes-from", "other:ro", "busybox")
    hc = body["HostConfig"]
    assert body["NetworkingConfig"]["EndpointsConfig"] == {"net1": {
        "IPAMConfig": {"IPv4Address": "10.213.1.9"}, "Aliases": ["web"],
        "Links": ["db:database"]}}
    assert (hc["NetworkMode"], hc["Dns"], hc["DnsSearch"], hc["DnsOptions"]) == \
        ("net1", ["10.213.1.1"], ["ex.test"], ["ndots:2"])
    assert hc["ExtraHosts"] == ["h:10.213.1.7"] and hc["Links"] == ["db:database"]
    assert hc["PublishAllPorts"] is True and body["Hostname"] == "box"
    assert hc["VolumesFrom"] == ["other:ro"]
    # built-in modes get an endpoint only when asked for something
    assert run_body("busybox")["NetworkingConfig"]["EndpointsConfig"] == {}
    assert run_body("--network", "host", "busybox")["NetworkingConfig"] == {
        "EndpointsConfig": {}}
    assert run_body("--network-alias", "x", "busybox")["NetworkingConfig"] == {
        "EndpointsConfig": {"bridge": {"Aliases": ["x"]}}}
    linked = run_body("--link", "db", "busybox")
    assert linked["NetworkingConfig"]["EndpointsConfig"] == {}
    assert linked["HostConfig"]["Links"] == ["db"]
    assert run_body("--network", "plain", "busybox")["NetworkingConfig"] == {
        "EndpointsConfig": {"plain": {}}}


def test_new_commands_resolve() -> None:
    assert climain.resolve(["build", "."]) == ("build", ["."])
    assert climain.resolve(["image", "build", "."]) == ("build", ["."])
    assert climain.resolve(["volume", "ls"]) == ("volume_ls", [])
    assert climain.resolve(["volume", "remove", "v"]) == ("volume_rm", ["v"])
    assert climain.resolve(["network", "list"]) == ("network_ls", [])
    assert climain.resolve(["network", "connect", "n", "c"]) == ("network_connect",
                                                                   ["n", "c"])
    with pytest.raises(climain.UsageErrorLazy):
        climain.resolve(["volume_ls"])


# --- the request on the wire -----------------------------------------------------------------


def test_build_streams_the_context_and_prints_the_stream(
        ctx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A fake daemon on a unix socket: the body arrives chunked and is the context tar; the
    classic builder's JSON lines are printed as docker prints them; an error exits 1."""
    sock_path = str(tmp_path / "d.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(sock_path)
    server.listen(2)
    seen: list[tuple[bytes, bytes]] = []
    answers = [
        b'{"stream":"Step 1/1 : FROM scratch\\n"}\r\n{"aux":{"ID":"sha256:abc"}}\r\n'
        b'{"stream":"Successfully built abc\\n"}\r\n',
        b'{"stream":"Step 1/1 : RUN false\\n"}\r\n'
        b'{"errorDetail":{"message":"it failed"},"error":"it failed"}\r\n',
    ]

    def serve() -> None:
        for answer in answers:
            conn, _ = server.accept()
            with conn:
                head, body = _read_request(conn)
                seen.append((head, body))
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Connection: close\r\n\r\n" + answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        host = ["-H", f"unix://{sock_path}"]
        assert climain.main([*host, "build", "-t", "x:1", str(ctx)]) == 0
        printed = capsys.readouterr()
        assert printed.out.startswith("Sending build context to Docker daemon  ")
        assert printed.out.endswith("Step 1/1 : FROM scratch\nSuccessfully built abc\n")
        assert climain.main([*host, "build", "-q", str(ctx)]) == 1
        printed = capsys.readouterr()
        assert (printed.out, printed.err) == ("", "it failed\n")
    finally:
        thread.join(5)
        server.close()
    head, body = seen[0]
    assert head.startswith(b"POST /v1.44/build?t=x%3A1&dockerfile=Dockerfile&rm=1 ")
    assert b"Transfer-Encoding: chunked" in head and b"application/x-tar" in head
    assert set(read_tar([body])) >= {"Dockerfile", "src/a.txt", "big.bin"}
    assert b"&q=1" in seen[1][0]


def _read_request(conn: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    stream = io.BytesIO()
    buf = rest
    while True:
        while b"\r\n" not in buf:
            buf += conn.recv(65536)
        size_line, _, buf = buf.partition(b"\r\n")
        size = int(size_line, 16)
        while len(buf) < size + 2:
            buf += conn.recv(65536)
        stream.write(buf[:size])
        buf = buf[size + 2:]
        if size == 0:
            return head, stream.getvalue()
