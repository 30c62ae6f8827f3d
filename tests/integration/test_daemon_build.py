"""POST /build through the stock docker CLI (classic builder) and docker-py, against a private
skiffd: every instruction's effect, multi-stage builds, the cache, .dockerignore, errors, and
that intermediate containers leave nothing behind."""

from __future__ import annotations

import contextlib
import functools
import gzip
import http.server
import io
import json
import os
import re
import sqlite3
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skiff.devtools.daemon import UnixHTTP
from tests.integration.daemon_support import DOCKER, Skiffd, private_skiffd
from tests.integration.support import mounts_mentioning

_OUTPUTS: list[str] = []  # every build's output, for the leftover check at the end


@pytest.fixture(scope="module")
def d(busybox_rootfs: Path) -> Iterator[Skiffd]:
    with private_skiffd(busybox_rootfs, check_parent_cgroup=False) as daemon:
        yield daemon
        _assert_nothing_left(daemon)


def _assert_nothing_left(d: Skiffd) -> None:
    """No build mount, bundle, context directory, cgroup or step snapshot survives a build."""
    assert mounts_mentioning(str(d.base)) == []
    work = d.run / "build"
    assert not work.exists() or list(work.iterdir()) == []
    tmp = d.data / "tmp"
    assert not tmp.exists() or [p for p in tmp.iterdir() if p.name.startswith("build")] == []
    for prefix in _running_ids(_OUTPUTS):
        assert list(Path("/sys/fs/cgroup").glob(f"*/skiff/{prefix}*")) == []
    # no step snapshot (ACTIVE while a step runs) or COPY --from view is left
    dbs = list(d.data.glob("snapshots/*/metadata.db"))
    assert dbs, "the snapshot store moved: this check would see nothing"
    for db in dbs:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            assert conn.execute("SELECT key FROM snapshots WHERE key LIKE 'build-%'"
                                ).fetchall() == []
    # the runtime deleted every step's container (its state directory)
    assert [p for p in (d.run / "runtime").glob("*/*") if p.name[:12] in _running_ids(_OUTPUTS)
            ] == []


def _running_ids(log: list[str]) -> set[str]:
    return {m.group(1) for text in log for m in re.finditer(r"Running in ([0-9a-f]{12})", text)}


def build(d: Skiffd, ctx: Path, *args: str, check: bool = True) -> tuple[int, str, str]:
    """``DOCKER_BUILDKIT=0 docker build ARGS CTX``: (exit code, stdout, stderr)."""
    assert DOCKER is not None
    env = {**os.environ, "DOCKER_HOST": f"unix://{d.sock}", "DOCKER_BUILDKIT": "0",
           "DOCKER_CONFIG": str(d.base / "docker-config")}
    res = subprocess.run([DOCKER, "build", *args, str(ctx)], capture_output=True, env=env,
                         timeout=120, check=False)
    out, err = res.stdout.decode(), res.stderr.decode()
    _OUTPUTS.append(out)
    if check:
        assert res.returncode == 0, (out, err)
    return res.returncode, out, err


def context(tmp_path: Path, dockerfile: str, **files: str | bytes) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(parents=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    for name, data in files.items():
        path = ctx / name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data)
    return ctx


def inspect(d: Skiffd, ref: str) -> dict[str, Any]:
    got: list[dict[str, Any]] = json.loads(d.out("image", "inspect", ref))
    return got[0]


def steps(out: str) -> list[tuple[str, bool]]:
    """(step line, whether it came from the cache) for every ``Step N/M`` of a build."""
    found: list[tuple[str, bool]] = []
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Step "):
            cached = i + 1 < len(lines) and lines[i + 1] == " ---> Using cache"
            found.append((line.split(" : ", 1)[1], cached))
    return found


def built_id(out: str) -> str:
    m = re.search(r"Successfully built ([0-9a-f]{12})", out)
    assert m, out
    return m.group(1)


# --- every instruction -------------------------------------------------------------------------

