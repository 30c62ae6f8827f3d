"""skiffd's parts that need no root: HTTP plumbing, hijacking, records, the store, flags."""

from __future__ import annotations

import asyncio
import calendar
import json
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from skiff import errors
from skiff.daemon.config import DaemonConfig
from skiff.daemon.containers.manager import parse_signal
from skiff.daemon.containers.names import check_name, new_id, random_name
from skiff.daemon.containers.record import EXITED, RUNNING, Container
from skiff.daemon.containers.store import ContainerStore
from skiff.daemon.hijack import MULTIPLEXED_STREAM, hijack, pipe
from skiff.daemon.http import errors_middleware, json_body, qfilters, route, status_of
from skiff.daemon.main import _listen, parse_args

# --- the error table and the middleware ------------------------------------------------------


@pytest.mark.parametrize("kind,status", [
    (errors.NotFound, 404), (errors.Conflict, 409), (errors.InvalidArgument, 400),
    (errors.PermissionDenied, 403), (errors.Unavailable, 503), (errors.SystemFailure, 500),
    (errors.SkiffError, 500),
])
def test_one_table_maps_kinds_to_status(kind: type[errors.SkiffError], status: int) -> None:
    assert status_of(kind("x")) == status


def _serve(handlers: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]],
           check: Callable[[TestClient[Any, Any]], Awaitable[None]]) -> None:
    async def main() -> None:
        app = web.Application(middlewares=[errors_middleware])
        for path, handler in handlers.items():
            route(app.router, "POST" if path.startswith("/post") else "GET", path, handler)
        async with TestClient(TestServer(app)) as client:
            await check(client)

    asyncio.run(main())


def _raiser(exc: Exception) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise exc

    return handler


