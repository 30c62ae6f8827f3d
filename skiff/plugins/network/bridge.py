"""The bridge network driver: a Linux bridge per network, a veth per endpoint, NAT by nftables.

State (networks, endpoints, published ports) is in the NetworkDB before the kernel is touched
for removals and after it is touched for additions, so a crash leaves at worst a kernel object
that ``restore`` re-adopts or a record whose device ``restore`` re-creates; ``restore`` is
idempotent and is what the daemon calls at start.
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading

from skiff.core.network import (
    OPT_BRIDGE_NAME,
    OPT_MTU,
    Endpoint,
    EndpointInfo,
    Firewall,
    IPAddress,
    IPNetwork,
    NetworkConfig,
    PortMapping,
    PublishedEndpoint,
    Subnet,
)
from skiff.errors import Conflict, InvalidArgument, NotFound
from skiff.linux import netns
from skiff.linux.netlink import Netlink, set_sysctl
from skiff.plugins.network.ipam import LocalIPAM
from skiff.plugins.network.portmap import assign_ephemeral
from skiff.plugins.network.store import NetworkDB

DEFAULT_NETWORK = "bridge"  # Docker's name for the default network
DEFAULT_BRIDGE = "skiff0"  # our docker0


def plan_network(ipam: LocalIPAM, network_id: str, name: str, *,
                 subnet: IPNetwork | None = None, gateway: IPAddress | None = None,
                 ip_range: IPNetwork | None = None, internal: bool = False,
                 labels: dict[str, str] | None = None,
                 options: dict[str, str] | None = None) -> NetworkConfig:
    """Turn `docker network create` arguments into a NetworkConfig, reserving its subnet and
    gateway in IPAM (released again if anything here is invalid).

    The bridge device is the ``com.docker.network.bridge.name`` option, else ``br-<id12>``
    (skiff0 for the default network); MTU is ``com.docker.network.driver.mtu``, else 1500.
    """
    options = dict(options or {})
    if subnet is None and (gateway is not None or ip_range is not None):
        raise InvalidArgument(f"network {name}: gateway or ip-range given without a subnet")
    bridge = options.get(OPT_BRIDGE_NAME) or (
        DEFAULT_BRIDGE if name == DEFAULT_NETWORK else f"br-{network_id[:12]}")
    try:
        mtu = int(options.get(OPT_MTU, "1500"))
    except ValueError as exc:
        raise InvalidArgument(f"network {name}: MTU {options[OPT_MTU]!r} is not a number") from exc
    pool = ipam.request_pool(subnet)
    try:
        # the first host address, as Docker picks it
        gw = gateway if gateway is not None else ipaddress.ip_address(str(next(iter(pool.hosts()))))
        sub = Subnet(pool, gw, ip_range)
        cfg = NetworkConfig(id=network_id, name=name, bridge=bridge, subnets=(sub,),
                            internal=internal, mtu=mtu, labels=tuple(sorted((labels or {}).items())),
                            options=tuple(sorted(options.items())))
        ipam.request_address(sub, owner=f"gateway:{network_id}", address=gw)
    except BaseException:
        ipam.release_pool(pool)
        raise
    return cfg


def veth_name(endpoint_id: str) -> str:
    """The host end's name: stable per endpoint (restore finds it again), 11 bytes."""
    return "veth" + hashlib.sha256(endpoint_id.encode()).hexdigest()[:7]


