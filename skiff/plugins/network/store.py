"""The network plugins' state in one SQLite file (WAL): IPAM pools and addresses, networks,
endpoints and their published ports, so that a restarted daemon re-programs exactly what it
had (``BridgeDriver.restore``) and never hands out an address twice.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from skiff.core.network import Endpoint, EndpointInfo, NetworkConfig, PortMapping, Subnet
from skiff.errors import Conflict, NotFound
from skiff.plugins.sqlite_db import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS ipam_pools (subnet TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS ipam_addresses (
    pool TEXT NOT NULL, address TEXT NOT NULL, owner TEXT NOT NULL,
    PRIMARY KEY (pool, address));
CREATE TABLE IF NOT EXISTS networks (id TEXT PRIMARY KEY, config TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS endpoints (
    id TEXT PRIMARY KEY, network_id TEXT NOT NULL REFERENCES networks(id),
    endpoint TEXT NOT NULL, ports TEXT NOT NULL DEFAULT '[]');
"""


class NetworkDB:
    """IPAMStore plus the driver's network/endpoint records, over one database file."""

    def __init__(self, path: str) -> None:
        self.db = Database(path, SCHEMA, "network state")

    def close(self) -> None:
        self.db.close()

    # --- IPAMStore -------------------------------------------------------------------------
    def pools(self) -> list[str]:
        return [str(r[0]) for r in self.db.query("SELECT subnet FROM ipam_pools")]

    def add_pool(self, subnet: str) -> None:
        with self.db.tx(f"reserve pool {subnet}") as c:
            # OR IGNORE + rowcount: a duplicate is the caller's Conflict, not a database failure
            cur = c.execute("INSERT OR IGNORE INTO ipam_pools (subnet) VALUES (?)", (subnet,))
            if cur.rowcount == 0:
                raise Conflict(f"pool {subnet} is already in use")

    def remove_pool(self, pool: str) -> None:
        with self.db.tx(f"release pool {pool}") as c:
            c.execute("DELETE FROM ipam_addresses WHERE pool = ?", (pool,))
            c.execute("DELETE FROM ipam_pools WHERE subnet = ?", (pool,))

    def allocated(self, pool: str) -> set[str]:
        rows = self.db.query("SELECT address FROM ipam_addresses WHERE pool = ?", (pool,))
        return {str(r[0]) for r in rows}

    def add(self, pool: str, address: str, owner: str) -> None:
        with self.db.tx(f"allocate {address} in {pool}") as c:
            cur = c.execute("INSERT OR IGNORE INTO ipam_addresses (pool, address, owner) "
                            "VALUES (?, ?, ?)", (pool, address, owner))
            if cur.rowcount == 0:
                raise Conflict(f"address {address} in {pool} is already in use")

    def remove(self, pool: str, address: str) -> None:
        with self.db.tx(f"release {address} in {pool}") as c:
            c.execute("DELETE FROM ipam_addresses WHERE pool = ? AND address = ?",
                      (pool, address))

    # --- networks and endpoints ------------------------------------------------------------
    def put_network(self, cfg: NetworkConfig) -> None:
        with self.db.tx(f"store network {cfg.name}") as c:
            cur = c.execute("INSERT OR IGNORE INTO networks (id, config) VALUES (?, ?)",
                            (cfg.id, json.dumps(network_to_json(cfg))))
            if cur.rowcount == 0:
                raise Conflict(f"network {cfg.id} already exists")

    def network(self, network_id: str) -> NetworkConfig:
        rows = self.db.query("SELECT config FROM networks WHERE id = ?", (network_id,))
        if not rows:
            raise NotFound(f"network {network_id} not found")
        return network_from_json(json.loads(str(rows[0][0])))

    def networks(self) -> list[NetworkConfig]:
        rows = self.db.query("SELECT config FROM networks ORDER BY id")
        return [network_from_json(json.loads(str(r[0]))) for r in rows]

    def delete_network(self, network_id: str) -> None:
        with self.db.tx(f"delete network {network_id}") as c:
            c.execute("DELETE FROM networks WHERE id = ?", (network_id,))

    def put_endpoint(self, ep: Endpoint) -> None:
        with self.db.tx(f"store endpoint {ep.endpoint_id}") as c:
            cur = c.execute("INSERT OR IGNORE INTO endpoints (id, network_id, endpoint) "
                            "VALUES (?, ?, ?)",
                            (ep.endpoint_id, ep.network_id, json.dumps(endpoint_to_json(ep))))
            if cur.rowcount == 0:
                raise Conflict(f"endpoint {ep.endpoint_id} already exists")

    def endpoints(self, network_id: str | None = None) -> list[tuple[Endpoint, tuple[PortMapping, ...]]]:
        sql = "SELECT endpoint, ports FROM endpoints"
        args: tuple[object, ...] = ()
        if network_id is not None:
            sql, args = sql + " WHERE network_id = ?", (network_id,)
        return [(endpoint_from_json(json.loads(str(e))), ports_from_json(json.loads(str(p))))
                for e, p in self.db.query(sql + " ORDER BY id", args)]

    def endpoint(self, endpoint_id: str) -> tuple[Endpoint, tuple[PortMapping, ...]]:
        rows = self.db.query("SELECT endpoint, ports FROM endpoints WHERE id = ?", (endpoint_id,))
        if not rows:
            raise NotFound(f"endpoint {endpoint_id} not found")
        e, p = rows[0]
        return endpoint_from_json(json.loads(str(e))), ports_from_json(json.loads(str(p)))

    def set_ports(self, endpoint_id: str, ports: tuple[PortMapping, ...]) -> None:
        with self.db.tx(f"store published ports of {endpoint_id}") as c:
            cur = c.execute("UPDATE endpoints SET ports = ? WHERE id = ?",
                            (json.dumps([port_to_json(p) for p in ports]), endpoint_id))
            if cur.rowcount == 0:
                raise NotFound(f"endpoint {endpoint_id} not found")

    def delete_endpoint(self, endpoint_id: str) -> None:
        with self.db.tx(f"delete endpoint {endpoint_id}") as c:
            c.execute("DELETE FROM endpoints WHERE id = ?", (endpoint_id,))