EVERYTHING = """\
FROM busybox
ARG GREETING=hello
ARG WHO
ENV APP_GREETING=$GREETING PATH=/usr/sbin:/usr/bin:/sbin:/bin:/app/bin
LABEL org.example.kind="demo" who=${WHO:-nobody}
EXPOSE 8080 53/udp
WORKDIR /app
WORKDIR sub
COPY greet.sh bin/
COPY --chmod=0640 data.txt /data/
RUN echo "runner:x:1234:1234::/app:/bin/sh" >> /etc/passwd && chown runner /app/sub
USER runner
RUN echo "$APP_GREETING from $(id -u) in $(pwd) with WHO=$WHO" > /app/sub/msg.txt
VOLUME ["/cache"]
STOPSIGNAL SIGUSR1
HEALTHCHECK --interval=30s --retries=2 CMD test -f /app/sub/msg.txt
SHELL ["/bin/sh", "-ec"]
ONBUILD RUN echo triggered > /app/sub/trigger.txt
ENTRYPOINT ["/bin/sh", "/app/sub/bin/greet.sh"]
CMD ["world"]
"""


def test_every_instruction_takes_effect(d: Skiffd, tmp_path: Path) -> None:
    ctx = context(tmp_path, EVERYTHING, **{
        "greet.sh": 'cat /app/sub/msg.txt; echo "args: $*"\n', "data.txt": "data\n"})
    _, out, _ = build(d, ctx, "-t", "every:1", "--build-arg", "WHO=tester")
    assert steps(out)[0] == ("FROM busybox", False)
    assert len(steps(out)) == EVERYTHING.count("\n")
    cfg = inspect(d, "every:1")["Config"]
    assert "APP_GREETING=hello" in cfg["Env"]
    assert cfg["Labels"] == {"org.example.kind": "demo", "who": "tester"}
    assert cfg["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    assert cfg["WorkingDir"] == "/app/sub"
    assert cfg["User"] == "runner"
    assert cfg["Volumes"] == {"/cache": {}}
    assert cfg["StopSignal"] == "SIGUSR1"
    assert cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "test -f /app/sub/msg.txt"],
                                  "Interval": 30_000_000_000, "Retries": 2}
    assert cfg["Shell"] == ["/bin/sh", "-ec"]
    assert cfg["OnBuild"] == ["RUN echo triggered > /app/sub/trigger.txt"]
    assert cfg["Entrypoint"] == ["/bin/sh", "/app/sub/bin/greet.sh"]
    assert cfg["Cmd"] == ["world"]
    # the RUN ran as the USER, in the WORKDIR, with the ENV and the build arg
    run = d.out("run", "--rm", "every:1")
    assert run == "hello from 1234 in /app/sub with WHO=tester\nargs: world\n"
    # COPY: root-owned unless --chown, --chmod applied, the directory made for the dest
    listing = d.out("run", "--rm", "--entrypoint", "stat", "every:1", "-c", "%a %u %n",
                    "/data/data.txt", "/app/sub/bin/greet.sh")
    assert listing.splitlines() == ["640 0 /data/data.txt", "644 0 /app/sub/bin/greet.sh"]
    # one history entry per instruction; only the filesystem steps carry a layer
    history = json.loads(d.out("image", "inspect", "--format", "{{json .RootFS.Layers}}",
                               "every:1"))
    base_layers = len(inspect(d, "busybox")["RootFS"]["Layers"])
    assert len(history) == base_layers + 6  # WORKDIR x2, COPY x2, RUN x2


def test_onbuild_triggers_run_in_the_child_build(d: Skiffd, tmp_path: Path) -> None:
    parent = context(tmp_path / "p", "FROM busybox\nONBUILD COPY marker.txt /marker\n"
                                       "ONBUILD RUN cat /marker > /copied\n", **{"marker.txt": "m1\n"})
    build(d, parent, "-t", "onbuild-base:1")
    child = context(tmp_path / "c", "FROM onbuild-base:1\nCMD [\"cat\", \"/copied\"]\n",
                    **{"marker.txt": "from child\n"})
    _, out, _ = build(d, child, "-t", "onbuild-child:1")
    assert "# Executing 2 build triggers" in out
    assert d.out("run", "--rm", "onbuild-child:1") == "from child\n"
    assert not inspect(d, "onbuild-child:1")["Config"].get("OnBuild")


# --- multi-stage -------------------------------------------------------------------------------

MULTI = """\
FROM busybox AS builder
RUN mkdir /out && echo compiled > /out/app && echo extra > /out/extra
FROM busybox AS tester
RUN echo tested > /tested
FROM busybox
COPY --from=builder /out/app /usr/local/bin/app
COPY --from=1 /tested /tested
CMD ["cat", "/usr/local/bin/app", "/tested"]
"""


