"""Which daemon the CLI talks to: ``-H``, then ``SKIFF_HOST``, then ``DOCKER_HOST``, then the
default socket. Pure: the environment is passed in."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from skiff.errors import InvalidArgument

DEFAULT_SOCKET = "/run/skiff/skiff.sock"
DEFAULT_HOST = f"unix://{DEFAULT_SOCKET}"


class Endpoint(NamedTuple):
    """A daemon address: ``unix`` with a socket path, or ``tcp`` with host and port."""

    scheme: str
    path: str = ""
    host: str = ""
    port: int = 0
    tls: bool = False

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        return f"tcp://{self.host}:{self.port}"


def parse_host(text: str, *, tls: bool = False) -> Endpoint:
    """``unix:///path``, ``tcp://host:port`` (port 2375, or 2376 with TLS, when absent) or a
    bare absolute socket path."""
    if text.startswith("/"):
        return Endpoint("unix", path=text)
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise InvalidArgument(f"invalid host {text!r}: expected unix:///path or tcp://host:port")
    if scheme == "unix":
        if not rest.startswith("/"):
            raise InvalidArgument(f"invalid host {text!r}: the socket path must be absolute")
        return Endpoint("unix", path=rest)
    if scheme in ("tcp", "http", "https"):
        hostport = rest.rstrip("/")
        host, colon, port_text = hostport.rpartition(":")
        if not colon or "]" in port_text:
            host, port_text = hostport, ""
        host = host.strip("[]") or "127.0.0.1"
        use_tls = tls or scheme == "https"
        try:
            port = int(port_text) if port_text else (2376 if use_tls else 2375)
        except ValueError as exc:
            raise InvalidArgument(f"invalid host {text!r}: bad port {port_text!r}") from exc
        if not 0 < port < 65536:
            raise InvalidArgument(f"invalid host {text!r}: port out of range")
        return Endpoint("tcp", host=host, port=port, tls=use_tls)
    raise InvalidArgument(f"invalid host {text!r}: unsupported scheme {scheme!r}")


def select_host(flag: str | None, env: Mapping[str, str], *, tls: bool = False) -> Endpoint:
    """The first of ``-H``, ``SKIFF_HOST``, ``DOCKER_HOST``, the default socket."""
    tls = tls or bool(env.get("DOCKER_TLS_VERIFY"))
    for candidate in (flag, env.get("SKIFF_HOST"), env.get("DOCKER_HOST")):
        if candidate:
            return parse_host(candidate, tls=tls)
    return parse_host(DEFAULT_HOST)