# --- JSON forms (the stored shape; keep backward compatible) -------------------------------
def network_to_json(cfg: NetworkConfig) -> dict[str, Any]:
    return {"id": cfg.id, "name": cfg.name, "bridge": cfg.bridge, "internal": cfg.internal,
            "mtu": cfg.mtu, "labels": [list(kv) for kv in cfg.labels],
            "options": [list(kv) for kv in cfg.options],
            "subnets": [{"subnet": str(s.subnet), "gateway": str(s.gateway),
                         "ip_range": str(s.ip_range) if s.ip_range else None}
                        for s in cfg.subnets]}


def network_from_json(d: dict[str, Any]) -> NetworkConfig:
    subnets = tuple(Subnet(ipaddress.ip_network(s["subnet"]), ipaddress.ip_address(s["gateway"]),
                           ipaddress.ip_network(s["ip_range"]) if s["ip_range"] else None)
                    for s in d["subnets"])
    return NetworkConfig(id=d["id"], name=d["name"], bridge=d["bridge"], subnets=subnets,
                         internal=bool(d["internal"]), mtu=int(d["mtu"]),
                         labels=tuple((str(k), str(v)) for k, v in d["labels"]),
                         options=tuple((str(k), str(v)) for k, v in d["options"]))


def endpoint_to_json(ep: Endpoint) -> dict[str, Any]:
    return {"network_id": ep.network_id, "endpoint_id": ep.endpoint_id,
            "netns_path": ep.netns_path, "ifname": ep.ifname, "aliases": list(ep.aliases),
            "ip": str(ep.info.ip), "prefix": ep.info.prefix, "gateway": str(ep.info.gateway),
            "mac": ep.info.mac}


def endpoint_from_json(d: dict[str, Any]) -> Endpoint:
    info = EndpointInfo(ip=ipaddress.ip_address(d["ip"]), prefix=int(d["prefix"]),
                        gateway=ipaddress.ip_address(d["gateway"]), mac=str(d["mac"]))
    return Endpoint(network_id=d["network_id"], endpoint_id=d["endpoint_id"],
                    netns_path=d["netns_path"], ifname=d["ifname"], info=info,
                    aliases=tuple(d["aliases"]))


def port_to_json(p: PortMapping) -> dict[str, Any]:
    return {"container_port": p.container_port, "host_port": p.host_port, "proto": p.proto,
            "host_ip": str(p.host_ip) if p.host_ip is not None else None}


def ports_from_json(items: list[dict[str, Any]]) -> tuple[PortMapping, ...]:
    return tuple(PortMapping(container_port=int(d["container_port"]),
                             host_port=int(d["host_port"]), proto=str(d["proto"]),
                             host_ip=ipaddress.ip_address(d["host_ip"]) if d["host_ip"] else None)
                 for d in items)
