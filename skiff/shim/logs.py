"""Container logs in Docker's json-file format: the shim's writer and the daemon's reader.

One JSON object per line, keys in Docker's order::

    {"log":"hello\\n","stream":"stdout","time":"2024-05-01T10:00:00.123456789Z"}

Output is cut into lines; a line longer than 16 KiB is written as 16 KiB pieces without the
trailing newline (Docker's partial messages), and so is a last line the process never ended.

Rotation is on by default, unlike Docker's (whose unbounded default fills disks): when the
next entry would take the file past ``max_size`` the files shift (``x.log`` -> ``x.log.1``
-> ``x.log.2``...) and at most ``max_file`` files are kept. ``max_file == 1`` truncates.

:func:`read_logs` gives ``docker logs`` semantics over the current and rotated files: tail,
since/until, follow (across rotations, until ``stop()`` says the container is gone).
"""

from __future__ import annotations

import json
import os
import time
from collections import deque

from skiff.errors import InvalidArgument, os_error
from skiff.shim import timefmt

# Typing-only imports: typing itself is ~1 MiB of every shim's memory.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import BinaryIO


PARTIAL_MAX = 16 * 1024  # Docker's max size of one log message before it is split
DEFAULT_MAX_SIZE = 10 * 1024 * 1024
DEFAULT_MAX_FILE = 3
STREAMS = ("stdout", "stderr")


def parse_size(text: str) -> int:
    """Docker's --log-opt max-size: ``10m``, ``512k``, ``1g``, plain bytes; ``-1`` = unbounded."""
    t = text.strip().lower()
    if t == "-1":
        return -1
    mult = 1
    for suffix, m in (("k", 1024), ("m", 1024**2), ("g", 1024**3)):
        for form in (suffix + "b", suffix):
            if t.endswith(form):
                t, mult = t[: -len(form)], m
                break
        if mult != 1:
            break
    try:
        value = int(float(t) * mult)
    except ValueError:
        raise InvalidArgument(f"log max-size: not a size: {text!r}") from None
    if value <= 0:
        raise InvalidArgument(f"log max-size: must be positive or -1, got {text!r}")
    return value


class LogWriter:
    """Appends one container's stdout/stderr to a json-file log, rotating as it goes."""

    def __init__(self, path: str, max_size: int = DEFAULT_MAX_SIZE,
                 max_file: int = DEFAULT_MAX_FILE, clock: Callable[[], int] = time.time_ns
                 ) -> None:
        if max_file < 1:
            raise InvalidArgument(f"log max-file: must be >= 1, got {max_file}")
        self.path = path
        self.max_size = max_size
        self.max_file = max_file
        self._clock = clock
        self._pending: dict[str, bytes] = {s: b"" for s in STREAMS}
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                           0o640)
        except OSError as exc:
            raise os_error("open log", self.path, exc) from exc

    def write(self, stream: str, data: bytes) -> None:
        """Take raw output of ``stream``; whole lines (and 16K pieces) go to the file."""
        buf = self._pending[stream] + data
        start = 0
        while True:
            nl = buf.find(b"\n", start, start + PARTIAL_MAX)
            if nl >= 0:
                self._entry(stream, buf[start:nl + 1])
                start = nl + 1
            elif len(buf) - start >= PARTIAL_MAX:
                self._entry(stream, buf[start:start + PARTIAL_MAX])
                start += PARTIAL_MAX
            else:
                break
        self._pending[stream] = buf[start:]

    def pending(self, stream: str) -> bytes:
        """Output of ``stream`` not yet written because its line is not finished."""
        return self._pending[stream]

    def flush(self) -> None:
        """Write unfinished lines as they are (the process ended without a newline)."""
        for stream in STREAMS:
            if self._pending[stream]:
                self._entry(stream, self._pending[stream])
                self._pending[stream] = b""

    def close(self) -> None:
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _entry(self, stream: str, chunk: bytes) -> None:
        # Docker replaces invalid UTF-8 the same way (U+FFFD) before encoding the string.
        line = json.dumps({"log": chunk.decode("utf-8", "replace"), "stream": stream,
                           "time": timefmt.format_nano(self._clock())},
                          ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        if self.max_size > 0 and self._size > 0 and self._size + len(line) > self.max_size:
            self._rotate()
        try:
            os.write(self._fd, line)
        except OSError as exc:
            raise os_error("write log", self.path, exc) from exc
        self._size += len(line)

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        try:
            if self.max_file == 1:
                os.truncate(self.path, 0)
            else:
                for n in range(self.max_file - 1, 0, -1):
                    older = f"{self.path}.{n - 1}" if n > 1 else self.path
                    if os.path.exists(older):
                        os.replace(older, f"{self.path}.{n}")
        except OSError as exc:
            raise os_error("rotate log", self.path, exc) from exc
        self._fd = self._open()
        self._size = 0


class LogEntry:
    """One line (or 16K piece) of output as the log holds it."""

    __slots__ = ("data", "stream", "time_ns")

    def __init__(self, stream: str, time_ns: int, data: bytes) -> None:
        self.stream = stream  # "stdout" or "stderr"
        self.time_ns = time_ns
        self.data = data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LogEntry) and (self.stream, self.time_ns, self.data) == (
            other.stream, other.time_ns, other.data)

    def __repr__(self) -> str:
        return f"LogEntry({self.stream!r}, {self.time_ns}, {self.data!r})"

    def format(self, timestamps: bool = False) -> bytes:
        """The bytes ``docker logs`` prints for this entry (``-t`` puts the time in front)."""
        if timestamps:
            return timefmt.format_fixed(self.time_ns).encode() + b" " + self.data
        return self.data


