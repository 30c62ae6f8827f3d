"""A minimal HTTP/1.1 client over a unix or TCP socket.

Why not http.client: importing it pulls in the email package and ssl (~20 ms, a third of a
`skiff ps`), and it cannot hand over the raw socket after ``101 UPGRADED`` without risking
bytes its buffered reader already consumed. This one does requests with a JSON or streamed
body, reads Content-Length, chunked or until-close bodies, and hijacks.
"""

from __future__ import annotations

# The C module under ``socket``: a unix-socket connection needs nothing more, and socket.py
# (with selectors and its enum conversions) costs ~2 ms of every CLI start. TCP connections
# import socket.py for create_connection. Every socket type here (socket.socket, ssl's
# SSLSocket) is a subclass of _socket.socket, so that is the type the client passes around.
import _socket

from skiff.errors import Unavailable

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    import socket
    from collections.abc import Iterable, Iterator, Mapping
    from typing import IO

    from skiff.cli.hosts import Endpoint


class TLSOptions:
    def __init__(self, verify: bool = False, ca: str | None = None, cert: str | None = None,
                 key: str | None = None) -> None:
        self.verify, self.ca, self.cert, self.key = verify, ca, cert, key


class Unreachable(Unavailable):
    """No daemon answers at the endpoint."""


class TLSFailure(Unavailable):
    """The daemon answers, but TLS could not be set up (files, handshake, verification)."""


class Response:
    """A response whose body is read lazily from the socket (streams can be endless)."""

    def __init__(self, status: int, headers: dict[str, str], sock: _socket.socket) -> None:
        self.status, self.headers, self.sock = status, headers, sock
        self.buf = bytearray()  # read from the socket, not yet consumed
        self._remaining: int | None = None  # bytes left of a Content-Length body
        self._chunked = False
        self._done = False

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def _read_line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise Unreachable("the daemon closed the connection mid-response")
        line, _, rest = bytes(self.buf).partition(b"\r\n")
        self.buf = bytearray(rest)
        return line

    def _read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise Unreachable("the daemon closed the connection mid-response")
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def chunks(self) -> Iterator[bytes]:
        """The body, piece by piece as it arrives (for streams: logs, events, progress)."""
        if self._done:
            return
        if self._chunked:
            while True:
                size_line = self._read_line().split(b";", 1)[0].strip()
                size = int(size_line or b"0", 16)
                if size == 0:
                    while self._read_line():  # trailers end with an empty line
                        pass
                    break
                yield self._read_exact(size)
                self._read_exact(2)
        elif self._remaining is not None:
            while self._remaining > 0:
                if not self.buf and not self._fill():
                    break
                piece = bytes(self.buf[: self._remaining])
                del self.buf[: len(piece)]
                self._remaining -= len(piece)
                yield piece
        else:
            while True:
                if self.buf:
                    piece = bytes(self.buf)
                    self.buf.clear()
                    yield piece
                if not self._fill():
                    break
        self._done = True

    def read(self) -> bytes:
        return b"".join(self.chunks())

    def lines(self) -> Iterator[bytes]:
        """The body split on newlines (JSON message streams)."""
        pending = b""
        for chunk in self.chunks():
            pending += chunk
            *complete, pending = pending.split(b"\n")
            yield from complete
        if pending:
            yield pending

    def close(self) -> None:
        self.sock.close()


def connect(endpoint: Endpoint, tls: TLSOptions | None = None,
            timeout: float | None = None) -> _socket.socket:
    try:
        if endpoint.scheme == "unix":
            return _connect_unix(endpoint.path, timeout)
        import socket  # name resolution and address families: only TCP needs them

        tcp = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
    except OSError as exc:
        raise Unreachable(f"cannot connect to the skiff daemon at {endpoint}: "
                          f"{exc.strerror or exc}") from exc
    if endpoint.tls:
        return _wrap_tls(tcp, endpoint, tls or TLSOptions())
    return tcp


def _connect_unix(path: str, timeout: float | None) -> _socket.socket:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


def _wrap_tls(sock: socket.socket, endpoint: Endpoint, opts: TLSOptions) -> socket.socket:
    import ssl  # only TLS users pay for it

    try:
        ctx = ssl.create_default_context(cafile=opts.ca)
        if not opts.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if opts.cert:
            ctx.load_cert_chain(opts.cert, opts.key)
    except OSError as exc:  # ssl.SSLError is one too
        sock.close()
        raise TLSFailure(f"could not load the TLS files (--tlscacert {opts.ca}, --tlscert "
                         f"{opts.cert}, --tlskey {opts.key}): {exc}") from exc
    try:
        return ctx.wrap_socket(sock, server_hostname=endpoint.host)
    except OSError as exc:
        sock.close()
        raise TLSFailure(f"TLS handshake with the skiff daemon at {endpoint} failed: "
                         f"{exc}") from exc


def request(endpoint: Endpoint, method: str, target: str, *,
            headers: Mapping[str, str] | None = None,
            body: bytes | IO[bytes] | Iterable[bytes] | None = None,
            tls: TLSOptions | None = None, timeout: float | None = None) -> Response:
    """Send one request on a new connection and read the status line and headers."""
    sock = connect(endpoint, tls, timeout)
    try:
        head = [f"{method} {target} HTTP/1.1", "Host: docker", "User-Agent: skiff-cli"]
        hdrs = dict(headers or {})
        streamed = body is not None and not isinstance(body, bytes)
        if isinstance(body, bytes):
            hdrs.setdefault("Content-Length", str(len(body)))
        elif streamed:
            hdrs["Transfer-Encoding"] = "chunked"
        elif method in ("POST", "PUT"):
            hdrs.setdefault("Content-Length", "0")
        head += [f"{k}: {v}" for k, v in hdrs.items()]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if isinstance(body, bytes):
            sock.sendall(body)
        elif body is not None:
            pieces: Iterable[bytes] = (iter(lambda: body.read(65536), b"")
                                       if hasattr(body, "read") else body)
            for piece in pieces:
                if piece:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            sock.sendall(b"0\r\n\r\n")
        return read_head(sock, method)
    except OSError as exc:
        sock.close()
        raise Unreachable(f"talking to the skiff daemon at {endpoint}: {exc}") from exc
    except BaseException:
        sock.close()
        raise


def read_head(sock: _socket.socket, method: str = "GET") -> Response:
    resp = Response(0, {}, sock)
    status_line = resp._read_line().decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise Unreachable(f"not an HTTP answer from the daemon: {status_line[:80]!r}")
    resp.status = int(parts[1])
    while line := resp._read_line():
        name, _, value = line.decode("latin-1").partition(":")
        resp.headers[name.strip().lower()] = value.strip()
    if resp.status == 101:
        return resp  # the socket is now a byte pipe; resp.buf holds what came early
    if method == "HEAD" or resp.status in (204, 304):
        resp._remaining = 0
    elif "chunked" in resp.header("transfer-encoding").lower():
        resp._chunked = True
    elif resp.header("content-length"):
        resp._remaining = int(resp.header("content-length"))
    return resp
