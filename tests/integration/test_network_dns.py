"""The embedded DNS server in a namespace this module creates, with a fake upstream resolver
on 127.0.0.77 in the host namespace (nothing is ever forwarded anywhere else)."""

from __future__ import annotations

import ipaddress
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiff.linux import netns
from skiff.linux.netlink import Netlink
from skiff.plugins.network.dns import DNSServer, Resolver, parse_query

NAMES = {"web": [ipaddress.IPv4Address("10.213.7.5")],
         "db": [ipaddress.IPv4Address("10.213.7.6"), ipaddress.IPv4Address("10.213.7.7")]}
UPSTREAM_ANSWER = "10.213.250.1"


def lookup(name: str) -> list[ipaddress.IPv4Address] | None:
    return NAMES.get(name)


class FakeUpstream:
    """A resolver on 127.0.0.77 that answers every A query with 10.213.250.1 and logs names."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.77", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.asked: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                msg, peer = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            q = parse_query(msg)
            self.asked.append(q.name)
            head = struct.pack("!HHHHHH", q.id, 0x8180, 1, 1, 0, 0)
            rr = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(UPSTREAM_ANSWER)
            self.sock.sendto(head + q.question + rr, peer)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


def query(name: str, qtype: int = 1, tcp: bool = False) -> tuple[int, list[str]]:
    """(rcode, A addresses) for ``name`` asked of 127.0.0.11:53 from the calling namespace."""
    msg = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    msg += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    msg += struct.pack("!HH", qtype, 1)
    if tcp:
        with socket.create_connection(("127.0.0.11", 53), timeout=3) as s:
            s.sendall(struct.pack("!H", len(msg)) + msg)
            size = struct.unpack("!H", s.recv(2))[0]
            reply = b""
            while len(reply) < size:
                reply += s.recv(size - len(reply))
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.sendto(msg, ("127.0.0.11", 53))
            reply = s.recv(4096)
    assert reply[:2] == msg[:2]
    rcode = struct.unpack("!H", reply[2:4])[0] & 0xF
    ancount = struct.unpack("!H", reply[6:8])[0]
    answers, pos = [], 12 + len(msg) - 12
    for _ in range(ancount):  # our answers and the fake's: a pointer name, then fixed fields
        rtype, _, _, rdlen = struct.unpack("!HHIH", reply[pos + 2:pos + 12])
        if rtype == 1:
            answers.append(socket.inet_ntoa(reply[pos + 12:pos + 12 + rdlen]))
        pos += 12 + rdlen
    return rcode, answers


@pytest.fixture
def ns(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "ctr")
    netns.create(path)

    def lo_up() -> None:
        with Netlink() as nl:
            nl.set_up("lo")
    netns.run_in(path, lo_up)
    yield path
    netns.remove(path)
    assert not netns.is_netns(path)


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    up = FakeUpstream()
    yield up
    up.close()


def test_answers_names_and_forwards_the_rest(ns: str, upstream: FakeUpstream) -> None:
    server = DNSServer(ns, Resolver(lookup, [("127.0.0.77", upstream.port)]))
    server.start()
    try:
        assert netns.run_in(ns, lambda: query("web")) == (0, ["10.213.7.5"])
        assert netns.run_in(ns, lambda: query("DB")) == (0, ["10.213.7.6", "10.213.7.7"])
        assert netns.run_in(ns, lambda: query("web", tcp=True)) == (0, ["10.213.7.5"])
        assert netns.run_in(ns, lambda: query("web", qtype=28)) == (0, [])  # AAAA: none
        assert upstream.asked == []  # ours never leave the server
        assert netns.run_in(ns, lambda: query("example.org")) == (0, [UPSTREAM_ANSWER])
        assert upstream.asked == ["example.org"]
        # a real client: busybox nslookup inside the namespace
        out = subprocess.run(["nsenter", f"--net={ns}", "busybox", "nslookup", "web",
                              "127.0.0.11"], capture_output=True, text=True, timeout=20)
        assert "10.213.7.5" in out.stdout, out
        # port 53 in the namespace stays free for the container itself
        def bind53() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("0.0.0.0", 53))
        netns.run_in(ns, bind53)
    finally:
        server.stop()
    assert "skiff_dns" not in subprocess.run(["nsenter", f"--net={ns}", "nft", "list", "tables"],
                                             capture_output=True, text=True).stdout
    with pytest.raises(OSError):
        netns.run_in(ns, lambda: query("web"))


def test_no_forwarding_on_internal_networks(ns: str, upstream: FakeUpstream) -> None:
    server = DNSServer(ns, Resolver(lookup, [("127.0.0.77", upstream.port)], forward=False))
    server.start()
    try:
        assert netns.run_in(ns, lambda: query("example.org")) == (3, [])
        assert netns.run_in(ns, lambda: query("web")) == (0, ["10.213.7.5"])
        assert upstream.asked == []
    finally:
        server.stop()


def test_dead_upstream_gives_servfail(ns: str) -> None:
    # a closed port on loopback: the forward fails fast with ECONNREFUSED
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.77", 0))
        dead = probe.getsockname()[1]
    server = DNSServer(ns, Resolver(lookup, [("127.0.0.77", dead)], timeout=0.5))
    server.start()
    try:
        assert netns.run_in(ns, lambda: query("example.org")) == (2, [])
    finally:
        server.stop()