def test_multi_stage_copy_from_and_target(d: Skiffd, tmp_path: Path) -> None:
    ctx = context(tmp_path, MULTI)
    build(d, ctx, "-t", "multi:final")
    assert d.out("run", "--rm", "multi:final") == "compiled\ntested\n"
    assert d.docker("run", "--rm", "multi:final", "ls", "/out", check=False).returncode != 0
    _, out, _ = build(d, ctx, "-t", "multi:builder", "--target", "builder")
    assert [s for s, _ in steps(out)] == ["FROM busybox AS builder", MULTI.splitlines()[1]]
    assert d.out("run", "--rm", "multi:builder", "cat", "/out/extra") == "extra\n"


# --- RUN forms ---------------------------------------------------------------------------------


def test_heredoc_run_and_exec_form(d: Skiffd, tmp_path: Path) -> None:
    ctx = context(tmp_path, """\
FROM busybox
RUN <<EOF
echo first > /h1
echo second >> /h1
EOF
RUN ["/bin/sh", "-c", "echo exec-form > /h2"]
RUN cat <<A > /h3
line $HOSTNAME-free
A
ARG WHO=inline
COPY <<EOF /etc/motd
hello from $WHO
EOF
""")
    build(d, ctx, "-t", "heredoc:1")
    assert d.out("run", "--rm", "heredoc:1", "cat", "/etc/motd") == "hello from inline\n"
    assert d.out("run", "--rm", "heredoc:1", "cat", "/h1", "/h2") == "first\nsecond\nexec-form\n"
    assert d.out("run", "--rm", "heredoc:1", "cat", "/h3").startswith("line ")


# --- context -----------------------------------------------------------------------------------


