"""The bridge driver, IPAM and the nftables firewall on the real kernel.

"Containers" are network namespaces this module creates (with veths made by the driver);
an "outside host" is one more namespace on a routed veth of the host. All addresses are in
10.213.0.0/16 (checked unused first) and all traffic stays between these namespaces and the
host; the firewall is a private nftables table, so a run never touches skiff's real one.
Servers and clients are Python sockets opened inside the namespaces (skiff.linux.netns.run_in).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from skiff.core.network import EndpointInfo, NetworkConfig, PortMapping
from skiff.errors import Conflict
from skiff.linux import netns
from skiff.linux.netlink import Netlink
from skiff.plugins.network.bridge import BridgeDriver, plan_network, veth_name
from skiff.plugins.network.ipam import LocalIPAM
from skiff.plugins.network.nftables import ALLOW_MARK, NftablesFirewall
from skiff.plugins.network.portmap import parse_publish
from skiff.plugins.network.store import NetworkDB

TAG = f"{os.getpid() % 0xFFFF:04x}"
PREFIX = f"skt{TAG}"  # every device name this module makes starts with it (<= 15 bytes)
TABLE = f"skifftest{TAG}"
OUTSIDE_HOST = "10.213.99.1"  # the host's end of the routed veth to the "outside" netns
OUTSIDE = "10.213.99.2"
TCP_PORT, UDP_PORT = 18080, 18053


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=30)


def ping(ns: str, ip: str) -> bool:
    return sh("nsenter", f"--net={ns}", "busybox", "ping", "-c1", "-W1", ip,
              check=False).returncode == 0


def links() -> str:
    return sh("ip", "-o", "link").stdout


def tables() -> str:
    return sh("nft", "list", "tables").stdout


class Servers:
    """TCP and UDP servers in a namespace answering every request with "<name> <peer ip>"."""

    def __init__(self, ns: str, name: str, tcp: int = 80, udp: int = 53) -> None:
        self.name = name
        self.tcp, self.udp = netns.run_in(ns, lambda: self._open(tcp, udp))
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._serve_tcp, daemon=True),
                        threading.Thread(target=self._serve_udp, daemon=True)]
        for t in self.threads:
            t.start()

    @staticmethod
    def _open(tcp: int, udp: int) -> tuple[socket.socket, socket.socket]:
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind(("0.0.0.0", tcp))
        t.listen(8)
        t.settimeout(0.2)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("0.0.0.0", udp))
        u.settimeout(0.2)
        return t, u

    def _serve_tcp(self) -> None:
        while not self.stop.is_set():
            try:
                conn, peer = self.tcp.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(f"{self.name} {peer[0]}".encode())

    def _serve_udp(self) -> None:
        while not self.stop.is_set():
            try:
                _, peer = self.udp.recvfrom(512)
            except TimeoutError:
                continue
            self.udp.sendto(f"{self.name} {peer[0]}".encode(), peer)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()
        self.tcp.close()
        self.udp.close()


def tcp_ask(ip: str, port: int) -> str:
    with socket.create_connection((ip, port), timeout=2) as s:
        return s.recv(100).decode()


def udp_ask(ip: str, port: int) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(b"?", (ip, port))
        return s.recv(100).decode()


def from_ns(ns: str | None, fn: Callable[[str, int], str], ip: str, port: int) -> str:
    """``fn(ip, port)`` from namespace ``ns`` (None: the host); "" when it gets no answer."""
    def call() -> str:
        try:
            return fn(ip, port)
        except OSError:
            return ""
    return call() if ns is None else netns.run_in(ns, call)


@dataclass
class Lab:
    root: Path
    db: NetworkDB
    driver: BridgeDriver
    firewall: NftablesFirewall
    nets: dict[str, NetworkConfig] = field(default_factory=dict)
    ns: dict[str, str] = field(default_factory=dict)
    ep: dict[str, EndpointInfo] = field(default_factory=dict)

    def gw(self, net: str) -> str:
        return str(self.nets[net].ipv4.gateway)


def make_driver(db: NetworkDB) -> tuple[BridgeDriver, NftablesFirewall]:
    def routed() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        with Netlink() as nl:
            return nl.routed_networks()
    fw = NftablesFirewall(table=TABLE)
    return BridgeDriver(db, LocalIPAM(db, routed), fw), fw


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    routes = sh("ip", "route").stdout
    if "10.213." in routes:
        pytest.skip(f"10.213.0.0/16 is in use on this host, not testing on it:\n{routes}")
    if PREFIX in links() or TABLE in tables():
        pytest.fail(f"leftovers of an earlier run with tag {TAG}")
    root = tmp_path_factory.mktemp("net")
    db = NetworkDB(str(root / "network.db"))
    driver, fw = make_driver(db)
    lab = Lab(root, db, driver, fw)
    servers: list[Servers] = []
    try:
        for name, subnet, internal in (("a", "10.213.1.0/24", False),
                                       ("b", "10.213.2.0/24", False),
                                       ("int", "10.213.3.0/24", True)):
            cfg = plan_network(driver.ipam, f"{TAG}net{name}", f"net-{name}",
                               subnet=ipaddress.ip_network(subnet), internal=internal,
                               options={"com.docker.network.bridge.name": f"{PREFIX}{name}"})
            driver.create_network(cfg)
            lab.nets[name] = cfg
        # containers: c1, c2 on a; c3 on b; c4 on the internal network
        for ctr, net in (("c1", "a"), ("c2", "a"), ("c3", "b"), ("c4", "int")):
            path = str(root / "netns" / ctr)
            netns.create(path)
            lab.ns[ctr] = path
            lab.ep[ctr] = driver.connect(lab.nets[net].id, f"{TAG}{ctr}", path, "eth0")
        # the outside host: a routed veth, no route back to the containers' subnets
        out = str(root / "netns" / "outside")
        netns.create(out)
        lab.ns["outside"] = out
        with Netlink() as nl:
            nl.add_veth(f"{PREFIX}o", "eth0", out, 1500)
            nl.add_address(f"{PREFIX}o", f"{OUTSIDE_HOST}/30")
            nl.set_up(f"{PREFIX}o")

        def outside_side() -> None:
            with Netlink() as nl:
                nl.add_address("eth0", f"{OUTSIDE}/30")
                nl.set_up("eth0")
                nl.set_up("lo")
        netns.run_in(out, outside_side)
        servers = [Servers(lab.ns["c2"], "c2"), Servers(out, "outside"),
                   Servers(lab.ns["c4"], "c4")]
        driver.publish(f"{TAG}c2", parse_publish(f"{TCP_PORT}:80")
                       + parse_publish(f"{UDP_PORT}:53/udp"))
        driver.publish(f"{TAG}c4", parse_publish(f"{TCP_PORT + 1}:80"))
        yield lab
    finally:
        for s in servers:
            s.close()
        teardown(lab)


def teardown(lab: Lab) -> None:
    """Undo everything through the driver, then prove nothing is left."""
    errors: list[str] = []
    for ctr, info in list(lab.ep.items()):
        net = next(n for n in lab.nets.values() if info.ip in n.ipv4.subnet)
        lab.driver.disconnect(net.id, f"{TAG}{ctr}")
    for cfg in lab.nets.values():
        lab.driver.delete_network(cfg.id)
    with Netlink() as nl:
        nl.delete(f"{PREFIX}o")
    lab.firewall.remove()
    for path in lab.ns.values():
        netns.remove(path)
    lab.db.close()
    if PREFIX in links():
        errors.append(f"links left:\n{links()}")
    if any(veth_name(f"{TAG}{c}") in links() for c in lab.ep):
        errors.append(f"veths left:\n{links()}")
    if TABLE in tables():
        errors.append(f"nft table left:\n{tables()}")
    if PREFIX in sh("ip", "netns").stdout:
        errors.append("named netns left")
    with open("/proc/self/mountinfo") as f:
        if str(lab.root) in f.read():
            errors.append("netns bind mounts left")
    if any((lab.root / "netns").iterdir()):
        errors.append(f"netns files left: {os.listdir(lab.root / 'netns')}")
    assert not errors, errors


def test_same_network_talks(lab: Lab) -> None:
    assert ping(lab.ns["c1"], str(lab.ep["c2"].ip))
    assert from_ns(lab.ns["c1"], tcp_ask, str(lab.ep["c2"].ip), 80) == f"c2 {lab.ep['c1'].ip}"


def test_endpoint_config(lab: Lab) -> None:
    c1 = lab.ep["c1"]
    assert str(c1.gateway) == lab.gw("a") and c1.prefix == 24
    assert c1.ip in lab.nets["a"].ipv4.subnet and c1.ip != lab.ep["c2"].ip
    shown = sh("nsenter", f"--net={lab.ns['c1']}", "ip", "-o", "addr", "show", "eth0").stdout
    assert f"{c1.ip}/24" in shown
    route = sh("nsenter", f"--net={lab.ns['c1']}", "ip", "route").stdout
    assert f"default via {c1.gateway}" in route
    link = sh("nsenter", f"--net={lab.ns['c1']}", "ip", "-o", "link", "show", "eth0").stdout
    assert c1.mac in link
    assert f"master {PREFIX}a" in sh("ip", "-o", "link", "show", veth_name(f"{TAG}c1")).stdout


def test_networks_are_isolated(lab: Lab) -> None:
    assert ping(lab.ns["c3"], lab.gw("b"))  # c3 itself works
    assert not ping(lab.ns["c1"], str(lab.ep["c3"].ip))
    assert not ping(lab.ns["c3"], str(lab.ep["c1"].ip))
    assert from_ns(lab.ns["c3"], tcp_ask, str(lab.ep["c2"].ip), 80) == ""


def test_outbound_is_masqueraded(lab: Lab) -> None:
    assert ping(lab.ns["c1"], OUTSIDE)
    # the outside host sees the host's address, not the container's
    assert from_ns(lab.ns["c1"], tcp_ask, OUTSIDE, 80) == f"outside {OUTSIDE_HOST}"
    assert from_ns(lab.ns["c3"], udp_ask, OUTSIDE, 53) == f"outside {OUTSIDE_HOST}"


def test_outside_cannot_reach_containers_directly(lab: Lab) -> None:
    # even with a route, only published ports come in: the forward chain drops the rest
    sh("nsenter", f"--net={lab.ns['outside']}", "ip", "route", "add", "10.213.1.0/24",
       "via", OUTSIDE_HOST)
    try:
        assert from_ns(lab.ns["outside"], tcp_ask, str(lab.ep["c2"].ip), 80) == ""
    finally:
        sh("nsenter", f"--net={lab.ns['outside']}", "ip", "route", "del", "10.213.1.0/24")


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_published_port(lab: Lab, proto: str) -> None:
    ask, port = (tcp_ask, TCP_PORT) if proto == "tcp" else (udp_ask, UDP_PORT)
    gw_a = lab.gw("a")
    # from the host, by loopback (masqueraded to the bridge address) and by the bridge address
    assert from_ns(None, ask, "127.0.0.1", port) == f"c2 {gw_a}"
    assert from_ns(None, ask, gw_a, port) == f"c2 {gw_a}"
    # hairpin: a container on the same bridge through the host's address. With br_netfilter
    # loaded the DNATed packet is bridged and the reply un-NATed on the bridge, so c2 sees
    # c1's address; without it skiff's hairpin masquerade makes c2 see the gateway
    assert from_ns(lab.ns["c1"], ask, gw_a, port) in (f"c2 {lab.ep['c1'].ip}", f"c2 {gw_a}")
    # from the outside host, through the host's routed address: the client's own address
    assert from_ns(lab.ns["outside"], ask, OUTSIDE_HOST, port) == f"c2 {OUTSIDE}"
    # from a container of another network, through the host's address (like any outsider)
    assert from_ns(lab.ns["c3"], ask, lab.gw("b"), port).startswith("c2 ")


def test_internal_network_has_no_way_out(lab: Lab) -> None:
    c4 = lab.ns["c4"]
    assert ping(c4, lab.gw("int"))  # its own bridge answers
    assert "default" not in sh("nsenter", f"--net={c4}", "ip", "route").stdout
    sh("nsenter", f"--net={c4}", "ip", "route", "add", "default", "via", lab.gw("int"))
    try:  # even with a route the forward chain stops it
        assert not ping(c4, OUTSIDE)
        assert not ping(c4, str(lab.ep["c1"].ip))
    finally:
        sh("nsenter", f"--net={c4}", "ip", "route", "del", "default")
    # and nothing is published from it
    assert from_ns(None, tcp_ask, "127.0.0.1", TCP_PORT + 1) == ""
    assert from_ns(lab.ns["outside"], tcp_ask, OUTSIDE_HOST, TCP_PORT + 1) == ""


def test_port_conflict_and_ephemeral(lab: Lab) -> None:
    with pytest.raises(Conflict, match="port is already allocated"):
        lab.driver.publish(f"{TAG}c1", (PortMapping(80, TCP_PORT),))
    chosen = lab.driver.publish(f"{TAG}c1", parse_publish("127.0.0.1::80"))
    try:
        assert 49153 <= chosen[0].host_port <= 65535
        assert from_ns(None, tcp_ask, "127.0.0.1", chosen[0].host_port) == ""  # c1 has no server
    finally:
        lab.driver.unpublish(f"{TAG}c1")


def test_restart_restores_the_firewall(lab: Lab) -> None:
    lab.firewall.remove()  # as if the host rebooted its firewall or skiff crashed mid-way
    assert TABLE not in tables()
    assert from_ns(None, tcp_ask, "127.0.0.1", TCP_PORT) == ""
    driver, _ = make_driver(lab.db)  # a "restarted daemon" on the same state
    driver.restore()
    driver.restore()  # idempotent
    assert from_ns(None, tcp_ask, "127.0.0.1", TCP_PORT) == f"c2 {lab.gw('a')}"
    assert ping(lab.ns["c1"], str(lab.ep["c2"].ip))
    # the restarted IPAM knows what is taken
    assert len(driver.endpoints(lab.nets["a"].id)) == 2


def test_firewall_filter_leaves_exposure_to_the_host(lab: Lab) -> None:
    filtered = BridgeDriver(lab.db, lab.driver.ipam, NftablesFirewall(TABLE, firewall_filter=True))
    allow = f"skifftestallow{TAG}"
    try:
        filtered.restore()
        assert from_ns(lab.ns["outside"], tcp_ask, OUTSIDE_HOST, TCP_PORT) == ""
        assert from_ns(None, tcp_ask, "127.0.0.1", TCP_PORT) == f"c2 {lab.gw('a')}"
        assert from_ns(lab.ns["c1"], tcp_ask, lab.gw("a"), TCP_PORT).startswith("c2 ")
        # the host's firewall opens the TCP port (only) by marking it before skiff's DNAT
        subprocess.run(["nft", "-f", "-"], check=True, text=True, input=(
            f"table inet {allow} {{\n chain pre {{\n"
            f"  type filter hook prerouting priority -150; policy accept;\n"
            f"  tcp dport {TCP_PORT} meta mark set meta mark or {ALLOW_MARK:#x}\n }}\n}}\n"))
        assert from_ns(lab.ns["outside"], tcp_ask, OUTSIDE_HOST, TCP_PORT) == f"c2 {OUTSIDE}"
        assert from_ns(lab.ns["outside"], udp_ask, OUTSIDE_HOST, UDP_PORT) == ""
    finally:
        sh("nft", "delete", "table", "inet", allow, check=False)
        lab.driver.restore()  # back to the unfiltered ruleset for the other tests
    assert allow not in tables()
    assert from_ns(lab.ns["outside"], udp_ask, OUTSIDE_HOST, UDP_PORT) == f"c2 {OUTSIDE}"


def test_restore_drops_endpoints_whose_netns_died(lab: Lab) -> None:
    path = str(lab.root / "netns" / "gone")
    netns.create(path)
    try:
        info = lab.driver.connect(lab.nets["b"].id, f"{TAG}gone", path, "eth0")
        assert info.ip in lab.nets["b"].ipv4.subnet
    finally:
        netns.remove(path)  # the container died while the daemon was down
    lab.driver.restore()
    assert f"{TAG}gone" not in [e.endpoint_id for e in lab.driver.endpoints(lab.nets["b"].id)]
    assert veth_name(f"{TAG}gone") not in links()
    assert str(info.ip) not in lab.db.allocated(str(lab.nets["b"].ipv4.subnet))


def test_static_ip_mac_mtu_and_conflicts(lab: Lab) -> None:
    cfg = plan_network(lab.driver.ipam, f"{TAG}netm", "net-m",
                       subnet=ipaddress.ip_network("10.213.4.0/24"),
                       gateway=ipaddress.ip_address("10.213.4.254"),
                       ip_range=ipaddress.ip_network("10.213.4.64/26"),
                       labels={"team": "x"},
                       options={"com.docker.network.bridge.name": f"{PREFIX}m",
                                "com.docker.network.driver.mtu": "1400"})
    lab.driver.create_network(cfg)
    paths = [str(lab.root / "netns" / n) for n in ("m1", "m2")]
    try:
        for p in paths:
            netns.create(p)
        m1 = lab.driver.connect(cfg.id, f"{TAG}m1", paths[0], "eth1",
                                ip=ipaddress.ip_address("10.213.4.10"), mac="02:00:00:00:00:aa")
        m2 = lab.driver.connect(cfg.id, f"{TAG}m2", paths[1], "eth0")
        assert (str(m1.ip), m1.mac, str(m1.gateway)) == ("10.213.4.10", "02:00:00:00:00:aa",
                                                          "10.213.4.254")
        assert m2.ip in ipaddress.ip_network("10.213.4.64/26")  # from the ip-range
        assert "mtu 1400" in sh("ip", "-o", "link", "show", f"{PREFIX}m").stdout
        inside = sh("nsenter", f"--net={paths[0]}", "ip", "-o", "link", "show", "eth1").stdout
        assert "mtu 1400" in inside and "02:00:00:00:00:aa" in inside
        assert ping(paths[1], "10.213.4.10") and ping(paths[0], "10.213.4.254")
        with pytest.raises(Conflict, match="already in use"):  # the static IP is taken
            lab.driver.connect(cfg.id, f"{TAG}m3", paths[1], "eth1",
                               ip=ipaddress.ip_address("10.213.4.10"))
        with pytest.raises(Conflict, match="already exists"):  # the same endpoint twice
            lab.driver.connect(cfg.id, f"{TAG}m1", paths[1], "eth2")
        assert ping(paths[1], "10.213.4.10")  # ...left the first one alone
        with pytest.raises(Conflict, match="active endpoints"):
            lab.driver.delete_network(cfg.id)
        lab.driver.disconnect(cfg.id, f"{TAG}m1")
        lab.driver.disconnect(cfg.id, f"{TAG}m1")  # idempotent
        assert "eth1" not in sh("nsenter", f"--net={paths[0]}", "ip", "-o", "link").stdout
        assert "10.213.4.10" not in lab.db.allocated("10.213.4.0/24")
        lab.driver.disconnect(cfg.id, f"{TAG}m2")
    finally:
        for ep in lab.driver.endpoints(cfg.id):
            lab.driver.disconnect(cfg.id, ep.endpoint_id)
        lab.driver.delete_network(cfg.id)
        for p in paths:
            netns.remove(p)
    assert f"{PREFIX}m" not in links()
    assert "10.213.4.0/24" not in lab.db.pools()
