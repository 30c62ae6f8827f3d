"""Which daemon the CLI talks to: ``-H``, then ``SKIFF_HOST``, then ``DOCKER_HOST``, then the
default socket. Pure: the environment is passed in."""

from __future__ import annotations

from skiff.errors import InvalidArgument

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms) at run time
if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_SOCKET = "/run/skiff/skiff.sock"
DEFAULT_HOST = f"unix://{DEFAULT_SOCKET}"


class Endpoint:
    """A daemon address: ``unix`` with a socket path, or ``tcp`` with host and port.

    A plain class rather than a NamedTuple: building a namedtuple class execs generated source,
    most of a millisecond on every CLI start."""

    __slots__ = ("host", "path", "port", "scheme", "tls")

    def __init__(self, scheme: str, path: str = "", host: str = "", port: int = 0,
                 tls: bool = False) -> None:
        self.scheme, self.path, self.host, self.port, self.tls = scheme, path, host, port, tls

    def _key(self) -> tuple[str, str, str, int, bool]:
        return (self.scheme, self.path, self.host, self.port, self.tls)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Endpoint) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"Endpoint(scheme={self.scheme!r}, path={self.path!r}, host={self.host!r}, "
                f"port={self.port!r}, tls={self.tls!r})")

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
