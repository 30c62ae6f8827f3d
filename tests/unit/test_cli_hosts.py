"""Which daemon the CLI talks to."""

from __future__ import annotations

import pytest

from skiff.cli.hosts import DEFAULT_SOCKET, Endpoint, parse_host, select_host
from skiff.errors import InvalidArgument


def test_precedence_flag_then_skiff_host_then_docker_host_then_default() -> None:
    env = {"SKIFF_HOST": "unix:///s.sock", "DOCKER_HOST": "unix:///d.sock"}
    assert select_host("unix:///f.sock", env).path == "/f.sock"
    assert select_host(None, env).path == "/s.sock"
    assert select_host(None, {"DOCKER_HOST": "unix:///d.sock"}).path == "/d.sock"
    assert select_host(None, {}) == Endpoint("unix", path=DEFAULT_SOCKET)
    assert select_host("", {"SKIFF_HOST": ""}).path == DEFAULT_SOCKET


def test_tcp_forms_and_tls_ports() -> None:
    assert parse_host("tcp://127.0.0.1:2375") == Endpoint("tcp", host="127.0.0.1", port=2375)
    assert parse_host("tcp://localhost").port == 2375
    assert parse_host("tcp://localhost", tls=True).port == 2376
    assert select_host("tcp://h", {"DOCKER_TLS_VERIFY": "1"}).tls
    assert parse_host("tcp://[::1]:99").host == "::1"
    assert str(parse_host("tcp://h:5")) == "tcp://h:5"
    assert parse_host("/run/x.sock").path == "/run/x.sock"


@pytest.mark.parametrize("bad", ["ssh://h", "unix://relative", "tcp://h:port", "tcp://h:0",
                                 "h:2375"])
def test_bad_hosts(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_host(bad)
