"""The embedded DNS server of user-defined networks (Docker's 127.0.0.11).

One server per container namespace. Its sockets are opened INSIDE the container's netns (on
a short-lived thread that setns'd there, see skiff.linux.netns.run_in), bound to 127.0.0.11 on
kernel-chosen ports, and a tiny nftables table in that netns DNATs 127.0.0.11:53 (UDP and TCP)
to them; so port 53 inside the container stays free for the container's own use, and the
daemon serves the sockets from ordinary threads in its own namespace.

Names of containers on the same network (and their aliases) are answered from a lookup
function the daemon provides; other names are forwarded, from the daemon's own namespace, to
the host's resolvers (``/etc/resolv.conf``), which therefore may be loopback ones such as
systemd-resolved's 127.0.0.53. Internal networks are served with ``forward=False``.
"""

from __future__ import annotations

import ipaddress
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

from skiff.errors import InvalidArgument
from skiff.linux import netns
from skiff.plugins.network.nftables import nft

DNS_IP = "127.0.0.11"
TYPE_A, TYPE_AAAA, CLASS_IN = 1, 28, 1
RCODE_OK, RCODE_SERVFAIL, RCODE_NXDOMAIN = 0, 2, 3
TTL = 600
Lookup = Callable[[str], list[ipaddress.IPv4Address] | None]  # None: not one of ours


@dataclass(frozen=True)
class Query:
    id: int
    flags: int
    name: str  # lower case, no trailing dot
    qtype: int
    qclass: int
    question: bytes  # the raw question section, echoed in answers


def parse_query(msg: bytes) -> Query:
    """The first question of a DNS query; InvalidArgument if it is not a sane query."""
    if len(msg) < 12:
        raise InvalidArgument("DNS message shorter than its header")
    qid, flags, qdcount = struct.unpack("!HHH", msg[:6])
    if flags & 0x8000 or qdcount != 1:
        raise InvalidArgument("not a DNS query with one question")
    labels, pos = [], 12
    while True:
        if pos >= len(msg):
            raise InvalidArgument("DNS name runs past the message")
        n = msg[pos]
        pos += 1
        if n == 0:
            break
        if n & 0xC0 or pos + n > len(msg):  # no compression in a question; no overrun
            raise InvalidArgument("bad label in DNS question")
        labels.append(msg[pos:pos + n].decode("ascii", "replace"))
        pos += n
    if pos + 4 > len(msg):
        raise InvalidArgument("DNS question without type and class")
    qtype, qclass = struct.unpack("!HH", msg[pos:pos + 4])
    return Query(qid, flags, ".".join(labels).lower(), qtype, qclass, msg[12:pos + 4])


def build_answer(q: Query, rcode: int, addresses: list[ipaddress.IPv4Address]) -> bytes:
    """A response to ``q``: QR, RA and the query's RD set, AA since the names are ours."""
    flags = 0x8000 | 0x0400 | (q.flags & 0x0100) | 0x0080 | rcode
    head = struct.pack("!HHHHHH", q.id, flags, 1, len(addresses), 0, 0)
    answers = b"".join(struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, TTL, 4) + a.packed
                       for a in addresses)
    return head + q.question + answers


