"""The images router's parsing and streaming, without a daemon: pull references, tag targets,
prune filters and ``until``, registry addresses, and the progress stream (status before
headers, errors in-stream after them, a free event loop, cancel on disconnect)."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from skiff.core import progress as msg
from skiff.core.progress import ProgressSink
from skiff.core.reference import parse_reference
from skiff.daemon.app import build_engine
from skiff.daemon.config import DaemonConfig
from skiff.daemon.http import errors_middleware, route
from skiff.daemon.images_backend import parse_pull_reference, registry_domain
from skiff.daemon.routers.images import (
    _progress_stream,
    _tag_target,
    parse_repository_or_ref,
    parse_until,
    prune_args,
)
from skiff.errors import InvalidArgument, NotFound
from skiff.plugins.registry.credentials import Credentials

DIGEST = "sha256:" + "ab" * 32


def test_pull_reference_combines_from_image_and_tag() -> None:
    assert str(parse_pull_reference("busybox", "")) == "docker.io/library/busybox"  # all tags
    assert str(parse_pull_reference("busybox", "1.36")) == "docker.io/library/busybox:1.36"
    assert str(parse_pull_reference("127.0.0.1:5000/a/b:old", "new")) == \
        "127.0.0.1:5000/a/b:new"
    assert str(parse_pull_reference("127.0.0.1:5000/a", DIGEST)) == f"127.0.0.1:5000/a@{DIGEST}"
    assert str(parse_pull_reference("r.example/x:v2", "")) == "r.example/x:v2"
    for image, tag, words in (("", "", "fromImage"), ("Up/Per", "", "lowercase"),
                              ("busybox", "bad tag", "invalid tag"),
                              ("busybox", "sha256:12", "digest")):
        with pytest.raises(InvalidArgument, match=words):
            parse_pull_reference(image, tag)


def test_tag_target_and_push_names() -> None:
    assert str(_tag_target("me/app", "")) == "docker.io/me/app:latest"
    assert str(_tag_target("me/app", "v1")) == "docker.io/me/app:v1"
    assert str(_tag_target("me/app:v2", "")) == "docker.io/me/app:v2"
    for repo, words in (("", "required"), (f"me/app@{DIGEST}", "digest"),
                        ("Me/App", "lowercase")):
        with pytest.raises(InvalidArgument, match=words):
            _tag_target(repo, "")
    assert parse_repository_or_ref("127.0.0.1:5000/a").is_name_only
    assert parse_repository_or_ref("127.0.0.1:5000/a:t").tag == "t"
    with pytest.raises(InvalidArgument, match="digest"):
        parse_repository_or_ref(f"a@{DIGEST}")


def test_until_accepts_docker_forms() -> None:
    now = 1_700_000_000.0
    assert parse_until("1699999000", now) == 1699999000.0
    assert parse_until("1699999000.25", now) == 1699999000.25
    assert parse_until("90m", now) == now - 5400
    assert parse_until("1h30m", now) == now - 5400
    assert parse_until("1.5h", now) == now - 5400
    assert parse_until("2023-11-14T22:13:20Z", now) == 1_700_000_000.0
    assert parse_until("2023-11-14T23:13:20+01:00", now) == 1_700_000_000.0
    assert parse_until("2023-11-14", now) == 1699920000.0
    for bad in ("", "soon", "10x", "h", "-5m"):
        with pytest.raises(InvalidArgument, match="until"):
            parse_until(bad, now)


def test_prune_filters() -> None:
    assert prune_args({}, 0) == (False, None, [])
    assert prune_args({"dangling": ["false"]}, 0) == (True, None, [])
    assert prune_args({"dangling": ["1"], "label": ["a=b", "c"], "until": ["10s"]}, 100) == \
        (False, 90.0, ["a=b", "c"])
    for filters, words in (({"reference": ["x"]}, "invalid filter 'reference'"),
                           ({"label!": ["x"]}, "invalid filter 'label!'"),
                           ({"dangling": ["yes"]}, "dangling=yes"),
                           ({"until": ["1h", "2h"]}, "more than one")):
        with pytest.raises(InvalidArgument, match=words):
            prune_args(filters, 0)


def test_registry_domain_of_auth_server_addresses() -> None:
    for server, want in (("", "docker.io"), ("https://index.docker.io/v1/", "docker.io"),
                         ("docker.io", "docker.io"), ("127.0.0.1:5000", "127.0.0.1:5000"),
                         ("http://127.0.0.1:5000", "127.0.0.1:5000"),
                         ("https://reg.example:443/v1/", "reg.example:443")):
        assert registry_domain(server) == want, server
    assert parse_reference(f"{registry_domain('http://127.0.0.1:5000')}/x").domain == \
        "127.0.0.1:5000"


# --- the progress stream -------------------------------------------------------------------

Job = Callable[[ProgressSink, threading.Event], None]


def _serve(job: Job, check: Callable[[TestClient[Any, Any]], Awaitable[None]]) -> None:
    async def stream(request: web.Request) -> web.StreamResponse:
        return await _progress_stream(request, "test", job)

    async def ping(request: web.Request) -> web.StreamResponse:
        return web.Response(text="pong")

    async def main() -> None:
        app = web.Application(middlewares=[errors_middleware])
        route(app.router, "POST", "/stream", stream)
        route(app.router, "GET", "/ping", ping)
        async with TestClient(TestServer(app)) as client:
            await check(client)

    asyncio.run(main())


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in text.splitlines() if x.strip()]


def test_failure_before_progress_is_a_status() -> None:
    def job(progress: ProgressSink, cancel: threading.Event) -> None:
        progress(msg.pulling_from("a/b", "latest"))
        raise NotFound("manifest a/b:latest: not found on registry r")

    async def check(client: TestClient[Any, Any]) -> None:
        resp = await client.post("/stream")
        assert resp.status == 404
        assert (await resp.json())["message"] == "manifest a/b:latest: not found on registry r"

    _serve(job, check)


def test_failure_after_progress_goes_in_the_stream() -> None:
    def job(progress: ProgressSink, cancel: threading.Event) -> None:
        progress(msg.pulling_from("a/b", "latest"))
        progress(msg.pulling_fs_layer("0123456789ab"))
        raise NotFound("blob gone")

    async def check(client: TestClient[Any, Any]) -> None:
        resp = await client.post("/stream")
        assert resp.status == 200 and resp.headers["Content-Type"] == "application/json"
        got = _lines(await resp.text())
        assert got == [msg.pulling_from("a/b", "latest"), msg.pulling_fs_layer("0123456789ab"),
                       {"errorDetail": {"message": "blob gone"}, "error": "blob gone"}]

    _serve(job, check)


def test_success_with_a_single_message_is_sent_whole() -> None:
    def job(progress: ProgressSink, cancel: threading.Event) -> None:
        progress(msg.up_to_date("x"))

    async def check(client: TestClient[Any, Any]) -> None:
        resp = await client.post("/stream")
        assert resp.status == 200
        assert _lines(await resp.text()) == [msg.up_to_date("x")]

    _serve(job, check)


def test_the_loop_serves_others_while_a_job_runs_and_a_disconnect_cancels_it() -> None:
    release = threading.Event()
    stopped = threading.Event()

    def job(progress: ProgressSink, cancel: threading.Event) -> None:
        progress(msg.pulling_from("a/b", "latest"))
        progress(msg.pulling_fs_layer("0123456789ab"))
        release.wait(10)  # a slow registry: the event loop must not wait with us
        while not cancel.wait(0.01):
            progress(msg.downloading("0123456789ab", 1, 10))
        stopped.set()

    async def check(client: TestClient[Any, Any]) -> None:
        resp = await client.post("/stream")
        assert resp.status == 200
        first = await resp.content.readline()
        assert json.loads(first) == msg.pulling_from("a/b", "latest")
        started = time.monotonic()
        pong = await client.get("/ping")
        assert await pong.text() == "pong" and time.monotonic() - started < 5
        release.set()
        await resp.content.readline()
        resp.close()  # the client goes away mid-pull
        for _ in range(500):
            if stopped.is_set():
                break
            await asyncio.sleep(0.01)
        assert stopped.is_set(), "the job was not cancelled when its client left"

    _serve(job, check)


# --- the backend's registry wiring ---------------------------------------------------------


def test_engine_hands_registry_flags_and_scoped_credentials_to_the_client(
        tmp_path: Path) -> None:
    config = DaemonConfig(data_root=str(tmp_path / "data"), exec_root=str(tmp_path / "run"),
                          insecure_registries=("10.0.0.0/8",),
                          registry_mirrors=("http://127.0.0.1:5999",))
    engine = build_engine(config)
    try:
        client = engine.images.client
        assert client.config.insecure == frozenset({"10.0.0.0/8"})
        assert client.config.mirrors == ("http://127.0.0.1:5999",)
        header = base64.urlsafe_b64encode(json.dumps(
            {"username": "u", "password": "p", "serveraddress": "http://127.0.0.1:5000"}
        ).encode()).decode()
        view = engine.images._client(header)
        # the caller's credentials go to the registry they named, to no other
        assert view._credentials("127.0.0.1:5000") == Credentials("u", "p")
        assert view._credentials("127.0.0.1:6000").empty
        anonymous = engine.images._client("")
        assert anonymous._credentials("127.0.0.1:5000").empty
        with pytest.raises(InvalidArgument, match="X-Registry-Auth"):
            engine.images._client(base64.urlsafe_b64encode(b"not json").decode())
    finally:
        engine.close()
