"""Docker's JSON progress stream: the messages and a renderer for terminals and logs.

The daemon sends these objects, one JSON document per line, on ``POST /images/create`` and
``POST /images/{name}/push``; the docker CLI and our own CLI draw them. The shapes here match
what dockerd emits so any Docker client can render our pulls and pushes unchanged:

* ``{"status": "Pulling fs layer", "progressDetail": {}, "id": "a3ed95caeb02"}``
* ``{"status": "Downloading", "progressDetail": {"current": 1, "total": 2},
  "progress": "[=>   ]  1B/2B", "id": "a3ed95caeb02"}``
* ``{"status": "Digest: sha256:..."}`` (no id: a whole-operation line)
* ``{"errorDetail": {"message": "..."}, "error": "..."}`` (terminates the stream)

Pure: no I/O beyond the ``TextIO`` a renderer is handed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from skiff.core.content import Descriptor

Message = dict[str, Any]
ProgressSink = Callable[[Message], None]

BytesProgress = Callable[[int], None]
"""Called with the number of bytes done so far (absolute, including any resumed prefix):
a blob transfer, or the compressed input a layer apply has consumed."""
LayerProgress = Callable[["Descriptor", int], None]
"""``(layer, compressed bytes consumed so far)`` while a layer is unpacked; the pull service
turns it into "Extracting" lines."""
"""Receives each progress message; the daemon encodes them onto the HTTP response."""


def discard(_msg: Message) -> None:
    """A sink for callers that do not want progress."""


# --- formatting (the text dockerd puts in "progress") -------------------------------------

_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")


def human_size(size: float) -> str:
    """Decimal size with four significant digits, as Docker's go-units HumanSize: ``2.759MB``."""
    i = 0
    while size >= 1000 and i < len(_UNITS) - 1:
        size /= 1000.0
        i += 1
    return f"{size:.4g}{_UNITS[i]}"