def test_dockerignore_is_honoured(d: Skiffd, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM busybox\nCOPY . /ctx\nCMD [\"find\", \"/ctx\"]\n", **{
        ".dockerignore": "secret*\n*.log\n!keep.log\nbuild/\n",
        "secret.txt": "s", "a.log": "x", "keep.log": "k", "build__out.o": "o", "src__main.c": "c"})
    build(d, ctx, "-t", "ignore:1")
    found = set(d.out("run", "--rm", "ignore:1").split())
    assert {"/ctx/keep.log", "/ctx/src/main.c", "/ctx/Dockerfile"} <= found
    assert not found & {"/ctx/secret.txt", "/ctx/a.log", "/ctx/build", "/ctx/build/out.o"}


def test_add_extracts_local_archives_and_copy_globs(d: Skiffd, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"inside the archive\n"
        info = tarfile.TarInfo("pkg/readme.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    ctx = context(tmp_path, "FROM busybox\nADD bundle.tar.gz /opt/\nCOPY *.cfg /etc/app/\n"
                  "COPY --chown=nobody:nogroup owned.txt /owned.txt\n", **{
                      "bundle.tar.gz": gzip.compress(buf.getvalue()), "a.cfg": "a", "b.cfg": "b",
                      "c.txt": "not copied", "owned.txt": "o"})
    build(d, ctx, "-t", "add:1")
    assert d.out("run", "--rm", "add:1", "cat", "/opt/pkg/readme.txt") == "inside the archive\n"
    assert d.out("run", "--rm", "add:1", "ls", "/etc/app").split() == ["a.cfg", "b.cfg"]
    assert d.out("run", "--rm", "add:1", "stat", "-c", "%U", "/owned.txt").strip() == "nobody"


def test_add_of_a_url_downloads_it(d: Skiffd, tmp_path: Path) -> None:
    """ADD <url> where it is reachable (a server on loopback): the file, mode 0600, never
    unpacked; a 404 fails the build naming the URL."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "notes.txt").write_text("downloaded\n")
    (served / "pkg.tar").write_bytes(_tar({"inside.txt": b"x"}))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        ctx = context(tmp_path, f"FROM busybox\nADD {base}/notes.txt /opt/\n"
                      f"ADD {base}/pkg.tar /opt/pkg.tar\n")
        build(d, ctx, "-t", "addurl:1")
        assert d.out("run", "--rm", "addurl:1", "cat", "/opt/notes.txt") == "downloaded\n"
        assert d.out("run", "--rm", "addurl:1", "stat", "-c", "%a", "/opt/notes.txt") == "600\n"
        assert d.out("run", "--rm", "addurl:1", "sh", "-c",
                     "test -f /opt/pkg.tar && echo file") == "file\n"
        missing = context(tmp_path / "m", f"FROM busybox\nADD {base}/nope.txt /opt/\n")
        code, out, err = build(d, missing, check=False)
        assert code != 0 and f"{base}/nope.txt" in out + err and "404" in out + err
        d.docker("rmi", "addurl:1")
    finally:
        server.shutdown()
        server.server_close()


# --- the cache ---------------------------------------------------------------------------------

CACHED = """\
FROM busybox
ARG V=1
ENV APP=/app
WORKDIR /app
COPY conf.txt .
RUN cat conf.txt > derived.txt
COPY other.txt .
CMD ["cat", "derived.txt"]
"""


def test_cache_hits_and_exact_invalidation(d: Skiffd, tmp_path: Path) -> None:
    ctx = context(tmp_path, CACHED, **{"conf.txt": "v1\n", "other.txt": "o\n"})
    _, first, _ = build(d, ctx, "-t", "cache:1")
    assert not any(cached for _, cached in steps(first))
    start = time.monotonic()
    _, again, _ = build(d, ctx, "-t", "cache:1")
    elapsed = time.monotonic() - start
    assert [cached for _, cached in steps(again)][1:] == [True] * 7  # all but FROM
    assert built_id(again) == built_id(first)
    assert elapsed < 1.0, elapsed
    # touching a file changes nothing; changing its content invalidates from that COPY on
    (ctx / "conf.txt").write_text("v2\n")
    _, changed, _ = build(d, ctx, "-t", "cache:1")
    assert [cached for _, cached in steps(changed)][1:] == [True, True, True, False, False,
                                                              False, False]
    assert d.out("run", "--rm", "cache:1") == "v2\n"
    # a different build arg value changes the RUN's key only where it is in scope
    _, arg, _ = build(d, ctx, "-t", "cache:2", "--build-arg", "V=2")
    flags = [cached for _, cached in steps(arg)][1:]
    assert flags[:4] == [True, True, True, True] and flags[4] is False
    # --no-cache: nothing from the cache
    _, nocache, _ = build(d, ctx, "--no-cache", "-t", "cache:3")
    assert not any(cached for _, cached in steps(nocache))


def test_prune_empties_the_cache(d: Skiffd, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM busybox\nRUN echo pruned > /p\n")
    build(d, ctx, "-t", "prune:1")
    status, body = d.api("POST", "/build/prune")
    assert status == 200 and body["CachesDeleted"] and "SpaceReclaimed" in body
    _, out, _ = build(d, ctx, "-t", "prune:1")
    assert steps(out)[1] == ("RUN echo pruned > /p", False)


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("dockerfile", "wanted"), [
    ("FROM busybox\nRUN true\nBOGUS thing\n", r"line 3: unknown instruction: BOGUS"),
    ("FROM busybox\nRUN echo ok\nRUN exit 3\n",
     r"The command '/bin/sh -c exit 3' returned a non-zero code: 3 \(Dockerfile line 3\)"),
    ("FROM busybox\n\nCOPY missing.txt /x\n",
     r"file not found in build context or excluded by \.dockerignore.*line 3"),
    # absent locally: pulled, from a registry on loopback that is not there (no traffic leaves)
    ("FROM 127.0.0.1:9/nosuch:1\n", r"127\.0\.0\.1:9/nosuch.*line 1"),
    ("FROM busybox\nEXPOSE 80/bogus\n", r"line 2: invalid proto: bogus"),
])
def test_broken_dockerfiles_name_the_line(d: Skiffd, tmp_path: Path, dockerfile: str,
                                          wanted: str) -> None:
    ctx = context(tmp_path, dockerfile)
    code, out, err = build(d, ctx, "-t", "broken:1", check=False)
    assert code != 0
    assert re.search(wanted, out + err), (out, err)


def test_quiet_prints_only_the_id(d: Skiffd, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM busybox\nRUN echo noisy\n")
    _, out, _ = build(d, ctx, "-q", "-t", "quiet:1")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}\n", out), out
    assert out.strip() == inspect(d, "quiet:1")["Id"]


# --- docker-py ---------------------------------------------------------------------------------


def test_docker_py_images_build(d: Skiffd, tmp_path: Path) -> None:
    docker = pytest.importorskip("docker", reason="docker-py is not installed")
    ctx = context(tmp_path, "FROM busybox\nCOPY f.txt /f.txt\nCMD [\"cat\", \"/f.txt\"]\n",
                  **{"f.txt": "from docker-py\n"})
    client = docker.DockerClient(base_url=f"unix://{d.sock}")
    try:
        image, logs = client.images.build(path=str(ctx), tag="dockerpy:1")
        assert "dockerpy:1" in image.tags
        assert any("Successfully built" in entry.get("stream", "") for entry in logs)
        assert client.containers.run("dockerpy:1", remove=True) == b"from docker-py\n"
    finally:
        client.close()


def test_cache_survives_removal_of_the_image_and_prune(d: Skiffd, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM busybox\nRUN echo kept > /kept\nCMD [\"cat\", \"/kept\"]\n")
    _, first, _ = build(d, ctx, "-t", "survivor:1")
    d.docker("image", "rm", "survivor:1")
    d.docker("image", "prune", "-f")
    _, again, _ = build(d, ctx, "-t", "survivor:1")
    assert [cached for _, cached in steps(again)] == [False, True, True]
    assert built_id(again) == built_id(first)
    # the layers came from the cache's leases, not from the removed image
    assert d.out("run", "--rm", "survivor:1") == "kept\n"


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _post(d: Skiffd, path: str, body: bytes) -> tuple[int, bytes]:
    """The raw answer (a build streams several JSON documents, one per line)."""
    conn = UnixHTTP(str(d.sock), 60)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/x-tar"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_api_stream_gzip_context_and_bad_requests(d: Skiffd) -> None:
    body = gzip.compress(_tar({"Dockerfile": b"FROM busybox\nCOPY a /a\n", "a": b"A"}))
    status, raw = _post(d, "/v1.44/build?t=api:1&rm=1", body)
    assert status == 200
    messages = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
    streamed = "".join(m.get("stream", "") for m in messages)
    assert "Step 2/2 : COPY a /a\n" in streamed
    aux = [m["aux"]["ID"] for m in messages if "aux" in m]
    assert aux == [inspect(d, "api:1")["Id"]]
    assert streamed.endswith(f"Successfully built {aux[0][7:19]}\nSuccessfully tagged api:1\n")
    # a failing step after output started: the error is the stream's last message
    status, raw = _post(d, "/build", _tar({"Dockerfile": b"FROM busybox\nRUN exit 7\n"}))
    last = json.loads(raw.decode().splitlines()[-1])
    assert status == 200 and "returned a non-zero code: 7" in last["error"]
    assert last["errorDetail"]["message"] == last["error"]
    # nothing said yet: a status, with the problem named
    for raw_body, query, wanted in (
            (b"this is not a tar", "", "build context"),
            (_tar({"Dockerfile": b"FROM busybox\nWHAT x\n"}), "", "line 2: unknown instruction"),
            (_tar({"other": b""}), "", "Cannot locate specified Dockerfile: Dockerfile"),
            (_tar({"Dockerfile": b"FROM busybox\n"}), "?buildargs=%5B%5D", "buildargs")):
        status, answer = _post(d, f"/build{query}", raw_body)
        assert status == 400 and wanted in json.loads(answer)["message"], (status, answer)


def test_a_client_that_goes_away_stops_the_build(d: Skiffd) -> None:
    body = _tar({"Dockerfile": b"FROM busybox\nRUN for i in $(seq 1 50); do echo tick $i; "
                               b"sleep 0.2; done\n"})
    conn = UnixHTTP(str(d.sock), 60)
    try:
        conn.request("POST", "/build?t=cancelled:1", body=body,
                     headers={"Content-Type": "application/x-tar"})
        resp = conn.getresponse()
        seen = b""
        while b"tick 2" not in seen:
            chunk = resp.fp.readline()
            assert chunk, seen
            seen += chunk
        cid = re.search(rb"Running in ([0-9a-f]{12})", seen)
        assert cid is not None
    finally:
        conn.close()
    # the step's process is killed at its next line of output, its mount and snapshot go
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and mounts_mentioning(str(d.run / "build")):
        time.sleep(0.1)
    assert mounts_mentioning(str(d.run / "build")) == []
    assert d.docker("image", "inspect", "cancelled:1", check=False).returncode != 0
    _OUTPUTS.append(seen.decode())  # its container id joins the leftover check
