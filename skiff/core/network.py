"""Networks as data, and the protocols the network plugins implement.

Pure: records and Protocols only. The bridge driver, IPAM and the nftables firewall live in
``skiff.plugins.network``; the daemon wiring talks to them through these types so that a
driver (bridge today, overlay later) can be swapped without touching the services.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Protocol

from skiff.errors import InvalidArgument

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Docker's option keys for the bridge driver (docker network create -o KEY=VALUE)
OPT_BRIDGE_NAME = "com.docker.network.bridge.name"
OPT_MTU = "com.docker.network.driver.mtu"


@dataclass(frozen=True)
class Subnet:
    """One IPAM pool entry of a network: the subnet, its gateway and the range handed out."""

    subnet: IPNetwork
    gateway: IPAddress
    ip_range: IPNetwork | None = None  # containers get addresses only from here when set

    def __post_init__(self) -> None:
        if self.gateway not in self.subnet:
            raise InvalidArgument(f"gateway {self.gateway} is not in subnet {self.subnet}")
        if self.ip_range is not None and not self.ip_range.subnet_of(self.subnet):  # type: ignore[arg-type]
            raise InvalidArgument(f"ip-range {self.ip_range} is not inside subnet {self.subnet}")


@dataclass(frozen=True)
class NetworkConfig:
    """What `docker network create` describes, already validated and with IPAM resolved."""

    id: str
    name: str
    bridge: str  # the Linux bridge device name (at most 15 bytes)
    subnets: tuple[Subnet, ...]
    internal: bool = False  # no way in or out of the bridge's subnet
    mtu: int = 1500
    labels: tuple[tuple[str, str], ...] = ()
    options: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.subnets or not any(s.subnet.version == 4 for s in self.subnets):
            raise InvalidArgument(f"network {self.name}: an IPv4 subnet is required")
        if not 0 < len(self.bridge.encode()) <= 15 or "/" in self.bridge or " " in self.bridge:
            raise InvalidArgument(f"network {self.name}: bad bridge name {self.bridge!r}")
        if not 576 <= self.mtu <= 65535:
            raise InvalidArgument(f"network {self.name}: MTU {self.mtu} out of range 576..65535")

    @property
    def ipv4(self) -> Subnet:
        return next(s for s in self.subnets if s.subnet.version == 4)


@dataclass(frozen=True)
class EndpointInfo:
    """What connecting a container to a network gave it."""

    ip: IPAddress
    prefix: int
    gateway: IPAddress
    mac: str


@dataclass(frozen=True)
class Endpoint:
    """A container's attachment to a network, as stored for restore and disconnect."""

    network_id: str
    endpoint_id: str
    netns_path: str
    ifname: str
    info: EndpointInfo
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class PortMapping:
    """One published port: host_ip:host_port -> container_port/proto (Docker's -p)."""

    container_port: int
    host_port: int
    proto: str = "tcp"
    host_ip: IPAddress | None = None  # None: every host address

    def __post_init__(self) -> None:
        if self.proto not in ("tcp", "udp", "sctp"):
            raise InvalidArgument(f"port {self.container_port}: unknown protocol {self.proto!r}")
        # host_port 0: "any", replaced by a free ephemeral port before it is programmed
        if not 1 <= self.container_port <= 65535 or not 0 <= self.host_port <= 65535:
            raise InvalidArgument(
                f"port mapping {self.host_port}:{self.container_port} out of range 1..65535")


@dataclass(frozen=True)
class PublishedEndpoint:
    """The firewall's view of one endpoint's published ports."""

    endpoint_id: str
    bridge: str
    ip: IPAddress
    ports: tuple[PortMapping, ...] = field(default_factory=tuple)


class IPAMStore(Protocol):
    """Where IPAM keeps allocations so that they survive a daemon restart."""

    def pools(self) -> list[str]: ...
    def add_pool(self, subnet: str) -> None:
        """Record ``subnet`` as in use; Conflict if it already is."""
    def remove_pool(self, pool: str) -> None:
        """Forget ``pool`` and every address allocated in it."""
    def allocated(self, pool: str) -> set[str]: ...
    def add(self, pool: str, address: str, owner: str) -> None:
        """Record ``address`` as taken; Conflict if it already is."""
    def remove(self, pool: str, address: str) -> None: ...


class IPAM(Protocol):
    def request_pool(self, subnet: IPNetwork | None = None) -> IPNetwork: ...
    def release_pool(self, subnet: IPNetwork) -> None: ...
    def request_address(self, subnet: Subnet, owner: str,
                        address: IPAddress | None = None) -> IPAddress: ...
    def release_address(self, subnet: Subnet, address: IPAddress) -> None: ...


class Firewall(Protocol):
    """The packet filter/NAT programming of all networks, as one atomically replaced ruleset."""

    def apply(self, networks: list[NetworkConfig], published: list[PublishedEndpoint]) -> None: ...
    def remove(self) -> None: ...


class NetworkDriver(Protocol):
    def create_network(self, cfg: NetworkConfig) -> None: ...
    def delete_network(self, network_id: str) -> None: ...
    def connect(self, network_id: str, endpoint_id: str, netns_path: str, ifname: str,
                ip: IPAddress | None = None, aliases: tuple[str, ...] = (),
                mac: str | None = None) -> EndpointInfo: ...
    def disconnect(self, network_id: str, endpoint_id: str) -> None: ...
    def publish(self, endpoint_id: str, ports: tuple[PortMapping, ...]
                ) -> tuple[PortMapping, ...]: ...
    def unpublish(self, endpoint_id: str) -> None: ...
    def restore(self) -> None: ...
