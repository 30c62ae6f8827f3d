"""The shim's control protocol, version 1: one JSON request line, one JSON response line.

The shim listens on ``<state-dir>/shim.sock`` (mode 0600). A client sends a request as one
line of JSON and gets one line back; it may send further requests on the same connection,
except after ``wait`` (the reply comes when the process exits) and ``attach`` / ``exec`` with
``attach`` (after the reply the connection carries streams, see below).

Request: ``{"v": 1, "op": NAME, ...arguments}`` (``v`` may be left out; a newer ``v`` than the
shim speaks is refused). Response: ``{"v": 1, "ok": true, ...result}`` or
``{"v": 1, "ok": false, "error": {"kind": "Conflict", "message": "..."}}`` where ``kind``
names a class of :mod:`skiff.errors`.

Operations (``exec``: an exec id where the operation applies to an exec'd process instead of
the container's init):

``state``
    -> ``{"id", "pid", "status": "created"|"running"|"stopped", "bundle", "tty", "stdin",
    "shim_pid", "exit": EXIT|null, "execs": {id: {"pid", "running", "exit_code"}}}``
``start``
    runs ``<runtime> start``; -> ``{"pid"}`` (the init's)
``kill`` ``{"signal": 15 | "SIGTERM", "all": false, "exec": null}``
    ``<runtime> kill [--all]`` (an exec'd process gets the signal directly)
``wait`` ``{"exec": null}``
    blocks until the process has exited and its output is drained -> EXIT:
    ``{"exit_code": int (128+n when killed by signal n), "exited_at": RFC3339Nano,
    "oom_killed": bool, "pid": int}``
``attach`` ``{"stdin", "stdout", "stderr": bool, "logs": bool, "stdin_once": bool,
"exec": null}``
    -> ``{}``, then the connection is the stream. Shim to client: without a tty, Docker's
    multiplexed frames (8-byte header ``[stream, 0, 0, 0, size as big-endian u32]``, stream
    1 stdout, 2 stderr); with a tty, the raw bytes. Client to shim: raw bytes for the
    process's stdin (when ``stdin``); the client ending its side closes stdin only with
    ``stdin_once``. ``logs`` first replays the container's log file. The shim closes the
    connection once the process has exited and everything is sent. Many clients may attach.
``resize`` ``{"height", "width", "exec": null}``
    TIOCSWINSZ on the pty master
``close-stdin`` ``{"exec": null}``
    closes the process's stdin (EOF; with a tty, an EOT byte)
``exec`` ``{"id", "process": OCI process JSON, "tty": bool, "stdin": bool, "attach": false}``
    ``<runtime> exec --detach``; the process is then the shim's (it is a subreaper) to reap.
    -> ``{"pid"}``; with ``"attach": true`` the connection is then attached to all of its
    streams (stdin included when ``stdin``), as ``attach`` describes.
``delete`` ``{"force": false}``
    ``<runtime> delete [--force]``, removes the state directory and exits. -> ``{}``
"""

from __future__ import annotations

import json
import struct

from skiff import errors

# Typing-only imports: typing itself is ~1 MiB of every shim's memory.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


VERSION = 1
STDIN, STDOUT, STDERR = 0, 1, 2
STREAM_IDS = {"stdout": STDOUT, "stderr": STDERR}
_HEADER = struct.Struct(">BxxxI")
HEADER_SIZE = _HEADER.size
MAX_LINE = 1024 * 1024  # a request longer than this is refused, not buffered forever


def encode(obj: dict[str, Any]) -> bytes:
    return json.dumps({"v": VERSION, **obj}, separators=(",", ":")).encode() + b"\n"


def decode_request(line: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise errors.InvalidArgument(f"shim request: malformed JSON: {exc}") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("op"), str):
        raise errors.InvalidArgument("shim request: want a JSON object with an \"op\"")
    v = obj.get("v", VERSION)
    if not isinstance(v, int) or v > VERSION:
        raise errors.InvalidArgument(f"shim request: protocol version {v!r} not supported "
                                     f"(this shim speaks {VERSION})")
    return obj


def error_reply(exc: errors.SkiffError) -> dict[str, Any]:
    return {"ok": False, "error": {"kind": type(exc).__name__, "message": exc.message}}


def raise_for(reply: dict[str, Any]) -> dict[str, Any]:
    """Return a successful reply; raise the skiff error a failed one carries."""
    if reply.get("ok"):
        return reply
    err = reply.get("error") or {}
    kind = getattr(errors, str(err.get("kind")), None)
    if not (isinstance(kind, type) and issubclass(kind, errors.SkiffError)):
        kind = errors.SystemFailure
    raise kind(str(err.get("message") or "shim: request failed"))


def frame(stream: int, data: bytes) -> bytes:
    """One frame of Docker's multiplexed stream."""
    return _HEADER.pack(stream, len(data)) + data


def parse_header(header: bytes) -> tuple[int, int]:
    """(stream, size) from an 8-byte frame header."""
    stream, size = _HEADER.unpack(header)
    return int(stream), int(size)
