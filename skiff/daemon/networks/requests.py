"""The API's network requests as checked values: network create, NetworkMode,
NetworkingConfig / EndpointConfig, connect and disconnect bodies, and published ports.

Pure functions: every malformed field is an InvalidArgument naming the field and what is
wrong, so the router answers 400 and nothing is allocated.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from skiff.core.network import IPAddress, IPNetwork, PortMapping
from skiff.errors import InvalidArgument

PREDEFINED = ("bridge", "host", "none")
DEFAULT_NETWORK = "bridge"


def _obj(value: object, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"invalid {what}: must be an object")
    return value


def _str_map(value: object, what: str) -> dict[str, str]:
    m = _obj(value, what)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in m.items()):
        raise InvalidArgument(f"invalid {what}: must be an object of strings")
    return dict(m)


def _str_list(value: object, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"invalid {what}: must be a list of strings")
    return tuple(value)


def _network(text: object, what: str) -> IPNetwork:
    if not isinstance(text, str):
        raise InvalidArgument(f"invalid {what}: must be a string")
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise InvalidArgument(f"invalid {what} {text!r}: {exc}") from exc


def _address(text: object, what: str) -> IPAddress:
    if not isinstance(text, str):
        raise InvalidArgument(f"invalid {what}: must be a string")
    try:
        return ipaddress.ip_address(text)
    except ValueError as exc:
        raise InvalidArgument(f"invalid {what} {text!r}: not an IP address") from exc


@dataclass(frozen=True)
class NetworkCreate:
    """``POST /networks/create``."""

    name: str
    driver: str = "bridge"
    internal: bool = False
    attachable: bool = False
    enable_ipv6: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    subnet: IPNetwork | None = None
    gateway: IPAddress | None = None
    ip_range: IPNetwork | None = None
    ipam_options: dict[str, str] = field(default_factory=dict)


def _flag(body: Mapping[str, Any], key: str) -> bool:
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidArgument(f"invalid {key}: must be true or false")
    return value


def parse_network_create(body: Mapping[str, Any]) -> NetworkCreate:
    name = body.get("Name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidArgument("network create: Name is required")
    if "/" in name or any(ch.isspace() for ch in name):
        raise InvalidArgument(f"network create: invalid network name {name!r}")
    driver = body.get("Driver") or "bridge"
    if driver != "bridge":
        raise InvalidArgument(f"network create: driver {driver!r} is not supported (bridge "
                              "only)")
    ipam = _obj(body.get("IPAM"), "IPAM")
    ipam_driver = ipam.get("Driver") or "default"
    if ipam_driver != "default":
        raise InvalidArgument(f"network create: IPAM driver {ipam_driver!r} is not supported")
    configs = ipam.get("Config") or []
    if not isinstance(configs, list) or not all(isinstance(c, Mapping) for c in configs):
        raise InvalidArgument("invalid IPAM.Config: must be a list of objects")
    subnet = gateway = ip_range = None
    for cfg in configs:
        sub = cfg.get("Subnet")
        if not sub:
            if cfg.get("Gateway") or cfg.get("IPRange"):
                raise InvalidArgument("network create: IPAM.Config gives a Gateway or IPRange "
                                      "without a Subnet")
            continue
        net = _network(sub, "IPAM.Config.Subnet")
        if net.version == 6:
            continue  # IPv6 is designed for in the records, not programmed yet
        if subnet is not None:
            raise InvalidArgument("network create: only one IPv4 subnet is supported")
        subnet = net
        if cfg.get("Gateway"):
            gateway = _address(cfg.get("Gateway"), "IPAM.Config.Gateway")
        if cfg.get("IPRange"):
            ip_range = _network(cfg.get("IPRange"), "IPAM.Config.IPRange")
    return NetworkCreate(
        name=name, driver=driver, internal=_flag(body, "Internal"),
        attachable=_flag(body, "Attachable"), enable_ipv6=_flag(body, "EnableIPv6"),
        labels=_str_map(body.get("Labels"), "Labels"),
        options=_str_map(body.get("Options"), "Options"), subnet=subnet, gateway=gateway,
        ip_range=ip_range, ipam_options=_str_map(ipam.get("Options"), "IPAM.Options"))


@dataclass(frozen=True)
class EndpointRequest:
    """A container's wish for one network (EndpointSettings of NetworkingConfig/connect)."""

    ipv4: IPAddress | None = None
    aliases: tuple[str, ...] = ()
    links: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"ipv4": str(self.ipv4) if self.ipv4 else None, "aliases": list(self.aliases),
                "links": list(self.links)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> EndpointRequest:
        ip = d.get("ipv4")
        return cls(ipaddress.ip_address(ip) if ip else None, tuple(d.get("aliases") or ()),
                   tuple(d.get("links") or ()))


def parse_endpoint(value: object, what: str) -> EndpointRequest:
    settings = _obj(value, what)
    ipam = _obj(settings.get("IPAMConfig"), f"{what}.IPAMConfig")
    ip = ipam.get("IPv4Address")
    ipv4 = _address(ip, f"{what}.IPAMConfig.IPv4Address") if ip else None
    if ipv4 is not None and ipv4.version != 4:
        raise InvalidArgument(f"invalid {what}.IPAMConfig.IPv4Address {ip!r}: not IPv4")
    aliases = _str_list(settings.get("Aliases"), f"{what}.Aliases")
    links = _str_list(settings.get("Links"), f"{what}.Links")
    return EndpointRequest(ipv4, tuple(a for a in aliases if a), links)