async def _ok(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok")


async def _echo(request: web.Request) -> web.StreamResponse:
    return web.Response(text=json.dumps(await json_body(request)))


def test_errors_become_status_and_message_with_docker_content_type() -> None:
    cases = {"/nf": (errors.NotFound("No such container: x"), 404),
             "/conflict": (errors.Conflict("in use"), 409),
             "/bad": (errors.InvalidArgument("bad value"), 400),
             "/denied": (errors.PermissionDenied("no"), 403),
             "/down": (errors.Unavailable("not here"), 503),
             "/sys": (errors.SystemFailure("mount x: EINVAL"), 500),
             "/bug": (ValueError("oops"), 500)}

    async def check(client: TestClient[Any, Any]) -> None:
        for path, (exc, status) in cases.items():
            resp = await client.get(path)
            assert resp.status == status
            # the docker CLI decodes an error body only with exactly this content type
            assert resp.headers["Content-Type"] == "application/json"
            body = await resp.json()
            assert body["message"].endswith(str(exc))
        resp = await client.get("/nowhere")
        assert resp.status == 404 and "message" in await resp.json()

    _serve({path: _raiser(exc) for path, (exc, _) in cases.items()}, check)


def test_version_prefixes() -> None:
    async def check(client: TestClient[Any, Any]) -> None:
        for path in ("/ok", "/v1.24/ok", "/v1.41/ok", "/v1.44/ok"):
            resp = await client.get(path)
            assert (resp.status, await resp.text()) == (200, "ok"), path
        for path, words in (("/v1.45/ok", "too new"), ("/v1.23/ok", "too old"),
                            ("/v2.0/ok", "invalid API version"), ("/v1..4/ok", "invalid")):
            resp = await client.get(path)
            assert resp.status == 400, path
            assert words in (await resp.json())["message"]

    _serve({"/ok": _ok}, check)


def test_json_body_refuses_what_is_not_an_object() -> None:
    async def check(client: TestClient[Any, Any]) -> None:
        for raw, words in ((b"", "empty"), (b"{bad", "invalid JSON"), (b"[1]", "object"),
                           (b"\xff\xfe", "invalid JSON")):
            resp = await client.post("/post", data=raw)
            assert resp.status == 400
            assert words in (await resp.json())["message"]
        resp = await client.post("/post", data=b'{"a": 1}')
        assert json.loads(await resp.text()) == {"a": 1}

    _serve({"/post": _echo}, check)


def test_filters_both_forms_and_errors() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(text=json.dumps(qfilters(request)))

    async def check(client: TestClient[Any, Any]) -> None:
        resp = await client.get("/f", params={"filters": '{"status": ["exited"]}'})
        assert await resp.json(content_type=None) == {"status": ["exited"]}
        resp = await client.get("/f", params={"filters": '{"label": {"a=b": true, "c": false}}'})
        assert await resp.json(content_type=None) == {"label": ["a=b"]}
        for bad in ("{", "[1]", '{"status": "exited"}'):
            resp = await client.get("/f", params={"filters": bad})
            assert resp.status == 400

    _serve({"/f": handler}, check)


# --- hijacking -----------------------------------------------------------------------------


def test_hijack_pipes_both_ways_and_survives_a_client_half_close() -> None:
    """The shim's side is a socketpair: what the client sends arrives there, and what the
    "shim" writes (even after the client shut its sending side) reaches the client."""
    shim_end, daemon_end = socket.socketpair()

    async def attach(request: web.Request) -> web.StreamResponse:
        resp, inbound = await hijack(request, MULTIPLEXED_STREAM)
        await pipe(resp, inbound, daemon_end)
        return resp

    async def main() -> None:
        app = web.Application(middlewares=[errors_middleware])
        route(app.router, "POST", "/attach", attach)
        async with TestServer(app) as server:
            reader, writer = await asyncio.open_connection(server.host, server.port)
            writer.write(b"POST /v1.44/attach HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                         b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101")
            assert b"Upgrade: tcp" in head and MULTIPLEXED_STREAM.encode() in head
            assert b"Transfer-Encoding" not in head  # raw bytes follow, not chunks
            writer.write(b"to stdin")
            await writer.drain()
            got = await asyncio.to_thread(shim_end.recv, 100)
            assert got == b"to stdin"
            writer.write_eof()  # the client's stdin is done ...
            await asyncio.sleep(0.1)
            assert await asyncio.to_thread(shim_end.recv, 100) == b""  # ... the shim sees EOF
            shim_end.sendall(b"\x01\x00\x00\x00\x00\x00\x00\x03out")  # ... output still flows
            shim_end.close()
            assert await reader.read() == b"\x01\x00\x00\x00\x00\x00\x00\x03out"
            writer.close()

    asyncio.run(asyncio.wait_for(main(), 10))


# --- names, signals, records ---------------------------------------------------------------


def test_names_and_ids() -> None:
    assert check_name("/web-1.a_b") == "web-1.a_b"
    for bad in ("", "a", "-x", "a b", "x/y", "é1"):
        with pytest.raises(errors.InvalidArgument, match="Invalid container name"):
            check_name(bad)
    cid = new_id()
    assert len(cid) == 64 and int(cid, 16) >= 0 and cid != new_id()
    assert check_name(random_name())


@pytest.mark.parametrize("value,num", [("SIGTERM", 15), ("term", 15), ("KILL", 9), (9, 9),
                                       ("10", 10), ("SIGUSR1", 10)])
def test_parse_signal(value: object, num: int) -> None:
    assert parse_signal(value) == num


@pytest.mark.parametrize("value", ["", "SIGNOPE", "0", "99", "-1", "1.5"])
def test_parse_signal_refuses(value: object) -> None:
    with pytest.raises(errors.InvalidArgument, match="Invalid signal"):
        parse_signal(value)


def _container(**kw: Any) -> Container:
    base: dict[str, Any] = dict(id="ab" * 32, name="web", image="busybox",
                                image_id="sha256:" + "c" * 64,
                                config={"Cmd": ["echo", "hi"], "Entrypoint": None,
                                        "Labels": {"k": "v"}},
                                host_config={"NetworkMode": "none"})
    base.update(kw)
    return Container(**base)


def test_record_shapes() -> None:
    c = _container(status=RUNNING, pid=42, started_at="2026-01-01T00:00:00.000000Z")
    info = c.inspect(log_path="/l", rootfs="/r")
    assert (info["Id"], info["Name"], info["Path"], info["Args"]) == (c.id, "/web", "echo",
                                                                       ["hi"])
    assert info["State"]["Running"] and info["State"]["Pid"] == 42
    assert info["Config"]["Image"] == "busybox" and info["LogPath"] == "/l"
    summary = c.summary()
    assert summary["Names"] == ["/web"] and summary["Command"] == "echo hi"
    assert summary["Labels"] == {"k": "v"} and summary["State"] == "running"
    assert summary["Status"].startswith("Up ")
    done = _container(status=EXITED, exit_code=3, finished_at="2026-01-01T00:00:00.000000Z")
    now = calendar.timegm(time.strptime("2026-01-01 00:02:00", "%Y-%m-%d %H:%M:%S"))
    assert done.status_text(now) == "Exited (3) 2 minutes ago"
    assert done.inspect(log_path="", rootfs="")["State"]["Pid"] == 0
    assert _container().status_text() == "Created"
    assert Container.from_row({**c.to_row(), "from_a_newer_daemon": 1}) == c


# --- the store -----------------------------------------------------------------------------


def test_store_finds_by_id_prefix_and_name_and_survives_reopen(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    store = ContainerStore(db)
    a = _container(id="a1" + "0" * 62, name="one")
    b = _container(id="a2" + "0" * 62, name="two")
    store.add(a)
    store.add(b)
    assert store.find("one").id == a.id and store.find("/two").id == b.id
    assert store.find("a1").id == a.id and store.find(b.id).name == "two"
    with pytest.raises(errors.Conflict, match="multiple IDs"):
        store.find("a")
    with pytest.raises(errors.NotFound, match="No such container: zz"):
        store.find("zz")
    with pytest.raises(errors.Conflict, match='"/one" is already in use'):
        store.add(_container(id="b" * 64, name="one"))
    a.status, a.exit_code = EXITED, 7
    store.put(a)
    store.close()
    again = ContainerStore(db)
    assert again.find("one").exit_code == 7 and len(again.all()) == 2
    again.delete(b.id)
    with pytest.raises(errors.NotFound):
        again.find("two")
    again.close()


# --- flags and the socket ------------------------------------------------------------------


def test_flags() -> None:
    cfg = parse_args([])
    assert cfg == DaemonConfig(data_root="/var/lib/skiff", exec_root="/run/skiff")
    assert cfg.socket_path == "/run/skiff/skiff.sock"
    cfg = parse_args(["-H", "unix:///tmp/x.sock", "--data-root", "d", "--exec-root", "/e",
                      "--pidfile", "/p", "--log-level", "debug", "--default-runtime", "runc"])
    assert (cfg.socket_path, cfg.data_root, cfg.exec_root, cfg.pidfile, cfg.runtime) == (
        "/tmp/x.sock", os.path.abspath("d"), "/e", "/p", "runc")
    with pytest.raises(SystemExit):
        parse_args(["-H", "tcp://0.0.0.0:2375"])


def test_listen_replaces_a_stale_socket_and_refuses_a_live_one(tmp_path: Path) -> None:
    path = str(tmp_path / "api.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens: what a SIGKILLed daemon leaves
    sock = _listen(path)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        with pytest.raises(errors.Conflict, match="another daemon"):
            _listen(path)
        assert os.path.exists(path)  # the refused one did not remove the live socket
    finally:
        sock.close()


def test_an_empty_container_cgroup_left_by_the_runtime_is_removed(tmp_path: Path) -> None:
    from skiff.daemon.containers.runner import _remove_empty_cgroup

    for h in ("pids", "memory"):
        (tmp_path / h / "skiff" / "c1").mkdir(parents=True)
    busy = tmp_path / "cpu" / "skiff" / "c2"
    busy.mkdir(parents=True)
    (busy / "cgroup.procs").write_text("4242\n")  # a live task: never waited for
    _remove_empty_cgroup("/skiff/c1", str(tmp_path), wait=0.2)
    assert not any((tmp_path / h / "skiff" / "c1").exists() for h in ("pids", "memory"))
    _remove_empty_cgroup("/skiff/c2", str(tmp_path), wait=5)
    assert busy.exists()
