"""Docker's JSON shapes for networks (inspect, list) and a container's NetworkSettings/Ports.

Pure: the manager gathers the records, these functions only arrange them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from skiff.core.network import EndpointInfo, NetworkConfig, PortMapping
from skiff.daemon.networks.state import NetworkMeta


@dataclass(frozen=True)
class Member:
    """One container on a network, for ``Containers`` of network inspect."""

    container_id: str
    name: str
    endpoint_id: str
    info: EndpointInfo


def network_json(meta: NetworkMeta, cfg: NetworkConfig | None,
                 members: Sequence[Member] = (), *, default_bridge: bool = False
                 ) -> dict[str, Any]:
    ipam: list[dict[str, str]] = []
    if cfg is not None:
        for sub in cfg.subnets:
            entry = {"Subnet": str(sub.subnet), "Gateway": str(sub.gateway)}
            if sub.ip_range is not None:
                entry["IPRange"] = str(sub.ip_range)
            ipam.append(entry)
    options = dict(meta.options)
    if default_bridge and cfg is not None:
        # what docker's default bridge shows (clients such as compose look at default_bridge)
        options = {"com.docker.network.bridge.default_bridge": "true",
                   "com.docker.network.bridge.enable_icc": "true",
                   "com.docker.network.bridge.enable_ip_masquerade": "true",
                   "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
                   "com.docker.network.bridge.name": cfg.bridge,
                   "com.docker.network.driver.mtu": str(cfg.mtu), **options}
    return {
        "Name": meta.name, "Id": meta.id, "Created": meta.created, "Scope": "local",
        "Driver": meta.driver, "EnableIPv6": meta.enable_ipv6,
        "IPAM": {"Driver": "default", "Options": dict(meta.ipam_options) or None,
                 "Config": ipam},
        "Internal": meta.internal, "Attachable": meta.attachable, "Ingress": False,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
        "Containers": {m.container_id: {
            "Name": m.name, "EndpointID": m.endpoint_id, "MacAddress": m.info.mac,
            "IPv4Address": f"{m.info.ip}/{m.info.prefix}", "IPv6Address": ""}
            for m in members},
        "Options": options, "Labels": dict(meta.labels),
    }


def endpoint_settings(network_id: str, endpoint_id: str, info: EndpointInfo | None,
                      aliases: Sequence[str] = (), ipv4: str | None = None,
                      dns_names: Sequence[str] | None = None) -> dict[str, Any]:
    """One entry of NetworkSettings.Networks (empty addresses while not connected)."""
    return {
        "IPAMConfig": {"IPv4Address": ipv4} if ipv4 else None,
        "Links": None, "Aliases": list(aliases) or None,
        "MacAddress": info.mac if info else "", "NetworkID": network_id,
        "EndpointID": endpoint_id if info else "",
        "Gateway": str(info.gateway) if info else "",
        "IPAddress": str(info.ip) if info else "",
        "IPPrefixLen": info.prefix if info else 0,
        "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
        "DriverOpts": None, "DNSNames": list(dns_names) if dns_names else None,
    }


def ports_json(exposed: Sequence[tuple[int, str]], published: Sequence[PortMapping]
               ) -> dict[str, list[dict[str, str]] | None]:
    """NetworkSettings.Ports: every exposed or published port; null when not published."""
    out: dict[str, list[dict[str, str]] | None] = {f"{p}/{proto}": None for p, proto in exposed}
    for m in published:
        key = f"{m.container_port}/{m.proto}"
        entry = {"HostIp": str(m.host_ip) if m.host_ip is not None else "0.0.0.0",
                 "HostPort": str(m.host_port)}
        current = out.get(key)
        out[key] = [*(current or []), entry]
    return out


def ports_list(exposed: Sequence[tuple[int, str]], published: Sequence[PortMapping]
               ) -> list[dict[str, Any]]:
    """The ``Ports`` of a ``GET /containers/json`` entry (what ps shows in PORTS)."""
    out: list[dict[str, Any]] = []
    done = set()
    for m in published:
        done.add((m.container_port, m.proto))
        out.append({"IP": str(m.host_ip) if m.host_ip is not None else "0.0.0.0",
                    "PrivatePort": m.container_port, "PublicPort": m.host_port,
                    "Type": m.proto})
    out += [{"PrivatePort": p, "Type": proto} for p, proto in exposed if (p, proto) not in done]
    return out


def settings_json(networks: Mapping[str, dict[str, Any]], ports: Mapping[str, Any],
                  sandbox_key: str, sandbox_id: str) -> dict[str, Any]:
    """NetworkSettings, with the top-level (deprecated, still read) fields of ``bridge``."""
    bridge = networks.get("bridge") or {}
    return {
        "Bridge": "", "SandboxID": sandbox_id, "SandboxKey": sandbox_key,
        "HairpinMode": False, "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
        "Ports": dict(ports), "SecondaryIPAddresses": None, "SecondaryIPv6Addresses": None,
        "EndpointID": bridge.get("EndpointID", ""), "Gateway": bridge.get("Gateway", ""),
        "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
        "IPAddress": bridge.get("IPAddress", ""), "IPPrefixLen": bridge.get("IPPrefixLen", 0),
        "IPv6Gateway": "", "MacAddress": bridge.get("MacAddress", ""),
        "Networks": dict(networks),
    }
