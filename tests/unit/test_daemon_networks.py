"""The daemon's network part without a kernel: API request parsing, /etc files, JSON shapes,
per-daemon names, and the records in SQLite."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

import pytest

from skiff.core.network import EndpointInfo, NetworkConfig, PortMapping, Subnet
from skiff.daemon.networks import etcfiles, shapes
from skiff.daemon.networks.dnsd import make_lookup, upstreams
from skiff.daemon.networks.filters import bool_filter, label_ok, list_match, prune_match
from skiff.daemon.networks.options import NetworkOptions
from skiff.daemon.networks.requests import (
    EndpointRequest,
    endpoints_config,
    exposed_ports,
    network_mode,
    parse_connect,
    parse_disconnect,
    parse_extra_hosts,
    parse_links,
    parse_network_create,
    port_bindings,
)
from skiff.daemon.networks.state import NetState, NetworkMeta
from skiff.errors import Conflict, InvalidArgument, NotFound

ip = ipaddress.ip_address
net = ipaddress.ip_network


# --- requests ----------------------------------------------------------------------------------
def test_network_create_fields() -> None:
    req = parse_network_create({
        "Name": "front", "Driver": "bridge", "Internal": True, "Attachable": True,
        "Labels": {"a": "b"}, "Options": {"com.docker.network.driver.mtu": "1400"},
        "IPAM": {"Driver": "default", "Config": [
            {"Subnet": "10.9.0.0/24", "Gateway": "10.9.0.254", "IPRange": "10.9.0.128/25"},
            {"Subnet": "fd00::/64"}]}})
    assert (req.name, req.internal, req.attachable) == ("front", True, True)
    assert req.subnet == net("10.9.0.0/24") and req.gateway == ip("10.9.0.254")
    assert req.ip_range == net("10.9.0.128/25")
    assert req.labels == {"a": "b"} and req.options["com.docker.network.driver.mtu"] == "1400"
    bare = parse_network_create({"Name": "n"})
    assert bare.subnet is None and bare.driver == "bridge" and not bare.internal


@pytest.mark.parametrize("body, words", [
    ({}, "Name is required"),
    ({"Name": " "}, "Name is required"),
    ({"Name": "a/b"}, "invalid network name"),
    ({"Name": "n", "Driver": "overlay"}, "not supported"),
    ({"Name": "n", "IPAM": {"Driver": "dhcp"}}, "IPAM driver"),
    ({"Name": "n", "IPAM": {"Config": {"Subnet": "10.0.0.0/8"}}}, "IPAM.Config"),
    ({"Name": "n", "IPAM": {"Config": [{"Subnet": "10.0.0.1/8"}]}}, "host bits"),
    ({"Name": "n", "IPAM": {"Config": [{"Gateway": "10.0.0.1"}]}}, "without a Subnet"),
    ({"Name": "n", "IPAM": {"Config": [{"Subnet": "10.0.0.0/24"},
                                       {"Subnet": "10.1.0.0/24"}]}}, "only one IPv4"),
    ({"Name": "n", "Internal": "yes"}, "Internal"),
    ({"Name": "n", "Labels": {"a": 1}}, "Labels"),
    ({"Name": "n", "IPAM": {"Config": [{"Subnet": "10.0.0.0/24", "Gateway": "x"}]}},
     "Gateway"),
])
def test_network_create_refusals(body: dict[str, object], words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        parse_network_create(body)


def test_modes_endpoints_connect_disconnect() -> None:
    assert network_mode({}) == "bridge" and network_mode({"NetworkMode": "default"}) == "bridge"
    assert network_mode({"NetworkMode": "container:abc"}) == "container:abc"
    with pytest.raises(InvalidArgument):
        network_mode({"NetworkMode": 3})
    eps = endpoints_config({"NetworkingConfig": {"EndpointsConfig": {
        "front": {"IPAMConfig": {"IPv4Address": "10.9.0.5"}, "Aliases": ["www", ""]},
        "back": None}}})
    assert eps == {"front": EndpointRequest(ip("10.9.0.5"), ("www",)),
                   "back": EndpointRequest()}
    assert EndpointRequest.from_json(eps["front"].to_json()) == eps["front"]
    with pytest.raises(InvalidArgument, match="IPv4Address"):
        endpoints_config({"NetworkingConfig": {"EndpointsConfig": {
            "x": {"IPAMConfig": {"IPv4Address": "nope"}}}}})
    with pytest.raises(InvalidArgument, match="not IPv4"):
        endpoints_config({"NetworkingConfig": {"EndpointsConfig": {
            "x": {"IPAMConfig": {"IPv4Address": "fd00::5"}}}}})
    with pytest.raises(InvalidArgument, match="Aliases"):
        endpoints_config({"NetworkingConfig": {"EndpointsConfig": {"x": {"Aliases": "a"}}}})
    assert parse_connect({"Container": "c", "EndpointConfig": {"Aliases": ["a"]}}) == (
        "c", EndpointRequest(None, ("a",)))
    assert parse_disconnect({"Container": "c", "Force": True}) == ("c", True)
    for bad in ({}, {"Container": ""}, {"Container": 5}):
        with pytest.raises(InvalidArgument, match="Container is required"):
            parse_connect(bad)
        with pytest.raises(InvalidArgument, match="Container is required"):
            parse_disconnect(bad)
    with pytest.raises(InvalidArgument, match="Force"):
        parse_disconnect({"Container": "c", "Force": "yes"})


def test_port_bindings() -> None:
    config: dict[str, Any] = {"ExposedPorts": {"80/tcp": {}, "53/udp": {}, "9000": {}}}
    hc = {"PortBindings": {
        "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}, {"HostPort": ""}],
        "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "5353-5360"}],
        "443/tcp": [{"HostIp": "::", "HostPort": "8443"}],
        "444/tcp": None}, "PublishAllPorts": True}
    got = port_bindings(config, hc)
    assert PortMapping(80, 8080, "tcp", ip("127.0.0.1")) in got
    assert PortMapping(80, 0, "tcp") in got and PortMapping(53, 5353, "udp") in got
    assert PortMapping(9000, 0, "tcp") in got and PortMapping(444, 0, "tcp") in got
    assert not any(p.container_port == 443 for p in got)  # IPv6-only binding: not programmed
    assert exposed_ports(config) == [(53, "udp"), (80, "tcp"), (9000, "tcp")]
    assert port_bindings(config, {}) == ()
    bad: dict[str, Any]
    for bad in ({"PortBindings": {"http": []}}, {"PortBindings": {"80/icmp": []}},
                {"PortBindings": {"80": [{"HostPort": "x"}]}},
                {"PortBindings": {"80": [{"HostPort": "70000"}]}},
                {"PortBindings": {"80": [{"HostIp": "nope"}]}},
                {"PortBindings": {"80": "8080"}}):
        with pytest.raises(InvalidArgument):
            port_bindings({}, bad)


def test_extra_hosts_and_links() -> None:
    assert parse_extra_hosts(["db:10.0.0.9", "v6=[fd00::1]", "gw:host-gateway"]) == [
        ("db", "10.0.0.9"), ("v6", "fd00::1"), ("gw", "host-gateway")]
    for bad in (["db"], ["db:"], ["db:not-an-ip"], "db:1.2.3.4"):
        with pytest.raises(InvalidArgument):
            parse_extra_hosts(bad)
    assert parse_links(["web:w", "/db:/me/database", "cache"]) == [
        ("web", "w"), ("db", "database"), ("cache", "cache")]
    with pytest.raises(InvalidArgument):
        parse_links([":x"])


# --- /etc files ------------------------------------------------------------------------------------
HOST_RESOLV = """# from the host
nameserver 127.0.0.53
nameserver 10.1.1.1
search corp.example lab.example
options edns0 trust-ad
"""


def test_resolv_conf() -> None:
    host = etcfiles.parse_resolv_conf(HOST_RESOLV)
    assert host.nameservers == ("127.0.0.53", "10.1.1.1")
    bridge = etcfiles.render_resolv_conf(host, embedded=False)
    assert bridge == ("nameserver 10.1.1.1\nsearch corp.example lab.example\n"
                      "options edns0 trust-ad\n")
    user = etcfiles.render_resolv_conf(host, embedded=True, dns=["10.2.2.2"])
    assert user.splitlines()[0] == "nameserver 127.0.0.11" and "10.2.2.2" not in user
    custom = etcfiles.render_resolv_conf(host, embedded=False, dns=["10.2.2.2"],
                                         search=["x.example"], options=["ndots:3"])
    assert custom == "nameserver 10.2.2.2\nsearch x.example\noptions ndots:3\n"
    only_loopback = etcfiles.parse_resolv_conf("nameserver 127.0.0.53\n")
    assert etcfiles.render_resolv_conf(only_loopback, embedded=False).splitlines() == [
        f"nameserver {s}" for s in etcfiles.FALLBACK_NAMESERVERS]
    assert etcfiles.render_resolv_conf(host, embedded=False, search=["."]).count("search") == 0


def test_hosts_hostname_and_write(tmp_path: Path) -> None:
    text = etcfiles.render_hosts([("10.9.0.5", ["web.example", "web"])],
                                 [("db", "10.9.0.6")])
    lines = text.splitlines()
    assert lines[0] == "127.0.0.1\tlocalhost" and lines[-1] == "10.9.0.5\tweb.example web"
    assert "10.9.0.6\tdb" in lines
    assert etcfiles.hostname_of({}, "0123456789abcdef") == ("0123456789ab", "")
    assert etcfiles.hostname_of({"Hostname": "h", "Domainname": "d"}, "x" * 64) == ("h", "d")
    files = etcfiles.write(str(tmp_path / "c"), hosts=text, resolv_conf="nameserver 1.1.1.1\n",
                           hostname="web")
    assert Path(files.hostname or "").read_text() == "web\n"
    assert Path(files.hosts or "").read_text() == text
    inode = os.stat(files.hosts or "").st_ino
    etcfiles.write(str(tmp_path / "c"), hosts="x\n", resolv_conf="", hostname="web")
    # rewritten in place: a container's bind mount of the file sees the change
    assert os.stat(files.hosts or "").st_ino == inode
    assert Path(files.hosts or "").read_text() == "x\n"
    host_file = tmp_path / "hosts"
    host_file.write_text("127.0.0.1 localhost")
    assert etcfiles.host_hosts(str(host_file)) == "127.0.0.1 localhost\n"


# --- shapes --------------------------------------------------------------------------------------
INFO = EndpointInfo(ip("10.9.0.5"), 24, ip("10.9.0.1"), "02:42:0a:09:00:05")


def test_ports_shapes() -> None:
    exposed = [(80, "tcp"), (81, "tcp")]
    published = [PortMapping(80, 8080, "tcp", ip("127.0.0.1")), PortMapping(80, 49153)]
    assert shapes.ports_json(exposed, published) == {
        "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"},
                   {"HostIp": "0.0.0.0", "HostPort": "49153"}],
        "81/tcp": None}
    assert shapes.ports_list(exposed, published) == [
        {"IP": "127.0.0.1", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
        {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 49153, "Type": "tcp"},
        {"PrivatePort": 81, "Type": "tcp"}]


def test_settings_and_network_shapes() -> None:
    ep = shapes.endpoint_settings("n" * 64, "e" * 64, INFO, ["www"], "10.9.0.5", ["web"])
    assert (ep["IPAddress"], ep["IPPrefixLen"], ep["Gateway"]) == ("10.9.0.5", 24, "10.9.0.1")
    assert ep["IPAMConfig"] == {"IPv4Address": "10.9.0.5"} and ep["Aliases"] == ["www"]
    idle = shapes.endpoint_settings("n" * 64, "e" * 64, None)
    assert (idle["IPAddress"], idle["EndpointID"], idle["Aliases"]) == ("", "", None)
    s = shapes.settings_json({"bridge": ep, "other": idle}, {}, "/run/x", "s" * 64)
    assert (s["IPAddress"], s["MacAddress"], s["SandboxKey"]) == (
        "10.9.0.5", INFO.mac, "/run/x")
    assert shapes.settings_json({"user": ep}, {}, "", "")["IPAddress"] == ""
    cfg = NetworkConfig("n" * 64, "bridge", "skiff0",
                        (Subnet(net("10.9.0.0/24"), ip("10.9.0.1")),))
    meta = NetworkMeta("n" * 64, "bridge", "bridge", "2026-01-01T00:00:00Z")
    body = shapes.network_json(meta, cfg, [shapes.Member("c" * 64, "web", "e" * 64, INFO)],
                               default_bridge=True)
    assert body["IPAM"]["Config"] == [{"Subnet": "10.9.0.0/24", "Gateway": "10.9.0.1"}]
    assert body["Options"]["com.docker.network.bridge.name"] == "skiff0"
    assert body["Containers"]["c" * 64]["IPv4Address"] == "10.9.0.5/24"
    host = shapes.network_json(NetworkMeta("h" * 64, "host", "host", "t"), None)
    assert host["IPAM"]["Config"] == [] and host["Driver"] == "host"


# --- per-daemon names -------------------------------------------------------------------------------
def test_names_per_daemon() -> None:
    default = NetworkOptions("/var/lib/skiff", "/run/skiff")
    assert (default.bridge_name, default.table_name) == ("skiff0", "skiff")
    a, b = NetworkOptions("/d", "/tmp/a/run"), NetworkOptions("/d", "/tmp/b/run")
    assert a.bridge_name != b.bridge_name and a.table_name != b.table_name
    assert len(a.bridge_name) <= 15 and a.table_name.replace("_", "").isalnum()
    assert a.bridge_name == NetworkOptions("/other", "/tmp/a/run").bridge_name
    given = NetworkOptions("/d", "/tmp/a/run", bridge="br9", nft_table="t9")
    assert (given.bridge_name, given.table_name) == ("br9", "t9")
    assert NetworkOptions("/d", "/r", bip="10.9.0.1/24").default_subnet() == (
        net("10.9.0.0/24"), ip("10.9.0.1"))
    assert NetworkOptions("/d", "/r").default_subnet() == (None, None)
    for bad in ("10.9.0.0/24", "nope", "fd00::1/64", "10.9.0.1"):  # (a bare address: /32)
        with pytest.raises(InvalidArgument, match="--bip"):
            NetworkOptions("/d", "/r", bip=bad).default_subnet()


# --- records ------------------------------------------------------------------------------------
def test_state_records(tmp_path: Path) -> None:
    st = NetState(str(tmp_path / "network.db"))
    try:
        meta = NetworkMeta("a" * 64, "front", "bridge", "t", internal=True,
                           labels=(("k", "v"),), ip_range="10.9.0.128/25")
        st.add_network(meta)
        with pytest.raises(Conflict, match="already exists"):
            st.add_network(NetworkMeta("b" * 64, "front", "bridge", "t"))
        assert st.networks() == [meta]
        st.attach("c1", "n2", EndpointRequest(aliases=("x",)))
        st.attach("c1", "n1", EndpointRequest(ip("10.9.0.5")))
        st.attach("c2", "n1", EndpointRequest())
        with pytest.raises(Conflict):
            st.attach("c1", "n1", EndpointRequest())
        # in the order asked for: the first is eth0 and carries the published ports
        assert [a.network_id for a in st.attachments(container_id="c1")] == ["n2", "n1"]
        st.set_endpoint("c1", "n1", "e1")
        assert [(a.container_id, a.endpoint_id) for a in st.attachments(network_id="n1")] == [
            ("c1", "e1"), ("c2", None)]
        with pytest.raises(NotFound):
            st.set_endpoint("c9", "n1", "e9")
        st.put_sandbox("c1", "/run/x/netns/c1", "s1")
        assert st.sandbox("c1") == ("/run/x/netns/c1", "s1") and st.sandbox("c2") is None
        st.detach("c1", "n2")
        st.forget_container("c1")
        assert st.attachments(container_id="c1") == [] and st.sandbox("c1") is None
        st.remove_network(meta.id)
        assert st.networks() == []
    finally:
        st.close()
    # the records survive a reopen (a daemon restart)
    again = NetState(str(tmp_path / "network.db"))
    try:
        assert [a.container_id for a in again.attachments()] == ["c2"]
    finally:
        again.close()


def test_dns_lookup_and_upstreams() -> None:
    table = {"web": ["10.9.0.5"], "db": ["10.9.0.6", "10.9.0.7"]}
    calls = []

    def names() -> dict[str, list[str]]:
        calls.append(1)
        return table

    lookup = make_lookup(names)
    assert lookup("WEB.") == [ip("10.9.0.5")]
    assert lookup("db") == [ip("10.9.0.6"), ip("10.9.0.7")]
    assert lookup("example.org") is None
    assert len(calls) == 3  # read at each query: containers come and go
    assert upstreams(["10.2.2.2"]) == [("10.2.2.2", 53)]


def test_network_filters() -> None:
    user = NetworkMeta("ab" * 32, "front-end", "bridge", "t", labels=(("team", "a"),))
    host = NetworkMeta("cd" * 32, "host", "host", "t")

    def used(_: NetworkMeta) -> bool:
        return False

    assert list_match(user, {}, used) and list_match(user, {"name": []}, used)
    assert list_match(user, {"name": ["end"], "driver": ["bridge"]}, used)
    assert not list_match(user, {"name": ["back"]}, used)
    assert list_match(user, {"id": ["abab"]}, used) and not list_match(host, {"id": ["ab"]}, used)
    assert list_match(user, {"label": ["team"]}, used)
    assert not list_match(user, {"label": ["team", "x"]}, used)  # labels: all must hold
    assert list_match(user, {"type": ["custom"]}, used)
    assert list_match(host, {"type": ["builtin"]}, used)
    assert list_match(user, {"dangling": ["false"]}, used)
    assert not list_match(user, {"dangling": ["true"]}, used)
    assert list_match(user, {"dangling": ["1"]}, lambda m: True)
    for bad in ({"type": ["weird"]}, {"dangling": ["maybe"]}, {"colour": ["red"]}):
        with pytest.raises(InvalidArgument, match="invalid filter"):
            list_match(user, bad, used)
    assert prune_match(user, {"label": ["team=a"]}) and not prune_match(user, {"label!": ["team"]})
    assert prune_match(user, {"until": ["24h"]})
    with pytest.raises(InvalidArgument):
        prune_match(user, {"name": ["x"]})
    assert label_ok({"a": "1"}, "a") and label_ok({"a": "1"}, "a=1")
    assert not label_ok({"a": "1"}, "a=2") and not label_ok({}, "a")
    assert bool_filter(["false", "TRUE"], "dangling") is True
