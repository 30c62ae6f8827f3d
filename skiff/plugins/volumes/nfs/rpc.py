"""ONC RPC version 2 (RFC 5531) over TCP: record marking, calls, replies, AUTH_SYS.

One call is outstanding per connection at a time (the FUSE side serves one request at a time),
so a reply is matched by its xid and anything else on the stream is a stale answer to a call
that timed out and is skipped. Every socket operation has a deadline: an unreachable or silent
server gives ``RpcUnreachable`` after the timeout, never a hang. On a broken connection the
client reconnects and retries the call ``retries`` times (NFSv3 has no sessions: a retried
non-idempotent call can fail as the kernel client's would, e.g. EEXIST for a repeated CREATE).
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import socket
import struct
import threading
from dataclasses import dataclass, field

from skiff.errors import SystemFailure, Unavailable
from skiff.plugins.volumes.nfs.xdr import Decoder, Encoder, XdrError

CALL, REPLY = 0, 1
MSG_ACCEPTED, MSG_DENIED = 0, 1
AUTH_NONE, AUTH_SYS = 0, 1
_LAST_FRAGMENT = 0x80000000
MAX_RECORD = 16 << 20  # far above any NFS reply we ask for; a bigger one is garbage

_ACCEPT_ERRORS = {1: "program unavailable", 2: "program version mismatch",
                  3: "procedure unavailable", 4: "garbage arguments", 5: "system error"}
_AUTH_ERRORS = {1: "bad credential", 2: "rejected credential (session expired)",
                3: "bad verifier", 4: "rejected verifier", 5: "too weak (the server wants "
                "another security flavour or a reserved source port)"}


_HOSTNAME: str = socket.gethostname()[:255]  # read once: credentials are made per request


class RpcError(SystemFailure):
    """The server answered, but not with a result (denied, unsupported, garbage)."""


class RpcUnreachable(Unavailable):
    """No answer: connection refused or reset, unreachable, or timed out."""


@dataclass(frozen=True)
class AuthSys:
    """AUTH_SYS credentials: who the server checks permissions for and makes owner."""

    uid: int
    gid: int
    gids: tuple[int, ...] = ()
    machine: str = field(default_factory=lambda: _HOSTNAME)

    def encode(self) -> bytes:
        body = Encoder().u32(0).string(self.machine, 255).u32(self.uid).u32(self.gid)
        gids = self.gids[:16]  # the protocol's limit; the server sees the first 16
        body.u32(len(gids))
        for g in gids:
            body.u32(g)
        return Encoder().u32(AUTH_SYS).opaque(body.bytes(), 400).bytes()


_NO_AUTH = Encoder().u32(AUTH_NONE).opaque(b"").bytes()


def encode_call(xid: int, prog: int, vers: int, proc: int, args: bytes,
                cred: AuthSys | None) -> bytes:
    head = Encoder().u32(xid).u32(CALL).u32(2).u32(prog).u32(vers).u32(proc).bytes()
    return head + (cred.encode() if cred else _NO_AUTH) + _NO_AUTH + args


def decode_reply(xid: int, data: bytes, what: str) -> Decoder | None:
    """The decoder at the results of the reply to ``xid``; None when the record answers
    another call. ``what`` names the call for error messages."""
    d = Decoder(data)
    try:
        if d.u32() != xid:
            return None
        if d.u32() != REPLY:
            raise RpcError(f"{what}: the server sent a call, not a reply")
        stat = d.u32()
        if stat == MSG_DENIED:
            reason = d.u32()
            if reason == 0:
                low, high = d.u32(), d.u32()
                raise RpcError(f"{what}: RPC version mismatch (server speaks {low}-{high})")
            code = d.u32()
            raise RpcError(f"{what}: authentication error: "
                           f"{_AUTH_ERRORS.get(code, f'auth_stat {code}')}")
        if stat != MSG_ACCEPTED:
            raise RpcError(f"{what}: unknown reply status {stat}")
        d.u32()  # verifier flavour: AUTH_NONE / AUTH_SYS servers send nothing we check
        d.opaque(400)
        accept = d.u32()
        if accept == 2:
            low, high = d.u32(), d.u32()
            raise RpcError(f"{what}: program version mismatch (server offers {low}-{high})")
        if accept != 0:
            raise RpcError(f"{what}: {_ACCEPT_ERRORS.get(accept, f'accept_stat {accept}')}")
    except XdrError as exc:
        raise RpcError(f"{what}: malformed reply: {exc}") from exc
    return d


def frame(record: bytes) -> bytes:
    """One record as a single last fragment (RFC 5531 section 11)."""
    return struct.pack(">I", _LAST_FRAGMENT | len(record)) + record


def _bind_reserved(sock: socket.socket) -> None:
    """Bind to a port below 1024 when root: servers' default 'secure' export option (and
    ganesha's PrivilegedPort) trusts AUTH_SYS only from such ports, as from a kernel client."""
    if os.geteuid() != 0:
        return
    ports = list(range(665, 1024))
    random.shuffle(ports)
    for port in ports[:64]:
        try:
            sock.bind(("", port))
            return
        except OSError as exc:
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                raise
    # all tried ports busy: an unprivileged port still works with insecure exports