def log_files(path: str) -> list[str]:
    """The existing files of a log, oldest first (``x.log.2``, ``x.log.1``, ``x.log``)."""
    rotated = []
    n = 1
    while os.path.exists(f"{path}.{n}"):
        rotated.append(f"{path}.{n}")
        n += 1
    return [*reversed(rotated), *([path] if os.path.exists(path) else [])]


def _decode(line: bytes) -> LogEntry | None:
    try:
        obj = json.loads(line)
        return LogEntry(obj["stream"], timefmt.parse(obj["time"]), obj["log"].encode())
    except (ValueError, KeyError, TypeError, AttributeError, InvalidArgument):
        return None  # a torn last line (crash mid-write) or foreign junk: skip, as Docker does


def _open(name: str) -> BinaryIO | None:
    try:
        return open(name, "rb")
    except FileNotFoundError:
        return None  # rotated away between listing and opening: its entries are gone
    except OSError as exc:
        raise os_error("open log", name, exc) from exc


def _entries(fobj: BinaryIO, limit: int | None = None) -> Iterator[LogEntry]:
    """Whole lines of ``fobj`` from where it is up to byte ``limit`` (None: its end)."""
    for line in fobj:
        if limit is not None and fobj.tell() > limit:
            return
        if line.endswith(b"\n"):
            entry = _decode(line)
            if entry is not None:
                yield entry


