"""Thin wrappers over pyroute2's rtnetlink: links, addresses, routes, sysctls.

Only what the bridge driver needs, each call translating pyroute2's NetlinkError into skiff's
error kinds with the operation and the device named. A ``Netlink`` talks to the namespace of
the thread that opened it (see skiff.linux.netns.run_in).
"""

from __future__ import annotations

import errno
import ipaddress
import os
from types import TracebackType
from typing import Any

from pyroute2 import IPRoute  # type: ignore[import-untyped]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

from skiff.errors import Conflict, NotFound, SkiffError, SystemFailure, os_error


def _error(op: str, target: str, exc: NetlinkError) -> SkiffError:
    code = int(getattr(exc, "code", 0) or 0)
    name = errno.errorcode.get(code, str(code))
    message = f"{op} {target}: {name} ({os.strerror(code)})"
    if code == errno.EEXIST:
        return Conflict(message)
    if code in (errno.ENODEV, errno.ENOENT, errno.ESRCH):
        return NotFound(message)
    return SystemFailure(message)


class Netlink:
    """One rtnetlink socket; use as a context manager."""

    def __init__(self) -> None:
        self._ipr: Any = IPRoute()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._ipr.close()

    def index(self, name: str) -> int | None:
        """The ifindex of device ``name``, or None if there is none."""
        found = self._ipr.link_lookup(ifname=name)
        return int(found[0]) if found else None

    def require(self, name: str) -> int:
        idx = self.index(name)
        if idx is None:
            raise NotFound(f"network device {name} does not exist")
        return idx

    def add_bridge(self, name: str, mtu: int) -> None:
        self._do("create bridge", name, lambda: self._ipr.link(
            "add", ifname=name, kind="bridge", mtu=mtu))

    def add_veth(self, name: str, peer: str, peer_netns: str, mtu: int) -> None:
        """A veth pair: ``name`` stays here, ``peer`` is created directly in ``peer_netns``."""
        self._do("create veth pair", f"{name}/{peer}", lambda: self._ipr.link(
            "add", ifname=name, kind="veth", mtu=mtu,
            peer={"ifname": peer, "net_ns_fd": peer_netns, "mtu": mtu}))

    def set_master(self, name: str, bridge: str) -> None:
        master = self.require(bridge)
        self._do("attach to bridge " + bridge, name, lambda: self._ipr.link(
            "set", index=self.require(name), master=master))

    def set_up(self, name: str) -> None:
        self._do("bring up", name, lambda: self._ipr.link(
            "set", index=self.require(name), state="up"))

    def rename(self, name: str, new: str) -> None:
        self._do(f"rename to {new}", name, lambda: self._ipr.link(
            "set", index=self.require(name), ifname=new))

    def set_mac(self, name: str, mac: str) -> None:
        self._do(f"set MAC {mac} on", name, lambda: self._ipr.link(
            "set", index=self.require(name), address=mac))

    def mac(self, name: str) -> str:
        links = self._ipr.get_links(self.require(name))
        return str(links[0].get("address"))

    def delete(self, name: str) -> bool:
        """Delete device ``name``; False if it was already gone."""
        idx = self.index(name)
        if idx is None:
            return False
        try:
            self._ipr.link("del", index=idx)
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return False
            raise _error("delete network device", name, exc) from exc
        return True

    def addresses(self, name: str) -> list[str]:
        """The "ip/prefix" strings on ``name``."""
        out = []
        for msg in self._ipr.get_addr(index=self.require(name)):
            out.append(f"{msg.get('address')}/{msg['prefixlen']}")
        return out

    def add_address(self, name: str, iface: str) -> None:
        """Add ``iface`` ("10.0.0.1/24") to ``name`` unless it is already there."""
        if iface in self.addresses(name):
            return
        net = ipaddress.ip_interface(iface)
        self._do(f"add address {iface} to", name, lambda: self._ipr.addr(
            "add", index=self.require(name), address=str(net.ip),
            prefixlen=net.network.prefixlen))

    def add_default_route(self, gateway: str) -> None:
        self._do("add default route via", gateway, lambda: self._ipr.route(
            "replace", dst="0.0.0.0/0" if ":" not in gateway else "::/0", gateway=gateway))

    def routed_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """Destinations of every non-default route in the main table (IPv4 and IPv6)."""
        out: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for msg in self._ipr.get_routes(table=254):
            dst, plen = msg.get("dst"), msg["dst_len"]
            if dst and plen:
                out.append(ipaddress.ip_network(f"{dst}/{plen}", strict=False))
        return out

    def _do(self, op: str, target: str, fn: Any) -> None:
        try:
            fn()
        except NetlinkError as exc:
            raise _error(op, target, exc) from exc


def set_sysctl(key: str, value: str) -> None:
    """Write ``value`` to /proc/sys/KEY ("net/ipv4/conf/br0/route_localnet") in the caller's netns."""
    path = "/proc/sys/" + key  # slashes, not dots: device names may contain dots
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        raise os_error(f"set sysctl to {value}", path, exc) from exc