def network_mode(host_config: Mapping[str, Any]) -> str:
    """HostConfig.NetworkMode with Docker's defaults folded: "" and "default" are "bridge"."""
    mode = host_config.get("NetworkMode") or "default"
    if not isinstance(mode, str):
        raise InvalidArgument("invalid NetworkMode: must be a string")
    return DEFAULT_NETWORK if mode == "default" else mode


def endpoints_config(body: Mapping[str, Any]) -> dict[str, EndpointRequest]:
    """NetworkingConfig.EndpointsConfig as {network name or id: request}."""
    cfg = _obj(body.get("NetworkingConfig"), "NetworkingConfig")
    eps = _obj(cfg.get("EndpointsConfig"), "NetworkingConfig.EndpointsConfig")
    return {str(name): parse_endpoint(v, f"EndpointsConfig[{name}]") for name, v in eps.items()}


def parse_connect(body: Mapping[str, Any]) -> tuple[str, EndpointRequest]:
    container = body.get("Container")
    if not isinstance(container, str) or not container:
        raise InvalidArgument("network connect: Container is required")
    return container, parse_endpoint(body.get("EndpointConfig"), "EndpointConfig")


def parse_disconnect(body: Mapping[str, Any]) -> tuple[str, bool]:
    container = body.get("Container")
    if not isinstance(container, str) or not container:
        raise InvalidArgument("network disconnect: Container is required")
    force = body.get("Force", False)
    if not isinstance(force, bool):
        raise InvalidArgument("invalid Force: must be true or false")
    return container, force


# --- published ports -------------------------------------------------------------------------
def _port_key(key: str) -> tuple[int, str]:
    port, _, proto = key.partition("/")
    proto = proto or "tcp"
    try:
        num = int(port)
    except ValueError as exc:
        raise InvalidArgument(f"invalid port {key!r}: want PORT[/PROTO]") from exc
    if not 1 <= num <= 65535 or proto not in ("tcp", "udp", "sctp"):
        raise InvalidArgument(f"invalid port {key!r}")
    return num, proto


def _host_port(text: object, key: str) -> int:
    if text in (None, ""):
        return 0
    if not isinstance(text, str):
        raise InvalidArgument(f"invalid HostPort for {key}: must be a string")
    first = text.split("-", 1)[0]  # a range means "one of these": we take its first port
    try:
        num = int(first)
    except ValueError as exc:
        raise InvalidArgument(f"invalid HostPort {text!r} for {key}") from exc
    if not 0 <= num <= 65535:
        raise InvalidArgument(f"invalid HostPort {text!r} for {key}")
    return num


def exposed_ports(config: Mapping[str, Any]) -> list[tuple[int, str]]:
    """Config.ExposedPorts as (port, proto), sorted."""
    exposed = _obj(config.get("ExposedPorts"), "ExposedPorts")
    return sorted({_port_key(k) for k in exposed})


def port_bindings(config: Mapping[str, Any], host_config: Mapping[str, Any]
                  ) -> tuple[PortMapping, ...]:
    """HostConfig.PortBindings, plus every exposed port with PublishAllPorts (host port 0:
    the driver picks an ephemeral one)."""
    bindings = _obj(host_config.get("PortBindings"), "PortBindings")
    out: list[PortMapping] = []
    bound: set[tuple[int, str]] = set()
    for key in sorted(bindings):
        port, proto = _port_key(key)
        bound.add((port, proto))
        entries = bindings[key] or [{}]
        if not isinstance(entries, list):
            raise InvalidArgument(f"invalid PortBindings[{key}]: must be a list")
        for b in entries:
            b = _obj(b, f"PortBindings[{key}]")
            host_ip: IPAddress | None = None
            ip_text = b.get("HostIp") or ""
            if ip_text:
                host_ip = _address(ip_text, f"HostIp of {key}")
                if host_ip.is_unspecified:
                    host_ip = None
                if host_ip is not None and host_ip.version == 6:
                    continue  # IPv6 publishing is not programmed yet
                if host_ip is None and ip_text == "::":
                    continue
            out.append(PortMapping(port, _host_port(b.get("HostPort"), key), proto, host_ip))
    if host_config.get("PublishAllPorts"):
        for port, proto in exposed_ports(config):
            if (port, proto) not in bound:
                out.append(PortMapping(port, 0, proto))
    return tuple(out)


def parse_extra_hosts(values: object) -> list[tuple[str, str]]:
    """HostConfig.ExtraHosts "name:ip" (Docker also accepts "name=ip") as (name, ip)."""
    out = []
    for item in _str_list(values, "ExtraHosts"):
        sep = "=" if "=" in item else ":"
        name, _, ip = item.partition(sep)
        ip = ip.strip("[]")
        if not name or not ip:
            raise InvalidArgument(f"invalid ExtraHosts entry {item!r}: want NAME:IP")
        if ip != "host-gateway":
            _address(ip, f"ExtraHosts entry {item!r}")
        out.append((name, ip))
    return out


def parse_links(values: object) -> list[tuple[str, str]]:
    """HostConfig.Links "name:alias" (or "/name:/ctr/alias") as (container, alias)."""
    out = []
    for item in _str_list(values, "Links"):
        name, _, alias = item.partition(":")
        name = name.lstrip("/")
        alias = alias.rsplit("/", 1)[-1] if alias else name
        if not name:
            raise InvalidArgument(f"invalid link {item!r}: want NAME[:ALIAS]")
        out.append((name, alias))
    return out