def read_logs(path: str, *, tail: int | None = None, since_ns: int | None = None,
              until_ns: int | None = None, follow: bool = False,
              stop: Callable[[], bool] | None = None, poll: float = 0.1
              ) -> Iterator[LogEntry]:
    """Entries of the json-file log at ``path`` (and its rotated files), as ``docker logs``.

    ``tail``: only the last N entries of what is on disk (None or negative: all; 0: none);
    then ``since_ns`` drops older entries and ``until_ns`` ends the read at the first newer
    one. ``follow`` keeps reading new entries, across rotations, until ``stop()`` is true
    (checked when the file has nothing new), then drains what is left and returns.

    The files are opened now, not when iteration starts: what is on disk at the call is the
    history, and following starts right where it ends, so nothing is lost or doubled.
    """
    handles = [h for h in map(_open, log_files(path)) if h is not None]
    st = _stat(path)
    current = handles[-1] if handles and st is not None and os.path.samestat(
        os.fstat(handles[-1].fileno()), st) else None
    boundary = os.fstat(current.fileno()).st_size if current is not None else 0
    # Following reads the current file through its own handle (the same inode, even if it
    # has been renamed since), so the history read does not move its position.
    live = _open(f"/proc/self/fd/{current.fileno()}") if (
        follow and current is not None) else None
    return _read(path, handles, current, live, boundary, tail, since_ns, until_ns,
                 follow, stop, poll)


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def _read(path: str, handles: list[BinaryIO], current: BinaryIO | None,
          live_handle: BinaryIO | None, boundary: int, tail: int | None,
          since_ns: int | None, until_ns: int | None, follow: bool,
          stop: Callable[[], bool] | None, poll: float) -> Iterator[LogEntry]:
    try:
        history: Iterator[LogEntry] | deque[LogEntry]
        parts = [_entries(h, boundary if h is current else None) for h in handles]
        if tail is not None and tail >= 0:
            history = deque(maxlen=tail)
            for part in parts:
                history.extend(part)
        else:
            history = (e for part in parts for e in part)
        live: Iterator[LogEntry] = iter(())
        if follow:
            if live_handle is None:
                live_handle = _wait_for(path, stop, poll)
            if live_handle is not None:
                handles.append(live_handle)
                live_handle.seek(boundary)
                live = _follow(path, live_handle, stop, poll, handles)
        for entry in history:
            if until_ns is not None and entry.time_ns > until_ns:
                return
            if since_ns is None or entry.time_ns >= since_ns:
                yield entry
        for entry in live:
            if until_ns is not None and entry.time_ns > until_ns:
                return
            if since_ns is None or entry.time_ns >= since_ns:
                yield entry
    finally:
        for h in handles:
            h.close()


def _wait_for(path: str, stop: Callable[[], bool] | None, poll: float) -> BinaryIO | None:
    # Nothing logged yet: the file appears with the first entry (or never, if it stops).
    while True:
        fobj = _open(path)
        if fobj is not None or (stop is not None and stop()):
            return fobj
        time.sleep(poll)


def _successor(path: str, ino: int) -> BinaryIO | None:
    """The file rotated in after the one with inode ``ino``: if that is now ``x.log.N``,
    ``x.log.N-1`` (or ``x.log``); if it was rotated out of existence, the oldest there is.

    All files are opened first and told apart by inode, so a rotation between looking and
    opening cannot make us skip one.
    """
    opened = [h for h in map(_open, log_files(path)) if h is not None]
    inodes = [os.fstat(h.fileno()).st_ino for h in opened]
    pick = inodes.index(ino) + 1 if ino in inodes else 0
    chosen = opened[pick] if pick < len(opened) else None
    for h in opened:
        if h is not chosen:
            h.close()
    return chosen


def _follow(path: str, fobj: BinaryIO, stop: Callable[[], bool] | None, poll: float,
            handles: list[BinaryIO]) -> Iterator[LogEntry]:
    partial = b""
    stopping = False
    rotated = False  # seen renamed; one more read proves the writer has left it
    ino = os.fstat(fobj.fileno()).st_ino
    while True:
        chunk = fobj.read(65536)
        if chunk:
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop()
            for line in lines:
                entry = _decode(line)
                if entry is not None:
                    yield entry
            continue
        st = _stat(path)
        if st is not None and st.st_ino != ino:
            if not rotated:
                rotated = True
                continue
            # This file is complete; go on with the one rotated in after it, from its start.
            new = _successor(path, ino)
            if new is not None:
                handles.remove(fobj)
                fobj.close()
                handles.append(new)
                fobj, ino, partial, rotated = new, os.fstat(new.fileno()).st_ino, b"", False
                continue
        elif st is not None and st.st_size < fobj.tell():
            fobj.seek(0)  # truncated in place (max-file 1)
            partial = b""
            continue
        if stopping:
            return
        if stop is not None and stop():
            stopping = True  # one more pass: the writer may have added a last entry
            continue
        time.sleep(poll)