def progress_bar(current: int, total: int) -> str:
    """The ``progress`` text of a message: ``[=====>      ]  1.2MB/3.4MB``.

    dockerd renders it for a 200-column terminal (wider than 110 columns gets the bar), so the
    string always carries the bar when a total is known; without a total only the count shows.
    """
    if current <= 0 and total <= 0:
        return ""
    if total <= 0:
        return f"{human_size(current):>8}"
    percentage = min(int(current / total * 100) // 2, 50)
    bar = f"[{'=' * percentage}>{' ' * (50 - percentage)}] "
    if current > total:
        return bar + f"{human_size(current):>8}"
    return bar + f"{human_size(current):>8}/{human_size(total)}"


def short_id(digest: object) -> str:
    """The 12-hex id Docker shows for a layer (``sha256:abc...`` -> ``abc...``[:12])."""
    text = str(digest)
    return text.split(":", 1)[-1][:12]


# --- message constructors ----------------------------------------------------------------


def status(text: str, id: str | None = None) -> Message:
    """A plain status line; per-layer lines (with an id) carry an empty progressDetail."""
    if id is None:
        return {"status": text}
    return {"status": text, "progressDetail": {}, "id": id}


def progress(text: str, id: str, current: int, total: int) -> Message:
    detail: dict[str, int] = {"current": current}
    if total > 0:
        detail["total"] = total
    return {"status": text, "progressDetail": detail, "progress": progress_bar(current, total),
            "id": id}


def error(text: str) -> Message:
    return {"errorDetail": {"message": text}, "error": text}


# pull
def pulling_from(repository: str, tag_or_digest: str) -> Message:
    return {"status": f"Pulling from {repository}", "id": tag_or_digest}


def pulling_fs_layer(id: str) -> Message:
    return status("Pulling fs layer", id)


def waiting(id: str) -> Message:
    return status("Waiting", id)


def downloading(id: str, current: int, total: int) -> Message:
    return progress("Downloading", id, current, total)


def verifying_checksum(id: str) -> Message:
    return status("Verifying Checksum", id)


def download_complete(id: str) -> Message:
    return status("Download complete", id)


def extracting(id: str, current: int, total: int) -> Message:
    return progress("Extracting", id, current, total)


def pull_complete(id: str) -> Message:
    return status("Pull complete", id)


def already_exists(id: str) -> Message:
    return status("Already exists", id)


def digest(value: object) -> Message:
    return status(f"Digest: {value}")


def downloaded_newer(ref: str) -> Message:
    return status(f"Status: Downloaded newer image for {ref}")


def up_to_date(ref: str) -> Message:
    return status(f"Status: Image is up to date for {ref}")


# push
def push_refers_to(repository: str) -> Message:
    return status(f"The push refers to repository [{repository}]")


def preparing(id: str) -> Message:
    return status("Preparing", id)


def pushing(id: str, current: int, total: int) -> Message:
    return progress("Pushing", id, current, total)


def pushed(id: str) -> Message:
    return status("Pushed", id)


def layer_already_exists(id: str) -> Message:
    return status("Layer already exists", id)


def mounted_from(id: str, repository: str) -> Message:
    return status(f"Mounted from {repository}", id)


def push_digest(tag: str, digest: object, size: int) -> list[Message]:
    """The closing lines of a push: the summary line and the ``aux`` object the CLI reads."""
    return [
        status(f"{tag}: digest: {digest} size: {size}"),
        {"progressDetail": {}, "aux": {"Tag": tag, "Digest": str(digest), "Size": size}},
    ]


def encode(msg: Message) -> bytes:
    """One message on the wire: compact JSON then CRLF, as dockerd's stream formatter writes."""
    return json.dumps(msg, separators=(",", ":")).encode() + b"\r\n"


# --- rendering (the CLI side) ------------------------------------------------------------


class StreamError(Exception):
    """The stream carried an error message; ``message`` is the daemon's text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Renderer:
    """Draws a progress stream the way the docker CLI does.

    On a terminal every layer id owns one line that is redrawn in place (cursor up, clear line,
    rewrite, cursor back down), so a pull of five layers stays five lines tall. Elsewhere (logs,
    pipes) each state change is one plain line and byte-count updates are dropped: hundreds of
    "Downloading" lines would bury the useful ones.
    """

    def __init__(self, out: TextIO, tty: bool) -> None:
        self._out = out
        self._tty = tty
        self._lines: dict[str, int] = {}  # id -> line index, counted from the first line drawn
        self._count = 0  # lines drawn so far (the cursor sits below the last one)

    def feed(self, msg: Mapping[str, Any]) -> None:
        """Draw one message; raise StreamError for an error message."""
        err = msg.get("errorDetail") or ({"message": msg["error"]} if msg.get("error") else None)
        if err:
            raise StreamError(str(err.get("message", "")))
        if "aux" in msg and "status" not in msg:
            return
        text = self._text(msg)
        id = msg.get("id")
        if not self._tty:
            detail = msg.get("progressDetail") or {}
            if id and detail.get("current") is not None:
                return
            self._out.write(text + "\n")
            return
        if id and id in self._lines:
            up = self._count - self._lines[id]
            # \x1b[{n}A: up n lines; \x1b[2K: clear the line; \r: column 0; \x1b[{n}B: back down
            self._out.write(f"\x1b[{up}A\x1b[2K\r{text}\r\x1b[{up}B")
        else:
            if id:
                self._lines[id] = self._count
            self._out.write(f"\x1b[2K\r{text}\n")
            self._count += 1
        self._out.flush()

    def feed_line(self, line: bytes | str) -> None:
        """Draw one raw line of the stream (blank lines are keep-alives and are ignored)."""
        text = line.decode() if isinstance(line, bytes) else line
        if text.strip():
            self.feed(json.loads(text))

    @staticmethod
    def _text(msg: Mapping[str, Any]) -> str:
        text = str(msg.get("status", ""))
        if msg.get("id"):
            text = f"{msg['id']}: {text}"
        if msg.get("progress"):
            text = f"{text} {msg['progress']}"
        return text
