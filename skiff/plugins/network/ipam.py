"""IP address management: subnets for networks and addresses for endpoints.

Everything handed out is recorded in an IPAMStore before it is returned, and the store's
uniqueness is what guarantees "never twice" (a lost race retries with the next candidate), so
two daemons' worth of callers, or one restarted daemon, never share an address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator

from skiff.core.network import IPAddress, IPAMStore, IPNetwork, Subnet
from skiff.errors import Conflict, InvalidArgument, NotFound, Unavailable

# Docker's default address pools: 172.17-31.0.0/16, then 192.168.x.0/20
DEFAULT_POOLS: tuple[tuple[IPNetwork, int], ...] = (
    (ipaddress.ip_network("172.17.0.0/16"), 16),
    (ipaddress.ip_network("172.18.0.0/15"), 16),
    (ipaddress.ip_network("172.20.0.0/14"), 16),
    (ipaddress.ip_network("172.24.0.0/13"), 16),
    (ipaddress.ip_network("192.168.0.0/16"), 20),
)


def _overlaps(a: IPNetwork, b: IPNetwork) -> bool:
    return a.version == b.version and a.overlaps(b)


class LocalIPAM:
    """The single-host IPAM (Docker's "default" driver), persisted in ``store``.

    ``routed`` lists the host's routed destinations at the time of the call; default pools
    skip any subnet that overlaps one, so skiff runs beside Docker's 172.17.0.0/16 or a VPN.
    """

    def __init__(self, store: IPAMStore, routed: Callable[[], Iterable[IPNetwork]],
                 default_pools: tuple[tuple[IPNetwork, int], ...] = DEFAULT_POOLS) -> None:
        self.store = store
        self.routed = routed
        self.default_pools = default_pools

    def request_pool(self, subnet: IPNetwork | None = None) -> IPNetwork:
        """Reserve ``subnet`` (Conflict if it overlaps a pool in use) or the first free default."""
        in_use = [ipaddress.ip_network(p) for p in self.store.pools()]
        if subnet is not None:
            for other in in_use:
                if _overlaps(subnet, other):
                    raise Conflict(f"subnet {subnet} overlaps {other} of another network")
            self.store.add_pool(str(subnet))
            return subnet
        taken = in_use + list(self.routed())
        for candidate in self._defaults():
            if any(_overlaps(candidate, t) for t in taken):
                continue
            try:
                self.store.add_pool(str(candidate))
            except Conflict:  # another caller took it between our read and write
                continue
            return candidate
        raise Unavailable("all predefined address pools have been fully subnetted")

    def _defaults(self) -> Iterator[IPNetwork]:
        for base, prefix in self.default_pools:
            yield from base.subnets(new_prefix=prefix)

    def release_pool(self, subnet: IPNetwork) -> None:
        self.store.remove_pool(str(subnet))

    def _check_pool(self, subnet: Subnet) -> str:
        pool = str(subnet.subnet)
        if pool not in self.store.pools():
            raise NotFound(f"address pool {pool} is not allocated")
        return pool

    def request_address(self, subnet: Subnet, owner: str,
                        address: IPAddress | None = None) -> IPAddress:
        """Reserve ``address`` (Conflict if taken) or the lowest free one of the subnet's range.

        The network and broadcast addresses are never handed out; the gateway only when asked
        for by name (the driver reserves it for the bridge when the network is created).
        """
        pool = self._check_pool(subnet)
        if address is not None:
            if address not in subnet.subnet:
                raise InvalidArgument(f"address {address} is not in subnet {subnet.subnet}")
            if address in (subnet.subnet.network_address, subnet.subnet.broadcast_address) \
                    and subnet.subnet.num_addresses > 2:
                raise InvalidArgument(f"address {address} is reserved in {subnet.subnet}")
            self.store.add(pool, str(address), owner)
            return address
        allocated = self.store.allocated(pool)
        for candidate in (subnet.ip_range or subnet.subnet).hosts():
            if candidate == subnet.gateway or str(candidate) in allocated:
                continue
            if candidate in (subnet.subnet.network_address, subnet.subnet.broadcast_address):
                continue  # an ip-range's hosts() may include the subnet's own edges
            try:
                self.store.add(pool, str(candidate), owner)
            except Conflict:
                continue
            return candidate
        raise Unavailable(f"no available IPv{subnet.subnet.version} addresses in {subnet.subnet}")

    def release_address(self, subnet: Subnet, address: IPAddress) -> None:
        self.store.remove(str(subnet.subnet), str(address))