def mac_for(ip: IPAddress) -> str:
    """Docker's scheme, 02:42 + the IPv4 address: unique on the bridge, stable across restarts."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ip.packed[-4:])


class BridgeDriver:
    """NetworkDriver for bridge networks on this host."""

    def __init__(self, db: NetworkDB, ipam: LocalIPAM, firewall: Firewall) -> None:
        self.db = db
        self.ipam = ipam
        self.firewall = firewall
        self.lock = threading.RLock()  # one change at a time: each ends in one firewall apply

    # --- networks --------------------------------------------------------------------------
    def create_network(self, cfg: NetworkConfig) -> None:
        with self.lock:
            for other in self.db.networks():
                if other.bridge == cfg.bridge:
                    raise Conflict(f"bridge {cfg.bridge} is already used by network {other.name}")
            with Netlink() as nl:
                created = nl.index(cfg.bridge) is None
                try:
                    self._program_bridge(nl, cfg)
                    self.db.put_network(cfg)
                except BaseException:
                    if created:
                        nl.delete(cfg.bridge)
                    raise
            try:
                self._apply()
            except BaseException:
                self.db.delete_network(cfg.id)
                with Netlink() as nl:
                    nl.delete(cfg.bridge)
                raise

    def _program_bridge(self, nl: Netlink, cfg: NetworkConfig) -> None:
        """Make the bridge exist, carry the gateway address and be up (idempotent)."""
        if nl.index(cfg.bridge) is None:
            nl.add_bridge(cfg.bridge, cfg.mtu)
        for sub in cfg.subnets:
            nl.add_address(cfg.bridge, f"{sub.gateway}/{sub.subnet.prefixlen}")
        nl.set_up(cfg.bridge)
        if not cfg.internal:
            # the host's own 127.0.0.1:PORT is DNATed into this bridge; without route_localnet
            # the kernel refuses to route a loopback source out of a non-loopback device
            set_sysctl(f"net/ipv4/conf/{cfg.bridge}/route_localnet", "1")
            with open("/proc/sys/net/ipv4/ip_forward") as f:
                if f.read().strip() != "1":
                    set_sysctl("net/ipv4/ip_forward", "1")

    def delete_network(self, network_id: str) -> None:
        with self.lock:
            cfg = self.db.network(network_id)
            if self.db.endpoints(network_id):
                raise Conflict(f"network {cfg.name} has active endpoints")
            self.db.delete_network(network_id)
            with Netlink() as nl:
                nl.delete(cfg.bridge)
            for sub in cfg.subnets:
                self.ipam.release_pool(sub.subnet)
            self._apply()

    # --- endpoints -------------------------------------------------------------------------
    def connect(self, network_id: str, endpoint_id: str, netns_path: str, ifname: str,
                ip: IPAddress | None = None, aliases: tuple[str, ...] = (),
                mac: str | None = None) -> EndpointInfo:
        """Give the namespace at ``netns_path`` an interface ``ifname`` on the network."""
        with self.lock:
            cfg = self.db.network(network_id)
            netns.check_exists(netns_path)
            try:  # before anything is allocated: the rollback below must not undo the other
                self.db.endpoint(endpoint_id)
                raise Conflict(f"endpoint {endpoint_id} already exists")
            except NotFound:
                pass
            sub = cfg.ipv4
            addr = self.ipam.request_address(sub, owner=endpoint_id, address=ip)
            info = EndpointInfo(ip=addr, prefix=sub.subnet.prefixlen, gateway=sub.gateway,
                                mac=mac or mac_for(addr))
            ep = Endpoint(network_id, endpoint_id, netns_path, ifname, info, aliases)
            host = veth_name(endpoint_id)
            try:
                self.db.put_endpoint(ep)
                with Netlink() as nl:
                    nl.add_veth(host, ifname, netns_path, cfg.mtu)
                    nl.set_master(host, cfg.bridge)
                    nl.set_up(host)
                netns.run_in(netns_path, lambda: _configure_inside(ep, cfg.internal))
            except BaseException:
                with Netlink() as nl:
                    nl.delete(host)
                self.db.delete_endpoint(endpoint_id)
                self.ipam.release_address(sub, addr)
                raise
            return info

    def disconnect(self, network_id: str, endpoint_id: str) -> None:
        """Remove the endpoint's interface, its published ports and its address. Idempotent."""
        with self.lock:
            try:
                ep, ports = self.db.endpoint(endpoint_id)
            except NotFound:
                return
            if ep.network_id != network_id:
                raise InvalidArgument(f"endpoint {endpoint_id} is not on network {network_id}")
            cfg = self.db.network(network_id)
            self.db.delete_endpoint(endpoint_id)
            if ports:
                self._apply()
            with Netlink() as nl:
                nl.delete(veth_name(endpoint_id))  # the peer inside the netns goes with it
            self.ipam.release_address(cfg.ipv4, ep.info.ip)

    # --- published ports -------------------------------------------------------------------
    def publish(self, endpoint_id: str, ports: tuple[PortMapping, ...]
                ) -> tuple[PortMapping, ...]:
        """Set the endpoint's published ports (replacing earlier ones); Conflict if taken.

        Returns them with every host_port 0 replaced by the ephemeral port chosen.
        """
        with self.lock:
            _, old = self.db.endpoint(endpoint_id)
            taken = [q for other, theirs in self.db.endpoints()
                     if other.endpoint_id != endpoint_id for q in theirs]
            ports = assign_ephemeral(ports, taken)
            for i, p in enumerate(ports):
                for q in (*taken, *ports[:i]):
                    if _clash(p, q):
                        where = p.host_ip if p.host_ip is not None else "0.0.0.0"
                        raise Conflict(f"Bind for {where}:{p.host_port} failed: "
                                       "port is already allocated")
            self.db.set_ports(endpoint_id, ports)
            try:
                self._apply()
            except BaseException:
                self.db.set_ports(endpoint_id, old)
                raise
            return ports

    def unpublish(self, endpoint_id: str) -> None:
        with self.lock:
            self.db.set_ports(endpoint_id, ())
            self._apply()

    # --- restart ---------------------------------------------------------------------------
    def restore(self) -> None:
        """Re-program bridges and the firewall from the stored state; drop endpoints whose
        namespace is gone (their container died while the daemon was down). Idempotent."""
        with self.lock:
            with Netlink() as nl:
                for cfg in self.db.networks():
                    self._program_bridge(nl, cfg)
                for ep, _ in self.db.endpoints():
                    if netns.is_netns(ep.netns_path) and nl.index(veth_name(ep.endpoint_id)):
                        continue
                    self.db.delete_endpoint(ep.endpoint_id)
                    nl.delete(veth_name(ep.endpoint_id))
                    self.ipam.release_address(self.db.network(ep.network_id).ipv4, ep.info.ip)
            self._apply()

    def endpoints(self, network_id: str) -> list[Endpoint]:
        return [ep for ep, _ in self.db.endpoints(network_id)]

    def _apply(self) -> None:
        networks = self.db.networks()
        bridges = {n.id: n.bridge for n in networks}
        published = [PublishedEndpoint(ep.endpoint_id, bridges[ep.network_id], ep.info.ip, ports)
                     for ep, ports in self.db.endpoints() if ports]
        self.firewall.apply(networks, published)


def _clash(a: PortMapping, b: PortMapping) -> bool:
    return (a.proto == b.proto and a.host_port == b.host_port
            and (a.host_ip is None or b.host_ip is None or a.host_ip == b.host_ip))


def _configure_inside(ep: Endpoint, internal: bool) -> None:
    """Runs inside the endpoint's netns: address, MAC, up, loopback up, default route."""
    with Netlink() as nl:
        nl.set_mac(ep.ifname, ep.info.mac)
        nl.add_address(ep.ifname, f"{ep.info.ip}/{ep.info.prefix}")
        nl.set_up(ep.ifname)
        nl.set_up("lo")
        if not internal:  # an internal network has no way out, not even a route
            nl.add_default_route(str(ep.info.gateway))

