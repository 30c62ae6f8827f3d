"""The Engine API as the commands see it: JSON calls, streams and hijacked connections, with
the daemon's errors turned into :class:`APIError` (its status and message)."""

from __future__ import annotations

import json

from skiff.cli.transport import Response, TLSOptions, Unreachable, read_head, request
from skiff.cli.urlcode import quote, urlencode
from skiff.errors import SkiffError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms) at run time
if TYPE_CHECKING:
    import _socket
    from collections.abc import Iterable, Iterator, Mapping
    from typing import IO, Any

    from skiff.cli.hosts import Endpoint

    Query = Mapping[str, "str | int | bool | list[str] | None"]

API_VERSION = "1.44"


class APIError(SkiffError):
    """The daemon answered with an error status; ``message`` is its text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class NoDaemon(SkiffError):
    """Nothing answers at the endpoint; the message says how to start skiffd."""


def encode_query(query: Query | None) -> str:
    if not query:
        return ""
    pairs: list[tuple[str, str]] = []
    for key, value in query.items():
        if value is None:
            continue
        if isinstance(value, list):
            pairs += [(key, str(v)) for v in value]  # repeated: changes=...&changes=...
            continue
        if isinstance(value, bool):
            value = "1" if value else "0"
        pairs.append((key, str(value)))
    return "?" + urlencode(pairs) if pairs else ""


def filters_json(pairs: Iterable[str]) -> str | None:
    """``--filter key=value`` flags as the API's ``{"key": ["value", ...]}``."""
    found: dict[str, list[str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise APIError(0, f'invalid argument "{pair}" for "-f, --filter" flag: bad format '
                              "of filter (expected name=value)")
        found.setdefault(key.strip().lower(), []).append(value)
    return json.dumps(found) if found else None


def path_arg(text: str) -> str:
    """A name or id placed in a URL path (image names carry slashes and colons)."""
    return quote(text, safe="/:@")


class Client:
    def __init__(self, endpoint: Endpoint, tls: TLSOptions | None = None) -> None:
        self.endpoint = endpoint
        self.tls = tls

    def _target(self, path: str, query: Query | None) -> str:
        return f"/v{API_VERSION}{path}{encode_query(query)}"

    def call(self, method: str, path: str, query: Query | None = None, *,
             body: Any = None, data: bytes | IO[bytes] | Iterable[bytes] | None = None,
             headers: Mapping[str, str] | None = None, ok_statuses: tuple[int, ...] = ()
             ) -> Response:
        """One request; an error status raises APIError (unless listed in ok_statuses)."""
        hdrs = dict(headers or {})
        payload = data
        if body is not None:
            payload = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        try:
            resp = request(self.endpoint, method, self._target(path, query), headers=hdrs,
                           body=payload, tls=self.tls)
        except Unreachable as exc:
            raise self._no_daemon(exc) from exc
        if resp.status >= 400 and resp.status not in ok_statuses:
            try:
                raise error_of(resp)
            finally:
                resp.close()
        return resp

    def _no_daemon(self, exc: Unreachable) -> NoDaemon:
        where = self.endpoint
        cause = exc.__cause__
        reason = (cause.strerror if isinstance(cause, OSError) and cause.strerror
                  else exc.message)
        hint = (f"Start one with: skiffd -H {where} &" if where.scheme == "unix"
                else "Start skiffd listening on that address")
        return NoDaemon(f"Cannot connect to the skiff daemon at {where} ({reason}). "
                        f"Is skiffd running? {hint}")

    def json(self, method: str, path: str, query: Query | None = None, body: Any = None,
             **kw: Any) -> Any:
        resp = self.call(method, path, query, body=body, **kw)
        try:
            raw = resp.read()
        finally:
            resp.close()
        return json.loads(raw) if raw.strip() else None

    def get(self, path: str, query: Query | None = None) -> Any:
        return self.json("GET", path, query)

    def post(self, path: str, query: Query | None = None, body: Any = None) -> Any:
        return self.json("POST", path, query, body)

    def delete(self, path: str, query: Query | None = None) -> Any:
        return self.json("DELETE", path, query)

    def stream_json(self, method: str, path: str, query: Query | None = None,
                    **kw: Any) -> Iterator[dict[str, Any]]:
        """A body of one JSON document per line (progress, events, stats)."""
        resp = self.call(method, path, query, **kw)
        try:
            for line in resp.lines():
                if line.strip():
                    yield json.loads(line)
        finally:
            resp.close()

    def hijack(self, path: str, query: Query | None = None, body: Any = None
               ) -> tuple[_socket.socket, bytes, str]:
        """POST with ``Upgrade: tcp``: the raw socket, bytes already read past the headers,
        and the stream's content type (raw or multiplexed)."""
        hdrs = {"Connection": "Upgrade", "Upgrade": "tcp"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        try:
            resp = request(self.endpoint, "POST", self._target(path, query), headers=hdrs,
                           body=payload, tls=self.tls)
        except Unreachable as exc:
            raise self._no_daemon(exc) from exc
        if resp.status >= 400:
            try:
                raise error_of(resp)
            finally:
                resp.close()
        ctype = resp.header("content-type")
        if resp.status != 101 and resp._chunked:
            # A non-upgraded answer streams the body; chunked framing would corrupt it.
            resp.close()
            raise APIError(resp.status, "the daemon did not upgrade the attach connection")
        return resp.sock, bytes(resp.buf), ctype


def error_of(resp: Response) -> APIError:
    raw = resp.read()
    message = ""
    if raw:
        try:
            doc = json.loads(raw)
            message = str(doc.get("message", "")) if isinstance(doc, dict) else ""
        except ValueError:
            message = raw.decode("utf-8", "replace").strip()
    if not message:
        message = {404: "page not found", 405: "method not allowed"}.get(
            resp.status, f"HTTP status {resp.status}")
    return APIError(resp.status, message)


__all__ = ["APIError", "Client", "NoDaemon", "error_of", "filters_json", "path_arg",
           "read_head"]
