"""The HTTP client and the CLI's error reporting against a tiny fake daemon on a unix socket."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from skiff.cli import main as climain
from skiff.cli.client import APIError, Client, NoDaemon, encode_query, filters_json
from skiff.cli.hosts import Endpoint

Handler = Callable[[str, str, bytes], bytes]  # (method, target, body) -> raw response


def respond(status: int, body: bytes = b"", ctype: str = "application/json",
            chunked: bool = False) -> bytes:
    reason = {200: "OK", 101: "UPGRADED", 404: "Not Found", 400: "Bad Request",
              500: "Internal Server Error", 204: "No Content"}.get(status, "X")
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
    if chunked:
        pieces = [body[i:i + 5] for i in range(0, len(body), 5)]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + payload
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class FakeDaemon:
    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self.seen: list[tuple[str, str, bytes]] = []
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096)
                head, _, body = data.partition(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                method, target, _ = lines[0].split(" ")
                length = next((int(h.split(":")[1]) for h in lines[1:]
                               if h.lower().startswith("content-length")), 0)
                while len(body) < length:
                    body += conn.recv(4096)
                self.seen.append((method, target, body))
                conn.sendall(self.handler(method, target, body))

    def close(self) -> None:
        self.srv.close()


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Callable[[Handler], FakeDaemon]]:
    made: list[FakeDaemon] = []

    def make(handler: Handler) -> FakeDaemon:
        d = FakeDaemon(str(tmp_path / "d.sock"), handler)
        made.append(d)
        return d
    yield make
    for d in made:
        d.close()


def test_json_calls_errors_and_chunked_streams(fake: Callable[[Handler], FakeDaemon]) -> None:
    def handler(method: str, target: str, body: bytes) -> bytes:
        if target.startswith("/v1.44/containers/json"):
            return respond(200, b'[{"Id": "abc"}]', chunked=True)
        if target.startswith("/v1.44/events"):
            return respond(200, b'{"a": 1}\n\n{"a": 2}\n', chunked=True)
        if target.startswith("/v1.44/containers/create"):
            return respond(201, json.dumps({"Id": "x", "echo": json.loads(body)}).encode())
        if target.startswith("/v1.44/text"):
            return respond(500, b"plain failure\n", ctype="text/plain")
        return respond(404, b'{"message": "No such container: nope"}')

    d = fake(handler)
    client = Client(Endpoint("unix", path=d.path))
    assert client.get("/containers/json", {"all": True}) == [{"Id": "abc"}]
    assert d.seen[-1][1] == "/v1.44/containers/json?all=1"
    assert list(client.stream_json("GET", "/events")) == [{"a": 1}, {"a": 2}]
    assert client.post("/containers/create", {"name": "n"}, {"Image": "i"})["echo"] == {
        "Image": "i"}
    with pytest.raises(APIError) as info:
        client.get("/containers/nope/json")
    assert (info.value.status, info.value.message) == (404, "No such container: nope")
    with pytest.raises(APIError) as info:
        client.get("/text")
    assert info.value.message == "plain failure"


def test_hijack_keeps_bytes_that_arrive_with_the_headers(
        fake: Callable[[Handler], FakeDaemon]) -> None:
    d = fake(lambda m, t, b: (b"HTTP/1.1 101 UPGRADED\r\nContent-Type: "
                              b"application/vnd.docker.raw-stream\r\nConnection: Upgrade\r\n"
                              b"Upgrade: tcp\r\n\r\nearly-bytes"))
    sock, early, ctype = Client(Endpoint("unix", path=d.path)).hijack("/containers/x/attach")
    rest = b""
    while chunk := sock.recv(100):
        rest += chunk
    sock.close()
    assert early + rest == b"early-bytes"
    assert ctype == "application/vnd.docker.raw-stream"


def test_no_daemon_says_how_to_start_one(tmp_path: Path) -> None:
    client = Client(Endpoint("unix", path=str(tmp_path / "absent.sock")))
    with pytest.raises(NoDaemon) as info:
        client.get("/_ping")
    assert f"skiffd -H unix://{tmp_path}/absent.sock" in info.value.message


def test_cli_prints_daemon_errors_and_exits_125(
        fake: Callable[[Handler], FakeDaemon], capsys: pytest.CaptureFixture[str]) -> None:
    d = fake(lambda m, t, b: respond(404, b'{"message": "page not found"}'))
    assert climain.main(["-H", f"unix://{d.path}", "top", "c1"]) == 125
    assert capsys.readouterr().err == "Error response from daemon: page not found\n"
    # several targets: each error printed, exit 1 as the docker CLI does
    assert climain.main(["-H", f"unix://{d.path}", "stop", "a", "b"]) == 1
    assert capsys.readouterr().err.count("Error response from daemon") == 2


def test_cli_without_daemon_exits_125(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert climain.main(["-H", f"unix://{tmp_path}/none.sock", "ps"]) == 125
    err = capsys.readouterr().err
    assert "Is skiffd running?" in err and "skiffd -H" in err


def test_run_maps_start_failures_to_126_127(fake: Callable[[Handler], FakeDaemon],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    def handler(method: str, target: str, body: bytes) -> bytes:
        if "/create" in target:
            return respond(201, b'{"Id": "c1", "Warnings": []}')
        if "/attach" in target:
            return (b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream"
                    b"\r\n\r\n")
        if "/wait" in target:
            return respond(200, b'{"StatusCode": 127}')
        if "/start" in target:
            return respond(400, b'{"message": "exec: \\"nope\\": executable file not found '
                                b'in $PATH"}')
        return respond(404, b'{"message": "?"}')

    d = fake(handler)
    assert climain.main(["-H", f"unix://{d.path}", "run", "busybox", "nope"]) == 127
    assert "executable file not found" in capsys.readouterr().err
    order = [t.split("?")[0].rsplit("/", 1)[-1] for _, t, _ in d.seen]
    assert order == ["create", "attach", "wait", "start"]  # attach and wait before start


def test_query_encoding() -> None:
    assert encode_query({"a": True, "b": None, "c": 0, "d": ["x", "y"]}) == "?a=1&c=0&d=x&d=y"
    assert encode_query({}) == ""
    assert json.loads(filters_json(["status=exited", "label=a=b", "status=created"]) or "") \
        == {"status": ["exited", "created"], "label": ["a=b"]}
    assert filters_json([]) is None
    with pytest.raises(APIError):
        filters_json(["noequals"])
