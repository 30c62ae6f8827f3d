"""The daemon's network manager: networks as the API sees them, and container sandboxes.

The container lifecycle calls it at four points (see docs/network.md, "The daemon side"):

- ``register(c, networking_config)`` at create: check NetworkMode/NetworkingConfig and
  record which networks the container asked for. Nothing is allocated.
- ``setup(c) -> Sandbox`` before the runtime's ``create``: the netns file under
  ``<exec-root>/netns/<id>``, one endpoint per network (``eth0``, ``eth1``, ...), published
  ports, the embedded DNS server (user networks), the /etc files. Undone on failure.
- ``release(c)`` when the container's runtime side goes away (exit, failed start, remove):
  DNS server, endpoints, addresses, ports and the netns file. Idempotent.
- ``forget(c)`` when the container is removed: its records too.

``start()`` (daemon start) makes the predefined networks, re-programs the kernel from the
stored state (``BridgeDriver.restore``) and restarts the DNS servers of sandboxes that are still
there; ``shutdown()`` stops the DNS servers and, when no endpoint is left, takes the bridges and
the nftables table down (``start`` re-creates them), so a stopped daemon leaves nothing behind.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from skiff.core.network import OPT_BRIDGE_NAME, Endpoint, NetworkConfig, Subnet
from skiff.daemon.containers.record import RUNNING, Container
from skiff.daemon.networks import etcfiles, shapes
from skiff.daemon.networks.dnsd import DNSServers, make_lookup
from skiff.daemon.networks.filters import list_match, prune_match
from skiff.daemon.networks.options import NetworkOptions
from skiff.daemon.networks.requests import (
    DEFAULT_NETWORK,
    PREDEFINED,
    EndpointRequest,
    NetworkCreate,
    endpoints_config,
    network_mode,
    parse_extra_hosts,
    parse_links,
    port_bindings,
)
from skiff.daemon.networks.state import NetState, NetworkMeta
from skiff.daemon.networks.views import ContainerViews
from skiff.errors import (
    Conflict,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    SkiffError,
)
from skiff.linux import netns
from skiff.linux.netlink import Netlink
from skiff.plugins.network.bridge import BridgeDriver, plan_network
from skiff.plugins.network.ipam import LocalIPAM
from skiff.plugins.network.nftables import NftablesFirewall
from skiff.plugins.network.store import NetworkDB
from skiff.services.spec import EtcFiles

log = logging.getLogger("skiffd.networks")

# publish(type, action, actor_id, attributes), callable from any thread
Publish = Callable[[str, str, str, Mapping[str, str]], None]


class Containers:
    """What the manager needs of the container store (ContainerStore has exactly this)."""

    def __init__(self, find: Callable[[str], Container], every: Callable[[], list[Container]]
                 ) -> None:
        self.find = find
        self.all = every


@dataclass(frozen=True)
class Sandbox:
    """What the spec needs: our netns file, or the namespace to join, and the /etc files."""

    netns_path: str | None = None
    namespace_paths: Mapping[str, str] = field(default_factory=dict)
    etc_files: EtcFiles = field(default_factory=EtcFiles)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _routed() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    with Netlink() as nl:
        return nl.routed_networks()


def _str_list(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


class NetworkManager:
    def __init__(self, opts: NetworkOptions, containers: Containers, publish: Publish) -> None:
        self.opts = opts
        self.containers = containers
        self.publish = publish
        path = os.path.join(opts.data_root, "network.db")
        self.db = NetworkDB(path)
        self.state = NetState(path)
        self.ipam = LocalIPAM(self.db, _routed)
        self.firewall = NftablesFirewall(opts.table_name, opts.firewall_filter)
        self.driver = BridgeDriver(self.db, self.ipam, self.firewall)
        self.dns = DNSServers()
        self.views = ContainerViews(self.state, self.db, self.find, opts.data_root)
        self.lock = threading.RLock()  # sandbox and network changes, one at a time

    def close(self) -> None:
        self.state.close()
        self.db.close()

    def netns_path(self, cid: str) -> str:
        return os.path.join(self.opts.exec_root, "netns", cid)

    # --- daemon start / stop ---------------------------------------------------------------
    def start(self) -> None:
        """Predefined networks, kernel state re-programmed, DNS servers of live sandboxes."""
        with self.lock:
            names = {m.name for m in self.state.networks()}
            for name, driver in (("bridge", "bridge"), ("host", "host"), ("none", "null")):
                if name not in names:
                    self.state.add_network(NetworkMeta(secrets.token_hex(32), name, driver,
                                                       _now()))
            try:
                if self.db.networks():
                    self.driver.restore()
                else:  # nothing of ours should be in the kernel: a stale table of a kill
                    self.firewall.remove()
            except SkiffError as exc:
                # the daemon still serves (host/none containers, images); bridged containers
                # fail at start with this same error until it is fixed (e.g. nft installed)
                log.error("restore networking: %s", exc)
            live = {ep.endpoint_id for ep, _ in self.db.endpoints()}
            for att in self.state.attachments():
                if att.endpoint_id and att.endpoint_id not in live:
                    self.state.set_endpoint(att.container_id, att.network_id, None)
            for cid, path in self.state.sandboxes():
                if not netns.is_netns(path):
                    self.state.drop_sandbox(cid)
                    continue
                try:
                    self._start_dns(self.containers.find(cid))
                except (SkiffError, OSError) as exc:
                    log.error("restart embedded DNS of container %s: %s", cid, exc)

    # The default bridge is made in the kernel (device, address pool, rules) by the first
    # container that uses it and kept while the daemon runs (taking it down with every last
    # container cost ~70 ms of each `run --rm`); a clean shutdown with no endpoint left
    # removes it, and a daemon that starts without bridged containers does not make it.
    def _default_id(self) -> str:
        return self.find(DEFAULT_NETWORK).id

    def _ensure_default(self) -> None:
        """Make the default bridge (lock held): --bip's subnet, else a free default pool
        chosen now, when the host's routes show what other daemons took."""
        nid = self._default_id()
        if self._config(nid) is not None:
            return
        subnet, gateway = self.opts.default_subnet()
        cfg = plan_network(self.ipam, nid, DEFAULT_NETWORK, subnet=subnet, gateway=gateway,
                           options={OPT_BRIDGE_NAME: self.opts.bridge_name})
        try:
            self.driver.create_network(cfg)
        except BaseException:
            for sub in cfg.subnets:
                self.ipam.release_pool(sub.subnet)
            raise

    def _collect_default(self) -> None:
        """Take the default bridge down once its last endpoint is gone (lock held); and the
        table with it when no network is left in the kernel."""
        nid = self._default_id()
        if self._config(nid) is None or self.db.endpoints(nid):
            return
        self.driver.delete_network(nid)
        self._drop_table_if_idle()

    def _drop_table_if_idle(self) -> None:
        """The driver re-applies an empty table after its last network: remove it instead."""
        if not self.db.networks():
            self.firewall.remove()

    def _make(self, cfg: NetworkConfig, meta: NetworkMeta) -> None:
        """Driver network + record; the pool is released if either fails."""
        try:
            self.driver.create_network(cfg)
        except BaseException:
            for sub in cfg.subnets:
                self.ipam.release_pool(sub.subnet)
            raise
        try:
            self.state.add_network(meta)
        except BaseException:
            self.driver.delete_network(cfg.id)
            raise

    def shutdown(self) -> None:
        """Stop serving DNS; with no endpoint left, remove bridges and the nftables table."""
        self.dns.stop_all()
        with self.lock:
            networks = self.db.networks()
            if self.db.endpoints() or not networks:
                return  # live restore: running containers keep their network
            try:
                with Netlink() as nl:
                    for cfg in networks:
                        nl.delete(cfg.bridge)
                self.firewall.remove()
            except SkiffError as exc:
                log.error("take the bridges down at shutdown: %s", exc)

    # --- networks ----------------------------------------------------------------------------
    def find(self, ref: str) -> NetworkMeta:
        """A network by full id, name, or unique id prefix (Docker's order)."""
        every = self.state.networks()
        for m in every:
            if m.id == ref:
                return m
        for m in every:
            if m.name == ref:
                return m
        found = [m for m in every if ref and m.id.startswith(ref)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise InvalidArgument(f"network {ref} is ambiguous ({len(found)} matches found "
                                  "based on ID prefix)")
        raise NotFound(f"network {ref} not found")

    def create(self, req: NetworkCreate) -> str:
        with self.lock:
            if any(m.name == req.name for m in self.state.networks()):
                raise Conflict(f"network with name {req.name} already exists")
            nid = secrets.token_hex(32)
            cfg = plan_network(self.ipam, nid, req.name, subnet=req.subnet,
                               gateway=req.gateway, ip_range=req.ip_range,
                               internal=req.internal, labels=req.labels, options=req.options)
            meta = NetworkMeta(nid, req.name, req.driver, _now(), internal=req.internal,
                               attachable=req.attachable, enable_ipv6=req.enable_ipv6,
                               labels=tuple(sorted(req.labels.items())),
                               options=tuple(sorted(req.options.items())),
                               ipam_options=tuple(sorted(req.ipam_options.items())),
                               ip_range=str(req.ip_range or ""))
            self._make(cfg, meta)
        self.publish("network", "create", nid, {"name": req.name, "type": req.driver})
        return nid

    def remove(self, ref: str) -> None:
        with self.lock:
            meta = self.find(ref)
            if meta.name in PREDEFINED:
                raise PermissionDenied(f"{meta.name} is a pre-defined network and cannot be "
                                       "removed")
            if self.db.endpoints(meta.id):
                raise Conflict(f"error while removing network: network {meta.name} id "
                               f"{meta.id} has active endpoints")
            self.driver.delete_network(meta.id)
            self.state.remove_network(meta.id)
            self._drop_table_if_idle()
        self.publish("network", "destroy", meta.id, {"name": meta.name, "type": meta.driver})

    def _unused(self, meta: NetworkMeta) -> bool:
        """``dangling``: a user network no container is attached to."""
        return meta.name not in PREDEFINED and not self.state.attachments(network_id=meta.id)

    def _config(self, nid: str) -> NetworkConfig | None:
        try:
            return self.db.network(nid)
        except NotFound:
            return None

    def _members(self, nid: str) -> list[shapes.Member]:
        owners = {a.endpoint_id: a.container_id for a in self.state.attachments(network_id=nid)
                  if a.endpoint_id}
        out = []
        for ep, _ in self.db.endpoints(nid):
            cid = owners.get(ep.endpoint_id)
            if cid is None:
                continue
            try:
                name = self.containers.find(cid).name
            except NotFound:
                name = ""
            out.append(shapes.Member(cid, name, ep.endpoint_id, ep.info))
        return out

    def _shown_config(self, meta: NetworkMeta) -> NetworkConfig | None:
        """The driver's config; for an idle default bridge, what it will be (with --bip)."""
        cfg = self._config(meta.id)
        if cfg is None and meta.name == DEFAULT_NETWORK:
            subnet, gateway = self.opts.default_subnet()
            if subnet is not None and gateway is not None:
                cfg = NetworkConfig(meta.id, meta.name, self.opts.bridge_name,
                                    (Subnet(subnet, gateway),))
        return cfg

    def inspect(self, ref: str) -> dict[str, Any]:
        meta = self.find(ref)
        return shapes.network_json(meta, self._shown_config(meta), self._members(meta.id),
                                   default_bridge=meta.name == DEFAULT_NETWORK)

    def list_networks(self, filters: Mapping[str, Sequence[str]]) -> list[dict[str, Any]]:
        out = []
        for meta in self.state.networks():
            if not list_match(meta, filters, self._unused):
                continue
            out.append(shapes.network_json(meta, self._shown_config(meta), (),
                                           default_bridge=meta.name == DEFAULT_NETWORK))
        return out

    def prune(self, filters: Mapping[str, Sequence[str]]) -> list[str]:
        """Remove every user network without endpoints that the filters select."""
        removed = []
        for meta in self.state.networks():
            if meta.name in PREDEFINED:
                continue
            if not prune_match(meta, filters) or self.db.endpoints(meta.id):
                continue
            try:
                self.remove(meta.id)
            except (Conflict, NotFound):
                continue  # used or removed meanwhile
            removed.append(meta.name)
        self.publish("network", "prune", "", {})
        return removed

    # --- create: check and record ----------------------------------------------------------
    def register(self, c: Container, networking_config: object) -> None:
        """At container create: check the mode and the endpoint requests, record them."""
        body = {"NetworkingConfig": networking_config}
        wanted = endpoints_config(body)
        mode = network_mode(c.host_config)
        port_bindings(c.config, c.host_config)  # a bad -p is refused now
        parse_extra_hosts(c.host_config.get("ExtraHosts"))
        parse_links(c.host_config.get("Links"))
        if mode in ("host", "none") or mode.startswith("container:"):
            if mode.startswith("container:"):
                ref = mode.split(":", 1)[1]
                try:
                    self.containers.find(ref)
                except NotFound as exc:  # 400, not 404 (see _find_at_create)
                    raise InvalidArgument(f"network mode {mode}: {exc.message}") from exc
            extra = [n for n in wanted if n != mode]
            if extra:
                raise InvalidArgument(f"container sharing network namespace with another "
                                      f"container or host cannot be connected to any other "
                                      f"network ({', '.join(extra)})")
            return
        with self.lock:
            primary = self._find_at_create(mode)
            # the docker CLI names the primary network as it was given ("default" too)
            raw = str(c.host_config.get("NetworkMode") or "default")
            request = EndpointRequest()
            for key in dict.fromkeys((raw, mode, primary.id, primary.name)):
                request = wanted.pop(key, request)
            plan = [(primary, request)] + [(self._find_at_create(ref), r)
                                           for ref, r in wanted.items()]
            for meta, req in plan:
                self._check_request(meta, req)
            for meta, req in plan:
                self.state.attach(c.id, meta.id, req)

    def _find_at_create(self, ref: str) -> NetworkMeta:
        """find(), but a missing network is a 400: the docker CLI takes any 404 from
        container create for a missing image and tries to pull it from a registry."""
        try:
            return self.find(ref)
        except NotFound as exc:
            raise InvalidArgument(exc.message) from exc

    def _check_request(self, meta: NetworkMeta, req: EndpointRequest) -> None:
        if meta.name in ("host", "none"):
            raise InvalidArgument("container cannot be disconnected from host network or "
                                  "connected to host network")
        if meta.name == DEFAULT_NETWORK:
            if req.ipv4 is not None:
                raise InvalidArgument("user specified IP address is supported on user "
                                      "defined networks only")
            if req.aliases:
                raise InvalidArgument("network-scoped alias is supported only for containers "
                                      "in user defined networks")
        elif req.ipv4 is not None:
            cfg = self._config(meta.id)
            if cfg is not None and req.ipv4 not in cfg.ipv4.subnet:
                raise InvalidArgument(f"address {req.ipv4} is not in subnet "
                                      f"{cfg.ipv4.subnet} of network {meta.name}")

    # --- the sandbox -------------------------------------------------------------------------
    def setup(self, c: Container) -> Sandbox:
        """Network namespace, endpoints, ports, DNS and /etc files, before runtime create."""
        mode = network_mode(c.host_config)
        if mode == "host":
            return Sandbox(etc_files=self._write_etc(c, host_netns=True))
        if mode == "none":
            return Sandbox(etc_files=self._write_etc(c))
        if mode.startswith("container:"):
            return self._join(c, mode.split(":", 1)[1])
        with self.lock:
            path = self.netns_path(c.id)
            if self.state.sandbox(c.id) is not None or netns.is_netns(path):
                self.release(c)  # left over by a start that did not finish
            netns.create(path)
            self.state.put_sandbox(c.id, path, secrets.token_hex(32))
            try:
                used: list[str] = []
                for att in self.state.attachments(container_id=c.id):
                    used.append(self._connect(c, att.network_id, att.request, used))
                    self._event("connect", att.network_id, c.id)
                self._publish_ports(c)
                self._start_dns(c)
                etc = self._write_etc(c)
            except BaseException:
                self.release(c)
                raise
            return Sandbox(netns_path=path, etc_files=etc)

    def _join(self, c: Container, ref: str) -> Sandbox:
        other = self.containers.find(ref)
        if other.status != RUNNING or not other.pid:
            raise Conflict(f"cannot join network namespace of a non running container: "
                           f"{other.name}")
        sandbox = self.state.sandbox(other.id)
        path = sandbox[0] if sandbox else f"/proc/{other.pid}/ns/net"
        theirs = os.path.join(self.opts.data_root, "containers", other.id)
        files = EtcFiles(*(os.path.join(theirs, n) for n in ("resolv.conf", "hostname",
                                                             "hosts")))
        if not all(os.path.exists(p) for p in (files.resolv_conf, files.hostname, files.hosts)
                   if p):
            files = self._write_etc(c)
        return Sandbox(namespace_paths={"network": path}, etc_files=files)

    def _connect(self, c: Container, network_id: str, req: EndpointRequest,
                 used: Sequence[str]) -> str:
        """One endpoint into ``c``'s netns as the first free ethN; returns that name."""
        n = 0
        while f"eth{n}" in used:
            n += 1
        ifname = f"eth{n}"
        eid = secrets.token_hex(32)
        if network_id == self._default_id():
            self._ensure_default()
        self.driver.connect(network_id, eid, self.netns_path(c.id), ifname, ip=req.ipv4,
                            aliases=req.aliases)
        try:
            self.state.set_endpoint(c.id, network_id, eid)
        except BaseException:
            self.driver.disconnect(network_id, eid)
            raise
        return ifname

    def _publish_ports(self, c: Container) -> None:
        """-p/-P on the first endpoint of a network that can publish (not internal)."""
        ports = port_bindings(c.config, c.host_config)
        if not ports:
            return
        for att in self.state.attachments(container_id=c.id):
            meta = self.find(att.network_id)
            if att.endpoint_id and not meta.internal:
                self.driver.publish(att.endpoint_id, ports)
                return

    def _user_networks(self, c: Container) -> list[NetworkMeta]:
        out = []
        for att in self.state.attachments(container_id=c.id):
            if not att.endpoint_id:
                continue
            try:
                meta = self.find(att.network_id)
            except NotFound:
                continue
            if meta.name != DEFAULT_NETWORK:
                out.append(meta)
        return out

    def _start_dns(self, c: Container) -> None:
        nets = self._user_networks(c)
        sandbox = self.state.sandbox(c.id)
        if not nets or sandbox is None:
            return
        ids = [m.id for m in nets]
        self.dns.start(c.id, sandbox[0], make_lookup(lambda: self.dns_names(ids)),
                       _str_list(c.host_config.get("Dns")),
                       forward=not all(m.internal for m in nets))

    def dns_names(self, network_ids: Sequence[str]) -> dict[str, list[str]]:
        """name -> addresses of every container with an endpoint on these networks: its
        name, short id and aliases (what Docker's embedded DNS answers)."""
        out: dict[str, list[str]] = {}
        for nid in network_ids:
            for att in self.state.attachments(network_id=nid):
                if not att.endpoint_id:
                    continue
                try:
                    ep, _ = self.db.endpoint(att.endpoint_id)
                    c = self.containers.find(att.container_id)
                except NotFound:
                    continue
                for name in (c.name, c.id[:12], *att.request.aliases):
                    addrs = out.setdefault(name.lower(), [])
                    if str(ep.info.ip) not in addrs:
                        addrs.append(str(ep.info.ip))
        return out

    def release(self, c: Container) -> None:
        """Everything ``setup`` made for ``c``, in reverse. Idempotent."""
        self._release(c.id)

    def _release(self, cid: str) -> None:
        """Each step is tried even if an earlier one failed, and failures are logged, not
        raised: this runs on cleanup paths (exit, a failed start) where the caller's own
        error must stay the one reported; what is left is retried at the next release
        (at the latest when the container is removed)."""
        with self.lock:
            self.dns.stop(cid)
            for att in self.state.attachments(container_id=cid):
                if not att.endpoint_id:
                    continue
                try:
                    self.driver.disconnect(att.network_id, att.endpoint_id)
                    self.state.set_endpoint(cid, att.network_id, None)
                except SkiffError as exc:
                    log.error("disconnect container %s from network %s: %s", cid,
                              att.network_id, exc)
                    continue
                self._event("disconnect", att.network_id, cid)
            try:
                netns.remove(self.netns_path(cid))
                self.state.drop_sandbox(cid)
            except SkiffError as exc:
                log.error("release the network namespace of container %s: %s", cid, exc)

    def _event(self, action: str, network_id: str, cid: str) -> None:
        """A network connect/disconnect event, as Docker sends at start and exit too."""
        try:
            meta = self.find(network_id)
        except NotFound:
            return
        self.publish("network", action, meta.id,
                     {"container": cid, "name": meta.name, "type": meta.driver})

    def forget(self, cid: str) -> None:
        """At container removal: release what is left and drop its records."""
        with self.lock:
            try:
                self._release(cid)
            finally:
                self.state.forget_container(cid)

    # --- connect / disconnect -----------------------------------------------------------------
    def connect(self, network_ref: str, container_ref: str, req: EndpointRequest) -> None:
        c = self.containers.find(container_ref)
        mode = network_mode(c.host_config)
        with self.lock:
            meta = self.find(network_ref)
            if mode in ("host", "none") or mode.startswith("container:"):
                raise InvalidArgument("container sharing network namespace with another "
                                      "container or host cannot be connected to any other "
                                      "network")
            self._check_request(meta, req)
            if any(a.network_id == meta.id for a in self.state.attachments(container_id=c.id)):
                raise Conflict(f"endpoint with name {c.name} already exists in network "
                               f"{meta.name}")
            self.state.attach(c.id, meta.id, req)
            if self.state.sandbox(c.id) is not None:
                try:
                    used = [ep.ifname for ep in self._endpoints(c)]
                    self._connect(c, meta.id, req, used)
                    self._start_dns(c)
                    self._write_etc(c)
                except BaseException:
                    self._drop(c, meta.id)
                    self._collect_default()
                    raise
        self._event("connect", meta.id, c.id)

    def _endpoints(self, c: Container) -> list[Endpoint]:
        out = []
        for att in self.state.attachments(container_id=c.id):
            if att.endpoint_id:
                try:
                    out.append(self.db.endpoint(att.endpoint_id)[0])
                except NotFound:
                    continue
        return out

    def _drop(self, c: Container, network_id: str) -> None:
        for att in self.state.attachments(container_id=c.id, network_id=network_id):
            if att.endpoint_id:
                self.driver.disconnect(network_id, att.endpoint_id)
        self.state.detach(c.id, network_id)

    def disconnect(self, network_ref: str, container_ref: str, force: bool = False) -> None:
        with self.lock:
            meta = self.find(network_ref)
            try:
                c: Container | None = self.containers.find(container_ref)
            except NotFound:
                if not force:
                    raise
                c = None
            if c is None:  # force: the endpoint of a container that is gone
                for att in self.state.attachments(network_id=meta.id):
                    if att.container_id.startswith(container_ref):
                        self.forget(att.container_id)
                return
            if meta.name in ("host", "none"):
                raise InvalidArgument("container cannot be disconnected from host network or "
                                      "connected to host network")
            if not self.state.attachments(container_id=c.id, network_id=meta.id):
                raise Conflict(f"container {c.id} is not connected to network {meta.name}")
            self._drop(c, meta.id)
            self._collect_default()
            if self.state.sandbox(c.id) is not None:
                if not self._user_networks(c):
                    self.dns.stop(c.id)
                self._write_etc(c)
        self._event("disconnect", meta.id, c.id)

    # --- /etc files ----------------------------------------------------------------------------
    def _write_etc(self, c: Container, host_netns: bool = False) -> EtcFiles:
        hc = c.host_config
        hostname, domain = etcfiles.hostname_of(c.config, c.id)
        host = etcfiles.read_host_resolv()
        endpoints = self._endpoints(c)
        embedded = bool(self._user_networks(c))
        if host_netns:
            # the host's resolvers as they are: loopback ones work in the host's namespace
            resolv = etcfiles.render_resolv_conf(
                host, embedded=False, dns=_str_list(hc.get("Dns")) or host.nameservers,
                search=_str_list(hc.get("DnsSearch")), options=_str_list(hc.get("DnsOptions")))
        else:
            resolv = etcfiles.render_resolv_conf(
                host, embedded=embedded, dns=_str_list(hc.get("Dns")),
                search=_str_list(hc.get("DnsSearch")), options=_str_list(hc.get("DnsOptions")))
        names = [f"{hostname}.{domain}", hostname] if domain else [hostname]
        own: list[tuple[str, Sequence[str]]] = [(str(ep.info.ip), names) for ep in endpoints]
        extra: list[tuple[str, str]] = []
        gateway = str(endpoints[0].info.gateway) if endpoints else ""
        for name, ip in parse_extra_hosts(hc.get("ExtraHosts")):
            if ip == "host-gateway":
                ip = gateway or self._default_gateway()
            extra.append((name, ip))
        extra += self._link_entries(c)
        if host_netns:  # the host's own file, as Docker copies it, plus --add-host
            hosts = etcfiles.host_hosts() + "".join(f"{ip}\t{name}\n" for name, ip in extra)
        else:
            hosts = etcfiles.render_hosts(own, extra)
        directory = os.path.join(self.opts.data_root, "containers", c.id)
        return etcfiles.write(directory, hosts=hosts, resolv_conf=resolv, hostname=hostname)

    def _default_gateway(self) -> str:
        try:
            return str(self.db.network(self.find(DEFAULT_NETWORK).id).ipv4.gateway)
        except NotFound:
            return "127.0.0.1"

    def _link_entries(self, c: Container) -> list[tuple[str, str]]:
        """``--link name:alias`` on the default bridge: the linked container's address."""
        out: list[tuple[str, str]] = []
        try:
            bridge = self.find(DEFAULT_NETWORK).id
        except NotFound:
            return out
        for name, alias in parse_links(c.host_config.get("Links")):
            try:
                other = self.containers.find(name)
            except NotFound:
                continue
            for att in self.state.attachments(container_id=other.id, network_id=bridge):
                if not att.endpoint_id:
                    continue
                try:
                    ip = str(self.db.endpoint(att.endpoint_id)[0].info.ip)
                except NotFound:
                    continue
                names = dict.fromkeys((alias, other.id[:12], other.name))
                out.append((" ".join(names), ip))
        return out

    # --- what inspect and ps show (views.py) -----------------------------------------------
    def inspect_extra(self, c: Container) -> dict[str, Any]:
        return self.views.inspect_extra(c)

    def summary_extra(self, c: Container) -> dict[str, Any]:
        return self.views.summary_extra(c)