def read_resolv_conf(path: str = "/etc/resolv.conf") -> list[str]:
    """The nameserver addresses of a resolv.conf (missing file: none)."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                out.append(str(ipaddress.ip_address(parts[1].split("%")[0])))
            except ValueError:
                continue
    return out


class Resolver:
    """Answers one query: ours from ``lookup``, the rest from ``upstreams`` (if forwarding)."""

    def __init__(self, lookup: Lookup, upstreams: list[tuple[str, int]], forward: bool = True,
                 timeout: float = 2.0) -> None:
        self.lookup = lookup
        self.upstreams = upstreams
        self.forward = forward
        self.timeout = timeout

    def answer(self, msg: bytes) -> bytes | None:
        try:
            q = parse_query(msg)
        except InvalidArgument:
            return None  # not worth an answer; a real client never sends this
        if q.qclass == CLASS_IN:
            ours = self.lookup(q.name)
            if ours is not None:  # ours: A gets the addresses, other types an empty NOERROR
                return build_answer(q, RCODE_OK, ours if q.qtype == TYPE_A else [])
        if not self.forward:
            return build_answer(q, RCODE_NXDOMAIN, [])
        for host, port in self.upstreams:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.settimeout(self.timeout)
                try:
                    s.sendto(msg, (host, port))
                    reply, _ = s.recvfrom(65535)
                except OSError:
                    continue
                if reply[:2] == msg[:2]:
                    return reply
        return build_answer(q, RCODE_SERVFAIL, [])


class DNSServer:
    """The embedded DNS of one container namespace; ``start`` then ``stop``."""

    def __init__(self, netns_path: str, resolver: Resolver, table: str = "skiff_dns") -> None:
        self.netns_path = netns_path
        self.resolver = resolver
        self.table = table
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None

    def start(self) -> None:
        def inside() -> tuple[socket.socket, socket.socket]:
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                udp.bind((DNS_IP, 0))
                tcp.bind((DNS_IP, 0))
                tcp.listen(16)
                # the forked nft inherits this thread's namespace: the table lands in the netns
                nft(self._rules(udp.getsockname()[1], tcp.getsockname()[1]),
                    f"program embedded DNS in {self.netns_path}")
            except BaseException:
                udp.close()
                tcp.close()
                raise
            return udp, tcp

        self._udp, self._tcp = netns.run_in(self.netns_path, inside)
        self._thread = threading.Thread(target=self._serve, name="skiff-dns", daemon=True)
        self._thread.start()

    def _rules(self, udp_port: int, tcp_port: int) -> str:
        t = self.table
        return (f"table ip {t} {{}}\ndelete table ip {t}\ntable ip {t} {{\n"
                f"\tchain output {{\n\t\ttype nat hook output priority -100; policy accept;\n"
                f"\t\tip daddr {DNS_IP} udp dport 53 dnat to {DNS_IP}:{udp_port}\n"
                f"\t\tip daddr {DNS_IP} tcp dport 53 dnat to {DNS_IP}:{tcp_port}\n\t}}\n}}\n")

    def _serve(self) -> None:
        assert self._udp is not None and self._tcp is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._udp, selectors.EVENT_READ)
            sel.register(self._tcp, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=0.2):
                    if key.fileobj is self._udp:
                        self._one_udp()
                    else:
                        self._one_tcp()

    def _one_udp(self) -> None:
        assert self._udp is not None
        try:
            msg, peer = self._udp.recvfrom(65535)
        except OSError:
            return
        reply = self.resolver.answer(msg)
        if reply is not None:
            try:
                self._udp.sendto(reply, peer)
            except OSError:
                pass  # the client went away; nothing to tell anyone

    def _one_tcp(self) -> None:
        assert self._tcp is not None
        try:
            conn, _ = self._tcp.accept()
        except OSError:
            return
        with conn:  # one query per connection: enough for resolvers retrying over TCP
            conn.settimeout(2)
            try:
                size = struct.unpack("!H", _recv_exact(conn, 2))[0]
                reply = self.resolver.answer(_recv_exact(conn, size))
                if reply is not None:
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
            except OSError:
                pass

    def stop(self) -> None:
        """Stop serving, close the sockets and drop the DNAT table (if the netns still exists)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for s in (self._udp, self._tcp):
            if s is not None:
                s.close()
        if netns.is_netns(self.netns_path):
            netns.run_in(self.netns_path, lambda: nft(
                f"table ip {self.table} {{}}\ndelete table ip {self.table}\n",
                f"remove embedded DNS from {self.netns_path}"))


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("DNS client closed the connection early")
        buf += chunk
    return buf