class RpcClient:
    """Calls to one program/version at ``host:port`` over one TCP connection."""

    def __init__(self, host: str, port: int, prog: int, vers: int, *, timeout: float = 10.0,
                 retries: int = 1, reserved_port: bool = True) -> None:
        self.host, self.port, self.prog, self.vers = host, port, prog, vers
        self.timeout = timeout
        self.retries = retries
        self.reserved_port = reserved_port
        self._sock: socket.socket | None = None
        self._xid = random.randrange(1 << 32)
        self._lock = threading.Lock()

    @property
    def what(self) -> str:
        return f"rpc program {self.prog} v{self.vers} at {self.host}:{self.port}"

    def connect(self) -> None:
        self.close()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.reserved_port:
                _bind_reserved(sock)
            sock.settimeout(self.timeout)
            sock.connect((self.host, self.port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except TimeoutError as exc:
            sock.close()
            raise RpcUnreachable(f"connect to {self.host}:{self.port}: no answer within "
                                 f"{self.timeout:g}s") from exc
        except OSError as exc:
            sock.close()
            name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            raise RpcUnreachable(f"connect to {self.host}:{self.port}: {name} "
                                 f"({os.strerror(exc.errno or 0)})") from exc
        self._sock = sock

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def call(self, proc: int, args: bytes = b"", cred: AuthSys | None = None) -> Decoder:
        """The results of ``proc(args)``; reconnects and retries after a broken connection."""
        with self._lock:
            attempt = 0
            while True:
                try:
                    if self._sock is None:
                        self.connect()
                    return self._call_once(proc, args, cred)
                except RpcUnreachable:
                    self.close()
                    attempt += 1
                    if attempt > self.retries:
                        raise
                except RpcError:
                    self.close()  # the stream may be out of step: start the next call afresh
                    raise

    def _call_once(self, proc: int, args: bytes, cred: AuthSys | None) -> Decoder:
        assert self._sock is not None
        self._xid = (self._xid + 1) & 0xFFFFFFFF
        xid = self._xid
        what = f"{self.what} procedure {proc}"
        try:
            self._sock.sendall(frame(encode_call(xid, self.prog, self.vers, proc, args, cred)))
            while True:
                d = decode_reply(xid, self._recv_record(), what)
                if d is not None:
                    return d
        except TimeoutError as exc:
            raise RpcUnreachable(f"{what}: no reply within {self.timeout:g}s") from exc
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            raise RpcUnreachable(f"{what}: {name} ({os.strerror(exc.errno or 0)})") from exc

    def _recv_exact(self, n: int) -> bytes:
        assert self._sock is not None
        buf = bytearray()
        while len(buf) < n:
            chunk = self._sock.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                raise RpcUnreachable(f"{self.what}: the server closed the connection")
            buf += chunk
        return bytes(buf)

    def _recv_record(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            (head,) = struct.unpack(">I", self._recv_exact(4))
            size = head & ~_LAST_FRAGMENT
            total += size
            if total > MAX_RECORD:
                raise RpcError(f"{self.what}: reply record of more than {MAX_RECORD} bytes")
            parts.append(self._recv_exact(size))
            if head & _LAST_FRAGMENT:
                return b"".join(parts)
