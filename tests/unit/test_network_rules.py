"""Pure parts of the network plugins: -p parsing, ephemeral ports, the nftables ruleset text,
the stored JSON forms and the driver's naming."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from skiff.core.network import (
    Endpoint,
    EndpointInfo,
    NetworkConfig,
    PortMapping,
    PublishedEndpoint,
    Subnet,
)
from skiff.errors import InvalidArgument
from skiff.plugins.network.bridge import mac_for, veth_name
from skiff.plugins.network.dns import Resolver, parse_query, read_resolv_conf
from skiff.plugins.network.nftables import render
from skiff.plugins.network.portmap import assign_ephemeral, parse_publish
from skiff.plugins.network.store import (
    endpoint_from_json,
    endpoint_to_json,
    network_from_json,
    network_to_json,
)

ip = ipaddress.ip_address
net = ipaddress.ip_network


def cfg(name: str, subnet: str, internal: bool = False) -> NetworkConfig:
    n = net(subnet)
    return NetworkConfig(id=name, name=name, bridge=f"br-{name}",
                         subnets=(Subnet(n, ip(str(next(iter(n.hosts()))))),), internal=internal)


@pytest.mark.parametrize(("spec", "want"), [
    ("80", [(80, 0, "tcp", None)]),
    ("8080:80", [(80, 8080, "tcp", None)]),
    ("127.0.0.1:8080:80/udp", [(80, 8080, "udp", "127.0.0.1")]),
    ("127.0.0.1::80", [(80, 0, "tcp", "127.0.0.1")]),
    ("8000-8001:80-81", [(80, 8000, "tcp", None), (81, 8001, "tcp", None)]),
    ("[::1]:53:53/udp", [(53, 53, "udp", "::1")]),
])
def test_parse_publish(spec: str, want: list[tuple[int, int, str, str | None]]) -> None:
    got = [(p.container_port, p.host_port, p.proto, str(p.host_ip) if p.host_ip else None)
           for p in parse_publish(spec)]
    assert got == want


@pytest.mark.parametrize("spec", ["", "x:80", "1.2.3.4:5:6:7", "80/icmp", "8000-8002:80-81",
                                  "99999:80", "80-70", "[::1:80:80", "nope:1:2"])
def test_parse_publish_rejects(spec: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_publish(spec)


def test_assign_ephemeral_skips_taken_ports() -> None:
    taken = [PortMapping(1, 49153), PortMapping(1, 49154, "udp")]
    got = assign_ephemeral(parse_publish("80") + parse_publish("81") + parse_publish("53/udp"),
                           taken)
    assert [(p.host_port, p.proto) for p in got] == [(49154, "tcp"), (49155, "tcp"),
                                                     (49153, "udp")]


def test_render_isolates_masquerades_and_publishes() -> None:
    a, b, i = cfg("a", "10.213.1.0/24"), cfg("b", "10.213.2.0/24"), cfg("i", "10.213.3.0/24", True)
    pub = [PublishedEndpoint("e1", "br-a", ip("10.213.1.2"),
                             (PortMapping(80, 8080), PortMapping(53, 53, "udp", ip("127.0.0.1")))),
           PublishedEndpoint("e2", "br-i", ip("10.213.3.2"), (PortMapping(80, 9090),))]
    text = render([a, b, i], pub, table="t")
    assert text.startswith("table inet t {}\ndelete table inet t\ntable inet t {\n")
    lines = [ln.strip() for ln in text.splitlines()]
    assert "tcp dport 8080 dnat ip to 10.213.1.2:80" in lines
    assert "ip daddr 127.0.0.1 udp dport 53 dnat ip to 10.213.1.2:53" in lines
    assert not any("9090" in ln for ln in lines)  # internal networks publish nothing
    assert 'ip saddr 10.213.1.0/24 oifname != "br-a" masquerade' in lines
    assert not any("10.213.3.0/24" in ln and "masquerade" in ln for ln in lines)
    assert 'iifname "br-a" oifname { "br-b", "br-i" } drop' in lines
    assert 'iifname "br-i" drop' in lines and 'oifname "br-i" drop' in lines
    assert 'iifname { "br-a", "br-b", "br-i" } ip daddr 127.0.0.0/8 drop' in lines
    # replies are accepted before any isolation drop can see them
    assert lines.index("ct state established,related accept") < min(
        n for n, ln in enumerate(lines) if ln.endswith("drop") and "127.0.0.0/8" not in ln)


def test_render_firewall_filter_admits_dnat_only_from_skiff_bridges() -> None:
    a = cfg("a", "10.213.1.0/24")
    assert 'oifname "br-a" iifname != "br-a" ct status dnat accept' in render([a], [])
    filtered = render([a], [], firewall_filter=True)
    assert "iifname != " not in filtered
    assert 'oifname "br-a" iifname { "br-a" } ct status dnat accept' in filtered
    assert ('oifname "br-a" ct status dnat meta mark & 0x01000000 == 0x01000000 accept'
            in filtered)


def test_render_refuses_quote_in_names() -> None:
    bad = NetworkConfig(id="x", name="x", bridge='a"b', subnets=cfg("x", "10.0.0.0/24").subnets)
    with pytest.raises(InvalidArgument):
        render([bad], [])


def test_network_config_validation() -> None:
    v6 = Subnet(net("fd00::/64"), ip("fd00::1"))
    with pytest.raises(InvalidArgument, match="IPv4 subnet is required"):
        NetworkConfig(id="x", name="x", bridge="b", subnets=(v6,))
    with pytest.raises(InvalidArgument, match="bridge name"):
        NetworkConfig(id="x", name="x", bridge="a-very-long-bridge-name",
                      subnets=cfg("x", "10.0.0.0/24").subnets)
    with pytest.raises(InvalidArgument, match="MTU"):
        NetworkConfig(id="x", name="x", bridge="b", subnets=cfg("x", "10.0.0.0/24").subnets,
                      mtu=100)


def test_json_round_trips() -> None:
    c = NetworkConfig(id="n", name="net", bridge="br0",
                      subnets=(Subnet(net("10.213.0.0/16"), ip("10.213.0.1"),
                                      net("10.213.8.0/24")),
                               Subnet(net("fd00::/64"), ip("fd00::1"))),
                      internal=True, mtu=1400, labels=(("k", "v"),), options=(("o", "p"),))
    assert network_from_json(network_to_json(c)) == c
    e = Endpoint("n", "e", "/run/x", "eth0",
                 EndpointInfo(ip("10.213.0.2"), 16, ip("10.213.0.1"), "02:42:0a:d5:00:02"),
                 ("web", "db"))
    assert endpoint_from_json(endpoint_to_json(e)) == e


def test_names() -> None:
    assert veth_name("abc") == veth_name("abc") != veth_name("abd")
    assert len(veth_name("x" * 64)) <= 15
    assert mac_for(ip("10.213.1.2")) == "02:42:0a:d5:01:02"


def test_dns_parse_and_answer() -> None:
    msg = (bytes.fromhex("abcd01000001000000000000") + b"\x03Web\x05local\x00"
           + b"\x00\x01\x00\x01")
    q = parse_query(msg)
    assert (q.id, q.name, q.qtype, q.qclass) == (0xABCD, "web.local", 1, 1)
    r = Resolver(lambda n: [ipaddress.IPv4Address("10.0.0.9")] if n == "web.local" else None,
                 [], forward=False)
    reply = r.answer(msg)
    assert reply is not None
    assert reply[:2] == b"\xab\xcd" and reply[3] & 0xF == 0 and reply[7] == 1
    assert reply.endswith(bytes([10, 0, 0, 9]))
    other = msg.replace(b"\x03Web", b"\x03Xyz")
    nx = r.answer(other)
    assert nx is not None and nx[3] & 0xF == 3
    assert r.answer(b"\x00" * 5) is None
    assert r.answer(msg[:14]) is None  # truncated name


def test_read_resolv_conf(tmp_path: Path) -> None:
    p = tmp_path / "resolv.conf"
    p.write_text("# x\nnameserver 127.0.0.53\nsearch a\nnameserver fe80::1%eth0\nnameserver bad\n")
    assert read_resolv_conf(str(p)) == ["127.0.0.53", "fe80::1"]
    assert read_resolv_conf(str(p) + ".missing") == []
