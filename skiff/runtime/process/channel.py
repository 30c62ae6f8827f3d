"""The typed message channel between the runtime (parent) and the container's setup stages.

A SOCK_SEQPACKET socketpair carries one JSON object per packet, so message boundaries come for
free and a dead peer shows up as EOF rather than a hang. Every message has a ``type``:

    parent -> stage1   go          (the child is in its cgroup; unshare now)
    stage1 -> parent   userns      (new user namespace made: write the id maps)
    parent -> stage1   mapped
    stage1 -> parent   pid         {"pid": host pid of the container's init}
    init   -> parent   hooks       (run prestart/createRuntime hooks now)
    parent -> init     hooks-done
    init   -> parent   ready       (set up; waiting on the exec fifo)
    any    -> parent   error       {"message": "..."}
"""

from __future__ import annotations

import _socket  # the C module: socket.py would cost ~2 ms of imports at every container start
import json

from skiff.errors import SkiffError, SystemFailure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_MAX = 1 << 18  # a 4096-instruction seccomp program is 64 KiB as hex


class ChildError(SkiffError):
    """The container's setup failed inside a child stage; the message says where."""


class Channel:
    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock

    @classmethod
    def pair(cls) -> tuple[Channel, Channel]:
        a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        return cls(a), cls(b)

    def send(self, msg_type: str, **fields: Any) -> None:
        fields["type"] = msg_type
        try:
            self.sock.send(json.dumps(fields).encode())
        except OSError as exc:
            # The child gave up (e.g. exec: executable not found) and exited before it read
            # this: its error message is still queued for us, and it is the one to report.
            self.recv(msg_type)  # raises ChildError with the child's message, if it sent one
            raise SystemFailure(f"write to container setup channel ({msg_type}): "
                                f"{exc.strerror}") from exc

    def recv(self, *expected: str) -> dict[str, Any]:
        """The next message; ChildError for an ``error`` message, SystemFailure on EOF or a
        message of a type not in ``expected``."""
        try:
            raw = self.sock.recv(_MAX)
        except ConnectionResetError:
            # The child closed with our last message unread: the kernel reports that once,
            # ahead of what the child queued before exiting (its error, if any). Read on.
            try:
                raw = self.sock.recv(_MAX)
            except OSError as exc:
                raise SystemFailure(f"read from container setup channel: {exc.strerror}"
                                    ) from exc
        except OSError as exc:
            raise SystemFailure(f"read from container setup channel: {exc.strerror}") from exc
        if not raw:
            raise SystemFailure("container setup process exited before reporting "
                                f"(waiting for {' or '.join(expected)})")
        msg: dict[str, Any] = json.loads(raw)
        if msg.get("type") == "error":
            raise ChildError(str(msg.get("message")))
        if expected and msg.get("type") not in expected:
            raise SystemFailure(f"container setup channel: got {msg.get('type')!r}, "
                                f"want {' or '.join(expected)}")
        return msg

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()
